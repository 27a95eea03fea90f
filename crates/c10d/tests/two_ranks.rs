//! Two processes (this test binary, started again as rank 0 and rank 1) run the collectives
//! over a TCPStore on 127.0.0.1, as `srun -n 2` would start them.
use c10d::{ProcessGroup, ReduceOp, Store};
use std::process::Command;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

const RANK_ENV: &str = "C10D_TEST_RANK";
const PORT_ENV: &str = "C10D_TEST_PORT";

fn group() -> Option<ProcessGroup> {
    let rank: usize = std::env::var(RANK_ENV).ok()?.parse().ok()?;
    let port: u16 = std::env::var(PORT_ENV).ok()?.parse().ok()?;
    let timeout = Duration::from_secs(30);
    let store = Store::tcp("127.0.0.1", port, rank == 0, 2, timeout).expect("store");
    Some(ProcessGroup::gloo(&store, rank, 2, "127.0.0.1", timeout).expect("group"))
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap()
}

/// The body of each rank; does nothing when not started as one.
#[test]
fn rank() {
    let Some(group) = group() else { return };
    let r = group.rank() as f64;
    let mut t = Tensor::full([4], r + 1.0, (Kind::Float, Device::Cpu));
    group.all_reduce(&mut t, ReduceOp::Sum).expect("sum");
    assert_eq!(values(&t), vec![3.0; 4]);
    let mut t = Tensor::full([4], r + 1.0, (Kind::Float, Device::Cpu));
    group.all_reduce(&mut t, ReduceOp::Avg).expect("avg");
    assert_eq!(values(&t), vec![1.5; 4]);
    let mut t = Tensor::full([2], r + 1.0, (Kind::Float, Device::Cpu));
    group.all_reduce(&mut t, ReduceOp::Max).expect("max");
    assert_eq!(values(&t), vec![2.0; 2]);
    let mut t = Tensor::full([3], r * 10.0, (Kind::Float, Device::Cpu));
    group.broadcast(&mut t, 1).expect("broadcast");
    assert_eq!(values(&t), vec![10.0; 3]);
    let all = group
        .all_gather(&Tensor::full([2], r, (Kind::Float, Device::Cpu)))
        .expect("gather");
    assert_eq!(all.len(), 2);
    assert_eq!(values(&all[1]), vec![1.0; 2]);
    group.barrier().expect("barrier");
    println!("rank {} done", group.rank());
}

#[test]
fn two_ranks_reduce_broadcast_gather_and_wait() {
    if std::env::var(RANK_ENV).is_ok() {
        return;
    }
    let port = 29_000 + (std::process::id() % 1000) as u16;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "rank", "--nocapture"])
                .env(RANK_ENV, rank.to_string())
                .env(PORT_ENV, port.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// NCCL where this build has it and a GPU is there: a group of one reduces a CUDA tensor.
/// Without a GPU (or without NCCL in this build), making the group is an error, not an abort.
#[test]
fn an_nccl_group_needs_nccl_and_a_gpu_and_says_so() {
    if std::env::var(RANK_ENV).is_ok() {
        return;
    }
    let port = 31_000 + (std::process::id() % 1000) as u16;
    let timeout = Duration::from_secs(30);
    let store = Store::tcp("127.0.0.1", port, true, 1, timeout).expect("store");
    let group = ProcessGroup::nccl(&store, 0, 1, timeout);
    if !ProcessGroup::has_nccl() {
        let err = group.err().expect("no NCCL in this build").to_string();
        assert!(err.contains("no NCCL"), "{err}");
    } else if !tch::Cuda::is_available() {
        let err = group.err().expect("no GPU here");
        println!("NCCL without a GPU: {err}");
    } else {
        let group = group.expect("an NCCL group of one");
        let mut t = Tensor::full([4], 2.0, (Kind::Float, Device::Cuda(0)));
        group.all_reduce(&mut t, ReduceOp::Sum).expect("sum");
        assert_eq!(values(&t.to_device(Device::Cpu)), vec![2.0; 4]);
    }
}
