//! The zygote: a process that has loaded libtorch and forks evaluation processes for the kernels
//! of its user that ask. It stays single-threaded, so that each fork is a copy of a process in a
//! known state (no lock held by a thread that the fork would not have).

use crate::wire::{self, Reply, Request};
use crate::{LINGER, same_user};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// What [`run`] returns in a forked process: it goes on as an evaluation
/// process, with the request's environment and working directory, and libtorch loaded.
pub(crate) struct Forked;

/// The write end of the pipe that SIGCHLD's handler wakes the loop with.
static SIGCHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; a full pipe already says "a child ended".
    unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
}

/// Binds `name`, detaches from the kernel that started it, loads what `preload` loads, then
/// serves until idle. Returns only in a forked evaluation process; the zygote itself exits.
pub(crate) fn run(name: &[u8], preload: impl FnOnce() -> Vec<String>) -> Forked {
    let listener =
        match SocketAddr::from_abstract_name(name).and_then(|a| UnixListener::bind_addr(&a)) {
            Ok(listener) => listener,
            // Another kernel's zygote won the name: the kernel connects to that one.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => exit(0),
            Err(_) => exit(1),
        };
    // The kernel waits for this process: it exits once the name is bound (connections queue
    // from now on), and the zygote goes on in its own session, outside the kernel's process
    // group (a kernel's shutdown kills that group).
    // SAFETY: single-threaded here; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => exit(1),
        0 => {}
        _ => exit(0),
    }
    // SAFETY: no preconditions; fails only for a group leader, which a fork is not.
    unsafe { libc::setsid() };
    let notes = preload();

    let (wake_read, wake_write) = match wake_pipe() {
        Ok(pipe) => pipe,
        Err(_) => exit(1),
    };
    SIGCHLD_PIPE.store(wake_write.as_raw_fd(), Ordering::Relaxed);
    set_sigchld(on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t);

    // Each running process, with the connection its status goes to (gone if the kernel hung up).
    let mut children: HashMap<libc::pid_t, Option<UnixStream>> = HashMap::new();
    loop {
        let mut fds = vec![pollfd(listener.as_raw_fd()), pollfd(wake_read.as_raw_fd())];
        // The processes whose kernel still listens, in the order of their `fds[2..]`.
        let mut watched = Vec::new();
        for (pid, conn) in &children {
            if let Some(conn) = conn {
                fds.push(pollfd(conn.as_raw_fd()));
                watched.push(*pid);
            }
        }
        let timeout = if children.is_empty() {
            LINGER.as_millis() as libc::c_int
        } else {
            -1
        };
        // SAFETY: `fds` is a valid array of pollfds for its length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready == 0 && children.is_empty() {
            exit(0);
        }
        if ready < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            drain(&wake_read);
            reap(&mut children);
        }
        // A kernel hangs up only when it no longer waits for the status (it exited): the
        // process still runs until it sees its kernel gone, and is reaped then.
        for (fd, pid) in fds[2..].iter().zip(&watched) {
            if fd.revents != 0 {
                children.insert(*pid, None);
            }
        }
        if fds[0].revents & libc::POLLIN != 0
            && let Ok((conn, _)) = listener.accept()
        {
            match start(&conn, &notes) {
                Served::Started(pid) => {
                    children.insert(pid, Some(conn));
                }
                Served::Refused => {}
                // The zygote's descriptors (listener, pipe, kernels' connections) close as this
                // returns; the fork's standard streams are the kernel's pipes already.
                Served::InFork => {
                    set_sigchld(libc::SIG_DFL);
                    return Forked;
                }
            }
        }
    }
}

enum Served {
    Started(libc::pid_t),
    Refused,
    /// This is the new process.
    InFork,
}

/// Serves one request: forks, and answers with the pid, or says why not.
fn start(conn: &UnixStream, notes: &[String]) -> Served {
    if !same_user(conn) {
        return Served::Refused;
    }
    // A kernel sends its request at once; one that does not is not waited for.
    if conn
        .set_read_timeout(Some(Duration::from_secs(10)))
        .is_err()
    {
        return Served::Refused;
    }
    let Ok(Some((request, streams))) = wire::receive::<Request>(conn) else {
        return Served::Refused;
    };
    let Ok(streams) = <[OwnedFd; 3]>::try_from(streams) else {
        let error = "expected 3 descriptors".to_owned();
        let _ = wire::send(conn, &Reply::Failed { error }, &[]);
        return Served::Refused;
    };
    // SAFETY: single-threaded; the fork only sets itself up and returns to main.
    match unsafe { libc::fork() } {
        -1 => {
            let error = io::Error::last_os_error().to_string();
            let _ = wire::send(conn, &Reply::Failed { error }, &[]);
            Served::Refused
        }
        0 => {
            for (target, fd) in streams.iter().enumerate() {
                // SAFETY: both are open descriptors; dup2 clears close-on-exec on the copy.
                unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) };
            }
            become_evaluation_process(request);
            for note in notes {
                eprintln!("{note}");
            }
            Served::InFork
        }
        pid => match wire::send(conn, &Reply::Started { pid }, &[]) {
            Ok(()) => Served::Started(pid),
            // The kernel is gone before it heard: the process sees that and exits.
            Err(_) => Served::Refused,
        },
    }
}

fn become_evaluation_process(request: Request) {
    // SAFETY (all of it): the fork is single-threaded, so the environment may be changed.
    let old: Vec<OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    for name in old {
        unsafe { std::env::remove_var(name) };
    }
    for entry in request.env {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (entry[..eq].to_vec(), entry[eq + 1..].to_vec());
        if !name.is_empty() {
            unsafe { std::env::set_var(OsString::from_vec(name), OsString::from_vec(value)) };
        }
    }
    let _ = std::env::set_current_dir(OsString::from_vec(request.cwd));
    // SAFETY: umask and sched_setaffinity change only this process's settings.
    unsafe {
        libc::umask(request.umask as libc::mode_t);
        if !request.cpus.is_empty() {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in request.cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Reaps every ended process and sends its status to its kernel (which then has its answer: the
/// connection closes).
fn reap(children: &mut HashMap<libc::pid_t, Option<UnixStream>>) {
    loop {
        let mut status = 0;
        // SAFETY: reaps any ended child of this process, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(Some(conn)) = children.remove(&pid) {
            let _ = wire::send(&conn, &Reply::Exited { status }, &[]);
        }
    }
}

fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which are then owned here.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both were just opened and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a local buffer from a non-blocking pipe until it is empty.
    while unsafe { libc::read(fd.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

fn set_sigchld(handler: libc::sighandler_t) {
    // SAFETY: installs a handler that only writes to a pipe (or the default one).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: ends the process without running the kernel binary's exit handlers.
    unsafe { libc::_exit(code) }
}
