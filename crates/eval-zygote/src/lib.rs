//! Evaluation processes forked from a zygote.
//!
//! Every kernel's evaluation process loads libtorch, and about 190 MB of each is libtorch's own
//! start-up (its operator registry on the heap, relocated tables): private to each process when
//! each loads it. A zygote loads it once and forks the processes, so their pages stay shared
//! (copy-on-write). One zygote serves a user's kernels that run the same executable with the
//! same libraries in the same cgroup; it listens on an abstract Unix socket (no file to clean
//! up, gone with it), answers only its own user, and exits after [`LINGER`] with no process to
//! follow.
//!
//! The kernel side is [`Zygote::spawn`]; the zygote's is [`serve_if_asked`], first in `main`.

mod client;
mod server;
mod wire;

pub use client::{Forked, ForkedProcess, Zygote};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a zygote with no process left waits for a kernel before it exits (a kernel's
/// restart, the next notebook opened).
pub const LINGER: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("cannot start the zygote: {0}")]
    Start(std::io::Error),
    #[error("cannot reach the zygote: {0}")]
    Connect(std::io::Error),
    #[error("the zygote's socket belongs to another user")]
    OtherUser,
    #[error("the zygote did not start the process: {0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// In a process started as a zygote ([`child_protocol::env::ZYGOTE_SOCKET`] set): loads what
/// `preload` loads and serves kernels until idle, then exits; in each process it forks, returns
/// `true` (the caller goes on as an evaluation process, with the environment its kernel sent).
/// Elsewhere returns `false` at once. Call it first in `main`, before any thread exists.
///
/// What `preload` returns (why a library did not load) is written to each forked process's
/// stderr, where the kernel shows it as it would from a process that loaded libtorch itself.
pub fn serve_if_asked(preload: impl FnOnce() -> Vec<String>) -> bool {
    let Some(name) = std::env::var_os(child_protocol::env::ZYGOTE_SOCKET) else {
        return false;
    };
    // SAFETY: first in main, single-threaded (the caller's contract).
    unsafe { std::env::remove_var(child_protocol::env::ZYGOTE_SOCKET) };
    use std::os::unix::ffi::OsStrExt;
    let server::Forked = server::run(name.as_bytes(), preload);
    true
}

/// Whether the peer of `conn` is this process's user.
pub(crate) fn same_user(conn: &UnixStream) -> bool {
    rustix::net::sockopt::socket_peercred(conn)
        .is_ok_and(|cred| cred.uid == rustix::process::getuid())
}
