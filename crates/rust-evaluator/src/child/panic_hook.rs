// Run as a cell (a block, on the thread that runs every cell) after items.rs: installs the
// panic hook that reports panics to the kernel as one structured line each. Thread names are
// no help to tell the cell's thread: the cell's libstd never named the child's main thread.
{
    let __tch_cell_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        use __tch_kernel_protocol::{FIELD_SEP, PANIC_MARKER, escape};
        let payload = info.payload();
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_string()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let current = std::thread::current();
        let thread = if current.id() == __tch_cell_thread {
            "main"
        } else {
            current.name().unwrap_or("<unnamed>")
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let (thread, location, message) = (escape(thread), escape(&location), escape(&message));
        let _ = writeln!(
            out,
            "{PANIC_MARKER}{thread}{FIELD_SEP}{location}{FIELD_SEP}{message}"
        );
        let _ = out.flush();
    }));
}
