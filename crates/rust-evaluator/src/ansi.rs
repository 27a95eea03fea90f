//! The colours of what the kernel writes in a notebook (error tracebacks, hints), as ANSI
//! sequences, which Jupyter's frontends render. One palette for the kernel and the evaluator.

pub const RED: &str = "\x1b[0;31m";
pub const BOLD: &str = "\x1b[1m";
/// A hint line's label, as rustc's `help` is shown in colour.
pub const BOLD_CYAN: &str = "\x1b[1;36m";
pub const RESET: &str = "\x1b[0m";
