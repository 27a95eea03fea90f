//! [`DataParallel`]: one model replica per rank, kept identical: the same start (rank 0's
//! weights), and after each backward pass the gradients averaged over the ranks, so every
//! rank's optimizer takes the same step.
//!
//! Gradients are averaged in buckets that start reducing while backward still runs, as PyTorch's
//! DDP does: a post-accumulate-grad hook on each trainable variable (the shim's `Reducer`, see
//! [`GradientReducer`]) copies its gradient into its bucket as soon as autograd has it, and a
//! full bucket is reduced at once. Buckets follow the variables' creation order backwards, which
//! is about the order backward produces their gradients, and the first is small (1 MiB), so the
//! reduction starts early. This is ours rather than c10d's own `Reducer` class: its constructor
//! changes between the torch releases this crate builds on (11 to 14 arguments from 2.10 to
//! 2.15), while the hook it is built on has kept its form.

use crate::{Distributed, Error, GradientReducer, ReduceOp, Result, same_tensor};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use tch::{Kind, Tensor, nn};

/// Gradients are reduced in buckets of about this many bytes (PyTorch DDP's default 25 MB):
/// few enough collectives for small parameters, while large models' buckets are in flight
/// together.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The first bucket (the last layers' gradients, the first backward produces) is smaller, as
/// DDP's is, so that a reduction starts early in backward.
const FIRST_BUCKET_BYTES: usize = 1024 * 1024;

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
    /// Dropped before `dist`: it holds the group's collectives.
    reducer: Option<GradientReducer>,
    dist: Distributed,
    /// Every variable (trainable or not) by name, in name order: the same order on every rank.
    variables: Vec<(String, Tensor)>,
    /// The trainable variables' names, in the order their reductions start.
    order: Vec<String>,
    /// Gradient values of the last step whose reduction started during backward.
    overlapped: AtomicI64,
}

/// FNV-1a: a fingerprint of the model's names, shapes, kinds and trainable flags, and of the
/// order of the buckets (`order`: the trainable variables' names), that fits an i64 tensor.
fn fingerprint(variables: &[(String, Tensor)], order: &[String]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let lines = variables
        .iter()
        .map(|(name, t)| {
            format!(
                "{name}:{:?}:{:?}:{};",
                t.size(),
                t.kind(),
                t.requires_grad()
            )
        })
        .chain(order.iter().map(|name| format!("{name},")));
    for line in lines {
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
        // The variables that get gradients, last created first (tch keeps its trainable ones
        // in creation order, the names apart; found by address, then by identity). Any other
        // variable that gets gradients follows, in name order, so that none goes unaveraged.
        let mut by_address: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, (_, v)) in variables.iter().enumerate() {
            by_address.entry(v.data_ptr() as usize).or_default().push(i);
        }
        let mut order: Vec<usize> = vs
            .trainable_variables()
            .iter()
            .rev()
            .filter(|t| t.requires_grad())
            .filter_map(|t| {
                by_address
                    .get(&(t.data_ptr() as usize))?
                    .iter()
                    .copied()
                    .find(|&i| same_tensor(&variables[i].1, t))
            })
            .collect();
        let listed: HashSet<usize> = order.iter().copied().collect();
        order.extend(
            (0..variables.len()).filter(|i| variables[*i].1.requires_grad() && !listed.contains(i)),
        );
        let mut buckets: Vec<Vec<Tensor>> = Vec::new();
        let mut bytes = 0;
        // The kind and device of the last bucket (none yet): a bucket holds one of each.
        let mut last_kind = None;
        for t in order.iter().map(|&i| &variables[i].1) {
            let size = t.numel() * t.kind().elt_size_in_bytes();
            let key = Some((t.kind(), t.device()));
            let cap = if buckets.len() == 1 {
                FIRST_BUCKET_BYTES.min(bucket_bytes)
            } else {
                bucket_bytes
            };
            if last_kind != key || (bytes > 0 && bytes + size > cap.max(1)) {
                buckets.push(Vec::new());
                bytes = 0;
            }
            buckets
                .last_mut()
                .expect("pushed above")
                .push(t.shallow_clone());
            bytes += size;
            last_kind = key;
        }
        let reducer = match dist.group() {
            Some(group) if !buckets.is_empty() => Some(GradientReducer::new(group, &buckets)?),
            _ => None,
        };
        let ddp = DataParallel {
            reducer,
            dist: dist.clone(),
            order: order.iter().map(|&i| variables[i].0.clone()).collect(),
            variables,
            overlapped: AtomicI64::new(0),
        };
        ddp.check_same_model()?;
        ddp.broadcast_variables(0)?;
        Ok(ddp)
    }

    /// The job this model trains in.
    pub fn distributed(&self) -> &Distributed {
        &self.dist
    }

    /// Every rank must hold the same variables (names, shapes, kinds, trainable flags, the order
    /// they were created in, which orders the buckets), or the averaged gradients would mean
    /// nothing (or the collectives would fail half-way).
    fn check_same_model(&self) -> Result<()> {
        if self.dist.world_size() == 1 {
            return Ok(());
        }
        let values: usize = self.variables.iter().map(|(_, t)| t.numel()).sum();
        let mine = Tensor::from_slice(&[
            fingerprint(&self.variables, &self.order),
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
    /// For a backward pass of your own; [`backward_step`](Self::backward_step) does this
    /// while backward runs.
    pub fn average_gradients(&self) -> Result<()> {
        self.finish()
    }

    fn finish(&self) -> Result<()> {
        let Some(reducer) = &self.reducer else {
            return Ok(());
        };
        let overlapped = reducer
            .finish()
            .map_err(|e| self.dist.diagnose("all_reduce", e))?;
        self.overlapped.store(overlapped, Ordering::Relaxed);
        Ok(())
    }

    /// One training step: clears the gradients, runs `loss`'s backward pass while averaging
    /// the gradients over the ranks, and lets `opt` step.
    pub fn backward_step(&self, loss: &Tensor, opt: &mut nn::Optimizer) -> Result<()> {
        opt.zero_grad();
        if let Some(reducer) = &self.reducer {
            reducer.arm();
        }
        loss.f_backward().map_err(Error::Backward)?;
        self.finish()?;
        opt.step();
        Ok(())
    }

    /// The share of the gradients (by values) whose reduction started while the last step's
    /// backward still ran: the part of the communication that overlapped computation. 0 alone
    /// or after [`average_gradients`](Self::average_gradients).
    pub fn overlap(&self) -> f64 {
        let total: usize = self
            .variables
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.numel())
            .sum();
        if total == 0 {
            return 0.0;
        }
        self.overlapped.load(Ordering::Relaxed) as f64 / total as f64
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
