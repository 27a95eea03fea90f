//! What a cell that builds crates (a `:dep`) shows while it waits: one output line, updated in
//! place, naming the crate cargo is compiling, and at the end how many were built and in how
//! long. Without it the cell sat silent for as long as its crates took (half a minute for
//! `image`), with cargo's lines in the server's log only.

use crate::child_output::DisplayEvent;
use crate::output::OutputSink;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub(crate) struct BuildProgress {
    sink: Arc<dyn OutputSink>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Counts builds, so each one's line has a display id of its own.
    builds: u64,
    /// The line of the build under way, once it compiled a crate.
    display_id: Option<String>,
    crates: Vec<String>,
    started: Option<Instant>,
}

impl BuildProgress {
    pub(crate) fn new(sink: Arc<dyn OutputSink>) -> Arc<BuildProgress> {
        Arc::new(BuildProgress {
            sink,
            state: Mutex::new(State::default()),
        })
    }

    /// cargo's `Compiling NAME VERSION` line for a dependency.
    pub(crate) fn compiling(&self, line: &str) {
        let what = line.strip_prefix("Compiling ").unwrap_or(line).to_owned();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let started = *state.started.get_or_insert_with(Instant::now);
        let name = what.split(' ').next().unwrap_or(&what).to_owned();
        state.crates.push(name);
        let update = state.display_id.is_some();
        let display_id = match &state.display_id {
            Some(id) => id.clone(),
            None => {
                state.builds += 1;
                let id = format!("tch-kernel-build-{}-{}", std::process::id(), state.builds);
                state.display_id = Some(id.clone());
                id
            }
        };
        let text = format!(
            "compiling {what} ({} so far, {:.0} s)",
            crates(state.crates.len()),
            started.elapsed().as_secs_f64()
        );
        drop(state);
        self.show(display_id, text, update);
    }

    /// The cell's build is over: its line says what was built, and the next build gets a new one.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(display_id) = state.display_id.take() else {
            return;
        };
        let names = std::mem::take(&mut state.crates);
        let seconds = state
            .started
            .take()
            .map_or(0.0, |s| s.elapsed().as_secs_f64());
        drop(state);
        let text = format!(
            "compiled {} in {seconds:.0} s: {}",
            self::crates(names.len()),
            names.join(", ")
        );
        self.show(display_id, text, true);
    }

    fn show(&self, display_id: String, text: String, update: bool) {
        self.sink.display(DisplayEvent::Display {
            data: vec![("text/plain".to_owned(), text)],
            display_id: Some(display_id),
            update,
        });
    }
}

/// "1 crate", "2 crates".
fn crates(count: usize) -> String {
    format!("{count} crate{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Stream;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, bool)>>);

    impl OutputSink for Recorded {
        fn write(&self, _stream: Stream, _text: &str) {}
        fn display(&self, event: DisplayEvent) {
            if let DisplayEvent::Display { data, update, .. } = event {
                self.0.lock().unwrap().push((data[0].1.clone(), update));
            }
        }
    }

    #[test]
    fn one_line_per_build_updated_in_place() {
        let sink = Arc::new(Recorded::default());
        let progress = BuildProgress::new(sink.clone());
        progress.finish(); // nothing built: nothing shown
        progress.compiling("Compiling png v0.16.8");
        progress.compiling("Compiling image v0.23.14");
        progress.finish();
        let shown = sink.0.lock().unwrap().clone();
        assert_eq!(shown.len(), 3);
        assert!(
            shown[0]
                .0
                .starts_with("compiling png v0.16.8 (1 crate so far")
                && !shown[0].1
        );
        assert!(
            shown[1]
                .0
                .starts_with("compiling image v0.23.14 (2 crates so far")
                && shown[1].1
        );
        assert!(
            shown[2].0.starts_with("compiled 2 crates in ") && shown[2].0.ends_with(": png, image")
        );
        assert!(shown[2].1);
    }
}
