//! Code evaluated in every fresh child process (at start and after a restart): a panic hook that
//! reports panics to the kernel as structured lines, and `input()` / `password()`.

/// Starts a panic report line on the child's stdout. Fields are separated by U+001F and
/// percent-escaped, so a report is always one line.
pub(crate) const PANIC_MARKER: &str = "\u{1e}tch-kernel:panic\u{1e}";

/// Reply prefixes for input requests, written back to the child's stdin by the parent.
pub(crate) const INPUT_OK: &str = "ok:";
pub(crate) const INPUT_ERR: &str = "err:";

/// Installs the panic hook. Run as a cell (on the thread that runs every cell); it defines no
/// variables. Thread names are no help here: the cell's libstd never named the child's main thread.
pub(crate) const PANIC_HOOK_CELL: &str = r#"{
let __tch_cell_thread = std::thread::current().id();
std::panic::set_hook(Box::new(move |info| {
    fn esc(s: &str) -> String {
        s.replace('%', "%25").replace('\n', "%0A").replace('\r', "%0D").replace('\u{1f}', "%1F")
    }
    let payload = info.payload();
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
    let current = std::thread::current();
    let thread = if current.id() == __tch_cell_thread { "main" } else { current.name().unwrap_or("<unnamed>") };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}{}\u{1f}{}\u{1f}{}", "\u{1e}tch-kernel:panic\u{1e}", esc(thread), esc(&location), esc(&message));
    let _ = out.flush();
}));
}"#;

/// `input(prompt)` and `password(prompt)`: a line from the notebook's stdin box.
pub(crate) const INPUT_ITEMS_CELL: &str = r#"
/// Asks the notebook user for a line of text (Jupyter `input_request`).
/// Panics with a clear message when the frontend does not allow input (e.g. nbconvert).
pub fn input(prompt: &str) -> String {
    __tch_kernel_input(prompt, false)
}
/// Like `input`, but the frontend hides what is typed.
pub fn password(prompt: &str) -> String {
    __tch_kernel_input(prompt, true)
}
#[doc(hidden)]
pub fn __tch_kernel_input(prompt: &str, password: bool) -> String {
    fn esc(s: &str) -> String {
        s.replace('%', "%25").replace(':', "%3A").replace('\n', "%0A").replace('\r', "%0D")
    }
    fn unesc(s: &str) -> String {
        s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%25", "%")
    }
    let tag = if password { "EVCXR_INPUT_REQUEST_PASSWORD" } else { "EVCXR_INPUT_REQUEST" };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}:{}", tag, esc(prompt));
        let _ = out.flush();
    }
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        panic!("input(): the kernel closed the input channel");
    }
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(value) = line.strip_prefix("ok:") {
        unesc(value)
    } else {
        panic!("input(): {}", unesc(line.strip_prefix("err:").unwrap_or(line)))
    }
}
"#;

pub(crate) fn escape(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A").replace('\n', "%0A").replace('\r', "%0D")
}

pub(crate) fn unescape(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%1F", "\u{1f}")
        .replace("%25", "%")
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
        let mut parts = fields.split('\u{1f}').map(unescape);
        let thread = parts.next().unwrap_or_default();
        let location = parts.next().unwrap_or_default();
        let message = parts.next().unwrap_or_default();
        PanicReport { on_main_thread: thread == "main", thread, location, message }
    }

    /// Where the panic happened, unless it is inside the generated cell crate (meaningless to
    /// the user, whose code is shown with the error instead).
    pub(crate) fn user_location(&self) -> Option<&str> {
        (!self.location.is_empty() && !self.location.starts_with("src/lib.rs")).then_some(self.location.as_str())
    }

    pub(crate) fn describe(&self) -> String {
        match self.user_location() {
            Some(loc) => format!("thread '{}' panicked at {loc}:\n{}", self.thread, self.message),
            None => format!("thread '{}' panicked:\n{}", self.thread, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_report_round_trip() {
        let line = format!("main\u{1f}{}\u{1f}{}", "src/lib.rs:3:5", "bad%0Athing 100%25");
        let r = PanicReport::decode(&line);
        assert!(r.on_main_thread);
        assert_eq!(r.message, "bad\nthing 100%");
        assert_eq!(r.user_location(), None);
        let r = PanicReport::decode("worker\u{1f}/x/tch/src/lib.rs:1:1\u{1f}oops");
        assert!(!r.on_main_thread);
        assert_eq!(r.user_location(), Some("/x/tch/src/lib.rs:1:1"));
    }

    #[test]
    fn escape_round_trip() {
        let s = "a:b%c\nd\re";
        assert_eq!(unescape(&escape(s)), s);
        assert!(!escape(s).contains([':', '\n']));
    }
}
