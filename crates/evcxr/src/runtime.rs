// Copyright 2020 The Evcxr Authors.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option. This file may not be
// copied, modified, or distributed except according to those terms.

use crate::errors::Error;
use crate::errors::bail;
use once_cell::sync::Lazy;
use regex::Regex;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;
use std::{self};

pub(crate) const EVCXR_IS_RUNTIME_VAR: &str = child_protocol::env::IS_RUNTIME;
pub(crate) const EVCXR_EXECUTION_COMPLETE: &str = "EVCXR_EXECUTION_COMPLETE";
/// tch-kernel: a cell's shared object could not be loaded (or its entry point found); the
/// loader's message follows (escaped), then [`EVCXR_EXECUTION_COMPLETE`]. The process keeps
/// running: nothing of the cell ran, so the variables are as they were.
pub(crate) const LOAD_FAILED: &str = "EVCXR_LOAD_FAILED";
pub(crate) const WRAP_RUSTC_ENV: &str = "EVCXR_RUSTC_WRAPPER";
pub(crate) const FORCE_DYLIB_ENV: &str = "EVCXR_FORCE_DYLIB";

/// tch-kernel: cooperative interrupt. In the child, SIGINT does not kill the process; it
/// increments this counter, which cell code polls (`check_interrupt()` in tch-kernel) to stop
/// cleanly so that the variables of earlier cells survive. The counter is found through the
/// environment variable [`INTERRUPT_COUNTER_ENV`] (its address in this process), because cells
/// are separate shared objects that cannot link to the executable's symbols. It is reset after
/// each cell. The parent kills the child if the cell does not stop in time.
pub static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
pub const INTERRUPT_COUNTER_ENV: &str = child_protocol::INTERRUPT_COUNTER_ENV;

/// tch-kernel: what `password()` returned in this process (child-protocol's
/// `PasswordRecord`), found by cells through [`child_protocol::PASSWORDS_ENV`]; a variable that
/// holds one is not written to a snapshot.
static PASSWORDS: child_protocol::PasswordRecord = child_protocol::PasswordRecord::new();

fn publish_password_record() {
    // SAFETY: called once at start-up, before the child runs any cell or starts threads.
    unsafe {
        std::env::set_var(
            child_protocol::PASSWORDS_ENV,
            child_protocol::counter_value(&PASSWORDS as *const _ as usize),
        );
    }
}

/// Whether a stored value holds what `password()` returned.
fn holds_password(value: &dyn std::any::Any) -> bool {
    value
        .downcast_ref::<String>()
        .is_some_and(|s| PASSWORDS.holds(s))
}

/// What a snapshot holds for a variable that holds a password: why it is not saved.
fn password_not_saved() -> crate::evcxr_internal_runtime::SaverWrite {
    Box::new(|path: &std::path::Path| {
        let text = child_protocol::snapshot_format::SnapshotHeader::unsaved(
            std::any::type_name::<String>(),
            "it holds a password (never written to disk)".to_owned(),
        )
        .to_text();
        std::fs::write(path, &text).map_err(|e| e.to_string())?;
        Ok(text.len() as u64)
    })
}

fn install_interrupt_handler() {
    extern "C" fn on_interrupt(_signal: libc::c_int) {
        INTERRUPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    // SAFETY: called once at start-up, before the child runs any cell or starts threads; the
    // handler only touches an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        // tch-kernel: tagged with this process's id, so that programs a cell starts (which
        // inherit the variable) do not take the counter for theirs.
        std::env::set_var(
            INTERRUPT_COUNTER_ENV,
            child_protocol::counter_value(
                &INTERRUPTS as *const std::sync::atomic::AtomicUsize as usize,
            ),
        );
    }
}

/// tch-kernel: the child must not outlive the kernel. A kernel that is killed (Jupyter's forced
/// shutdown), or that exits while a cell runs (its client gone), would leave the child running
/// that cell for ever: an endless loop at 100% of a core, or a GPU's memory held. A thread
/// waits for the kernel's end on a pidfd (Linux 5.3); where there is none, it checks once a
/// second that the kernel still is this process's parent, or alive when it is not the parent
/// (a child forked by the kernel's zygote).
fn watch_parent() {
    let kernel = kernel_pid();
    // SAFETY: getppid has no preconditions.
    let started_by_kernel = unsafe { libc::getppid() } == kernel;
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, kernel, 0) } as libc::c_int;
    if pidfd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        // SAFETY: ends the process without running anything else; the kernel is gone.
        unsafe { libc::_exit(0) };
    }
    let gone = move || {
        if started_by_kernel {
            // SAFETY: as above.
            unsafe { libc::getppid() != kernel }
        } else {
            // SAFETY: signal 0 only checks that the process exists.
            let failed = unsafe { libc::kill(kernel, 0) } != 0;
            failed && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
    };
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            if pidfd >= 0 {
                let mut fd = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; readable once the kernel has exited.
                while unsafe { libc::poll(&mut fd, 1, -1) } < 0 {}
            } else {
                while !gone() {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(0) };
        });
    if let Err(e) = spawned {
        eprintln!("cannot watch the parent process: {e}");
    }
}

/// tch-kernel: the kernel this process evaluates for: its parent, unless the kernel had it
/// forked by another process and said so (`child_protocol::env::KERNEL_PID`).
fn kernel_pid() -> libc::pid_t {
    std::env::var(child_protocol::env::KERNEL_PID)
        .ok()
        .and_then(|pid| pid.parse().ok())
        // SAFETY: getppid has no preconditions.
        .unwrap_or_else(|| unsafe { libc::getppid() })
}

/// Binaries can call this just after staring. If we detect that we're actually running as a
/// subprocess, control will not return. There are two kinds of subprocesses that we may be acting
/// as (1) the process that loads and runs the user code and (2) a wrapper around rustc.
pub fn runtime_hook() {
    if std::env::var(EVCXR_IS_RUNTIME_VAR).is_ok() {
        allow_parent_debugger();
        Runtime::new().run_loop();
    }
    if std::env::var(WRAP_RUSTC_ENV).is_ok() {
        crate::module::wrap_rustc();
    }
}

/// tch-kernel: lets the process that started this one (the kernel) and its children, a DAP
/// adapter among them, attach a debugger. Where Yama's `ptrace_scope` is 1 (many clusters),
/// only a process's ancestors may otherwise, and the adapter is its sibling. Nothing happens
/// where Yama is not in use (`EINVAL`).
fn allow_parent_debugger() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PTRACER takes a pid and changes nothing in this process's memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_PTRACER,
            kernel_pid() as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

// tch-kernel: the store's saver type is child-protocol's (checked here, at compile time).
const _: fn(
    child_protocol::snapshot_format::SnapshotSaver,
) -> crate::evcxr_internal_runtime::Saver = |saver| saver;

/// tch-kernel: snapshots of the variables (child-protocol's `snapshot_format`). After each cell, the
/// savers of the variables it stored run here (cheap: shallow copies), then a forked copy of
/// this process writes the files, so the next cell starts at once: the fork sees the variables
/// as they were when the cell ended, whatever the next cell does to them.
struct Snapshots {
    dir: std::path::PathBuf,
    /// The fork writing (or that wrote) the last snapshot, if any.
    writer: Option<Writer>,
    /// The variables the last snapshot knew: a cell that only drops one still writes (its file
    /// goes).
    names: Vec<String>,
    cells: u64,
}

impl Snapshots {
    fn from_env() -> Option<Snapshots> {
        let dir = std::path::PathBuf::from(std::env::var_os(
            child_protocol::snapshot_format::SNAPSHOT_DIR_ENV,
        )?);
        // The variables' values: this user's only (the cache may be on shared scratch).
        if let Err(e) = private_files::create_dir_all(&dir) {
            eprintln!("snapshots are off: cannot create {}: {e}", dir.display());
            return None;
        }
        Some(Snapshots {
            dir,
            writer: None,
            names: Vec::new(),
            cells: 0,
        })
    }

    fn take(&mut self, store: &mut crate::evcxr_internal_runtime::VariableStore) {
        self.cells += 1;
        if let Some(writer) = &self.writer {
            let changed = store
                .variables
                .iter()
                .any(|v| v.changed && v.saver.is_some());
            match writer.stop_unless_done(changed) {
                WriterState::Running => return,
                WriterState::Succeeded => {}
                // It failed, or was stopped before it finished (each file it finished holds a
                // whole variable; its lock goes with it): the snapshot to write is of everything.
                WriterState::Failed | WriterState::Stopped => mark_all_changed(store),
            }
            self.writer = None;
        }
        let names: Vec<String> = store.variables.iter().map(|v| v.name.clone()).collect();
        let mut writes = Vec::new();
        for v in &mut store.variables {
            let (true, Some(saver)) = (v.changed, v.saver) else {
                continue;
            };
            v.changed = false;
            // Its file says why it is not there, and replaces an older one of the same name.
            if holds_password(&*v.value) {
                writes.push((v.name.clone(), password_not_saved()));
                continue;
            }
            let value: &dyn std::any::Any = &*v.value;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| saver(value))) {
                Ok(write) => writes.push((v.name.clone(), write)),
                Err(_) => eprintln!("snapshot: the saver of `{}` panicked", v.name),
            }
        }
        if writes.is_empty() && names == self.names {
            return;
        }
        // Taken here and inherited, so that the directory is locked from the fork on: a kernel
        // starting a new process after this one died waits for the writer before it moves the
        // files (the writer may not run at once, at idle priority).
        let lock = match lock_dir(&self.dir) {
            Ok(lock) => lock,
            Err(e) => {
                eprintln!("snapshot: cannot lock {}: {e}", self.dir.display());
                mark_all_changed(store);
                return;
            }
        };
        // SAFETY: the fork runs only the writes (which read memory and write files), std's file
        // calls and malloc (whose locks glibc's fork takes care of), then `_exit`s.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("snapshot: fork failed: {}", std::io::Error::last_os_error());
                mark_all_changed(store);
            }
            0 => {
                let code = write_snapshot(&self.dir, writes, &names, self.cells);
                drop(lock);
                // SAFETY: ends the fork without running this process's exit handlers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                self.writer = Some(Writer::reaped_on_exit(pid));
                self.names = names;
            }
        }
        // This process's descriptor closes; the writer's keeps the lock (one open file, shared).
        drop(lock);
    }
}

/// How the last snapshot's writer stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WriterState {
    Running,
    Succeeded,
    Failed,
    /// Killed by [`Writer::stop_unless_done`] before it finished.
    Stopped,
}

/// A snapshot writer, reaped by a thread of its own as soon as it exits (no zombie process
/// waits for the next cell).
struct Writer {
    pid: libc::pid_t,
    /// `None` while the writer runs, then its wait status. The reaper takes this lock before it
    /// reaps, so that under it an unreaped pid is still the writer's and can be killed.
    status: std::sync::Arc<std::sync::Mutex<Option<libc::c_int>>>,
}

impl Writer {
    fn reaped_on_exit(pid: libc::pid_t) -> Writer {
        let status = std::sync::Arc::new(std::sync::Mutex::new(None));
        let reaper_status = status.clone();
        let reaper = move || {
            // SAFETY: waits for our own child; WNOWAIT leaves it unreaped until the lock is held.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            let mut slot = reaper_status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut wait_status = 0;
            // SAFETY: reaps our own child, which has exited.
            unsafe { libc::waitpid(pid, &mut wait_status, 0) };
            *slot = Some(wait_status);
        };
        if let Err(e) = std::thread::Builder::new()
            .name("snapshot-reaper".into())
            .spawn(reaper)
        {
            eprintln!("snapshot: cannot watch the writer: {e}");
        }
        Writer { pid, status }
    }

    /// The writer's state; one still running is killed if `stop` (a newer snapshot replaces
    /// what it writes).
    fn stop_unless_done(&self, stop: bool) -> WriterState {
        let status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *status {
            None if stop => {
                // SAFETY: not reaped yet (its reaper needs this lock), so the pid is still ours.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                WriterState::Stopped
            }
            None => WriterState::Running,
            Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => WriterState::Succeeded,
            Some(_) => WriterState::Failed,
        }
    }
}

/// Every variable is written by the next snapshot (the last one did not finish). Here, not in
/// the store: the store's module is compiled into every cell.
fn mark_all_changed(store: &mut crate::evcxr_internal_runtime::VariableStore) {
    for v in &mut store.variables {
        v.changed = true;
    }
}

/// The snapshot directory's lock (`flock`, held until the file closes in every process).
fn lock_dir(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let lock = private_files::create(&dir.join(child_protocol::snapshot_format::SNAPSHOT_LOCK))?;
    // SAFETY: a valid descriptor. Blocks only while a writer just killed is still exiting.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock)
}

/// A line on this process's stderr with one `write` (in the fork, where std's stderr lock may
/// have been held by another thread when it forked).
fn say(text: &str) {
    let line = format!("{text}\n");
    // SAFETY: writes a buffer we own to descriptor 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// In the fork: writes each changed variable's file (to a temporary name, then renamed), removes
/// the files of variables that are gone, then the status line. Returns the exit code.
fn write_snapshot(
    dir: &std::path::Path,
    writes: Vec<(String, crate::evcxr_internal_runtime::SaverWrite)>,
    names: &[String],
    cell: u64,
) -> i32 {
    use child_protocol::snapshot_format::{SNAPSHOT_EXT, SNAPSHOT_STATUS};
    use std::os::fd::AsRawFd;
    // Every file it writes holds a user's values: 0600 whatever the notebook's umask (this
    // process only: files a cell writes keep the user's).
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(0o077) };
    // Not the kernel's pipes: what this process says goes to the directory's log.
    if let Ok(log) = std::fs::File::create(dir.join("log")) {
        // SAFETY: dup2 onto stdout and stderr, which this process no longer shares.
        unsafe {
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
    // Background work: the next cell's compile and run come first, for the CPU and the disk.
    // SAFETY: plain system calls on this process.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
        // ioprio_set(IOPRIO_WHO_PROCESS, this process, IOPRIO_CLASS_IDLE << 13)
        libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
    }
    // Its pages are shared with the evaluation process until it exits: if memory runs out, the
    // out-of-memory killer takes the writer first, not the notebook.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let started = std::time::Instant::now();
    // One pass over the directory: what a writer stopped mid-file left, and the files of
    // variables that are gone (none of which this writer writes).
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let leftover = path.extension().is_some_and(|e| e == "tmp");
        let gone = path.extension().is_some_and(|e| e == SNAPSHOT_EXT)
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|stem| !names.iter().any(|n| n == stem));
        if leftover || gone {
            let _ = std::fs::remove_file(path);
        }
    }
    let (mut bytes, mut written, mut failed) = (0u64, 0usize, 0usize);
    for (name, write) in writes {
        let path = dir.join(format!("{name}.{SNAPSHOT_EXT}"));
        let tmp = dir.join(format!("{name}.{SNAPSHOT_EXT}.tmp"));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&tmp))) {
            Ok(Ok(n)) => match std::fs::rename(&tmp, &path) {
                Ok(()) => {
                    bytes += n;
                    written += 1;
                }
                Err(e) => {
                    say(&format!("{name}: {e}"));
                    failed += 1;
                }
            },
            Ok(Err(e)) => {
                say(&format!("{name}: {e}"));
                let _ = std::fs::remove_file(&tmp);
                failed += 1;
            }
            Err(_) => {
                let _ = std::fs::remove_file(&tmp);
                failed += 1;
            }
        }
    }
    let status = format!(
        "cell {cell}: {written} variables written, {bytes} bytes, {} ms, {failed} failed\n",
        started.elapsed().as_millis()
    );
    let tmp = dir.join(format!("{SNAPSHOT_STATUS}.tmp"));
    if std::fs::write(&tmp, status).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(SNAPSHOT_STATUS));
    }
    i32::from(failed > 0)
}

struct Runtime {
    shared_objects: Vec<libloading::Library>,
    variable_store_ptr: *mut std::os::raw::c_void,
    snapshots: Option<Snapshots>,
    /// tch-kernel: the variables' names as last reported (see `describe_variables`).
    described_names: Vec<String>,
    // Our variable store is permitted to contain non-Send types (e.g. Rc), therefore we need to be
    // non-Send as well.
    _phantom_rc: PhantomData<Rc<()>>,
}

impl Runtime {
    fn new() -> Runtime {
        Runtime {
            shared_objects: Vec::new(),
            variable_store_ptr: std::ptr::null_mut(),
            snapshots: Snapshots::from_env(),
            described_names: Vec::new(),
            _phantom_rc: PhantomData,
        }
    }

    fn run_loop(&mut self) -> ! {
        use std::io::BufRead;

        self.install_crash_handlers();
        // tch-kernel: cooperative interrupt (see `INTERRUPTS`).
        install_interrupt_handler();
        publish_password_record();
        watch_parent();

        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if let Err(error) = self.handle_line(&line) {
                eprintln!("While processing instruction `{line:?}`, got error: {error:?}",);
                std::process::exit(99);
            }
        }
        std::process::exit(0);
    }

    fn handle_line(&mut self, line: &io::Result<String>) -> Result<(), Error> {
        let line = line.as_ref()?;
        // tch-kernel: a third field, the run's number, for the stderr mark.
        static LOAD_AND_RUN: Lazy<Regex> =
            Lazy::new(|| Regex::new("LOAD_AND_RUN ([^ ]+) ([^ ]+)(?: ([0-9]+))?").unwrap());
        if let Some(captures) = LOAD_AND_RUN.captures(line) {
            let mark = captures.get(3).and_then(|m| m.as_str().parse().ok());
            self.load_and_run(&captures[1], &captures[2], mark)
        } else {
            bail!("Unrecognised line: {}", line);
        }
    }

    /// tch-kernel: `mark`, the run's number, goes on stderr after the run (child-protocol's
    /// `STDERR_MARK`), before its end on stdout: the kernel waits for it to have all the run's
    /// stderr, instead of guessing how long the pipe takes.
    fn load_and_run(
        &mut self,
        so_path: &str,
        fn_name: &str,
        mark: Option<u64>,
    ) -> Result<(), Error> {
        let end_stderr = || {
            if let Some(mark) = mark {
                eprintln!("{}{mark}", child_protocol::STDERR_MARK);
            }
        };
        use std::os::raw::c_void;
        // tch-kernel: a cell that cannot be loaded fails alone; upstream ended the process
        // (status 99), and every variable with it.
        let loaded = unsafe { libloading::Library::new(so_path) }.and_then(|library| {
            let user_fn = *unsafe {
                library.get::<extern "C" fn(*mut c_void) -> *mut c_void>(fn_name.as_bytes())
            }?;
            Ok((library, user_fn))
        });
        let (shared_object, user_fn) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                // libloading's own text is "dlopen failed"; the loader's (`dlerror`) is its source.
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message = cause.to_string();
                    source = cause.source();
                }
                println!(
                    "{LOAD_FAILED} {}",
                    crate::evcxr_internal_runtime::escape_line(&message)
                );
                end_stderr();
                println!("{EVCXR_EXECUTION_COMPLETE}");
                return Ok(());
            }
        };
        self.variable_store_ptr = user_fn(self.variable_store_ptr);
        let store = self.variable_store_ptr as *mut crate::evcxr_internal_runtime::VariableStore;
        if !store.is_null() {
            // SAFETY: the store cells built and handed back; no cell runs now.
            self.describe_variables(unsafe { &mut *store });
        }
        // tch-kernel: an interrupt the cell never looked at is not for the next cell. One that
        // arrives while the next cell compiles (the parent sends it only while a cell is being
        // evaluated) is kept, and stops that cell at its first check.
        INTERRUPTS.store(0, std::sync::atomic::Ordering::SeqCst);
        end_stderr();
        println!("{EVCXR_EXECUTION_COMPLETE}");
        self.shared_objects.push(shared_object);
        // tch-kernel: after the kernel has the cell's end, so its reply is not delayed.
        if let Some(snapshots) = &mut self.snapshots
            && !store.is_null()
        {
            // SAFETY: the store cells built and handed back; no cell runs now.
            snapshots.take(unsafe { &mut *store });
        }
        Ok(())
    }

    /// tch-kernel: tells the kernel (before the run's end, child-protocol's `VARIABLES_MARKER`)
    /// which variables the store holds and what the ones the run stored look like: their
    /// describers run here, so the debugger's Variables panel needs no cell of its own. Only
    /// what changed is described; a describer that panics describes nothing.
    fn describe_variables(&mut self, store: &mut crate::evcxr_internal_runtime::VariableStore) {
        let mut described = serde_json::Map::new();
        for variable in store.variables.iter_mut().filter(|v| !v.described) {
            variable.described = true;
            let Some(describe) = variable.describer else {
                continue;
            };
            let value = &*variable.value;
            if let Ok(text) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| describe(value)))
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            {
                described.insert(variable.name.clone(), json);
            }
        }
        let mut names: Vec<String> = store.variables.iter().map(|v| v.name.clone()).collect();
        names.sort();
        if described.is_empty() && names == self.described_names {
            return;
        }
        println!(
            "{}{}",
            child_protocol::VARIABLES_MARKER,
            serde_json::json!({ "names": names, "described": described })
        );
        self.described_names = names;
    }

    #[cfg(all(unix, not(target_os = "freebsd")))]
    pub fn install_crash_handlers(&self) {
        use backtrace::Backtrace;
        use sig::ffi::Sig;
        extern "C" fn segfault_handler(signal: i32) {
            eprintln!(
                "{}",
                match signal {
                    Sig::SEGV => "Segmentation fault.",
                    Sig::ILL => "Illegal instruction.",
                    Sig::BUS => "Bus error.",
                    _ => "Unexpected signal.",
                }
            );
            eprintln!("{:?}", Backtrace::new());
            std::process::abort();
        }

        signal!(Sig::SEGV, segfault_handler);
        signal!(Sig::ILL, segfault_handler);
        signal!(Sig::BUS, segfault_handler);
    }

    #[cfg(not(all(unix, not(target_os = "freebsd"))))]
    pub fn install_crash_handlers(&self) {}
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // We never actually unload libraries. This is to prevent segfault on shutdown due to TLS
        // destructors being run that have been unloaded. See ``tests::tls_implementing_drop`. There
        // was some discussion of a similar issue on Mac OS at
        // https://github.com/rust-lang/rust/issues/28794. Other possible options that might be
        // worthwhile investigating are to (A) unregister atexit on unload and leak (B) unregister
        // atexit on unload and run destructor (C) when registering atexit hooks, dlopen the shared
        // object so as to increment its refcount. (D) start a new thread and make sure it
        // terminates before we unload anything. (A) and (B) might be complicated by there not being
        // an API to unregister atexit hooks. This could possibly be solved by building a layer on
        // top of atexit. That extra layer then would need to not be unloaded, but the code that
        // used it could be.
        for shared_object in self.shared_objects.drain(..) {
            std::mem::forget(shared_object);
        }
    }
}
