//! Rust cell evaluation for a notebook kernel.
//!
//! Each cell is compiled by rustc into a shared object and run inside a long-lived child process
//! that keeps variables between cells. The engine is the `evcxr` crate; this crate wraps it in a
//! small interface ([`Evaluator`]) so the kernel never depends on evcxr's types, adds what a
//! notebook needs on top (streamed output, panics reported as errors, interrupts, a child that
//! restarts after a crash with a clear message) and answers `is_complete` for Rust.

mod child_init;
mod completeness;
mod evaluator;
mod output;

pub use child_init::DisplayEvent;
pub use completeness::{completeness, Completeness};
pub use evaluator::{
    Completions, EvalError, EvalOutput, Evaluator, EvaluatorConfig, InputRequest, Interrupter,
    StartError,
};
pub use output::{OutputSink, Stream};

/// Must be the first call in `main` of any binary that creates an [`Evaluator`]: the same
/// executable is re-launched as the evaluation child (and as a rustc wrapper), and this call
/// takes over in those roles and never returns.
pub fn child_process_hook() {
    evcxr::runtime_hook();
}
