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
    start_polling(build_dir, grace, LoopPolls::Chunked)
}

fn start_polling(
    build_dir: &Path,
    grace: Duration,
    loop_polls: LoopPolls,
) -> (Evaluator, Arc<Printed>) {
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
        crate_patches: Vec::new(),
        warm_up_analyzer: false,
        interrupt_grace: grace,
        loop_polls,
        debugger: None,
        link_stand_in_dirs: Vec::new(),
        known_names: Arc::default(),
        snapshots: None,
        variables: Default::default(),
        analyzer_first: false,
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

/// A thread that interrupts the cell once it has printed `text` (it is running).
fn interrupt_once_printed(
    printed: &Arc<Printed>,
    interrupter: rust_evaluator::Interrupter,
    text: &'static str,
) -> std::thread::JoinHandle<()> {
    let printed = printed.clone();
    std::thread::spawn(move || {
        printed.wait_for(text);
        interrupter.interrupt();
    })
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
    let watcher = interrupt_once_printed(&printed, interrupter, "looping");
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
    let watcher = interrupt_once_printed(&printed, ev.interrupter(), "sleeping");
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

/// Loops of every shape the instrumentation handles differently, each checking itself against
/// the same items taken without a loop (`collect`), so the cell panics if a chunked or polled
/// loop skips, repeats or reorders an item, or ends early.
/// In a block: nothing of it is kept for later cells (a closure cannot be).
const LOOPS_CELL: &str = r#"{
let mut log: Vec<String> = Vec::new();
// Integer ranges with literal bounds (chunked by sub-range), at chunk edges, empty, at the
// type's ends, inclusive and not.
for (lo, hi) in [(0i64, 0i64), (0, 1), (0, 4095), (0, 4096), (0, 4097), (-5, 10_000), (7, 3)] {
    let mut got = Vec::new();
    for i in lo..hi { got.push(i); }
    assert_eq!(got, (lo..hi).collect::<Vec<_>>());
    let mut got = Vec::new();
    for i in lo..=hi { got.push(i); }
    assert_eq!(got, (lo..=hi).collect::<Vec<_>>());
}
let mut bytes = Vec::new();
for b in 0..=255u8 { bytes.push(b); }
assert_eq!(bytes.len(), 256);
let mut top = Vec::new();
for i in (i64::MAX - 2)..=i64::MAX { top.push(i); }
assert_eq!(top, [i64::MAX - 2, i64::MAX - 1, i64::MAX]);
let mut count = 0u64;
for _ in 0..10_000 { count += 1; }
assert_eq!(count, 10_000);
// Slices by reference and in place, and values that move (Strings), chars, reversed, chained.
for len in [0usize, 1, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097, 9000] {
    let v: Vec<u32> = (0..len as u32).collect();
    let mut got = Vec::new();
    for x in &v { got.push(*x); }
    assert_eq!(got, v);
    let mut w = v.clone();
    for x in w.iter_mut() { *x *= 2; }
    assert_eq!(w, v.iter().map(|x| x * 2).collect::<Vec<_>>());
    let mut got = Vec::new();
    for x in v.iter().rev() { got.push(*x); }
    assert_eq!(got, v.iter().rev().copied().collect::<Vec<_>>());
    let strings: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    let mut joined = Vec::new();
    for s in strings.clone() { joined.push(s); }
    assert_eq!(joined, strings);
    // Zipped and enumerated slices (chunked as pairs), of unequal lengths too.
    let other: Vec<u32> = (0..(len as u32 / 2)).map(|x| x + 1).collect();
    let mut got = Vec::new();
    for (x, y) in v.iter().zip(other.iter()) { got.push((*x, *y)); }
    assert_eq!(got, v.iter().copied().zip(other.iter().copied()).collect::<Vec<_>>());
    let mut got = Vec::new();
    for (i, x) in v.iter().enumerate() { got.push((i, *x)); }
    assert_eq!(got, v.iter().copied().enumerate().collect::<Vec<_>>());
    log.push(format!("{len}"));
}
// Other iterators (counted chunks of the iterator itself), ranges of types known only after
// inference, of u128 at its end, of chars, reversed; pairs of what is not a slice's iterator.
let data: Vec<usize> = (0..5000).collect();
let mut got = Vec::new();
for x in data.iter().map(|x| x * 2) { got.push(x); }
assert_eq!(got, data.iter().map(|x| x * 2).collect::<Vec<_>>());
let (lo, hi) = (3i64, 5003i64);
let mut got = Vec::new();
for i in lo..hi { got.push(i); }
assert_eq!(got, (lo..hi).collect::<Vec<_>>());
let mut got = Vec::new();
for i in u128::MAX - 2..u128::MAX { got.push(i); }
assert_eq!(got, [u128::MAX - 2, u128::MAX - 1]);
let mut got = Vec::new();
for c in 'a'..'d' { got.push(c); }
assert_eq!(got, ['a', 'b', 'c']);
#[allow(clippy::reversed_empty_ranges)]
for _ in 5i32..-5 { unreachable!(); }
let a: Vec<u8> = (0..10).collect();
let mut got = Vec::new();
for p in (0..3u8).rev().zip(&a) { got.push(p); }
assert_eq!(got, [(2, &0), (1, &1), (0, &2)]);
let mut got = Vec::new();
for p in a.iter().zip(5..7u8) { got.push(p); }
assert_eq!(got, [(&0, 5), (&1, 6)]);
let mut got = Vec::new();
for p in Some(1).into_iter().zip(Some('x')) { got.push(p); }
assert_eq!(got, [(1, 'x')]);
let mut got = Vec::new();
for p in a.iter().skip(8).enumerate() { got.push(p); }
assert_eq!(got, [(0, &8), (1, &9)]);
// Pairs changed in place, on either side.
let b: Vec<usize> = (0..5007).map(|i| i * 3).collect();
let mut out = vec![0usize; 5000];
for (o, y) in out.iter_mut().zip(&b) { *o = *y + 1; }
assert_eq!(out, (0..5000).map(|i| i * 3 + 1).collect::<Vec<_>>());
let mut copy = b.clone();
for (x, y) in data.iter().zip(&mut copy) { *y += x; }
assert_eq!(&copy[..5000], (0..5000).map(|i| i * 4).collect::<Vec<_>>());
assert_eq!(&copy[5000..], &b[5000..]);
let mut copy = data.clone();
for (i, x) in copy.iter_mut().enumerate() { *x += i; }
assert_eq!(copy, (0..5000).map(|i| i * 2).collect::<Vec<_>>());
let mut got = String::new();
for c in "héllo wörld".chars() { got.push(c); }
assert_eq!(got, "héllo wörld");
// while (chunked by a counter), while let, loop with a value, break and labelled continue.
let (mut n, mut steps) = (27u64, 0u32);
while n != 1 { n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 }; steps += 1; }
assert_eq!(steps, 111);
let mut stack = vec![1, 2, 3];
let mut popped = Vec::new();
while let Some(x) = stack.pop() { popped.push(x); }
assert_eq!(popped, [3, 2, 1]);
let mut k = 0;
let found = loop { k += 1; if k * k > 50 { break k; } };
assert_eq!(found, 8);
let mut seen = Vec::new();
for i in 0..100 { if i == 5 { break; } seen.push(i); }
assert_eq!(seen, [0, 1, 2, 3, 4]);
let mut pairs = Vec::new();
'rows: for r in 0..4 { for c in 0..4 { if c > r { continue 'rows; } pairs.push((r, c)); } }
assert_eq!(pairs.len(), 10);
// Loops in a function, a closure and a destructor.
fn triangle(n: u64) -> u64 { let mut s = 0; for i in 1..=n { s += i; } s }
assert_eq!(triangle(1000), 500_500);
let squares = |n: usize| { let mut v = Vec::new(); for i in 0..n { v.push(i * i); } v };
assert_eq!(squares(5), [0, 1, 4, 9, 16]);
struct Counted(std::rc::Rc<std::cell::Cell<u32>>);
impl Drop for Counted { fn drop(&mut self) { for _ in 0..3 { self.0.set(self.0.get() + 1); } } }
let drops = std::rc::Rc::new(std::cell::Cell::new(0));
{ let _a = Counted(drops.clone()); let _b = Counted(drops.clone()); }
assert_eq!(drops.get(), 6);
// A loop around a loop, run many times: its inner loop's chunk size, learnt, crosses every length.
for len in 0..300u32 {
    let v: Vec<u32> = (0..len).collect();
    let mut got = Vec::new();
    for x in &v { got.push(*x); }
    assert_eq!(got, v);
}
println!("{}", log.join(","));
}"#;

fn every_loop_runs_every_item_once_in_order_whatever_the_polls(build_dir: &Path) {
    let mut printed_by = Vec::new();
    for polls in [
        LoopPolls::Off,
        LoopPolls::Chunked,
        LoopPolls::EveryIteration,
    ] {
        let (mut ev, printed) = start_polling(build_dir, Duration::from_secs(5), polls);
        // Twice: the second run starts from the chunk sizes the first learnt.
        for run in 0..2 {
            if let Err(e) = eval(&mut ev, LOOPS_CELL) {
                panic!("{polls:?}, run {run}: {e:?}\n{}", printed.stderr());
            }
        }
        printed_by.push(printed.stdout());
        drop(ev);
    }
    assert!(printed_by[0].contains("4097,9000"), "{printed_by:?}");
    assert!(
        printed_by.iter().all(|p| *p == printed_by[0]),
        "{printed_by:?}"
    );
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
    (
        "every_loop_runs_every_item_once_in_order_whatever_the_polls",
        every_loop_runs_every_item_once_in_order_whatever_the_polls,
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
