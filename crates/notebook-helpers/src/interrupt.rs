//! Cooperative interrupt. The evaluation process turns the kernel's SIGINT into a counter (see
//! the evcxr fork's `runtime.rs`) and publishes its address in an environment variable; a cell
//! is a separate shared object and cannot link to it. The counter is reset after each cell, so
//! an interrupt sent while a cell still compiles stops it at its first check.

use std::sync::atomic::{AtomicUsize, Ordering};

use child_protocol::INTERRUPT_COUNTER_ENV;
/// The panic message of [`check_interrupt`]; the kernel reports it as a KeyboardInterrupt.
pub use child_protocol::INTERRUPT_PANIC;

/// The evaluation process's counter; `None` outside a kernel, and in a program a cell started
/// (it inherits the variable, but the counter is in another process).
pub(crate) fn counter() -> Option<&'static AtomicUsize> {
    let address = child_protocol::counter_address(&std::env::var(INTERRUPT_COUNTER_ENV).ok()?)?;
    // SAFETY: the evaluation process stored the address of a static AtomicUsize there; it lives
    // as long as the process. Outside a kernel the variable is absent.
    Some(unsafe { &*(address as *const AtomicUsize) })
}

/// True once the user has interrupted the running cell (the stop button, or `jupyter` sending
/// an interrupt).
pub fn interrupted() -> bool {
    counter().is_some_and(|c| c.load(Ordering::Relaxed) > 0)
}

/// Stops the cell with a KeyboardInterrupt if the user has interrupted it. Call it in long
/// loops (a [`progress`](crate::progress) bar does, at every step): the variables defined before
/// this cell, such as a model and its optimizer, are kept. A cell that does not stop within a
/// few seconds of an interrupt is stopped by restarting the evaluation process, which loses
/// every variable.
pub fn check_interrupt() {
    if interrupted() {
        std::panic::panic_any(INTERRUPT_PANIC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_kernel_nothing_is_interrupted() {
        // The test process has no counter; the functions must not misbehave.
        assert!(!interrupted());
        check_interrupt();
    }
}
