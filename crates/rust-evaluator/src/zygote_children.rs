//! Evaluation processes forked by the user's zygote (`crates/eval-zygote`), so that a node's
//! notebooks share libtorch's start-up pages and a kernel's process starts at once. Where the
//! zygote cannot serve (no abstract sockets, a zygote of another user squatting the name), the
//! process is started as a subprocess, as the engine does by default.

use std::ffi::OsString;
use std::io;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Makes the engine have every evaluation process forked by this kernel's zygote; `pid` is set
/// to each new process's id (usage_request counts it and what it starts: it is not below the
/// kernel). Call once, before the evaluator starts.
pub fn fork_children_from_zygote(pid: Arc<AtomicU32>) {
    let zygote = match std::env::current_exe().and_then(eval_zygote::Zygote::for_executable) {
        Ok(zygote) => Some(zygote),
        Err(e) => {
            log::warn!("no zygote for evaluation processes ({e}); each starts libtorch itself");
            None
        }
    };
    evcxr::set_child_spawner(Arc::new(ZygoteSpawner {
        zygote,
        pid,
        warned: AtomicBool::new(false),
    }));
}

/// In the child hook: serves as the zygote when started as one (never returning there); `true`
/// in a process it forked, which has loaded what `preload` loads already.
pub(crate) fn serve_if_zygote(preload: impl FnOnce() -> Vec<String>) -> bool {
    eval_zygote::serve_if_asked(preload)
}

struct ZygoteSpawner {
    zygote: Option<eval_zygote::Zygote>,
    pid: Arc<AtomicU32>,
    warned: AtomicBool,
}

impl evcxr::ChildSpawner for ZygoteSpawner {
    fn spawn(&self, command: &mut Command) -> io::Result<evcxr::SpawnedProcess> {
        // A fork gets no arguments of its own (the zygote's are empty, as the engine's are).
        if let (Some(zygote), None) = (&self.zygote, command.get_args().next()) {
            let cwd = match command.get_current_dir() {
                Some(dir) => dir.to_path_buf(),
                None => std::env::current_dir()?,
            };
            match zygote.spawn(&environment_of(command), &cwd) {
                Ok(forked) => {
                    self.pid.store(forked.process.id(), Ordering::SeqCst);
                    return Ok(evcxr::SpawnedProcess {
                        process: Box::new(ZygoteChild(forked.process)),
                        stdin: forked.stdin,
                        stdout: forked.stdout,
                        stderr: forked.stderr,
                    });
                }
                Err(e) if !self.warned.swap(true, Ordering::SeqCst) => {
                    log::warn!("evaluation processes start libtorch themselves: {e}")
                }
                Err(e) => log::debug!("no zygote: {e}"),
            }
        }
        let spawned = evcxr::spawn_subprocess(command)?;
        self.pid.store(spawned.process.id(), Ordering::SeqCst);
        Ok(spawned)
    }
}

/// All of the environment `command` would run with: this process's, changed as the command
/// says, and the kernel's pid (the process is not its child: see `child_protocol::env::KERNEL_PID`).
fn environment_of(command: &Command) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => env.insert(name.to_owned(), value.to_owned()),
            None => env.remove(name),
        };
    }
    env.insert(
        child_protocol::env::KERNEL_PID.into(),
        std::process::id().to_string().into(),
    );
    env.into_iter().collect()
}

struct ZygoteChild(eval_zygote::ForkedProcess);

impl evcxr::EvalProcess for ZygoteChild {
    fn id(&self) -> u32 {
        self.0.id()
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }
    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait()
    }
    fn kill(&mut self) -> io::Result<()> {
        self.0.kill()
    }
}

#[cfg(test)]
mod tests {
    use super::environment_of;

    #[test]
    fn the_environment_is_the_commands_with_the_kernels_pid() {
        let mut command = std::process::Command::new("x");
        command.env("ZYGOTE_TEST_SET", "1").env_remove("PATH");
        let env = environment_of(&command);
        let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(get("ZYGOTE_TEST_SET"), Some("1".into()));
        assert_eq!(get("PATH"), None);
        let pid = std::process::id().to_string();
        assert_eq!(get(child_protocol::env::KERNEL_PID), Some(pid.into()));
    }
}
