//! JupyterLab's debugger (the bug icon). The kernel answers JupyterLab's own requests itself
//! (`debugInfo`, `dumpCell`, `inspectVariables`, `richInspectVariables`, the session's
//! `initialize`/`attach`/`disconnect`) and the Variables panel between cells: every variable
//! of the session with its type and short value, a tensor's preview and a VarStore's
//! parameters, from what the evaluator publishes after each cell (`SharedVariables`).
//!
//! Breakpoints stop through a DAP adapter (`lldb-dap`, see `session`) attached to the
//! evaluation process, never to the kernel. While the debugger is on, cells are built with
//! debug info, each build's source under a name of its own; the evaluator hands each build over
//! before the process loads it (`DebugTarget`), and its breakpoints are set by then, from
//! JupyterLab's (by cell file and line) through the build's line table (`line_tables`). The
//! adapter's answers are put back in cell terms: a stack frame in cell code shows the cell's
//! file and line; the Variables panel while stopped has the frame's locals and the session's
//! variables (a scope of the kernel's own). Without an adapter the Variables panel works and a
//! breakpoint says why it cannot stop.

mod line_tables;
mod session;

use jupyter_server::{DebugEvents, Debugger};
use line_tables::LineTables;
use rust_evaluator::{DebugBuild, DebugTarget, SharedVariables, VariableView};
use serde_json::{Value, json};
use session::Session;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// JupyterLab computes a cell's file name itself, `prefix + murmur2(code, seed) + suffix`
/// (its only hash method); `dumpCell` writes the cell there.
const HASH_SEED: u32 = 3339675911;

/// Why a breakpoint cannot stop, as the breakpoint's message in JupyterLab.
const NO_ADAPTER: &str = "tch-kernel found no debug adapter to stop at breakpoints: install \
lldb (its lldb-dap, e.g. Debian's lldb-19) or set TCH_KERNEL_DEBUG_ADAPTER in the kernelspec's \
env to one. The Variables panel shows the session's variables after each cell.";

/// The variables references of the kernel's own variables (the session's, a VarStore's
/// parameters): above any the adapter hands out (lldb-dap's start at 2^32), below 2^53 (a
/// JavaScript number).
const OWN_REFERENCES: u64 = 1 << 44;
/// The session's variables, as a scope while stopped.
const SESSION_SCOPE: u64 = OWN_REFERENCES;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kernel's debugger state.
pub struct KernelDebugger {
    variables: SharedVariables,
    /// Where `dumpCell` writes cells (owner-only), created on the first dump.
    cells_dir: PathBuf,
    seq: Arc<AtomicI64>,
    /// The DAP adapter, if one was found.
    adapter: Option<PathBuf>,
    state: Mutex<State>,
    /// The adapter attached to the evaluation process (from the first debug build on).
    session: Mutex<Option<Arc<Session>>>,
    /// Where the adapter's events go: the latest request's sink, and the threads it stopped.
    events: Arc<Mutex<EventState>>,
    /// A session being detached (after `disconnect`).
    detaching: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KernelDebugger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDebugger")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    started: bool,
    /// Source path -> breakpoint lines, as JupyterLab set them.
    breakpoints: BTreeMap<String, Vec<i64>>,
    /// The variables as last listed, for `variables` requests on a VarStore's reference.
    listed: Vec<VariableView>,
    tables: LineTables,
}

#[derive(Default)]
struct EventState {
    sink: Option<DebugEvents>,
    stopped_threads: Vec<i64>,
}

impl KernelDebugger {
    /// `adapter`: the DAP adapter breakpoints stop with (see `dap_client::find_adapter`).
    pub fn new(variables: SharedVariables, adapter: Option<PathBuf>) -> KernelDebugger {
        let cells_dir =
            std::env::temp_dir().join(format!("tch-kernel-debug-{}", std::process::id()));
        KernelDebugger {
            variables,
            cells_dir,
            seq: Arc::new(AtomicI64::new(1)),
            adapter,
            state: Mutex::default(),
            session: Mutex::default(),
            events: Arc::default(),
            detaching: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Publishes an event of the kernel's own.
    fn publish(&self, name: &str, body: Value) {
        let sink = lock(&self.events).sink.clone();
        if let Some(sink) = sink {
            sink(self.event(name, body));
        }
    }

    /// The file JupyterLab names for `code`.
    fn source_path(&self, code: &str) -> String {
        format!(
            "{}{}{}",
            self.prefix(),
            murmur2(code.as_bytes(), HASH_SEED),
            CELL_SUFFIX
        )
    }

    fn prefix(&self) -> String {
        format!("{}/", self.cells_dir.display())
    }

    fn response(&self, request: &Value, result: Result<Value, String>) -> Value {
        let mut response = json!({
            "type": "response",
            "seq": self.seq.fetch_add(1, Ordering::SeqCst),
            "request_seq": request.get("seq").cloned().unwrap_or(Value::Null),
            "command": request.get("command").cloned().unwrap_or(Value::Null),
        });
        match result {
            Ok(body) => {
                response["success"] = json!(true);
                response["body"] = body;
            }
            Err(message) => {
                response["success"] = json!(false);
                response["message"] = json!(message);
                response["body"] = json!({ "error": { "id": 1, "format": message } });
            }
        }
        response
    }

    fn event(&self, name: &str, body: Value) -> Value {
        json!({
            "type": "event",
            "seq": self.seq.fetch_add(1, Ordering::SeqCst),
            "event": name,
            "body": body,
        })
    }

    fn debug_info(&self) -> Value {
        let state = self.state();
        let breakpoints: Vec<Value> = state
            .breakpoints
            .iter()
            .map(|(source, lines)| {
                json!({
                    "source": source,
                    "breakpoints": lines.iter().map(|l| json!({"line": l})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "isStarted": state.started,
            "hashMethod": "Murmur2",
            "hashSeed": HASH_SEED,
            "tmpFilePrefix": self.prefix(),
            "tmpFileSuffix": CELL_SUFFIX,
            "breakpoints": breakpoints,
            "stoppedThreads": lock(&self.events).stopped_threads,
            "richRendering": true,
            "exceptionPaths": [],
            "copyToGlobals": false,
        })
    }

    fn dump_cell(&self, arguments: &Value) -> Result<Value, String> {
        let code = arguments
            .get("code")
            .and_then(Value::as_str)
            .ok_or("dumpCell needs the cell's code")?;
        let path = self.source_path(code);
        private_files::create_dir_all(&self.cells_dir)
            .and_then(|()| private_files::write(std::path::Path::new(&path), code))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        Ok(json!({ "sourcePath": path }))
    }

    fn set_breakpoints(&self, arguments: &Value) -> Result<Value, String> {
        let path = arguments
            .pointer("/source/path")
            .and_then(Value::as_str)
            .ok_or("setBreakpoints needs source.path")?;
        let lines: Vec<i64> = arguments
            .get("breakpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("line").and_then(Value::as_i64))
            .collect();
        // With its source and an id, as debugpy answers: JupyterLab's Breakpoints panel lists
        // a breakpoint by its source.
        let answer: Vec<Value> = lines
            .iter()
            .map(|line| {
                let mut b = json!({
                    "id": self.seq.fetch_add(1, Ordering::SeqCst),
                    "verified": self.adapter.is_some(),
                    "line": line,
                    "source": { "path": path, "name": file_name(path) },
                });
                if self.adapter.is_none() {
                    b["message"] = json!(NO_ADAPTER);
                }
                b
            })
            .collect();
        // Kept until the cell is built; the builds that already hold it (running, or stopped)
        // get them at once.
        let pushed = {
            let mut state = self.state();
            if lines.is_empty() {
                state.breakpoints.remove(path);
            } else {
                state.breakpoints.insert(path.to_owned(), lines);
            }
            state.tables.breakpoints(&state.breakpoints, path)
        };
        if let Some(session) = self.session() {
            // Unless the user's breakpoint or step holds the process.
            let held = !lock(&self.events).stopped_threads.is_empty();
            push_breakpoints(&session, pushed, held);
        }
        Ok(json!({ "breakpoints": answer }))
    }

    /// The attached adapter, if it is still there.
    fn session(&self) -> Option<Arc<Session>> {
        lock(&self.session).clone().filter(|s| s.is_running())
    }

    /// The adapter attached to `pid`, attached now if it is not (the first debug build, or a
    /// restarted evaluation process).
    fn session_for(&self, pid: u32) -> Result<Arc<Session>, String> {
        let program = self.adapter.as_ref().ok_or(NO_ADAPTER)?;
        if let Some(detaching) = lock(&self.detaching).take() {
            let _ = detaching.join();
        }
        let mut current = lock(&self.session);
        if let Some(s) = current.as_ref().filter(|s| s.pid == pid && s.is_running()) {
            return Ok(s.clone());
        }
        *current = None;
        let events = self.events.clone();
        let seq = self.seq.clone();
        let started = std::time::Instant::now();
        let session = Session::attach(program, pid, move |event| {
            forward_event(&events, &seq, event)
        })
        .map_err(|e| {
            format!(
                "cannot attach {} to the evaluation process: {e}",
                program.display()
            )
        })?;
        log::info!(
            "debugger: {} attached to {pid} in {:.1} s",
            program.display(),
            started.elapsed().as_secs_f64()
        );
        let session = Arc::new(session);
        *current = Some(session.clone());
        Ok(session)
    }

    /// A request for the attached adapter, answered in cell terms.
    fn forward(&self, command: &str, arguments: Value) -> Result<Value, String> {
        let session = self
            .session()
            .ok_or_else(|| format!("{command}: the kernel is not stopped at a breakpoint"))?;
        let response = session
            .forward(command, arguments)
            .map_err(|e| e.to_string())?;
        let mut body = response.get("body").cloned().unwrap_or_else(|| json!({}));
        match command {
            "stackTrace" => self.frames_in_cells(&mut body),
            "variables" => {
                if let Some(vars) = body.get_mut("variables").and_then(Value::as_array_mut) {
                    vars.retain(|v| {
                        !v.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(rust_evaluator::is_engine_local)
                    });
                    for v in vars {
                        let shown = v.get("type").and_then(Value::as_str).and_then(shown_type);
                        if let Some(t) = shown {
                            v["type"] = json!(t);
                        }
                    }
                }
            }
            "scopes" => {
                if let Some(scopes) = body.get_mut("scopes").and_then(Value::as_array_mut) {
                    scopes.push(json!({
                        "name": "Session",
                        "variablesReference": SESSION_SCOPE,
                        "expensive": false,
                    }));
                }
            }
            _ => {}
        }
        Ok(body)
    }

    /// Stack frames in a build's source show the cell's file and line instead; frames in code
    /// the engine wrote around the cell are marked as such. Frames below a cell's statements
    /// (the engine's runtime, std's catch_unwind) are left out, and frame names read as in the
    /// cell (`rust_evaluator::frame_name`).
    fn frames_in_cells(&self, body: &mut Value) {
        let state = self.state();
        let Some(frames) = body.get_mut("stackFrames").and_then(Value::as_array_mut) else {
            return;
        };
        let mut cell_frame = None;
        for (i, frame) in frames.iter_mut().enumerate() {
            let raw = frame.get("name").and_then(Value::as_str).unwrap_or("");
            let (name, is_cell) = rust_evaluator::frame_name(raw);
            frame["name"] = json!(name);
            if is_cell && cell_frame.is_none() {
                cell_frame = Some(i);
            }
            let Some(file) = frame.pointer("/source/path").and_then(Value::as_str) else {
                continue;
            };
            if !state.tables.is_build_file(file) {
                continue;
            }
            let line = frame.get("line").and_then(Value::as_u64).unwrap_or(0) as usize;
            match state.tables.cell_position(file, line) {
                Some((cell, cell_line)) => {
                    frame["source"] = json!({ "path": cell, "name": file_name(cell) });
                    frame["line"] = json!(cell_line);
                }
                None => {
                    frame["source"] = Value::Null;
                    frame["presentationHint"] = json!("subtle");
                }
            }
        }
        if let Some(i) = cell_frame {
            frames.truncate(i + 1);
            let kept = frames.len();
            body["totalFrames"] = json!(kept);
        }
    }

    fn inspect_variables(&self) -> Value {
        let listed = self.variables.get();
        let variables: Vec<Value> = listed
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "name": v.name,
                    "value": v.value,
                    "type": shown_type(&v.type_name).unwrap_or(&v.type_name),
                    "evaluateName": v.name,
                    // A VarStore's parameters are its children.
                    "variablesReference": if v.children.is_empty() { 0 } else { SESSION_SCOPE + 1 + i as u64 },
                })
            })
            .collect();
        self.state().listed = listed;
        json!({ "variables": variables })
    }

    fn children(&self, arguments: &Value) -> Result<Value, String> {
        let reference = arguments
            .get("variablesReference")
            .and_then(Value::as_u64)
            .ok_or("variables needs variablesReference")?;
        if reference == SESSION_SCOPE {
            return Ok(self.inspect_variables());
        }
        let state = self.state();
        let parent = reference
            .checked_sub(SESSION_SCOPE + 1)
            .and_then(|i| state.listed.get(i as usize))
            .ok_or_else(|| format!("no variable has reference {reference}"))?;
        let variables: Vec<Value> = parent
            .children
            .iter()
            .map(|(name, value)| {
                json!({
                    "name": name,
                    "value": value,
                    "type": "Tensor",
                    "evaluateName": format!("{}.variables()[\"{name}\"]", parent.name),
                    "variablesReference": 0,
                })
            })
            .collect();
        Ok(json!({ "variables": variables }))
    }

    fn rich_inspect(&self, arguments: &Value) -> Result<Value, String> {
        let name = arguments
            .get("variableName")
            .and_then(Value::as_str)
            .ok_or("richInspectVariables needs variableName")?;
        let found = self
            .variables
            .get()
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("no variable {name}"))?;
        let mut data = serde_json::Map::new();
        data.insert(
            "text/plain".into(),
            json!(format!(
                "{}: {} = {}",
                found.name, found.type_name, found.value
            )),
        );
        if let Some(html) = found.html {
            data.insert("text/html".into(), json!(html));
        }
        Ok(json!({ "data": data, "metadata": {} }))
    }
}

/// The suffix of cell files (JupyterLab shows them in its sources panel).
const CELL_SUFFIX: &str = ".rs";

impl Debugger for KernelDebugger {
    fn handle(&self, request: &Value, events: &DebugEvents) -> Value {
        let command = request.get("command").and_then(Value::as_str).unwrap_or("");
        let arguments = request.get("arguments").cloned().unwrap_or(Value::Null);
        lock(&self.events).sink = Some(events.clone());
        let result = match command {
            "initialize" => Ok(json!({
                "supportsConfigurationDoneRequest": true,
                "supportsConditionalBreakpoints": false,
                "supportsSetVariable": false,
                "supportsModulesRequest": false,
                "supportsDelayedStackTraceLoading": false,
                "supportsValueFormattingOptions": false,
            })),
            "attach" | "launch" => {
                self.state().started = true;
                self.publish("initialized", json!({}));
                Ok(json!({}))
            }
            "disconnect" => {
                let mut state = self.state();
                state.started = false;
                state.breakpoints.clear();
                drop(state);
                // Detaching takes lldb up to seconds: not on the control task, which answers
                // interrupts. The next attach waits for it.
                if let Some(session) = lock(&self.session).take() {
                    let detaching = std::thread::Builder::new()
                        .name("debug-detach".into())
                        .spawn(move || session.detach());
                    match detaching {
                        Ok(handle) => *lock(&self.detaching) = Some(handle),
                        Err(e) => log::warn!("debugger: cannot detach: {e}"),
                    }
                }
                lock(&self.events).stopped_threads.clear();
                Ok(json!({}))
            }
            "configurationDone" => Ok(json!({})),
            "debugInfo" => Ok(self.debug_info()),
            "dumpCell" => self.dump_cell(&arguments),
            "setBreakpoints" => self.set_breakpoints(&arguments),
            "inspectVariables" => Ok(self.inspect_variables()),
            "richInspectVariables" => self.rich_inspect(&arguments),
            "variables"
                if arguments
                    .get("variablesReference")
                    .and_then(Value::as_u64)
                    .is_some_and(|r| r >= OWN_REFERENCES) =>
            {
                self.children(&arguments)
            }
            "setExceptionBreakpoints" => Ok(json!({ "breakpoints": [] })),
            "threads" if self.session().is_none() => Ok(json!({ "threads": [] })),
            other => self.forward(other, arguments),
        };
        self.response(request, result)
    }
}

impl DebugTarget for KernelDebugger {
    /// Only with an adapter: without one nothing could use the debug info.
    fn enabled(&self) -> bool {
        self.adapter.is_some() && self.state().started
    }

    fn before_run(&self, build: &DebugBuild) {
        // The cell files of the build's cells, each hashed once.
        let mut paths: HashMap<*const u8, String> = HashMap::new();
        let lines: Vec<(usize, String, usize)> = build
            .lines
            .iter()
            .map(|l| {
                let path = paths
                    .entry(l.cell.as_ptr())
                    .or_insert_with(|| self.source_path(&l.cell))
                    .clone();
                (l.line, path, l.cell_line)
            })
            .collect();
        let file = build.file.display().to_string();
        let (evicted, breakpoints) = {
            let mut state = self.state();
            let evicted = state.tables.add(file, lines);
            let breakpoints = state.tables.newest_breakpoints(&state.breakpoints);
            (evicted, breakpoints)
        };
        let session = match self.session_for(build.pid) {
            Ok(s) => s,
            Err(message) => {
                log::warn!("debugger: {message}");
                self.publish(
                    "output",
                    json!({ "category": "console", "output": format!("{message}\n") }),
                );
                return;
            }
        };
        let pushed = evicted
            .map(|f| (f, Vec::new()))
            .into_iter()
            .chain(breakpoints.filter(|(_, lines)| !lines.is_empty()))
            .collect();
        // Between cells nothing the user asked for holds the process.
        push_breakpoints(&session, pushed, false);
    }
}

/// Sets each build's breakpoints (build file, lines) in the adapter. lldb halts the process for
/// a moment to set them; unless something the user asked for holds it (`held`), it is made
/// sure to run on (`Session::keep_running`).
fn push_breakpoints(session: &Session, pushed: Vec<(String, Vec<usize>)>, held: bool) {
    let changed = !pushed.is_empty();
    for (file, lines) in pushed {
        if let Err(e) = session.set_breakpoints(&file, &lines) {
            log::warn!("debugger: breakpoints in {file}: {e}");
        }
    }
    if changed
        && !held
        && let Err(e) = session.keep_running()
    {
        log::warn!("debugger: {e}");
    }
}

/// An adapter event for JupyterLab: stops and continues go on (renumbered), and the stopped
/// threads are tracked for `debugInfo`; the adapter's own bookkeeping (breakpoints resolved
/// in build files, modules loaded, its console) stays here.
fn forward_event(events: &Mutex<EventState>, seq: &AtomicI64, mut event: Value) {
    let name = event.get("event").and_then(Value::as_str).unwrap_or("");
    let thread = event.pointer("/body/threadId").and_then(Value::as_i64);
    let mut state = lock(events);
    match name {
        "stopped" => {
            log::info!(
                "debugger: stopped ({})",
                event
                    .pointer("/body/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            );
            if let Some(t) = thread.filter(|t| !state.stopped_threads.contains(t)) {
                state.stopped_threads.push(t);
            }
        }
        "continued" => state.stopped_threads.clear(),
        "exited" | "terminated" => {
            state.stopped_threads.clear();
            return;
        }
        other => {
            log::debug!("debugger: adapter event {other}");
            return;
        }
    }
    event["seq"] = json!(seq.fetch_add(1, Ordering::SeqCst));
    if let Some(sink) = state.sink.clone() {
        drop(state);
        sink(event);
    }
}

/// The type name JupyterLab is given for a variable. Its Variables tree shows a variable's
/// value only for Python's `int`, `float` and `bool` (for any other type it shows the type),
/// so Rust's numbers and lldb's C names for them are given as those; the rest as they are.
/// (Single-byte integers are left alone: lldb shows them as characters.)
fn shown_type(type_name: &str) -> Option<&'static str> {
    match type_name {
        "f32" | "f64" | "float" | "double" => Some("float"),
        "i16" | "i32" | "i64" | "i128" | "isize" | "u16" | "u32" | "u64" | "u128" | "usize"
        | "short" | "unsigned short" | "int" | "unsigned int" | "long" | "unsigned long"
        | "long long" | "unsigned long long" | "__int128" | "unsigned __int128" => Some("int"),
        "bool" | "_Bool" => Some("bool"),
        _ => None,
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Drop for KernelDebugger {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cells_dir);
    }
}

/// MurmurHash2, 32 bits, of `data` (JupyterLab's `murmur2` of a cell's UTF-8, and ipykernel's).
pub fn murmur2(data: &[u8], seed: u32) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = seed ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_the_reference_one() {
        // ipykernel's `murmur2_x86` of the same text and seed (tests/test_ide.py compares a
        // dumped cell's path with it too): all tail lengths, and UTF-8.
        assert_eq!(murmur2(b"abc", 0), 324500635);
        assert_eq!(murmur2(b"let x = 1;", HASH_SEED), 67329842);
        assert_eq!(murmur2("héllo wörld".as_bytes(), 7), 3186472571);
    }

    #[test]
    fn numbers_are_given_as_python_names_for_jupyterlabs_tree() {
        assert_eq!(shown_type("f64"), Some("float"));
        assert_eq!(shown_type("double"), Some("float"));
        assert_eq!(shown_type("usize"), Some("int"));
        assert_eq!(shown_type("unsigned long"), Some("int"));
        assert_eq!(shown_type("bool"), Some("bool"));
        // lldb shows single bytes as characters; other types keep their names.
        assert_eq!(shown_type("unsigned char"), None);
        assert_eq!(shown_type("Tensor"), None);
    }

    fn request(command: &str, arguments: Value) -> Value {
        json!({"seq": 7, "type": "request", "command": command, "arguments": arguments})
    }

    #[test]
    fn a_session_lists_variables_and_keeps_breakpoints() {
        let shared = SharedVariables::default();
        // No adapter: breakpoints are kept, and say why they cannot stop.
        let d = KernelDebugger::new(shared, None);
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink: DebugEvents = {
            let events = events.clone();
            Arc::new(move |e| lock(&events).push(e))
        };
        let ask = |command: &str, arguments: Value| d.handle(&request(command, arguments), &sink);
        let info = ask("debugInfo", json!({}));
        assert_eq!(info["success"], true);
        assert_eq!(info["body"]["isStarted"], false);
        assert_eq!(ask("attach", json!({}))["success"], true);
        assert_eq!(lock(&events)[0]["event"], "initialized");
        assert!(!d.enabled(), "no debug builds without an adapter");
        let dumped = ask("dumpCell", json!({"code": "let x = 1;"}));
        let path = dumped["body"]["sourcePath"].as_str().unwrap().to_owned();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "let x = 1;");
        let set = ask(
            "setBreakpoints",
            json!({"source": {"path": path}, "breakpoints": [{"line": 1}]}),
        );
        assert_eq!(set["body"]["breakpoints"][0]["verified"], false);
        assert_eq!(set["body"]["breakpoints"][0]["message"], NO_ADAPTER);
        let info = ask("debugInfo", json!({}));
        assert_eq!(info["body"]["isStarted"], true);
        assert_eq!(info["body"]["breakpoints"][0]["source"], path.as_str());
        assert_eq!(
            ask("inspectVariables", json!({}))["body"]["variables"],
            json!([])
        );
        assert_eq!(ask("stepIn", json!({}))["success"], false);
        assert_eq!(ask("threads", json!({}))["body"]["threads"], json!([]));
        // A debug build that cannot be attached to says why, on the debugger's console.
        d.before_run(&DebugBuild {
            pid: std::process::id(),
            file: "/nowhere/build-1.rs".into(),
            lines: vec![],
        });
        assert!(
            lock(&events).iter().any(|e| e["event"] == "output"
                && e["body"]["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("lldb"))),
            "{:?}",
            lock(&events)
        );
        assert_eq!(ask("disconnect", json!({}))["success"], true);
        drop(d);
        assert!(
            !std::path::Path::new(&path).exists(),
            "cells are removed with the kernel"
        );
    }
}
