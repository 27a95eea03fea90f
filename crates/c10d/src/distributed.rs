//! [`Distributed`]: this process's place in its job and the process group of the job, joined
//! from what the launcher set (see `launch-env`), with errors that name the rank at fault.

use crate::{Error, ProcessGroup, ReduceOp, Result, Store};
use launch_env::{Launch, Launcher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Cuda, Device, Tensor};

/// Seconds a rendezvous or a collective may wait for the other ranks (default 300).
pub const TIMEOUT_ENV: &str = "TCH_DIST_TIMEOUT";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// After a collective failed, how long a rank waits for the others to say they are still
/// there before naming the ones that did not (at most the group's timeout).
const ROLL_CALL: Duration = Duration::from_secs(10);

/// Keys of this crate in the rendezvous store.
const WORLD_KEY: &str = "tch-kernel/world-size";
const ROLL_CALL_KEY: &str = "tch-kernel/still-here";

/// What carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One process: nothing to talk to.
    Alone,
    /// Gloo: CPU tensors (and CUDA tensors, staged through the host).
    Gloo,
    /// NCCL: CUDA tensors, GPU to GPU.
    Nccl,
}

/// This process's place in its job, and the job's process group. Cheap to clone (a handle).
///
/// ```ignore
/// let dist = Distributed::init()?;            // rank 0 of 1 in a notebook
/// let vs = nn::VarStore::new(dist.device());  // this rank's GPU, or the CPU
/// ```
#[derive(Clone)]
pub struct Distributed {
    inner: Arc<Inner>,
}

struct Inner {
    launch: Launch,
    device: Device,
    backend: Backend,
    timeout: Duration,
    // Dropped before the store it was made from.
    group: Option<ProcessGroup>,
    store: Option<Store>,
}

/// The timeout [`TIMEOUT_ENV`] sets, or the default.
fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::Argument(format!("{TIMEOUT_ENV}={text:?} is not a number of seconds"))
            }),
    }
}

/// This rank's device: GPU `local_rank` (modulo the GPUs it can see, for a task that Slurm
/// gave one GPU of its own) where CUDA is available, else the CPU.
fn device_for(launch: &Launch) -> Device {
    if Cuda::is_available() {
        let count = usize::try_from(Cuda::device_count()).unwrap_or(1).max(1);
        Device::Cuda(launch.local_rank % count)
    } else {
        Device::Cpu
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

impl Distributed {
    /// Joins the job that started this process (srun, torchrun; alone otherwise), on this
    /// rank's GPU with NCCL where CUDA and NCCL are there, else on the CPU with Gloo. Waits for
    /// the other ranks at most [`TIMEOUT_ENV`] seconds.
    pub fn init() -> Result<Distributed> {
        let launch = Launch::from_env()?;
        let device = device_for(&launch);
        Distributed::join(launch, device, timeout_from_env()?)
    }

    /// As [`init`](Self::init), with the tensors on `device` (`Device::Cpu` for Gloo even on a
    /// GPU node).
    pub fn init_on(device: Device) -> Result<Distributed> {
        Distributed::join(Launch::from_env()?, device, timeout_from_env()?)
    }

    /// Joins the job `launch` describes. Gloo for CPU tensors, NCCL for CUDA ones where this
    /// build has it (else Gloo).
    pub fn join(launch: Launch, device: Device, timeout: Duration) -> Result<Distributed> {
        let backend = match (launch.is_distributed(), device) {
            (false, _) => Backend::Alone,
            (true, Device::Cuda(_)) if ProcessGroup::has_nccl() => Backend::Nccl,
            (true, _) => Backend::Gloo,
        };
        let (mut group, mut store) = (None, None);
        if launch.is_distributed() {
            let joined = rendezvous(&launch, timeout)?;
            let rank = launch.rank;
            let made = match backend {
                Backend::Nccl => ProcessGroup::nccl(&joined, rank, launch.world_size, timeout),
                _ => {
                    // Ranks on one host talk over loopback; across hosts gloo picks the
                    // interface of this host's name (or GLOO_SOCKET_IFNAME).
                    let host = if is_loopback(&launch.master_addr) {
                        "127.0.0.1"
                    } else {
                        ""
                    };
                    ProcessGroup::gloo(&joined, rank, launch.world_size, host, timeout)
                }
            };
            group = Some(made.map_err(|e| Error::Rendezvous {
                rank,
                what: format!("the {backend:?} process group could not be made: {e}"),
            })?);
            store = Some(joined);
        }
        Ok(Distributed {
            inner: Arc::new(Inner {
                launch,
                device,
                backend,
                timeout,
                group,
                store,
            }),
        })
    }

    pub fn rank(&self) -> usize {
        self.inner.launch.rank
    }

    pub fn world_size(&self) -> usize {
        self.inner.launch.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.inner.launch.local_rank
    }

    /// Rank 0: the one that prints, logs and saves checkpoints for the job.
    pub fn is_main(&self) -> bool {
        self.inner.launch.is_main()
    }

    /// Where this rank's model and batches go.
    pub fn device(&self) -> Device {
        self.inner.device
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn launch(&self) -> &Launch {
        &self.inner.launch
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The process group (none when alone), for collectives this type does not wrap.
    pub fn group(&self) -> Option<&ProcessGroup> {
        self.inner.group.as_ref()
    }

    /// Reduces `tensor` over all ranks in place (nothing to do alone).
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        match &self.inner.group {
            None => Ok(()),
            Some(g) => g
                .all_reduce(tensor, op)
                .map_err(|e| self.diagnose("all_reduce", e)),
        }
    }

    /// Sets `tensor` to rank `root`'s on every rank.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        match &self.inner.group {
            None if root == 0 => Ok(()),
            None => Err(Error::Argument(format!(
                "broadcast from rank {root} in a world of 1"
            ))),
            Some(g) => g
                .broadcast(tensor, root)
                .map_err(|e| self.diagnose("broadcast", e)),
        }
    }

    /// Every rank's `tensor`, by rank (alone: a copy of it).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        match &self.inner.group {
            None => Ok(vec![tensor.copy()]),
            Some(g) => g
                .all_gather(tensor)
                .map_err(|e| self.diagnose("all_gather", e)),
        }
    }

    /// Whether `flag` is true on any rank: every rank gets the same answer, so all of them take
    /// the same branch. For stopping before a time limit, where Slurm's signal reaches each
    /// rank at another step: `if dist.any_rank(stop_requested())? { /* save, exit */ }`.
    pub fn any_rank(&self, flag: bool) -> Result<bool> {
        if self.inner.group.is_none() {
            return Ok(flag);
        }
        let mut t = Tensor::from_slice(&[i32::from(flag)]).to_device(self.inner.device);
        self.all_reduce(&mut t, ReduceOp::Max)?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// Waits until every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        match &self.inner.group {
            None => Ok(()),
            Some(g) => g.barrier().map_err(|e| self.diagnose("barrier", e)),
        }
    }

    /// Turns a failed collective into an error that names the ranks that are gone: every rank
    /// whose collective failed says so in the store, then waits a little for the others to.
    pub(crate) fn diagnose(&self, op: &'static str, error: Error) -> Error {
        let (Some(store), Error::C10d(cause)) = (&self.inner.store, &error) else {
            return error;
        };
        let me = self.rank();
        let key = |r: usize| format!("{ROLL_CALL_KEY}/{r}");
        let gone = |gone: Vec<usize>, waited: Duration| Error::RanksGone {
            rank: me,
            op,
            gone,
            waited_s: waited.as_secs(),
            cause: cause.clone(),
        };
        let started = Instant::now();
        // Rank 0 serves the store: if another rank cannot write to it, rank 0 is gone.
        if store.set(&key(me), "1").is_err() {
            return if me == 0 {
                error
            } else {
                gone(vec![0], started.elapsed())
            };
        }
        let wait = ROLL_CALL.min(self.inner.timeout);
        loop {
            let missing: Vec<usize> = (0..self.world_size())
                .filter(|&r| r != me)
                .filter(|&r| !store.check(&key(r)).unwrap_or(false))
                .collect();
            if missing.is_empty() {
                // Everybody answered: the failure was not a rank going away.
                return error;
            }
            if started.elapsed() >= wait {
                return gone(missing, wait);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where the rendezvous address came from, for errors.
fn address_source(launcher: Launcher) -> &'static str {
    match launcher {
        Launcher::Torchrun => "MASTER_ADDR and MASTER_PORT",
        Launcher::Slurm => {
            "the first host of SLURM_STEP_NODELIST and a port from SLURM_JOB_ID, or MASTER_ADDR and MASTER_PORT"
        }
        Launcher::Alone => "nowhere",
    }
}

/// Connects to (rank 0: serves) the store, then checks that every rank was started for the
/// same world size.
fn rendezvous(launch: &Launch, timeout: Duration) -> Result<Store> {
    let (rank, world) = (launch.rank, launch.world_size);
    let at = format!("{}:{}", launch.master_addr, launch.master_port);
    let store = Store::tcp(
        &launch.master_addr,
        launch.master_port,
        rank == 0,
        world,
        timeout,
    )
    .map_err(|e| Error::Rendezvous {
        rank,
        what: if rank == 0 {
            format!(
                "the rendezvous on {at} (from {}) did not gather the {world} ranks within {} s: {e}",
                address_source(launch.launcher),
                timeout.as_secs()
            )
        } else {
            format!(
                "cannot reach the rendezvous at {at} (from {}) within {} s: {e}",
                address_source(launch.launcher),
                timeout.as_secs()
            )
        },
    })?;
    store.set(&format!("{WORLD_KEY}/{rank}"), &world.to_string())?;
    let others: Vec<usize> = if rank == 0 {
        (1..world).collect()
    } else {
        vec![0]
    };
    let mut verdict = Ok(());
    for other in others {
        let said = store
            .get(&format!("{WORLD_KEY}/{other}"))
            .map_err(|e| Error::Rendezvous {
                rank,
                what: format!(
                    "rank {other} did not join the rendezvous at {at} within {} s: {e}",
                    timeout.as_secs()
                ),
            })?;
        if said.trim() != world.to_string() {
            verdict = Err(Error::Mismatch {
                rank,
                what: format!(
                    "this rank was started for {world} processes and rank {other} for {}: every rank needs the same world size (srun --ntasks, torchrun --nproc-per-node and --nnodes, or WORLD_SIZE)",
                    said.trim()
                ),
            });
            break;
        }
    }
    if rank != 0 {
        store.set(&format!("{WORLD_KEY}-read/{rank}"), "1")?;
    } else {
        // Rank 0 serves the store: it stays until the others have read its world size (at most
        // ROLL_CALL), so that they get the same clear error instead of a closed connection.
        let deadline = Instant::now() + ROLL_CALL.min(timeout);
        for r in 1..world {
            while !store
                .check(&format!("{WORLD_KEY}-read/{r}"))
                .unwrap_or(true)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    verdict?;
    Ok(store)
}
