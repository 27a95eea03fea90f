//! The one-line records a cell writes on stdout for rich output. The kernel side is
//! `rust-evaluator`'s `output.rs` (its tests decode what [`record`] encodes).
//!
//! A record is `MARKER kind US id (US mime US content)*` where US is U+001F and every field is
//! percent-escaped, so that a record is always exactly one line.

use std::io::Write;

/// Starts a rich-output record.
pub const OUTPUT_MARKER: &str = "\u{1e}tch-kernel:output\u{1e}";

/// Escapes a field: `%`, `:`, newlines and the separator.
pub fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
        .replace('\u{1f}', "%1F")
}

/// A record for `kind` (`display`, `update`, `clear`, `clear-wait`) and display id `id`.
pub fn record(kind: &str, id: &str, data: &[(String, String)]) -> String {
    let mut line = format!("{OUTPUT_MARKER}{}\u{1f}{}", escape(kind), escape(id));
    for (mime, content) in data {
        line.push('\u{1f}');
        line.push_str(&escape(mime));
        line.push('\u{1f}');
        line.push_str(&escape(content));
    }
    line
}

/// True inside a tch-kernel (evcxr) evaluation process. Outside one (a program exported with
/// `tch-kernel export`, a batch job) output is printed as plain text instead of records.
pub fn in_kernel() -> bool {
    static IN_KERNEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_KERNEL.get_or_init(|| std::env::var_os("EVCXR_IS_RUNTIME").is_some())
}

/// Writes a record and flushes, so it is ordered with everything printed before it. Outside a
/// kernel: the text/plain part as a line (nothing for `clear`).
pub(crate) fn emit(kind: &str, id: &str, data: &[(String, String)]) {
    if !in_kernel() {
        if let Some((_, text)) = data.iter().find(|(m, _)| m == "text/plain") {
            println!("{text}");
        }
        return;
    }
    let line = record(kind, id, data);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_whatever_the_content() {
        let line = record(
            "display",
            "id:1",
            &[("text/plain".into(), "a\nb\u{1f}c%d\r".into())],
        );
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert_eq!(line.matches('\u{1f}').count(), 3);
        assert!(line.ends_with("a%0Ab%1Fc%25d%0D"));
        assert!(line.contains("id%3A1"));
    }
}
