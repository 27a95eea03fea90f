//! Code evaluated in every fresh child process (at start and after a restart): a panic hook that
//! reports panics to the kernel as structured lines, and `input()` / `password()`.

/// Starts a panic report line on the child's stdout. Fields are separated by U+001F and
/// percent-escaped, so a report is always one line.
pub(crate) const PANIC_MARKER: &str = "\u{1e}tch-kernel:panic\u{1e}";

/// Starts a rich-output line (display data, update, clear) on the child's stdout, so rich output
/// stays in order with printed text. Same field encoding as panic reports.
pub(crate) const OUTPUT_MARKER: &str = "\u{1e}tch-kernel:output\u{1e}";

/// The panic message of `check_interrupt()`: the cell stopped because the user interrupted it.
pub(crate) const INTERRUPT_PANIC: &str = "KeyboardInterrupt (tch-kernel)";

/// Reply prefixes for input requests, written back to the child's stdin by the parent.
pub(crate) const INPUT_OK: &str = "ok:";
pub(crate) const INPUT_ERR: &str = "err:";

/// Installs the panic hook. Run as a cell (on the thread that runs every cell) after
/// `ITEMS_CELL`, whose functions it uses; it defines no variables. Thread names are no help here: the cell's libstd never named the child's main thread.
pub(crate) const PANIC_HOOK_CELL: &str = r#"{
let __tch_cell_thread = std::thread::current().id();
std::panic::set_hook(Box::new(move |info| {
    let esc = __tch_kernel_esc;
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

/// Functions a kernel without a prelude needs (the prelude, `notebook-helpers`, has richer
/// versions with the same behaviour): `display_mime`, `clear_output`, `interrupted()` and
/// `check_interrupt()`.
pub(crate) const STANDALONE_ITEMS_CELL: &str = r#"
/// Shows `content` (text, or base64 for binary types such as image/png) as a separate output of
/// this cell, in order with printed text.
pub fn display_mime(mime: &str, content: &str) {
    __tch_kernel_emit("display", "", &[(mime, content)]);
}
/// Clears this cell's output; with `wait`, only when the next output arrives (no flicker).
pub fn clear_output(wait: bool) {
    __tch_kernel_emit(if wait { "clear-wait" } else { "clear" }, "", &[]);
}
/// True once the user has interrupted the running cell (the stop button).
pub fn interrupted() -> bool {
    // The evaluation process publishes the address of its interrupt counter (see evcxr's
    // runtime.rs); cells are separate shared objects and cannot link to it.
    let Some(address) = std::env::var("EVCXR_INTERRUPT_COUNTER").ok().and_then(|a| a.parse::<usize>().ok()) else {
        return false;
    };
    // SAFETY: the address of a static AtomicUsize in this process.
    let counter = unsafe { &*(address as *const std::sync::atomic::AtomicUsize) };
    counter.load(std::sync::atomic::Ordering::Relaxed) > 0
}
/// Stops the cell with a KeyboardInterrupt if the user interrupted it. Call it in long loops:
/// variables defined before this cell (a model, an optimizer) are kept.
pub fn check_interrupt() {
    if interrupted() {
        std::panic::panic_any("KeyboardInterrupt (tch-kernel)");
    }
}
"#;

/// Functions every cell can call: `input(prompt)` / `password(prompt)` (a line from the
/// notebook's stdin box), the Debug display of a cell's value, and the output encoding.
pub(crate) const ITEMS_CELL: &str = r#"
/// Shows a cell's final value. The engine first compiles `(&value).evcxr_display()` and only on
/// a compile error falls back to Debug formatting in a second compile; providing the method for
/// every `Debug` type saves that second compile on most cells. It is implemented for `&T`, so
/// that a rich `evcxr_display` for `T` itself (the prelude's, for tensors and plots) is found
/// first.
#[doc(hidden)]
pub trait __TchKernelDisplay {
    fn evcxr_display(&self);
}
impl<T: std::fmt::Debug + ?Sized> __TchKernelDisplay for &T {
    fn evcxr_display(&self) {
        // A cell ending in a loop or a `()` call shows nothing, as in Python.
        if std::any::type_name::<T>() == "()" {
            return;
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "EVCXR_BEGIN_CONTENT text/plain\n{:?}\nEVCXR_END_CONTENT", self);
        let _ = out.flush();
    }
}
/// One-line field encoding shared with the kernel (`unescape` in child_init.rs).
#[doc(hidden)]
pub fn __tch_kernel_esc(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A").replace('\n', "%0A").replace('\r', "%0D").replace('\u{1f}', "%1F")
}
#[doc(hidden)]
pub fn __tch_kernel_emit(kind: &str, id: &str, data: &[(&str, &str)]) {
    let esc = __tch_kernel_esc;
    let mut line = format!("\u{1e}tch-kernel:output\u{1e}{}\u{1f}{}", esc(kind), esc(id));
    for (mime, content) in data {
        line.push('\u{1f}');
        line.push_str(&esc(mime));
        line.push('\u{1f}');
        line.push_str(&esc(content));
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
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
    let esc = __tch_kernel_esc;
    // Mirrors `unescape` in child_init.rs (the kernel escapes replies with `escape`).
    fn unesc(s: &str) -> String {
        s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%1F", "\u{1f}").replace("%25", "%")
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

/// The kernel side of `__tch_kernel_esc`.
pub(crate) fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
        .replace('\u{1f}', "%1F")
}

pub(crate) fn unescape(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%1F", "\u{1f}")
        .replace("%25", "%")
}

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
        let mut parts = fields.split('\u{1f}').map(unescape);
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
        let mut parts = fields.split('\u{1f}').map(unescape);
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
        (!self.location.is_empty() && !self.location.starts_with("src/lib.rs"))
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
        // notebook-helpers (the prelude's display functions) encodes, this crate decodes.
        let data = vec![("text/plain".to_owned(), "x\u{1f}y:1\n2%".to_owned())];
        let line = notebook_helpers::wire::record("update", "id:7", &data);
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

    #[test]
    fn escape_round_trip() {
        let s = "a:b%c\nd\re";
        assert_eq!(unescape(&escape(s)), s);
        assert!(!escape(s).contains([':', '\n']));
    }
}
