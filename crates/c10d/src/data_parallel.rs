//! [`DataParallel`]: one model replica per rank, kept identical: the same start (rank 0's
//! weights), and after each backward pass the gradients averaged over the ranks, so every
//! rank's optimizer takes the same step.
//!
//! Gradients are averaged by bucketed `all_reduce` from Rust rather than c10d's `Reducer`: the
//! Reducer's constructor changes between the torch releases this crate builds on (11 to 14
//! arguments from 2.10 to 2.15), and it fires from autograd hooks that tch cannot register. The
//! price: the reduction starts after `backward` returns instead of overlapping it. All buckets
//! are in flight together, so packing one bucket overlaps reducing the ones before it.

use crate::{Distributed, Error, ReduceOp, Result, set_grad};
use tch::{Kind, Tensor, nn};

/// Gradients are reduced in buckets of about this many bytes (PyTorch DDP's default 25 MB):
/// few enough collectives for small parameters, while large models' buckets are in flight
/// together.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// A `VarStore` trained data-parallel: see the module's documentation. Alone (world size 1)
/// every call is free and the same training code runs unchanged.
///
/// ```ignore
/// let dist = Distributed::init()?;
/// let vs = nn::VarStore::new(dist.device());
/// let net = model(&vs.root());
/// let ddp = DataParallel::new(&dist, &vs)?;          // rank 0's weights everywhere
/// let mut opt = nn::Sgd::default().build(&vs, 0.1)?;
/// for batch in ... {
///     let loss = net.forward(&x).cross_entropy_for_logits(&y);
///     ddp.backward_step(&loss, &mut opt)?;           // zero_grad, backward, average, step
/// }
/// ```
pub struct DataParallel {
    dist: Distributed,
    /// Every variable (trainable or not) by name, in name order: the same order on every rank.
    variables: Vec<(String, Tensor)>,
    /// Positions in `variables` of the trainable ones, in buckets of one kind and device.
    buckets: Vec<Vec<usize>>,
}

/// FNV-1a: a fingerprint of the model's names, shapes, kinds and trainable flags (which make
/// the buckets) that fits an i64 tensor.
fn fingerprint(variables: &[(String, Tensor)]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, t) in variables {
        let line = format!(
            "{name}:{:?}:{:?}:{};",
            t.size(),
            t.kind(),
            t.requires_grad()
        );
        for byte in line.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash as i64
}

impl DataParallel {
    /// Wraps `vs`: checks that every rank built the same model, then copies rank 0's
    /// variables (weights and buffers) to every rank.
    pub fn new(dist: &Distributed, vs: &nn::VarStore) -> Result<DataParallel> {
        DataParallel::with_bucket_bytes(dist, vs, BUCKET_BYTES)
    }

    /// As [`new`](Self::new), with buckets of about `bucket_bytes`.
    pub fn with_bucket_bytes(
        dist: &Distributed,
        vs: &nn::VarStore,
        bucket_bytes: usize,
    ) -> Result<DataParallel> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        // The kind and device of the last bucket (none yet): a bucket holds one of each.
        let mut last_kind = None;
        for (i, (_, t)) in variables.iter().enumerate() {
            if !t.requires_grad() {
                continue;
            }
            let size = t.numel() * t.kind().elt_size_in_bytes();
            let key = Some((t.kind(), t.device()));
            if last_kind != key || (bytes > 0 && bytes + size > bucket_bytes.max(1)) {
                buckets.push(Vec::new());
                bytes = 0;
            }
            buckets.last_mut().expect("pushed above").push(i);
            bytes += size;
            last_kind = key;
        }
        let ddp = DataParallel {
            dist: dist.clone(),
            variables,
            buckets,
        };
        ddp.check_same_model()?;
        ddp.broadcast_variables(0)?;
        Ok(ddp)
    }

    /// The job this model trains in.
    pub fn distributed(&self) -> &Distributed {
        &self.dist
    }

    /// Every rank must hold the same variables (names, shapes, kinds, trainable flags), or the averaged
    /// gradients would mean nothing (or the collectives would fail half-way).
    fn check_same_model(&self) -> Result<()> {
        if self.dist.world_size() == 1 {
            return Ok(());
        }
        let values: usize = self.variables.iter().map(|(_, t)| t.numel()).sum();
        let mine = Tensor::from_slice(&[
            fingerprint(&self.variables),
            self.variables.len() as i64,
            values as i64,
        ])
        .to_device(self.dist.device());
        let all = self.dist.all_gather(&mine)?;
        let read =
            |t: &Tensor| Vec::<i64>::try_from(&t.to_device(tch::Device::Cpu)).unwrap_or_default();
        let here = read(&mine);
        for (rank, theirs) in all.iter().map(read).enumerate() {
            if theirs != here {
                let (n, v) = (
                    theirs.get(1).copied().unwrap_or(-1),
                    theirs.get(2).copied().unwrap_or(-1),
                );
                return Err(Error::Mismatch {
                    rank: self.dist.rank(),
                    what: format!(
                        "rank {rank}'s model differs from this rank's ({n} variables of {v} values there, {} of {values} here, or other names and shapes): every rank must build the same model",
                        self.variables.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Copies rank `root`'s variables to every rank (done at the start; again after loading a
    /// checkpoint on one rank only).
    pub fn broadcast_variables(&self, root: usize) -> Result<()> {
        self.broadcast_where(root, |_| true)
    }

    /// Copies rank 0's non-trainable variables (batch norm's running statistics) to every
    /// rank. Each rank's statistics follow its own batches; PyTorch's DDP copies rank 0's before
    /// every forward pass. Here it is yours to call, e.g. before evaluating or saving a model
    /// with batch norm.
    pub fn broadcast_buffers(&self) -> Result<()> {
        self.broadcast_where(0, |t| !t.requires_grad())
    }

    fn broadcast_where(&self, root: usize, keep: impl Fn(&Tensor) -> bool) -> Result<()> {
        if self.dist.world_size() == 1 {
            return Ok(());
        }
        for (_, t) in self.variables.iter().filter(|(_, t)| keep(t)) {
            // The same storage without autograd's view of it: c10d writes in place.
            let mut data = t.detach();
            self.dist.broadcast(&mut data, root)?;
        }
        Ok(())
    }

    /// Averages every trainable variable's gradient over the ranks, in place, as PyTorch's DDP
    /// does: a rank that did not use a variable in this step (no gradient) counts as zeros, and
    /// gets the average too when any rank used it; a variable no rank used keeps no gradient.
    pub fn average_gradients(&self) -> Result<()> {
        let Some(group) = self.dist.group() else {
            return Ok(());
        };
        let mut in_flight = Vec::with_capacity(self.buckets.len());
        for bucket in &self.buckets {
            let mut parts = Vec::with_capacity(bucket.len() + 1);
            let mut used = Vec::with_capacity(bucket.len());
            for &i in bucket {
                let t = &self.variables[i].1;
                let g = t.grad();
                used.push(f32::from(u8::from(g.defined())));
                parts.push(if g.defined() {
                    g.reshape([-1])
                } else {
                    Tensor::zeros([t.numel() as i64], (t.kind(), t.device()))
                });
            }
            // One more value per variable: how many ranks have a gradient for it.
            let first = &self.variables[bucket[0]].1;
            parts.push(
                Tensor::from_slice(&used)
                    .to_kind(first.kind())
                    .to_device(first.device()),
            );
            let pending = group
                .all_reduce_start(Tensor::cat(&parts, 0), ReduceOp::Sum)
                .map_err(|e| self.dist.diagnose("all_reduce", e))?;
            in_flight.push((bucket, pending));
        }
        let world = self.dist.world_size() as f64;
        for (bucket, pending) in in_flight {
            let flat = pending
                .wait()
                .map_err(|e| self.dist.diagnose("all_reduce", e))?
                / world;
            let values: i64 = bucket
                .iter()
                .map(|&i| self.variables[i].1.numel() as i64)
                .sum();
            let users = flat
                .narrow(0, values, bucket.len() as i64)
                .to_kind(Kind::Double)
                .to_device(tch::Device::Cpu);
            let users = Vec::<f64>::try_from(&users).unwrap_or_default();
            let mut offset = 0;
            for (j, &i) in bucket.iter().enumerate() {
                let t = &self.variables[i].1;
                let n = t.numel() as i64;
                if users.get(j).is_some_and(|&u| u > 0.0) {
                    let average = flat.narrow(0, offset, n).view_as(t);
                    let mut g = t.grad();
                    if g.defined() {
                        g.copy_(&average);
                    } else {
                        set_grad(t, &average.copy())?;
                    }
                }
                offset += n;
            }
        }
        Ok(())
    }

    /// One training step: clears the gradients, runs `loss`'s backward pass, averages the
    /// gradients over the ranks and lets `opt` step.
    pub fn backward_step(&self, loss: &Tensor, opt: &mut nn::Optimizer) -> Result<()> {
        opt.zero_grad();
        loss.backward();
        self.average_gradients()?;
        opt.step();
        Ok(())
    }

    /// The mean of `value` (a loss, an accuracy) over the ranks, e.g. for rank 0 to report.
    pub fn mean(&self, value: f64) -> Result<f64> {
        if self.dist.world_size() == 1 {
            return Ok(value);
        }
        let mut t = Tensor::from_slice(&[value])
            .to_kind(Kind::Double)
            .to_device(self.dist.device());
        self.dist.all_reduce(&mut t, ReduceOp::Sum)?;
        Ok(t.double_value(&[0]) / self.dist.world_size() as f64)
    }
}
