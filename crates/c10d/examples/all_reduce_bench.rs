//! One rank of `bench/all_reduce.py`: times `all_reduce` (sum) of float tensors of the given
//! sizes in MB over Gloo, in the job its launcher's variables describe (RANK, WORLD_SIZE,
//! MASTER_ADDR, MASTER_PORT), and prints one JSON line per size from rank 0.
//!
//! all_reduce_bench ITERATIONS MB [MB ...]
use c10d::{Distributed, ReduceOp};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations: usize = args
        .first()
        .ok_or("usage: all_reduce_bench ITERATIONS MB...")?
        .parse()?;
    let dist = Distributed::init_on(Device::Cpu)?;
    for mb in &args[1..] {
        let mb: f64 = mb.parse()?;
        let n = (mb * 1024.0 * 1024.0 / 4.0) as i64;
        let mut t = Tensor::ones([n], (Kind::Float, Device::Cpu));
        for _ in 0..3 {
            dist.all_reduce(&mut t, ReduceOp::Sum)?;
        }
        dist.barrier()?;
        let started = Instant::now();
        for _ in 0..iterations {
            dist.all_reduce(&mut t, ReduceOp::Sum)?;
        }
        let seconds = started.elapsed().as_secs_f64() / iterations as f64;
        if dist.is_main() {
            println!("{{\"mb\": {mb}, \"seconds\": {seconds}}}");
        }
    }
    Ok(())
}
