//! The evaluation child's life as one state machine: which cell it runs, whether the user asked
//! it to stop, whether it was killed, and the restart and restore that follow its death.
//!
//! ```text
//!            begin_cell                 interrupt (SIGINT)
//!   Idle ───────────────▶ Running ─────────────────────▶ InterruptAsked
//!    ▲  ▲                   │                              │   │
//!    │  │      end_cell     │      end_cell                │   │ second interrupt, or
//!    │  └───────────────────┴──────────────────────────────┘   │ the grace period over
//!    │                      │                                  ▼   (SIGKILL)
//!    │                      │ the child died                Killed
//!    │                      ▼                                  │ end_cell
//!    │   recovered      Restarting ◀───────────────────────────┘
//!    └──────────────── (restarted, then Restoring while the snapshot's cells run)
//! ```
//!
//! The evaluator (one thread) drives every transition but the interrupt's, which comes from the
//! kernel's control thread, and the kill, which comes from the interrupt or from its watchdog.
//! All of them go through one lock, so the watchdog never kills a cell that has ended, and an
//! interrupt between cells (or while the child restarts) does nothing.

use evcxr::ProcessHandle;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Where the evaluation child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Between cells: an interrupt does nothing.
    Idle,
    /// Cell number `cell` compiles or runs.
    Running { cell: u64 },
    /// The user interrupted cell `cell`: the child was asked to stop (SIGINT, which polls and
    /// `check_interrupt()` see); it is killed if the cell has not ended after the grace period.
    InterruptAsked { cell: u64 },
    /// The child running cell `cell` was killed (a second interrupt, or the grace period over).
    Killed { cell: u64 },
    /// The child died: the engine starts a new one, which gets its panic hook.
    Restarting,
    /// The new child gets the variables back from the snapshot; cells that run now are the
    /// restore's, and a crash in one is not followed by another restore.
    Restoring,
}

/// How a cell's run ended, as far as interrupts go (see [`ChildLife::end_cell`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellEnd {
    /// Nobody interrupted it.
    Ran,
    /// The user interrupted it and it stopped by itself (at a poll) or ended anyway.
    InterruptAsked,
    /// The user interrupted it and the child was killed.
    Killed,
}

struct Inner {
    state: ChildState,
    /// The number of the last cell begun.
    cells: u64,
    /// The state a cell's end returns to (`Restoring` while the restore's cells run).
    after_cell: ChildState,
}

/// The child's state, shared by the evaluator, the interrupter and the watchdog.
pub(crate) struct ChildLife {
    inner: Mutex<Inner>,
    changed: Condvar,
    child: ProcessHandle,
    grace: Duration,
}

impl ChildLife {
    /// `child`: the engine's handle on the process (valid across its restarts); `grace`: how
    /// long an interrupted cell may take to stop before the child is killed.
    pub(crate) fn new(child: ProcessHandle, grace: Duration) -> Arc<ChildLife> {
        Arc::new(ChildLife {
            inner: Mutex::new(Inner {
                state: ChildState::Idle,
                cells: 0,
                after_cell: ChildState::Idle,
            }),
            changed: Condvar::new(),
            child,
            grace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, inner: &mut Inner, state: ChildState) {
        log::trace!("child: {:?} -> {state:?}", inner.state);
        inner.state = state;
        self.changed.notify_all();
    }

    pub(crate) fn state(&self) -> ChildState {
        self.lock().state
    }

    /// A cell starts (from `Idle`, or from `Restoring` for the restore's own cells).
    pub(crate) fn begin_cell(&self) -> u64 {
        let mut inner = self.lock();
        debug_assert!(
            matches!(inner.state, ChildState::Idle | ChildState::Restoring),
            "a cell begins in {:?}",
            inner.state
        );
        inner.after_cell = match inner.state {
            ChildState::Restoring => ChildState::Restoring,
            _ => ChildState::Idle,
        };
        inner.cells += 1;
        let cell = inner.cells;
        self.set(&mut inner, ChildState::Running { cell });
        cell
    }

    /// The cell's run is over (whatever became of the child): says whether it was interrupted,
    /// and returns to `Idle` (or `Restoring`).
    pub(crate) fn end_cell(&self) -> CellEnd {
        let mut inner = self.lock();
        let end = match inner.state {
            ChildState::InterruptAsked { .. } => CellEnd::InterruptAsked,
            ChildState::Killed { .. } => CellEnd::Killed,
            _ => CellEnd::Ran,
        };
        let after = inner.after_cell;
        self.set(&mut inner, after);
        end
    }

    /// The child died: a new one is being started.
    pub(crate) fn restarting(&self) {
        let mut inner = self.lock();
        self.set(&mut inner, ChildState::Restarting);
    }

    /// The new child is getting the variables back.
    pub(crate) fn restoring(&self) {
        let mut inner = self.lock();
        self.set(&mut inner, ChildState::Restoring);
    }

    /// Back between cells, after a restart or a restore.
    pub(crate) fn recovered(&self) {
        let mut inner = self.lock();
        inner.after_cell = ChildState::Idle;
        self.set(&mut inner, ChildState::Idle);
    }

    /// The user's interrupt: the first asks the running cell to stop and starts the watchdog;
    /// a second one kills the child. Anything else (no cell running) is ignored.
    pub(crate) fn interrupt(self: &Arc<Self>) {
        let mut inner = self.lock();
        match inner.state {
            ChildState::Running { cell } => {
                let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
                if let Ok(None) = child.try_wait() {
                    // SAFETY: kill(2) on our own child's pid, which is not reaped (`try_wait`),
                    // and cannot be while this thread holds the handle's lock (the engine reaps
                    // through the same handle), so the pid is not reused.
                    if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) } != 0 {
                        log::debug!("interrupt: SIGINT: {}", std::io::Error::last_os_error());
                    }
                }
                drop(child);
                self.set(&mut inner, ChildState::InterruptAsked { cell });
                drop(inner);
                let life = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("interrupt-watchdog".into())
                    .spawn(move || life.kill_unless_stopped(cell));
                if let Err(e) = spawned {
                    log::warn!("cannot start the interrupt watchdog: {e}");
                }
            }
            ChildState::InterruptAsked { cell } => self.kill(&mut inner, cell),
            _ => log::debug!("interrupt ignored: the child is {:?}", inner.state),
        }
    }

    /// The watchdog: kills the child if cell `cell` is still asked to stop after the grace
    /// period. Wakes as soon as the state changes, so it never outlives the cell.
    fn kill_unless_stopped(&self, cell: u64) {
        let asked = ChildState::InterruptAsked { cell };
        let inner = self.lock();
        let (mut inner, _) = self
            .changed
            .wait_timeout_while(inner, self.grace, |inner| inner.state == asked)
            .unwrap_or_else(PoisonError::into_inner);
        if inner.state == asked {
            log::info!(
                "the cell did not stop within {:?} of the interrupt; restarting the child",
                self.grace
            );
            self.kill(&mut inner, cell);
        }
    }

    fn kill(&self, inner: &mut Inner, cell: u64) {
        if let Err(e) = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill()
        {
            log::debug!("interrupt: kill: {e}");
        }
        self.set(inner, ChildState::Killed { cell });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that sleeps until killed; SIGINT (the default action) would end it too, so it
    /// ignores SIGINT as the evaluation child does.
    fn sleeper() -> ProcessHandle {
        let child = std::process::Command::new("sh")
            .args(["-c", "trap '' INT; exec sleep 600"])
            .spawn()
            .unwrap();
        // A test may interrupt it at once: wait until the trap is in place (SIGINT ignored),
        // or the shell dies of it.
        let status = format!("/proc/{}/status", child.id());
        let ignores_int = || {
            std::fs::read_to_string(&status).unwrap().lines().any(|l| {
                l.strip_prefix("SigIgn:")
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                    .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
            })
        };
        while !ignores_int() {
            std::thread::yield_now();
        }
        Arc::new(Mutex::new(Box::new(child)))
    }

    fn wait_for(life: &ChildLife, state: ChildState) {
        let inner = life.lock();
        let (inner, timeout) = life
            .changed
            .wait_timeout_while(inner, Duration::from_secs(30), |i| i.state != state)
            .unwrap();
        assert!(!timeout.timed_out(), "still {:?}", inner.state);
    }

    #[test]
    fn an_interrupt_between_cells_does_nothing() {
        let child = sleeper();
        let life = ChildLife::new(child.clone(), Duration::from_millis(10));
        life.interrupt();
        assert_eq!(life.state(), ChildState::Idle);
        assert!(child.lock().unwrap().try_wait().unwrap().is_none(), "alive");
        life.restarting();
        life.interrupt();
        assert_eq!(life.state(), ChildState::Restarting);
        child.lock().unwrap().kill().unwrap();
    }

    #[test]
    fn a_cell_that_stops_in_time_keeps_the_child() {
        let child = sleeper();
        let life = ChildLife::new(child.clone(), Duration::from_secs(600));
        let cell = life.begin_cell();
        life.interrupt();
        assert_eq!(life.state(), ChildState::InterruptAsked { cell });
        assert_eq!(life.end_cell(), CellEnd::InterruptAsked);
        assert_eq!(life.state(), ChildState::Idle);
        assert!(child.lock().unwrap().try_wait().unwrap().is_none(), "alive");
        // The next cell is not the interrupted one: it runs.
        let next = life.begin_cell();
        assert_eq!(next, cell + 1);
        assert_eq!(life.end_cell(), CellEnd::Ran);
        child.lock().unwrap().kill().unwrap();
    }

    #[test]
    fn the_grace_period_or_a_second_interrupt_kills() {
        let child = sleeper();
        let life = ChildLife::new(child.clone(), Duration::from_millis(50));
        let cell = life.begin_cell();
        life.interrupt();
        wait_for(&life, ChildState::Killed { cell });
        assert!(child.lock().unwrap().wait().is_ok());
        assert_eq!(life.end_cell(), CellEnd::Killed);

        let child = sleeper();
        let life = ChildLife::new(child.clone(), Duration::from_secs(600));
        let cell = life.begin_cell();
        life.interrupt();
        life.interrupt();
        assert_eq!(life.state(), ChildState::Killed { cell });
        assert!(child.lock().unwrap().wait().is_ok());
    }

    #[test]
    fn the_restores_cells_return_to_restoring() {
        let child = sleeper();
        let life = ChildLife::new(child.clone(), Duration::from_secs(600));
        life.restarting();
        life.restoring();
        life.begin_cell();
        assert_eq!(life.end_cell(), CellEnd::Ran);
        assert_eq!(life.state(), ChildState::Restoring);
        life.recovered();
        life.begin_cell();
        life.end_cell();
        assert_eq!(life.state(), ChildState::Idle);
        child.lock().unwrap().kill().unwrap();
    }
}
