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
    counter_named(std::env::var(INTERRUPT_COUNTER_ENV).ok().as_deref())
}

/// The counter `value` (of [`INTERRUPT_COUNTER_ENV`]) names, if this process set it.
fn counter_named(value: Option<&str>) -> Option<&'static AtomicUsize> {
    let address = child_protocol::counter_address(value?)?;
    // SAFETY: the evaluation process stored the address of a static AtomicUsize there; it lives
    // as long as the process. Outside a kernel the variable is absent, and another process's
    // value is refused above.
    Some(unsafe { &*(address as *const AtomicUsize) })
}

fn raised(counter: Option<&AtomicUsize>) -> bool {
    counter.is_some_and(|c| c.load(Ordering::Relaxed) > 0)
}

/// True once the user has interrupted the running cell (the stop button, or `jupyter` sending
/// an interrupt).
pub fn interrupted() -> bool {
    raised(counter())
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
        // This test process has no counter: nothing is raised, and the check passes.
        assert!(counter().is_none());
        assert!(!interrupted());
        check_interrupt();
    }

    #[test]
    fn the_counter_of_this_process_stops_a_cell_and_another_process_s_does_not() {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let value = child_protocol::counter_value(&COUNTER as *const AtomicUsize as usize);
        let found = counter_named(Some(&value)).expect("this process's counter");
        assert!(std::ptr::eq(found, &COUNTER));
        assert!(!raised(Some(found)));
        COUNTER.store(1, Ordering::Relaxed);
        assert!(raised(Some(found)));
        // A program a cell started inherits the variable: the counter is not its own.
        let inherited = value.replacen(
            &std::process::id().to_string(),
            &(std::process::id() + 1).to_string(),
            1,
        );
        assert!(counter_named(Some(&inherited)).is_none());
        assert!(counter_named(None).is_none());
    }
}
