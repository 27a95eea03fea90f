//! Two processes (this test binary, started again as rank 0 and rank 1) run the collectives
//! over a TCPStore on 127.0.0.1, as `srun -n 2` would start them.
use c10d::{DataParallel, Distributed, Launch, Launcher, ProcessGroup, ReduceOp, Store};
use std::process::Command;
use std::time::Duration;
use tch::nn::{self, Module, OptimizerConfig};
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
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
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

/// Starts this test binary twice, as rank 0 and rank 1 running the test `body`.
fn run_two_ranks(body: &str) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", body, "--nocapture"])
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

#[test]
fn two_ranks_reduce_broadcast_gather_and_wait() {
    if std::env::var(RANK_ENV).is_err() {
        run_two_ranks("rank");
    }
}

/// This process's rank and its job, joined as torchrun's variables would say; `None` when not
/// started as a rank.
fn join() -> Option<(usize, Distributed)> {
    let rank: usize = std::env::var(RANK_ENV).ok()?.parse().ok()?;
    let port: u16 = std::env::var(PORT_ENV).ok()?.parse().ok()?;
    let launch = Launch {
        launcher: Launcher::Torchrun,
        rank,
        world_size: 2,
        local_rank: rank,
        master_addr: "127.0.0.1".to_owned(),
        master_port: port,
    };
    let dist = Distributed::join(launch, Device::Cpu, Duration::from_secs(30)).expect("join");
    Some((rank, dist))
}

/// Rank 1 does not use layer `b`: both ranks end with b's gradient averaged as DDP does
/// (rank 0's and rank 1's zeros), and with rank 0's starting weights.
#[test]
fn data_parallel_rank() {
    let Some((rank, dist)) = join() else { return };
    tch::manual_seed(rank as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let a = nn::linear(vs.root() / "a", 3, 1, Default::default());
    let b = nn::linear(vs.root() / "b", 3, 1, Default::default());
    let ddp = DataParallel::new(&dist, &vs).expect("data parallel");
    let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    let out = if rank == 0 {
        a.forward(&x) + b.forward(&x)
    } else {
        a.forward(&x)
    };
    out.sum(Kind::Float).backward();
    ddp.average_gradients().expect("average");
    let vars = vs.variables();
    // Each bias gets 2 (two rows) from each rank that used it.
    assert_eq!(values(&vars["a.bias"].grad()), vec![2.0]);
    assert_eq!(values(&vars["b.bias"].grad()), vec![1.0]);
    let weights = dist.all_gather(&vars["a.weight"]).expect("gather");
    assert_eq!(values(&weights[0]), values(&weights[1]));
    assert!(dist.any_rank(rank == 1).expect("any"));
    assert!(!dist.any_rank(false).expect("none"));
}

#[test]
fn data_parallel_averages_a_gradient_one_rank_did_not_compute() {
    if std::env::var(RANK_ENV).is_err() {
        run_two_ranks("data_parallel_rank");
    }
}

/// `backward_step` reduces while backward runs (one variable per bucket, so the last layer's
/// bucket starts before backward reaches the first) and leaves the same gradients as averaging
/// each rank's own by hand; rank 1 does not use layer `b`.
#[test]
fn data_parallel_overlap_rank() {
    let Some((rank, dist)) = join() else { return };
    tch::manual_seed(rank as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let l1 = nn::linear(vs.root() / "l1", 3, 4, Default::default());
    let l2 = nn::linear(vs.root() / "l2", 4, 2, Default::default());
    let b = nn::linear(vs.root() / "b", 3, 2, Default::default());
    let ddp = DataParallel::with_bucket_bytes(&dist, &vs, 1).expect("data parallel");
    let mut opt = nn::Sgd::default().build(&vs, 0.0).expect("optimizer");
    let x = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) * (rank as f64 + 1.0);
    let loss = || {
        let out = l2.forward(&l1.forward(&x).relu());
        let out = if rank == 0 { out + b.forward(&x) } else { out };
        out.square().sum(Kind::Float)
    };
    // Each rank's own gradients (the hooks do nothing outside backward_step), averaged by hand.
    loss().backward();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut expected = Vec::new();
    for name in &names {
        let g = vars[*name].grad();
        let g = if g.defined() {
            g.copy()
        } else {
            vars[*name].zeros_like()
        };
        let all = dist.all_gather(&g).expect("gather");
        expected.push((all[0].copy() + &all[1]) / 2.0);
    }
    ddp.backward_step(&loss(), &mut opt).expect("step");
    for (name, want) in names.iter().zip(&expected) {
        let got = vars[*name].grad();
        assert!(got.defined(), "{name} has no gradient");
        assert!(
            got.allclose(want, 1e-6, 1e-6, false),
            "{name}: {got} against {want}"
        );
        let both = dist.all_gather(&got).expect("gather");
        assert_eq!(
            values(&both[0]),
            values(&both[1]),
            "{name} differs between the ranks"
        );
    }
    // Rank 0: b's and l2's buckets (18 of 34 values) started before backward
    // computed l1's gradients, which need l2's. Rank 1: b's bucket, the first, never fills,
    // which holds back the others until the end (buckets start in order).
    let overlap = ddp.overlap();
    if rank == 0 {
        assert!((18.0 / 34.0..1.0).contains(&overlap), "overlap {overlap}");
    } else {
        assert_eq!(overlap, 0.0);
    }
    // After a manual backward and average_gradients, nothing counts as overlapped.
    opt.zero_grad();
    loss().backward();
    ddp.average_gradients().expect("average");
    assert_eq!(ddp.overlap(), 0.0);
}

#[test]
fn data_parallel_reduces_during_backward() {
    if std::env::var(RANK_ENV).is_err() {
        run_two_ranks("data_parallel_overlap_rank");
    }
}

/// NCCL where this build has it and a GPU is there: a group of one reduces a CUDA tensor.
/// Without a GPU (or without NCCL in this build), making the group is an error, not an abort.
#[test]
fn an_nccl_group_needs_nccl_and_a_gpu_and_says_so() {
    if std::env::var(RANK_ENV).is_ok() {
        return;
    }
    let timeout = Duration::from_secs(30);
    // A store of one on a port of the system's choosing (0).
    let store = Store::tcp("127.0.0.1", 0, true, 1, timeout).expect("store");
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
