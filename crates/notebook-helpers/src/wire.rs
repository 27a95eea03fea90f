//! The one-line records a cell writes on stdout for rich output, in `child-protocol`'s format
//! (`rust-evaluator` decodes them on the kernel side).

use std::io::Write;

/// True inside a tch-kernel (evcxr) evaluation process. Outside one (a program exported with
/// `tch-kernel export`, a batch job) output is printed as plain text instead of records.
/// A program started from a cell inherits the evaluation process's environment; the interrupt
/// counter's variable names that process, so such a program knows it is outside.
pub fn in_kernel() -> bool {
    static IN_KERNEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_KERNEL.get_or_init(|| {
        std::env::var_os(child_protocol::env::IS_RUNTIME).is_some()
            && crate::interrupt::counter().is_some()
    })
}

/// Writes a record and flushes, so it is ordered with everything printed before it. Outside a
/// kernel: pictures and tables to files, the rest as text (see `batch_output`).
pub(crate) fn emit(kind: &str, id: &str, data: &[(String, String)]) {
    if !in_kernel() {
        crate::batch_output::show(kind, id, data);
        return;
    }
    let data: Vec<(&str, &str)> = data.iter().map(|(m, c)| (m.as_str(), c.as_str())).collect();
    let line = child_protocol::output_record(kind, id, &data);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
