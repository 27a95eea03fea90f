//! Where this process stands in a multi-process job, from what its launcher set:
//!
//! - **torchrun** (or any launcher that follows PyTorch's `env://` convention): `RANK`,
//!   `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`. `torchrun --no-python` starts any
//!   program.
//! - **Slurm's `srun`**: `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`; the rendezvous
//!   is the first host of `SLURM_STEP_NODELIST` on a port derived from `SLURM_JOB_ID` (both
//!   overridden by `MASTER_ADDR` / `MASTER_PORT`). Only a task that `srun` started counts: the
//!   batch script of a 2-task job (and a notebook kernel inside a Slurm job) is a single process,
//!   though `SLURM_NTASKS` says 2, so this reads the step's variables, never the job's.
//! - Otherwise one process alone: rank 0 of 1, as in an ordinary notebook kernel.
//!
//! torchrun's variables win when both are set (`srun -n 1 torchrun --nproc-per-node 2 ...`).

pub mod hostlist;

/// The variables read here, named once.
pub mod vars {
    pub const RANK: &str = "RANK";
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    pub const MASTER_PORT: &str = "MASTER_PORT";
    pub const SLURM_PROCID: &str = "SLURM_PROCID";
    pub const SLURM_STEP_NUM_TASKS: &str = "SLURM_STEP_NUM_TASKS";
    pub const SLURM_LOCALID: &str = "SLURM_LOCALID";
    pub const SLURM_STEP_NODELIST: &str = "SLURM_STEP_NODELIST";
    pub const SLURM_JOB_NODELIST: &str = "SLURM_JOB_NODELIST";
    pub const SLURM_JOB_ID: &str = "SLURM_JOB_ID";
}

/// What the job script of an exported notebook (`tch-kernel export` writes it) and the program
/// it starts agree on.
pub mod job_script {
    /// Set by the script to the notebook's path, so that its program knows which notebook it
    /// runs: `submit()` refuses to submit that notebook again from inside its own job, which
    /// would start it over and over.
    pub const EXPORTED_FROM_ENV: &str = "TCH_KERNEL_EXPORTED_FROM";
    /// The exit code of a program that stopped early with a checkpoint (before its time limit):
    /// the script resubmits itself on it.
    pub const RESUME_EXIT_CODE: i32 = 3;
}

/// The rendezvous port of a Slurm job without `MASTER_PORT`: this plus the job id modulo
/// [`SLURM_PORT_SPAN`], below Linux's ephemeral range (32768 on), so two jobs sharing a node
/// rarely meet on one port.
pub const SLURM_PORT_BASE: u16 = 15_000;
pub const SLURM_PORT_SPAN: u16 = 10_000;

/// What a launch variable (or the lack of one) got wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    #[error(
        "{var} is not set ({launcher} sets it when it starts {world_size} processes; set it by hand otherwise)"
    )]
    Missing {
        var: &'static str,
        launcher: Launcher,
        world_size: usize,
    },
    #[error("{var}={value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("the Slurm host list {list:?} cannot be read: {why}")]
    Hostlist { list: String, why: String },
}

/// Who started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Nobody in particular: one process (a notebook kernel, a plain run of a program).
    Alone,
    /// torchrun's `env://` variables.
    Torchrun,
    /// A task of an `srun` step.
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Alone => "nothing",
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "srun",
        })
    }
}

/// This process's place in its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    /// 0 ..= world_size - 1; rank 0 hosts the rendezvous and writes the job's outputs.
    pub rank: usize,
    pub world_size: usize,
    /// The rank among this node's processes: which of the node's GPUs this one takes.
    pub local_rank: usize,
    /// Rank 0's host and the port of its rendezvous store (`127.0.0.1` and 0 when alone).
    pub master_addr: String,
    pub master_port: u16,
}

impl Launch {
    /// One process on its own.
    pub fn alone() -> Launch {
        Launch {
            launcher: Launcher::Alone,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".to_owned(),
            master_port: 0,
        }
    }

    /// From this process's environment.
    pub fn from_env() -> Result<Launch, LaunchError> {
        Launch::from_vars(|name| std::env::var(name).ok())
    }

    /// From the variables `get` returns (the environment, or a test's).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Launch, LaunchError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if get(vars::RANK).is_some() || get(vars::WORLD_SIZE).is_some() {
            from_torchrun(&get)
        } else if get(vars::SLURM_PROCID).is_some() && get(vars::SLURM_STEP_NUM_TASKS).is_some() {
            from_slurm(&get)
        } else {
            Ok(Launch::alone())
        }
    }

    /// Rank 0: the process that prints, logs and saves for the job.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// More than one process.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }
}

/// Whether this process is rank 0 (also when the variables are malformed: output is never
/// lost for that; the collectives report the error).
pub fn is_main_process() -> bool {
    Launch::from_env().map(|l| l.is_main()).unwrap_or(true)
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<usize>, LaunchError> {
    get(var)
        .map(|value| {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| LaunchError::Invalid {
                    var,
                    value,
                    why: "not a whole number".to_owned(),
                })
        })
        .transpose()
}

fn port(get: &impl Fn(&str) -> Option<String>) -> Result<Option<u16>, LaunchError> {
    get(vars::MASTER_PORT)
        .map(|value| match value.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(LaunchError::Invalid {
                var: vars::MASTER_PORT,
                value,
                why: "not a port (1-65535)".to_owned(),
            }),
        })
        .transpose()
}

fn checked(
    mut launch: Launch,
    rank_var: &'static str,
    world_var: &'static str,
) -> Result<Launch, LaunchError> {
    if launch.world_size == 0 {
        return Err(LaunchError::Invalid {
            var: world_var,
            value: "0".to_owned(),
            why: "a job has at least one process".to_owned(),
        });
    }
    if launch.rank >= launch.world_size {
        return Err(LaunchError::Invalid {
            var: rank_var,
            value: launch.rank.to_string(),
            why: format!(
                "a rank of a world of {} is 0 to {}",
                launch.world_size,
                launch.world_size - 1
            ),
        });
    }
    if launch.world_size == 1 {
        launch.master_port = 0;
    }
    Ok(launch)
}

fn from_torchrun(get: &impl Fn(&str) -> Option<String>) -> Result<Launch, LaunchError> {
    let world_size = number(get, vars::WORLD_SIZE)?;
    let missing = |var, world_size| LaunchError::Missing {
        var,
        launcher: Launcher::Torchrun,
        world_size,
    };
    let world_size = world_size.ok_or(missing(vars::WORLD_SIZE, 2))?;
    let rank = number(get, vars::RANK)?.ok_or(missing(vars::RANK, world_size))?;
    let (master_addr, master_port) = if world_size > 1 {
        (
            get(vars::MASTER_ADDR).ok_or(missing(vars::MASTER_ADDR, world_size))?,
            port(get)?.ok_or(missing(vars::MASTER_PORT, world_size))?,
        )
    } else {
        ("127.0.0.1".to_owned(), 0)
    };
    checked(
        Launch {
            launcher: Launcher::Torchrun,
            rank,
            world_size,
            local_rank: number(get, vars::LOCAL_RANK)?.unwrap_or(0),
            master_addr: master_addr.trim().to_owned(),
            master_port,
        },
        vars::RANK,
        vars::WORLD_SIZE,
    )
}

fn from_slurm(get: &impl Fn(&str) -> Option<String>) -> Result<Launch, LaunchError> {
    let rank = number(get, vars::SLURM_PROCID)?.unwrap_or(0);
    let world_size = number(get, vars::SLURM_STEP_NUM_TASKS)?.unwrap_or(1);
    let local_rank = number(get, vars::SLURM_LOCALID)?.unwrap_or(0);
    let missing = |var| LaunchError::Missing {
        var,
        launcher: Launcher::Slurm,
        world_size,
    };
    let (mut master_addr, mut master_port) = ("127.0.0.1".to_owned(), 0);
    if world_size > 1 {
        master_addr = match get(vars::MASTER_ADDR) {
            Some(addr) => addr.trim().to_owned(),
            None => {
                let (var, list) = [vars::SLURM_STEP_NODELIST, vars::SLURM_JOB_NODELIST]
                    .into_iter()
                    .find_map(|var| Some((var, get(var)?)))
                    .ok_or(missing(vars::SLURM_STEP_NODELIST))?;
                hostlist::expand(&list)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| LaunchError::Invalid {
                        var,
                        value: list.clone(),
                        why: "names no host".to_owned(),
                    })?
            }
        };
        master_port = match port(get)? {
            Some(p) => p,
            None => {
                let job = number(get, vars::SLURM_JOB_ID)?.ok_or(missing(vars::SLURM_JOB_ID))?;
                // The span fits in u16, so the sum does too.
                SLURM_PORT_BASE + (job % usize::from(SLURM_PORT_SPAN)) as u16
            }
        };
    }
    checked(
        Launch {
            launcher: Launcher::Slurm,
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        },
        vars::SLURM_PROCID,
        vars::SLURM_STEP_NUM_TASKS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(pairs: &[(&str, &str)]) -> Result<Launch, LaunchError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_one_process_alone() {
        assert_eq!(launch(&[]).unwrap(), Launch::alone());
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(
            (
                l.launcher,
                l.rank,
                l.world_size,
                l.local_rank,
                l.master_addr.as_str(),
                l.master_port
            ),
            (Launcher::Torchrun, 3, 4, 1, "node7", 29500)
        );
        assert!(!l.is_main() && l.is_distributed());
    }

    #[test]
    fn an_srun_task_and_its_rendezvous() {
        let l = launch(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NODELIST", "gpu[07-08]"),
            ("SLURM_JOB_NODELIST", "gpu[07-09]"),
            ("SLURM_JOB_ID", "1234567"),
        ])
        .unwrap();
        assert_eq!(
            (
                l.launcher,
                l.rank,
                l.world_size,
                l.local_rank,
                l.master_addr.as_str(),
                l.master_port
            ),
            (Launcher::Slurm, 1, 4, 1, "gpu07", 15_000 + 4567)
        );
        let mine = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_JOB_NODELIST", "a1"),
            ("SLURM_JOB_ID", "9"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "23456"),
        ])
        .unwrap();
        assert_eq!(
            (mine.master_addr.as_str(), mine.master_port),
            ("10.0.0.1", 23456)
        );
    }

    #[test]
    fn a_batch_script_or_kernel_inside_a_job_is_alone() {
        // sbatch --ntasks 2: the script itself sees the job's variables, not a step's.
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "a[1-2]"),
            ("SLURM_JOB_ID", "5"),
        ])
        .unwrap();
        assert_eq!(l, Launch::alone());
        let one = launch(&[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")]).unwrap();
        assert_eq!(
            (one.launcher, one.world_size, one.master_port),
            (Launcher::Slurm, 1, 0)
        );
    }

    #[test]
    fn torchrun_wins_over_the_slurm_step_it_runs_in() {
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.rank), (Launcher::Torchrun, 1));
    }

    #[test]
    fn wrong_or_missing_settings_say_which_variable() {
        let err = |pairs: &[(&str, &str)]| launch(pairs).unwrap_err().to_string();
        assert!(
            err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")])
                .starts_with("MASTER_ADDR is not set (torchrun")
        );
        assert!(
            err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])
                .starts_with("MASTER_PORT is not set")
        );
        assert!(err(&[("WORLD_SIZE", "2")]).starts_with("RANK is not set"));
        assert!(
            err(&[
                ("RANK", "2"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "1")
            ])
            .contains("0 to 1")
        );
        assert!(
            err(&[("RANK", "x"), ("WORLD_SIZE", "2")])
                .starts_with("RANK=\"x\": not a whole number")
        );
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("at least one"));
        assert!(
            err(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "99999")
            ])
            .contains("not a port")
        );
        assert!(
            err(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "2"),
                ("SLURM_JOB_ID", "1")
            ])
            .starts_with("SLURM_STEP_NODELIST is not set (srun")
        );
        assert!(
            err(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "2"),
                ("SLURM_STEP_NODELIST", "n[1-")
            ])
            .contains("host list")
        );
    }
}
