//! The kernel's side of the child's line protocol (`child-protocol`): decoding the rich-output
//! records and panic reports the evaluation child writes on its stdout.

pub(crate) use child_protocol::{
    FIELD_SEP, INPUT_ERR, INPUT_OK, INTERRUPT_PANIC, OUTPUT_MARKER, PANIC_MARKER, STDERR_MARK,
    escape, unescape,
};

/// Rich output sent by a cell.
#[derive(Debug, Clone, PartialEq)]
pub enum DisplayEvent {
    /// New output (`update: false`) or a replacement of the output with `display_id`.
    Display {
        data: Vec<(String, String)>,
        display_id: Option<String>,
        update: bool,
    },
    Clear {
        wait: bool,
    },
}

impl DisplayEvent {
    pub(crate) fn decode(fields: &str) -> Option<DisplayEvent> {
        let mut parts = fields.split(FIELD_SEP).map(unescape);
        let kind = parts.next()?;
        let id = parts.next().filter(|id| !id.is_empty());
        let rest: Vec<String> = parts.collect();
        let data = rest
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        match kind.as_str() {
            "display" => Some(DisplayEvent::Display {
                data,
                display_id: id,
                update: false,
            }),
            "update" => Some(DisplayEvent::Display {
                data,
                display_id: id,
                update: true,
            }),
            "clear" => Some(DisplayEvent::Clear { wait: false }),
            "clear-wait" => Some(DisplayEvent::Clear { wait: true }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PanicReport {
    pub(crate) on_main_thread: bool,
    pub(crate) thread: String,
    pub(crate) location: String,
    pub(crate) message: String,
}

impl PanicReport {
    pub(crate) fn decode(fields: &str) -> PanicReport {
        let mut parts = fields.split(FIELD_SEP).map(unescape);
        let thread = parts.next().unwrap_or_default();
        let location = parts.next().unwrap_or_default();
        let message = parts.next().unwrap_or_default();
        PanicReport {
            on_main_thread: thread == "main",
            thread,
            location,
            message,
        }
    }

    /// Where the panic happened, unless it is inside the generated cell crate (meaningless to
    /// the user, whose code is shown with the error instead).
    pub(crate) fn user_location(&self) -> Option<&str> {
        (!self.location.is_empty()
            && !self.location.starts_with("src/lib.rs")
            // Inside a crate from the registry (tch's wrappers of libtorch, mostly): a path
            // a newcomer cannot use; the message says what went wrong.
            && !self.location.contains("/registry/src/"))
        .then_some(self.location.as_str())
    }

    pub(crate) fn describe(&self) -> String {
        match self.user_location() {
            Some(loc) => format!(
                "thread '{}' panicked at {loc}:\n{}",
                self.thread, self.message
            ),
            None => format!("thread '{}' panicked:\n{}", self.thread, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_report_round_trip() {
        let line = format!(
            "main\u{1f}{}\u{1f}{}",
            "src/lib.rs:3:5", "bad%0Athing 100%25"
        );
        let r = PanicReport::decode(&line);
        assert!(r.on_main_thread);
        assert_eq!(r.message, "bad\nthing 100%");
        assert_eq!(r.user_location(), None);
        let r = PanicReport::decode("worker\u{1f}/x/tch/src/lib.rs:1:1\u{1f}oops");
        assert!(!r.on_main_thread);
        assert_eq!(r.user_location(), Some("/x/tch/src/lib.rs:1:1"));
    }

    #[test]
    fn display_events_decode() {
        let e = DisplayEvent::decode("display\u{1f}\u{1f}text/html\u{1f}<b>a%0Ab</b>").unwrap();
        assert_eq!(
            e,
            DisplayEvent::Display {
                data: vec![("text/html".into(), "<b>a\nb</b>".into())],
                display_id: None,
                update: false
            }
        );
        assert_eq!(
            DisplayEvent::decode("clear-wait\u{1f}"),
            Some(DisplayEvent::Clear { wait: true })
        );
        assert_eq!(DisplayEvent::decode("bogus\u{1f}"), None);
    }

    #[test]
    fn records_from_the_prelude_helpers_decode() {
        // notebook-helpers (the prelude's display functions) and the cells' items encode with
        // child-protocol, this crate decodes.
        let data = vec![("text/plain".to_owned(), "x\u{1f}y:1\n2%".to_owned())];
        let line = child_protocol::output_record("update", "id:7", &[("text/plain", &data[0].1)]);
        let fields = line
            .strip_prefix(OUTPUT_MARKER)
            .expect("same marker on both sides");
        assert_eq!(
            DisplayEvent::decode(fields),
            Some(DisplayEvent::Display {
                data,
                display_id: Some("id:7".into()),
                update: true
            })
        );
        assert_eq!(notebook_helpers::INTERRUPT_PANIC, INTERRUPT_PANIC);
    }
}
