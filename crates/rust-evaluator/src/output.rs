//! Forwards the child's stdout and stderr to an [`OutputSink`] while a cell runs: batched (so a
//! chatty loop does not flood the frontend), in order per stream, and flushed before a cell's
//! result is reported.

use crate::child_output::{DisplayEvent, OUTPUT_MARKER, PANIC_MARKER, PanicReport, STDERR_MARK};
use crossbeam_channel::{Receiver, Sender, select};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where cell output goes. Called from forwarding threads, so it must be thread-safe.
pub trait OutputSink: Send + Sync + 'static {
    fn write(&self, stream: Stream, text: &str);
    /// Rich output; text printed before it has already been written.
    fn display(&self, event: DisplayEvent);
}

/// Batches of at most this size are sent at most every `BATCH_INTERVAL`.
const MAX_BATCH: usize = 64 * 1024;
const BATCH_INTERVAL: Duration = Duration::from_millis(20);

pub(crate) struct Forwarder {
    barrier: Sender<Sender<()>>,
    marks: Arc<Marks>,
}

/// The last [`STDERR_MARK`] a forwarder has passed, everything before it handed to the sink.
#[derive(Default)]
struct Marks {
    last: Mutex<u64>,
    passed: Condvar,
}

impl Forwarder {
    pub(crate) fn spawn(
        lines: Receiver<String>,
        stream: Stream,
        sink: Arc<dyn OutputSink>,
        panics: Arc<Mutex<Option<PanicReport>>>,
        alloc_failed: Arc<AtomicU64>,
    ) -> Forwarder {
        let (barrier_tx, barrier_rx) = crossbeam_channel::unbounded::<Sender<()>>();
        let marks = Arc::new(Marks::default());
        let batch_marks = marks.clone();
        let name = format!("forward-{stream:?}").to_lowercase();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let mut batch = Batch {
                text: String::new(),
                stream,
                sink,
                panics,
                alloc_failed,
                marks: batch_marks,
                last_write: Instant::now(),
            };
            loop {
                select! {
                    recv(lines) -> line => match line {
                        Ok(line) => {
                            batch.push(&line);
                            // Collect what follows within the interval into the same message.
                            let deadline = batch.last_write + BATCH_INTERVAL;
                            while batch.text.len() < MAX_BATCH {
                                match lines.recv_deadline(deadline) {
                                    Ok(line) => batch.push(&line),
                                    Err(_) => break,
                                }
                            }
                            batch.write();
                        }
                        Err(_) => break,
                    },
                    recv(barrier_rx) -> ack => {
                        for line in lines.try_iter() {
                            batch.push(&line);
                        }
                        batch.write();
                        if let Ok(ack) = ack {
                            let _ = ack.send(());
                        }
                    }
                }
            }
            batch.write();
        });
        if let Err(e) = spawned {
            log::error!("cannot start the output forwarder: {e}");
        }
        Forwarder {
            barrier: barrier_tx,
            marks,
        }
    }

    /// Waits until the mark numbered `token` has passed (see [`STDERR_MARK`]); false after
    /// `timeout` (a child that died before writing it).
    pub(crate) fn wait_for_mark(&self, token: u64, timeout: Duration) -> bool {
        let last = self
            .marks
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (last, _) = self
            .marks
            .passed
            .wait_timeout_while(last, timeout, |last| *last < token)
            .unwrap_or_else(PoisonError::into_inner);
        *last >= token
    }

    /// Returns once every line already received has been handed to the sink.
    pub(crate) fn flush(&self) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.barrier.send(ack_tx).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

struct Batch {
    text: String,
    stream: Stream,
    sink: Arc<dyn OutputSink>,
    panics: Arc<Mutex<Option<PanicReport>>>,
    /// The size in Rust's "memory allocation of N bytes failed" (then the process aborts).
    alloc_failed: Arc<AtomicU64>,
    marks: Arc<Marks>,
    last_write: Instant,
}

impl Batch {
    fn push(&mut self, line: &str) {
        if let Some(token) = line
            .strip_prefix(STDERR_MARK)
            .and_then(|t| t.parse::<u64>().ok())
        {
            self.write();
            *self
                .marks
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = token;
            self.marks.passed.notify_all();
            return;
        }
        if let Some(at) = line.find(OUTPUT_MARKER) {
            if at > 0 {
                self.text.push_str(&line[..at]);
                self.text.push('\n');
            }
            // Keep order: everything printed before the display goes out first.
            self.write();
            match DisplayEvent::decode(&line[at + OUTPUT_MARKER.len()..]) {
                Some(event) => self.sink.display(event),
                None => log::warn!("malformed display line from the child"),
            }
            return;
        }
        // The child's panic hook reports on stdout, in order with the cell's own output.
        if let Some(at) = line.find(PANIC_MARKER) {
            self.text.push_str(&line[..at]);
            if at > 0 {
                self.text.push('\n');
            }
            let report = PanicReport::decode(&line[at + PANIC_MARKER.len()..]);
            if report.on_main_thread {
                *self.panics.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
            } else {
                // A panic in a thread the cell spawned is not the cell's failure; show it.
                self.text.push_str(&report.describe());
                self.text.push('\n');
            }
            return;
        }
        if self.stream == Stream::Stderr
            && let Some(bytes) = line
                .strip_prefix("memory allocation of ")
                .and_then(|rest| rest.strip_suffix(" bytes failed"))
                .and_then(|n| n.parse::<u64>().ok())
        {
            self.alloc_failed.store(bytes, Ordering::SeqCst);
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn write(&mut self) {
        if !self.text.is_empty() {
            self.sink.write(self.stream, &self.text);
            self.text.clear();
        }
        self.last_write = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected(Mutex<String>);

    impl OutputSink for Collected {
        fn write(&self, _stream: Stream, text: &str) {
            self.0.lock().unwrap().push_str(text);
        }
        fn display(&self, _event: DisplayEvent) {}
    }

    /// Lines that reach the forwarder late (still in the pipe when the cell ended) are out
    /// before the mark is: waiting for the mark waits for them, and the mark is not shown.
    #[test]
    fn everything_before_a_mark_is_out_when_it_has_passed() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let sink = Arc::new(Collected::default());
        let forwarder = Forwarder::spawn(
            rx,
            Stream::Stderr,
            sink.clone(),
            Arc::default(),
            Arc::default(),
        );
        let writer = std::thread::spawn(move || {
            for i in 0..50 {
                tx.send(format!("line {i}")).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            tx.send(format!("{STDERR_MARK}1")).unwrap();
            tx
        });
        assert!(forwarder.wait_for_mark(1, Duration::from_secs(60)));
        let text = sink.0.lock().unwrap().clone();
        assert_eq!(text.lines().count(), 50, "{text}");
        assert!(text.ends_with("line 49\n") && !text.contains(STDERR_MARK));
        let _tx = writer.join().unwrap();
        assert!(
            !forwarder.wait_for_mark(2, Duration::from_millis(10)),
            "a mark not yet written"
        );
    }
}
