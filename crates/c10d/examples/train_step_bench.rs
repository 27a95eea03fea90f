//! One rank of `bench/data_parallel.py`'s training-step figure: an MLP (784-1024-1024-10) on
//! random data, a global batch split over the ranks its launcher started (alone: all of it),
//! SGD through `DataParallel`, with gradient buckets of BUCKET_MB. MODE `overlap` reduces while
//! backward runs (`backward_step`); `after` runs backward, then `average_gradients` (the
//! reduction after backward, for comparison). Rank 0 prints the median seconds per step and the
//! share of gradients that started reducing during backward as JSON.
//!
//! train_step_bench STEPS GLOBAL_BATCH MODE BUCKET_MB
use c10d::{DataParallel, Distributed};
use std::time::Instant;
use tch::nn::{Module, OptimizerConfig};
use tch::{Device, Kind, Tensor, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: train_step_bench STEPS GLOBAL_BATCH overlap|after BUCKET_MB";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [steps, global_batch, mode, bucket_mb] = &args[..] else {
        return Err(USAGE.into());
    };
    let (steps, global_batch): (usize, usize) = (steps.parse()?, global_batch.parse()?);
    let bucket_bytes = (bucket_mb.parse::<f64>()? * 1024.0 * 1024.0) as usize;
    let overlap = match mode.as_str() {
        "overlap" => true,
        "after" => false,
        _ => return Err(USAGE.into()),
    };
    let dist = Distributed::init_on(Device::Cpu)?;
    let local = (global_batch / dist.world_size()) as i64;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "l1", 784, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "l2", 1024, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "l3", 1024, 10, Default::default()));
    let ddp = DataParallel::with_bucket_bytes(&dist, &vs, bucket_bytes)?;
    let mut opt = nn::Sgd::default().build(&vs, 0.01)?;
    let x = Tensor::randn([local, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [local], (Kind::Int64, Device::Cpu));
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps + 3 {
        let started = Instant::now();
        let loss = net.forward(&x).cross_entropy_for_logits(&y);
        if overlap {
            ddp.backward_step(&loss, &mut opt)?;
        } else {
            opt.zero_grad();
            loss.backward();
            ddp.average_gradients()?;
            opt.step();
        }
        if step >= 3 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    if dist.is_main() {
        println!(
            "{{\"world_size\": {}, \"seconds\": {}, \"overlap\": {}}}",
            dist.world_size(),
            times[times.len() / 2],
            ddp.overlap()
        );
    }
    Ok(())
}
