// tch-kernel: how the evaluation process is started. By default it is the engine's own
// executable run as a subprocess; an embedder can start it another way (tch-kernel forks it
// from a process that already loaded libtorch, shared by a user's kernels), as long as it hands
// back the same three pipes and a handle that can wait for it and kill it.

use std::fs::File;
use std::io;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, OnceLock};

/// The evaluation process, whoever its parent is.
pub trait EvalProcess: Send {
    fn id(&self) -> u32;
    /// Its exit status if it has ended, without blocking.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    fn wait(&mut self) -> io::Result<ExitStatus>;
    /// SIGKILL, unless it has already ended.
    fn kill(&mut self) -> io::Result<()>;
}

impl EvalProcess for std::process::Child {
    fn id(&self) -> u32 {
        std::process::Child::id(self)
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        std::process::Child::try_wait(self)
    }
    fn wait(&mut self) -> io::Result<ExitStatus> {
        std::process::Child::wait(self)
    }
    fn kill(&mut self) -> io::Result<()> {
        std::process::Child::kill(self)
    }
}

/// A started evaluation process and the ends of its standard streams.
pub struct SpawnedProcess {
    pub process: Box<dyn EvalProcess>,
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

/// Starts evaluation processes for `command` (the engine's executable, with the environment
/// the child must have, stdin/stdout/stderr piped).
pub trait ChildSpawner: Send + Sync {
    fn spawn(&self, command: &mut Command) -> io::Result<SpawnedProcess>;
}

static SPAWNER: OnceLock<Arc<dyn ChildSpawner>> = OnceLock::new();

/// Makes `spawner` start every evaluation process from now on (once per process; later calls
/// are ignored).
pub fn set_child_spawner(spawner: Arc<dyn ChildSpawner>) {
    let _ = SPAWNER.set(spawner);
}

pub(crate) fn spawn(command: &mut Command) -> io::Result<SpawnedProcess> {
    match SPAWNER.get() {
        Some(spawner) => spawner.spawn(command),
        None => spawn_subprocess(command),
    }
}

/// The engine's own way: `command` as a subprocess.
pub fn spawn_subprocess(command: &mut Command) -> io::Result<SpawnedProcess> {
    let mut child = command.spawn()?;
    let missing = || io::Error::other("a standard stream of the evaluation process is not piped");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(SpawnedProcess {
        stdin: File::from(std::os::fd::OwnedFd::from(stdin)),
        stdout: File::from(std::os::fd::OwnedFd::from(stdout)),
        stderr: File::from(std::os::fd::OwnedFd::from(stderr)),
        process: Box::new(child),
    })
}
