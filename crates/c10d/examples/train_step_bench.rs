//! One rank of `bench/data_parallel.py`'s training-step figure: an MLP (784-1024-1024-10) on
//! random data, a global batch split over the ranks its launcher started (alone: all of it),
//! SGD through `DataParallel`. Rank 0 prints the median seconds per step as JSON.
//!
//! train_step_bench STEPS GLOBAL_BATCH
use c10d::{DataParallel, Distributed};
use std::time::Instant;
use tch::nn::{Module, OptimizerConfig};
use tch::{Device, Kind, Tensor, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [steps, global_batch] = args[..] else {
        return Err("usage: train_step_bench STEPS GLOBAL_BATCH".into());
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
    let ddp = DataParallel::new(&dist, &vs)?;
    let mut opt = nn::Sgd::default().build(&vs, 0.01)?;
    let x = Tensor::randn([local, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [local], (Kind::Int64, Device::Cpu));
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps + 3 {
        let started = Instant::now();
        let loss = net.forward(&x).cross_entropy_for_logits(&y);
        ddp.backward_step(&loss, &mut opt)?;
        if step >= 3 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    if dist.is_main() {
        println!(
            "{{\"world_size\": {}, \"seconds\": {}}}",
            dist.world_size(),
            times[times.len() / 2]
        );
    }
    Ok(())
}
