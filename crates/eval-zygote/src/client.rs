//! The kernel's side: asks its zygote (starting it if none listens) for an evaluation process,
//! and follows that process, which is the zygote's child and not the kernel's.

use crate::wire::{self, Reply, Request};
use crate::{ZygoteError, same_user};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long a kernel waits for its process: a zygote that has just started loads libtorch
/// first (seconds on a cold shared filesystem).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// The variables that change what the zygote loads: kernels that differ in one of them have
/// zygotes of their own.
const LOAD_VARS: [&str; 3] = [
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    child_protocol::env::CHILD_PRELOAD,
];

/// The zygote of this kernel: one per user, executable (the very file), libraries it loads, and
/// cgroup (a Slurm job's: a process forked for a kernel of another job would run, and be
/// accounted, in the first job's).
#[derive(Debug, Clone)]
pub struct Zygote {
    name: Vec<u8>,
    exe: PathBuf,
}

impl Zygote {
    /// The zygote for kernels running `exe` with this process's environment and cgroup.
    pub fn for_executable(exe: PathBuf) -> io::Result<Zygote> {
        let meta = std::fs::metadata(&exe)?;
        let mut key = Vec::new();
        key.extend(exe.as_os_str().as_bytes());
        for n in [
            meta.dev(),
            meta.ino(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
        ] {
            key.extend(n.to_le_bytes());
        }
        for var in LOAD_VARS {
            key.extend(var.as_bytes());
            key.push(b'=');
            key.extend(std::env::var_os(var).unwrap_or_default().as_bytes());
            key.push(0);
        }
        // The libraries themselves: a PyTorch reinstalled in place gets a new zygote (one still
        // serving kernels would otherwise fork processes with the old libtorch loaded).
        let preloaded = std::env::var_os(child_protocol::env::CHILD_PRELOAD).unwrap_or_default();
        for lib in std::env::split_paths(&preloaded) {
            if let Ok(meta) = std::fs::metadata(lib) {
                for n in [meta.dev(), meta.ino(), meta.mtime() as u64, meta.size()] {
                    key.extend(n.to_le_bytes());
                }
            }
        }
        key.extend(std::fs::read("/proc/self/cgroup").unwrap_or_default());
        let uid = rustix::process::getuid().as_raw();
        let name = format!(
            "tch-kernel-zygote-{uid}-{:016x}",
            child_protocol::fnv1a(&key)
        );
        Ok(Zygote {
            name: name.into_bytes(),
            exe,
        })
    }

    /// The abstract socket's name (Linux: no file, gone with the zygote).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// A new evaluation process with environment `env` (all of it) and working directory `cwd`,
    /// forked by the zygote, which is started first if none is listening.
    pub fn spawn(&self, env: &[(OsString, OsString)], cwd: &Path) -> Result<Forked, ZygoteError> {
        let conn = self.connect()?;
        if !same_user(&conn) {
            return Err(ZygoteError::OtherUser);
        }
        let (stdin_read, stdin) = io::pipe()?;
        let (stdout, stdout_write) = io::pipe()?;
        let (stderr, stderr_write) = io::pipe()?;
        let request = Request {
            env: env
                .iter()
                .map(|(name, value)| {
                    let mut entry = name.clone().into_vec();
                    entry.push(b'=');
                    entry.extend(value.as_bytes());
                    entry
                })
                .collect(),
            cwd: cwd.as_os_str().as_bytes().to_vec(),
            umask: current_umask(),
            cpus: allowed_cpus(),
        };
        let streams = [
            stdin_read.as_fd(),
            stdout_write.as_fd(),
            stderr_write.as_fd(),
        ];
        wire::send(&conn, &request, &streams)?;
        drop((stdin_read, stdout_write, stderr_write));
        conn.set_read_timeout(Some(START_TIMEOUT))?;
        let pid = match wire::receive::<Reply>(&conn)? {
            Some((Reply::Started { pid }, _)) => pid,
            Some((Reply::Failed { error }, _)) => return Err(ZygoteError::Failed(error)),
            Some((reply, _)) => return Err(ZygoteError::Failed(format!("{reply:?}"))),
            None => return Err(ZygoteError::Failed("it closed the connection".into())),
        };
        conn.set_read_timeout(None)?;
        Ok(Forked {
            process: ForkedProcess {
                pid,
                conn,
                status: None,
            },
            stdin: File::from(std::os::fd::OwnedFd::from(stdin)),
            stdout: File::from(std::os::fd::OwnedFd::from(stdout)),
            stderr: File::from(std::os::fd::OwnedFd::from(stderr)),
        })
    }

    fn connect(&self) -> Result<UnixStream, ZygoteError> {
        let addr = SocketAddr::from_abstract_name(&self.name).map_err(ZygoteError::Connect)?;
        match UnixStream::connect_addr(&addr) {
            Ok(conn) => return Ok(conn),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(ZygoteError::Connect(e)),
        }
        // It exits as soon as the name is bound (or taken by another kernel's zygote).
        let status = Command::new(&self.exe)
            .env(
                child_protocol::env::ZYGOTE_SOCKET,
                OsString::from_vec(self.name.clone()),
            )
            .env_remove(child_protocol::env::IS_RUNTIME)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(ZygoteError::Start)?;
        if !status.success() {
            return Err(ZygoteError::Start(io::Error::other(format!(
                "it exited with {status}"
            ))));
        }
        UnixStream::connect_addr(&addr).map_err(ZygoteError::Connect)
    }
}

/// A process the zygote forked, and the kernel's ends of its standard streams.
pub struct Forked {
    pub process: ForkedProcess,
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

/// Follows a forked process: its status comes from the zygote, which reaps it.
#[derive(Debug)]
pub struct ForkedProcess {
    pid: i32,
    conn: UnixStream,
    status: Option<ExitStatus>,
}

impl ForkedProcess {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status, if the process has ended (without blocking).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.conn.set_nonblocking(true)?;
            let heard = wire::receive::<Reply>(&self.conn);
            self.conn.set_nonblocking(false)?;
            match heard {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                heard => self.heard(heard?),
            }
        }
        Ok(self.status)
    }

    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        while self.status.is_none() {
            let heard = wire::receive::<Reply>(&self.conn)?;
            self.heard(heard);
        }
        Ok(self.status.unwrap_or_else(|| ExitStatus::from_raw(0)))
    }

    /// SIGKILL, unless it has already ended.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on the pid the zygote has not reaped (it would have told us).
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn heard(&mut self, heard: Option<(Reply, Vec<std::os::fd::OwnedFd>)>) {
        match heard {
            Some((Reply::Exited { status }, _)) => self.status = Some(ExitStatus::from_raw(status)),
            Some(_) => {}
            // The zygote is gone (killed): nobody can tell the status. Wait for the process to
            // be gone too, and say it was killed.
            None => {
                log::warn!(
                    "the zygote of evaluation process {} is gone; its exit status is unknown",
                    self.pid
                );
                // SAFETY: signal 0 checks only that the pid exists.
                while unsafe { libc::kill(self.pid, 0) } == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.status = Some(ExitStatus::from_raw(libc::SIGKILL));
            }
        }
    }
}

/// This process's umask, read (setting it to read it would race with the kernel's threads).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: fills a zeroed cpu_set_t for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}
