// Compiled into the first cell of a kernel without a prelude, after items.rs. The prelude
// (notebook-helpers) has richer versions of these with the same behaviour.

/// Shows `content` (text, or base64 for binary types such as image/png) as a separate output of
/// this cell, in order with printed text.
pub fn display_mime(mime: &str, content: &str) {
    __tch_kernel_emit("display", "", &[(mime, content)]);
}
/// Clears this cell's output now.
pub fn clear_output() {
    __tch_kernel_emit("clear", "", &[]);
}
/// Clears this cell's output when the next output arrives (no flicker).
pub fn clear_output_wait() {
    __tch_kernel_emit("clear-wait", "", &[]);
}
/// True once the user has interrupted the running cell (the stop button).
pub fn interrupted() -> bool {
    // SAFETY: the address of a static AtomicUsize of this process (see items.rs).
    unsafe { &*__tch_kernel_find_counter() }.load(std::sync::atomic::Ordering::Relaxed) > 0
}
/// Stops the cell with a KeyboardInterrupt if the user interrupted it. Call it in long loops:
/// variables defined before this cell (a model, an optimizer) are kept.
pub fn check_interrupt() {
    if interrupted() {
        std::panic::panic_any(__tch_kernel_protocol::INTERRUPT_PANIC);
    }
}
