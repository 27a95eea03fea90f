//! The evaluator and its child, driven as the kernel drives them, with rustc only (no libtorch,
//! no prelude): what a panic, an abort, an interrupt at a poll and an interrupt of a `sleep` do
//! to the variables, that compile errors point into the cell as written (not the loop
//! instrumentation), and that a cell's stderr is all out before its result.
//!
//! This binary is also the evaluation child (and the rustc wrapper), as the kernel's own binary
//! is: hence no libtest harness, and a `main` that first calls `child_process_hook`.

use rust_evaluator::{
    ChildState, DisplayEvent, EvalError, EvalOutput, Evaluator, EvaluatorConfig, InputRequest,
    LoopPolls, OutputSink, Stream,
};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the cells printed, for a test thread to wait on.
#[derive(Default)]
struct Printed {
    text: Mutex<(String, String)>,
    grew: Condvar,
}

impl Printed {
    fn stdout(&self) -> String {
        self.text.lock().unwrap().0.clone()
    }

    fn stderr(&self) -> String {
        self.text.lock().unwrap().1.clone()
    }

    /// Waits until stdout holds `needle` (the cell is running).
    fn wait_for(&self, needle: &str) {
        let text = self.text.lock().unwrap();
        let (text, timeout) = self
            .grew
            .wait_timeout_while(text, Duration::from_secs(120), |t| !t.0.contains(needle))
            .unwrap();
        assert!(!timeout.timed_out(), "never printed {needle:?}: {text:?}");
    }
}

impl OutputSink for Printed {
    fn write(&self, stream: Stream, text: &str) {
        let mut printed = self.text.lock().unwrap();
        match stream {
            Stream::Stdout => printed.0.push_str(text),
            Stream::Stderr => printed.1.push_str(text),
        }
        self.grew.notify_all();
    }

    fn display(&self, _event: DisplayEvent) {}
}

fn start(build_dir: &Path, grace: Duration) -> (Evaluator, Arc<Printed>) {
    let config = EvaluatorConfig {
        opt_level: "0".into(),
        offline: true,
        linker: "system".into(),
        build_dir: build_dir.to_owned(),
        seed_from: None,
        seed_is_current: false,
        keep_build_dir: false,
        prelude: None,
        lockfile: None,
        warm_up_analyzer: false,
        interrupt_grace: grace,
        loop_polls: LoopPolls::Chunked,
        link_stand_in_dirs: Vec::new(),
        known_names: Arc::default(),
        snapshots: None,
    };
    let printed = Arc::new(Printed::default());
    let evaluator = Evaluator::start(&config, printed.clone()).expect("the evaluator starts");
    (evaluator, printed)
}

fn no_input(_: InputRequest) -> Result<String, String> {
    Err("no input in these tests".into())
}

fn eval(evaluator: &mut Evaluator, code: &str) -> Result<EvalOutput, EvalError> {
    evaluator.eval(code, &no_input)
}

/// The cell's value as text.
fn value(evaluator: &mut Evaluator, code: &str) -> String {
    let output = eval(evaluator, code).unwrap_or_else(|e| panic!("{code}: {e:?}"));
    output
        .data
        .into_iter()
        .find(|(mime, _)| mime == "text/plain")
        .map(|(_, text)| text)
        .unwrap_or_default()
}

fn a_panic_keeps_the_variables(build_dir: &Path) {
    let (mut ev, _) = start(build_dir, Duration::from_secs(5));
    eval(&mut ev, "let x = 41;").unwrap();
    match eval(&mut ev, "let y = 2;\npanic!(\"boom {}\", x);") {
        Err(EvalError::Panic { message, .. }) => assert!(message.contains("boom 41"), "{message}"),
        other => panic!("a panic: {other:?}"),
    }
    assert_eq!(value(&mut ev, "x + 1"), "42");
    assert_eq!(ev.child_state(), ChildState::Idle);
}

fn an_abort_restarts_the_child_and_says_what_was_lost(build_dir: &Path) {
    let (mut ev, _) = start(build_dir, Duration::from_secs(5));
    eval(&mut ev, "let kept = vec![1, 2];\nlet other = 3;").unwrap();
    let before = value(&mut ev, "std::process::id()");
    match eval(&mut ev, "std::process::abort();") {
        Err(EvalError::ProcessDied {
            lost,
            restored,
            out_of_memory,
            ..
        }) => {
            assert_eq!(lost, ["kept", "other"]);
            assert_eq!(restored, None, "no snapshots without the prelude");
            assert_eq!(out_of_memory, None);
        }
        other => panic!("the child died: {other:?}"),
    }
    assert_eq!(ev.child_state(), ChildState::Idle);
    assert_ne!(value(&mut ev, "std::process::id()"), before, "a new child");
    // The new child has its panic hook: a panic is the cell's error, not a crash.
    assert!(matches!(
        eval(&mut ev, "panic!(\"after\")"),
        Err(EvalError::Panic { .. })
    ));
    assert!(matches!(
        eval(&mut ev, "kept.len()"),
        Err(EvalError::Compile { .. })
    ));
}

fn an_interrupt_at_a_poll_keeps_the_variables(build_dir: &Path) {
    let (mut ev, printed) = start(build_dir, Duration::from_secs(600));
    eval(&mut ev, "let total = 5u64;").unwrap();
    let pid = value(&mut ev, "std::process::id()");
    let interrupter = ev.interrupter();
    // Between cells an interrupt does nothing.
    interrupter.interrupt();
    assert_eq!(ev.child_state(), ChildState::Idle);
    let watcher = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            printed.wait_for("looping");
            interrupter.interrupt();
        })
    };
    let cell = "println!(\"looping\");\nlet mut n = 0u64;\nloop {\n    n = std::hint::black_box(n + 1);\n}";
    match eval(&mut ev, cell) {
        Err(EvalError::Interrupted {
            variables_kept: true,
            lost,
            ..
        }) => assert!(lost.is_empty()),
        other => panic!("stopped at the loop's poll: {other:?}"),
    }
    watcher.join().unwrap();
    assert_eq!(value(&mut ev, "total"), "5");
    assert_eq!(value(&mut ev, "std::process::id()"), pid, "the same child");
}

fn a_sleep_ends_by_restart_after_the_grace_period(build_dir: &Path) {
    let (mut ev, printed) = start(build_dir, Duration::from_millis(500));
    eval(&mut ev, "let w = 7;").unwrap();
    let interrupter = ev.interrupter();
    let watcher = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            printed.wait_for("sleeping");
            interrupter.interrupt();
        })
    };
    let cell = "println!(\"sleeping\");\nstd::thread::sleep(std::time::Duration::from_secs(600));";
    match eval(&mut ev, cell) {
        Err(EvalError::Interrupted {
            variables_kept: false,
            lost,
            restored: None,
        }) => assert_eq!(lost, ["w"]),
        other => panic!("killed after the grace period: {other:?}"),
    }
    watcher.join().unwrap();
    assert_eq!(ev.child_state(), ChildState::Idle);
    assert_eq!(value(&mut ev, "1 + 1"), "2", "the new child runs cells");
}

fn compile_errors_point_into_the_cell_as_written(build_dir: &Path) {
    let (mut ev, _) = start(build_dir, Duration::from_secs(5));
    // The loop is instrumented (a poll, chunks); the error is on the cell's third line.
    let cell = "let v = vec![1u32, 2, 3];\nfor i in &v {\n    let s: String = *i;\n}";
    match eval(&mut ev, cell) {
        Err(EvalError::Compile { message, report }) => {
            let report = without_colours(&report.join("\n"));
            assert!(message.contains("mismatched types"), "{message}");
            assert!(report.contains("cell:3:"), "{report}");
            assert!(report.contains("let s: String = *i;"), "{report}");
            assert!(!report.contains("__tch_kernel"), "{report}");
        }
        other => panic!("a compile error: {other:?}"),
    }
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn a_cells_stderr_is_all_out_before_its_result(build_dir: &Path) {
    let (mut ev, printed) = start(build_dir, Duration::from_secs(5));
    // More than a pipe holds: the last lines are still in the pipe when the cell ends.
    let cell = "for i in 0..20000 { eprintln!(\"line {i}\"); }\nprintln!(\"done\");";
    eval(&mut ev, cell).unwrap();
    let stderr = printed.stderr();
    assert_eq!(stderr.lines().count(), 20000);
    assert!(stderr.ends_with("line 19999\n"));
    assert!(printed.stdout().contains("done"));
    // The mark is the kernel's, never shown.
    assert!(!stderr.contains("stderr-mark"));
}

type Test = (&'static str, fn(&Path));

const TESTS: &[Test] = &[
    ("a_panic_keeps_the_variables", a_panic_keeps_the_variables),
    (
        "an_abort_restarts_the_child_and_says_what_was_lost",
        an_abort_restarts_the_child_and_says_what_was_lost,
    ),
    (
        "an_interrupt_at_a_poll_keeps_the_variables",
        an_interrupt_at_a_poll_keeps_the_variables,
    ),
    (
        "a_sleep_ends_by_restart_after_the_grace_period",
        a_sleep_ends_by_restart_after_the_grace_period,
    ),
    (
        "compile_errors_point_into_the_cell_as_written",
        compile_errors_point_into_the_cell_as_written,
    ),
    (
        "a_cells_stderr_is_all_out_before_its_result",
        a_cells_stderr_is_all_out_before_its_result,
    ),
];

fn main() {
    rust_evaluator::child_process_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let root = tempfile::tempdir().expect("a temporary dir");
    // The engine reads its settings from a dir named in the environment, once per process:
    // every evaluator here uses the same build dir, one after the other.
    let build_dir = root.path().join("build");
    // SAFETY: no other thread runs yet.
    unsafe { rust_evaluator::use_build_dir(&build_dir) };
    let mut failed = Vec::new();
    let chosen = TESTS.iter().filter(|(name, _)| {
        filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    });
    for (name, test) in chosen {
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(|| test(&build_dir));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {verdict} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
