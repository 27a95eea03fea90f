//! The line protocol between the evaluation child (the process where cells run) and the
//! kernel. The child writes lines on its stdout (printed text, rich-output records, panic
//! reports, final values, input requests) and reads input replies on its stdin; this crate is
//! the one place for those lines' markers and encodings.
//!
//! Three sides use it: the kernel (rust-evaluator decodes, the evcxr fork reads the lines),
//! the prelude's helpers (notebook-helpers encodes records), and code compiled into every cell
//! of a kernel, which gets this crate's own source ([`SOURCE`]) as a module, so that even a
//! kernel without the prelude speaks the same protocol.

include!("markers.rs");
include!("fields.rs");

/// Environment variables, named once (not in [`SOURCE`]).
pub mod env;

/// Snapshots of variables (not in [`SOURCE`]: cells get the store's own copy of the types).
pub mod snapshot_format;

/// This crate's definitions as Rust source, for a module of the cell crate.
pub const SOURCE: &str = concat!(include_str!("markers.rs"), include_str!("fields.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_belongs_to_the_process_that_set_it() {
        assert_eq!(counter_address(&counter_value(4096)), Some(4096));
        let other = format!("{}:4096", std::process::id().wrapping_add(1));
        assert_eq!(
            counter_address(&other),
            None,
            "inherited by a child process"
        );
        assert_eq!(counter_address("4096"), None);
        assert_eq!(counter_address(&counter_value(0)), None, "null");
        assert_eq!(counter_address(&counter_value(4097)), None, "misaligned");
        assert_eq!(counter_address("x:y"), None);
    }

    #[test]
    fn a_password_record_knows_what_it_saw_and_forgets_the_oldest() {
        let record = PasswordRecord::new();
        assert!(!record.holds(""), "an empty record holds nothing");
        record.add("hunter2");
        assert!(record.holds("hunter2"));
        assert!(!record.holds("hunter3"));
        for i in 0..PASSWORD_SLOTS {
            record.add(&format!("token-{i}"));
        }
        assert!(!record.holds("hunter2"), "the oldest is forgotten");
        assert!(record.holds(&format!("token-{}", PASSWORD_SLOTS - 1)));
    }

    #[test]
    fn escape_round_trip() {
        let s = "a:b%c\nd\re\u{1f}f%3A";
        assert_eq!(unescape(&escape(s)), s);
        assert!(!escape(s).contains([':', '\n', '\r', FIELD_SEP]));
    }

    #[test]
    fn a_record_is_one_line_whatever_the_content() {
        let line = output_record("display", "id:1", &[("text/plain", "a\nb\u{1f}c%d\r")]);
        assert!(line.starts_with(OUTPUT_MARKER));
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert_eq!(line.matches(FIELD_SEP).count(), 3);
        assert!(line.ends_with("a%0Ab%1Fc%25d%0D"));
        assert!(line.contains("id%3A1"));
    }

    #[test]
    fn the_source_is_the_crate() {
        assert!(SOURCE.contains("pub fn escape") && SOURCE.contains("pub const OUTPUT_MARKER"));
        assert!(
            !SOURCE.contains("//!"),
            "inner docs would not compile inside a module"
        );
    }
}
