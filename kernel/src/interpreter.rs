//! Glue between the Jupyter server and the Rust evaluator: turns cells into evaluations and
//! evaluation results into Jupyter outcomes, answers completion and inspection, and runs the
//! kernel's own `:` commands (`kernel_commands`, shared with export).

use crate::error_report::{RED, RESET, error_info};
use crate::settings::Settings;
use anyhow::Result;
use jupyter_server::wire::ConnectionInfo;
use jupyter_server::wire::content::{
    CompleteReply, Completeness, ErrorInfo, HelpLink, InspectReply, IsCompleteReply, LanguageInfo,
    MimeBundle, Payload, StreamName,
};
use jupyter_server::{
    ExecuteOutcome, Interpreter, KernelInfo, Publisher, ServeOptions, Startup, StdinHandle,
};
use kernel_commands::{Command, GPU_REPORT_CODE, vars_table_code};
use rust_evaluator::{DisplayEvent, Evaluator, InputRequest, KnownNames, OutputSink, Stream};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `complete_reply` metadata: `{"tch_kernel": {"source": "rust-analyzer" | "known-names"}}`.
const COMPLETION_METADATA_KEY: &str = "tch_kernel";
const COMPLETION_FROM_ANALYZER: &str = "rust-analyzer";
const COMPLETION_FROM_KNOWN_NAMES: &str = "known-names";

/// Starts the server; the evaluator is built in the background while requests are answered.
pub fn run_kernel(conn: ConnectionInfo, settings: Settings, build_dir: PathBuf) -> Result<()> {
    let interrupter: Arc<OnceLock<rust_evaluator::Interrupter>> = Arc::default();
    let start_notice = crate::prebuild::check_prebuilt(&settings);
    let mut config = settings.evaluator_config(build_dir, false);
    let has_prelude = config.prelude.is_some();
    // The debugger's Variables panel reads what the evaluator publishes after each cell; the
    // variables are described by the prelude's describers, so only a prelude kernel has one.
    // Breakpoints stop through a DAP adapter attached to the evaluation process.
    let debugger = has_prelude.then(|| {
        Arc::new(crate::debugger::KernelDebugger::new(
            config.variables.clone(),
            settings.debug_adapter(),
        ))
    });
    config.debugger = debugger
        .clone()
        .map(|d| d as Arc<dyn rust_evaluator::DebugTarget>);
    // An evaluation process forked by the zygote is not below the kernel: usage_request is
    // told which it is.
    let evaluation_pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
    if settings.zygote {
        rust_evaluator::fork_children_from_zygote(evaluation_pid.clone());
    }
    let other_processes: jupyter_server::usage::OtherProcesses =
        Arc::new(
            move || match evaluation_pid.load(std::sync::atomic::Ordering::SeqCst) {
                0 => vec![],
                pid => vec![pid],
            },
        );
    let options = ServeOptions {
        info: kernel_info(settings.torch_version.as_deref()),
        other_processes: Some(other_processes),
        debugger: debugger.map(|d| d as Arc<dyn jupyter_server::Debugger>),
        history_file: crate::paths::data_dir().map(|d| d.join("history.jsonl")),
        interrupt: {
            let interrupter = interrupter.clone();
            Arc::new(move || {
                if let Some(i) = interrupter.get() {
                    i.interrupt();
                }
            })
        },
    };
    // Names for Tab, saved in the prebuilt dir: completion answers from them while the
    // evaluator starts, and (inside it) whenever rust-analyzer cannot answer in time.
    config.known_names = Arc::new(
        config
            .seed_from
            .as_ref()
            .map(|seed| KnownNames::load(&seed.join(rust_evaluator::KNOWN_NAMES_FILE)))
            .unwrap_or_default(),
    );
    let known = config.known_names.clone();
    let stopped = jupyter_server::serve(conn, options, move |publisher, _stdin| {
        let sink = Arc::new(JupyterSink(publisher));
        let evaluator = Startup::spawn("evaluator", move || {
            let evaluator = Evaluator::start(&config, sink).map_err(|e| e.to_string())?;
            let _ = interrupter.set(evaluator.interrupter());
            Ok(evaluator)
        })
        .map_err(|e| format!("cannot start the evaluator thread: {e}"))?;
        Ok(RustInterpreter {
            evaluator,
            has_prelude,
            known,
            timing: Timing::default(),
            start_notice,
        })
    })?;
    log::info!("stopped: {stopped:?}");
    Ok(())
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default()
}

fn kernel_info(torch: Option<&str>) -> KernelInfo {
    let rustc = rustc_version();
    let torch = torch.map(|t| format!(", libtorch {t}")).unwrap_or_default();
    KernelInfo {
        implementation: "tch-kernel".to_owned(),
        implementation_version: env!("CARGO_PKG_VERSION").to_owned(),
        language_info: LanguageInfo {
            name: "rust".to_owned(),
            version: rustc.clone(),
            mimetype: "text/rust".to_owned(),
            file_extension: ".rs".to_owned(),
            pygments_lexer: "rust".to_owned(),
            codemirror_mode: "rust".to_owned(),
            nbconvert_exporter: "script".to_owned(),
        },
        banner: format!(
            "tch-kernel {} — Rust cells for deep learning (rustc {rustc}{torch}). Type :help for commands, :gpu for devices.",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![
            HelpLink {
                text: "Rust standard library".into(),
                url: "https://doc.rust-lang.org/std/".into(),
            },
            HelpLink {
                text: "tch (PyTorch for Rust)".into(),
                url: "https://docs.rs/tch/".into(),
            },
        ],
    }
}

struct JupyterSink(Publisher);

impl OutputSink for JupyterSink {
    fn write(&self, stream: Stream, text: &str) {
        let name = match stream {
            Stream::Stdout => StreamName::Stdout,
            Stream::Stderr => StreamName::Stderr,
        };
        self.0.stream(name, text);
    }

    fn display(&self, event: DisplayEvent) {
        match event {
            DisplayEvent::Display {
                data,
                display_id: Some(id),
                update: true,
            } => self
                .0
                .update_display_data(mime_bundle(data), Map::new(), id),
            DisplayEvent::Display {
                data, display_id, ..
            } => self
                .0
                .display_data(mime_bundle(data), Map::new(), display_id),
            DisplayEvent::Clear { wait } => self.0.clear_output(wait),
        }
    }
}

struct RustInterpreter {
    /// Starts (a first compile, about a second) while requests are answered: completion and
    /// inspection use what is known until it is ready; a cell waits for it.
    evaluator: Startup<Evaluator>,
    has_prelude: bool,
    /// Completion names saved by the installer, for Tab before the evaluator has started.
    known: Arc<KnownNames>,
    timing: Timing,
    /// Why the first cell waits for a build of the prelude (none prebuilt for this
    /// installation): shown in the first cell that runs code.
    start_notice: Option<String>,
}

/// What `:timing` shows: the compile and run time of every cell that ran, and whether each
/// later cell prints its own.
#[derive(Default)]
struct Timing {
    print_each: bool,
    cells: Vec<TimedCell>,
}

struct TimedCell {
    count: u64,
    compile: Duration,
    run: Duration,
    /// Its earlier build ran again: no rustc (see `evcxr::REUSED_BUILD_PHASE`).
    reused: bool,
}

impl TimedCell {
    fn line(&self) -> String {
        format!(
            "compile {:.2} s{} · run {:.2} s\n",
            self.compile.as_secs_f64(),
            if self.reused { " (build reused)" } else { "" },
            self.run.as_secs_f64()
        )
    }
}

impl Timing {
    /// `:timing [on|off]`: sets printing (a bare `:timing` turns it on) and shows the table.
    fn command(&mut self, arg: &str) -> ExecuteOutcome {
        match arg {
            "" | "on" => self.print_each = true,
            "off" => self.print_each = false,
            other => {
                return ExecuteOutcome::Error(ErrorInfo {
                    ename: "UsageError".into(),
                    evalue: format!(":timing takes on or off, not {other:?}"),
                    traceback: vec![format!(
                        "{RED}:timing{RESET} takes `on`, `off` or nothing (on)."
                    )],
                });
            }
        }
        let state = if self.print_each {
            "on: each cell ends with its compile and run time (:timing off stops it)"
        } else {
            "off"
        };
        let mut text = format!("Timing {state}.\n");
        let mut html = format!("<p>Timing {state}.</p>");
        if !self.cells.is_empty() {
            text.push_str("cell   compile      run\n");
            html.push_str(
                "<table><thead><tr><th>cell</th><th>compile (s)</th><th>run (s)</th></tr></thead><tbody>",
            );
            for cell in &self.cells {
                let (count, c, r) = (
                    cell.count,
                    cell.compile.as_secs_f64(),
                    cell.run.as_secs_f64(),
                );
                let reused = if cell.reused { " (build reused)" } else { "" };
                text.push_str(&format!("[{count}]{c:>12.2} s{r:>8.2} s{reused}\n"));
                html.push_str(&format!(
                    "<tr><td>[{count}]</td><td>{c:.2}{reused}</td><td>{r:.2}</td></tr>"
                ));
            }
            html.push_str("</tbody></table>");
        }
        let mut result = MimeBundle::new();
        result.insert("text/plain".into(), Value::String(text.trim_end().into()));
        result.insert("text/html".into(), Value::String(html));
        ExecuteOutcome::Ok {
            result: Some(result),
            payload: vec![],
        }
    }
}

const HELP_INTRO: &str = "\
tch-kernel: Rust cells, compiled and run in a process that keeps your variables.

Cells
  Statements and expressions run in order; the value of a final expression is shown.
  Items (fn, struct, impl, use) stay defined for later cells.
  input(prompt) / password(prompt) read a line from the notebook.

Showing things (with the tch prelude)
  display(x) or display(&x) -> handle; handle.update(&y); clear_output(), clear_output_wait()
  Html(\"<b>hi</b>\"), Markdown(..), Svg(..), Png(bytes), Text(..): &str or String
  a Tensor as the last value: an HTML summary with PyTorch's text under it
  LinePlot, ScatterPlot, Histogram, ConfusionMatrix (SVG; .to_png()), LiveChart
  image(&t) / image_grid(&t, columns)           progress(iter), progress_postfix(text)
  MlLog (MLPerf-style logs), Checkpoint, digits(), cifar10(dir)

Interrupt (■) stops every loop of cell code (for, while, loop; in functions and closures too)
at its next iteration, keeping every earlier variable; check_interrupt() stops anywhere else.
Code stuck in one long call (a sleep, a big native op) is stopped after a few seconds (or at a
second ■) by restarting the evaluation process. Variables come back from the snapshot taken
after each cell (tensors, VarStores, plain data): automatically after a restart or a crash, and
with :restore after Kernel > Restart or in a new session. Definitions and dependencies are
kept. A panic only fails its cell: earlier variables are kept.

Batch jobs: tch-kernel export NOTEBOOK.ipynb OUTDIR --partition P --gres gpu:TYPE:N --time T
  (--nodes N --ntasks-per-node K: N*K ranks; the same code trains data-parallel with
  Distributed::init(), DataParallel::new(&dist, &vs) and ShardedSampler::new(len))

";

const HELP_ENGINE: &str = "More commands (the evaluation engine's)\n";

impl RustInterpreter {
    fn help(&mut self) -> ExecuteOutcome {
        let engine_help = self
            .evaluator
            .wait()
            .ok()
            .and_then(|e| e.eval(":help", &|_| Err("no input".into())).ok())
            .and_then(|o| {
                o.data
                    .into_iter()
                    .find(|(m, _)| m == "text/plain")
                    .map(|(_, t)| t)
            })
            .unwrap_or_default();
        let mut data = MimeBundle::new();
        data.insert(
            "text/plain".into(),
            Value::String(format!(
                "{HELP_INTRO}{}\n{HELP_ENGINE}{engine_help}",
                kernel_commands::help_section()
            )),
        );
        ExecuteOutcome::Ok {
            result: None,
            payload: vec![Payload::Page { data, start: 0 }],
        }
    }
}

impl Interpreter for RustInterpreter {
    fn execute(
        &mut self,
        code: &str,
        count: u64,
        publisher: &Publisher,
        stdin: &StdinHandle,
    ) -> ExecuteOutcome {
        // A cell that is one of the kernel's own commands; other `:` lines go to the engine.
        let command = Some(code.trim())
            .filter(|c| !c.contains('\n'))
            .and_then(Command::parse);
        match command {
            Some(Command::Help) => return self.help(),
            Some(Command::Timing(arg)) => return self.timing.command(arg),
            _ => {}
        }
        let code = if command == Some(Command::Gpu) {
            if !self.has_prelude {
                return ExecuteOutcome::Error(ErrorInfo {
                    ename: "NoLibtorch".into(),
                    evalue: "this kernel was installed without libtorch".into(),
                    traceback: vec![
                        "This kernel has no libtorch: reinstall with ./install.sh (see README)."
                            .into(),
                    ],
                });
            }
            GPU_REPORT_CODE
        } else {
            code
        };
        let input = |req: InputRequest| {
            stdin
                .request(&req.prompt, req.password)
                .map_err(|e| e.to_string())
        };
        if let Some(notice) = self.start_notice.take() {
            publisher.stream(StreamName::Stderr, &notice);
        }
        let evaluator = match self.evaluator.wait() {
            Ok(evaluator) => evaluator,
            Err(e) => {
                return ExecuteOutcome::Error(ErrorInfo {
                    ename: "KernelStartupError".into(),
                    evalue: e.clone(),
                    traceback: vec![format!("{RED}The evaluator could not start{RESET}: {e}")],
                });
            }
        };
        match command {
            Some(Command::Vars) => return vars(evaluator, self.has_prelude),
            Some(Command::Restore) => return restore(evaluator, publisher),
            Some(Command::Snapshot) => {
                publisher.stream(StreamName::Stdout, &evaluator.snapshot_status());
                return ExecuteOutcome::Ok {
                    result: None,
                    payload: vec![],
                };
            }
            _ => {}
        }
        match evaluator.eval(code, &input) {
            Ok(output) => {
                let cell = TimedCell {
                    count,
                    compile: output.compile_time,
                    run: output.run_time,
                    reused: output.build_reused,
                };
                if self.timing.print_each {
                    publisher.stream(StreamName::Stdout, &cell.line());
                }
                self.timing.cells.push(cell);
                let result = (!output.data.is_empty()).then(|| to_bundle(output.data));
                ExecuteOutcome::Ok {
                    result,
                    payload: vec![],
                }
            }
            Err(e) => ExecuteOutcome::Error(error_info(e)),
        }
    }

    fn complete(&mut self, code: &str, cursor_pos: usize) -> CompleteReply {
        let byte = byte_offset(code, cursor_pos);
        let c = match self.evaluator.try_get() {
            Some(Ok(evaluator)) => evaluator.complete(code, byte),
            _ => rust_evaluator::complete_from_known_names(code, byte, &self.known, &[], &[]),
        };
        // Where the matches came from: rust-analyzer, or (while it warms up) the names the
        // kernel knows. Clients ignore unknown metadata; tests and benchmarks read it.
        let source = if c.from_analyzer {
            COMPLETION_FROM_ANALYZER
        } else {
            COMPLETION_FROM_KNOWN_NAMES
        };
        let mut metadata = Map::new();
        metadata.insert(
            COMPLETION_METADATA_KEY.into(),
            serde_json::json!({ "source": source }),
        );
        CompleteReply {
            status: "ok",
            matches: c.matches,
            cursor_start: char_offset(code, c.start),
            cursor_end: char_offset(code, c.end),
            metadata,
        }
    }

    fn inspect(&mut self, code: &str, cursor_pos: usize, _detail_level: u8) -> InspectReply {
        let byte = byte_offset(code, cursor_pos);
        let found = match self.evaluator.try_get() {
            Some(Ok(evaluator)) => evaluator.inspect(code, byte),
            _ => rust_evaluator::inspect_from_known_names(code, byte, &self.known),
        };
        let mut data = MimeBundle::new();
        if let Some((plain, html)) = found {
            data.insert("text/plain".into(), Value::String(plain));
            data.insert("text/html".into(), Value::String(html));
        }
        InspectReply {
            status: "ok",
            found: !data.is_empty(),
            data,
            metadata: Map::new(),
        }
    }

    fn is_complete(&mut self, code: &str) -> IsCompleteReply {
        match rust_evaluator::completeness(code) {
            rust_evaluator::Completeness::Complete => IsCompleteReply {
                status: Completeness::Complete,
                indent: None,
            },
            rust_evaluator::Completeness::Incomplete { indent } => IsCompleteReply {
                status: Completeness::Incomplete,
                indent: Some(indent),
            },
            rust_evaluator::Completeness::Invalid => IsCompleteReply {
                status: Completeness::Invalid,
                indent: None,
            },
        }
    }
}

/// `:vars`: with the prelude, a table with each variable's short value (one small compile);
/// otherwise, or if that cell fails to build, the engine's table of names and types.
fn vars(evaluator: &mut Evaluator, has_prelude: bool) -> ExecuteOutcome {
    let no_input = |_: InputRequest| Err("no input while listing variables".to_owned());
    let variables = evaluator.variables_for_display();
    let mut output = None;
    if has_prelude && !variables.is_empty() {
        match evaluator.eval(&vars_table_code(&variables), &no_input) {
            Ok(o) => output = Some(o),
            Err(e) => log::debug!(":vars with values failed, listing types only: {e}"),
        }
    }
    let output = match output {
        Some(o) => Ok(o),
        None => evaluator.eval(":vars", &no_input),
    };
    match output {
        Ok(o) => ExecuteOutcome::Ok {
            result: Some(to_bundle(o.data)),
            payload: vec![],
        },
        Err(e) => ExecuteOutcome::Error(error_info(e)),
    }
}

/// `:restore`: what came back from the last snapshot (its loaders' lines stream first).
fn restore(evaluator: &mut Evaluator, publisher: &Publisher) -> ExecuteOutcome {
    match evaluator.restore() {
        Ok(report) => {
            publisher.stream(StreamName::Stdout, &format!("{report}"));
            ExecuteOutcome::Ok {
                result: None,
                payload: vec![],
            }
        }
        Err(e) => ExecuteOutcome::Error(error_info(e)),
    }
}

/// A cell's value always has `text/plain`, as `execute_result` requires.
fn to_bundle(data: Vec<(String, String)>) -> MimeBundle {
    let mut bundle = mime_bundle(data);
    if !bundle.contains_key("text/plain") {
        bundle.insert("text/plain".into(), Value::String(String::new()));
    }
    bundle
}

/// MIME bundle from the evaluator's (type, text) pairs; JSON types carry parsed JSON.
fn mime_bundle(data: Vec<(String, String)>) -> MimeBundle {
    let mut bundle = MimeBundle::new();
    for (mime, text) in data {
        let value = if mime.ends_with("json") {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        bundle.insert(mime, value);
    }
    bundle
}

/// Jupyter cursor positions are in Unicode code points (protocol 5.2+).
fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map_or(code.len(), |(b, _)| b)
}

fn char_offset(code: &str, byte: usize) -> usize {
    code.get(..byte.min(code.len()))
        .map_or_else(|| code[..].chars().count(), |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_code_points() {
        let code = "let é = 1; é.";
        assert_eq!(byte_offset(code, 4), 4); // é is two bytes
        assert_eq!(byte_offset(code, 5), 6);
        assert_eq!(char_offset(code, 6), 5);
        assert_eq!(byte_offset(code, 100), code.len());
    }

    #[test]
    fn bundle_always_has_text_plain() {
        let b = to_bundle(vec![("text/html".into(), "<b>x</b>".into())]);
        assert!(b.contains_key("text/plain"));
        let b = to_bundle(vec![("application/json".into(), "{\"a\":1}".into())]);
        assert_eq!(b["application/json"]["a"], 1);
    }
}
