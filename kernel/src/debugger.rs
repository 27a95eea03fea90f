//! JupyterLab's debugger (the bug icon), as far as a compiled-cell kernel answers it itself:
//! the Debug Adapter Protocol requests JupyterLab sends on control (`debugInfo`, `dumpCell`,
//! `inspectVariables`, `richInspectVariables`, `variables`, and the session's `initialize`,
//! `attach`, `configurationDone`, `setBreakpoints`, `disconnect`). The Variables panel shows
//! every variable of the session with its type and short value, a tensor's preview and a
//! VarStore's parameters, from what the evaluator publishes after each cell
//! (`rust_evaluator::SharedVariables`): answered beside a running cell, never by the evaluation
//! process. Breakpoints are kept and said to be unverified, with the reason: stopping in cell
//! code needs a DAP adapter attached to the evaluation process, which this kernel does not
//! start yet.

use jupyter_server::Debugger;
use rust_evaluator::{SharedVariables, VariableView};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

/// JupyterLab computes a cell's file name itself, `prefix + murmur2(code, seed) + suffix`
/// (its only hash method); `dumpCell` writes the cell there.
const HASH_SEED: u32 = 3339675911;

/// Why a breakpoint cannot stop, as the breakpoint's message in JupyterLab.
const NO_STOP: &str = "tch-kernel cannot stop at breakpoints yet: cells run without a debug \
adapter attached to the evaluation process. The Variables panel shows the session's variables \
after each cell.";

/// The kernel's debugger state.
pub struct KernelDebugger {
    variables: SharedVariables,
    /// Where `dumpCell` writes cells (owner-only), created on the first dump.
    cells_dir: PathBuf,
    seq: AtomicI64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    /// Source path -> breakpoint lines, as JupyterLab set them.
    breakpoints: BTreeMap<String, Vec<i64>>,
    /// The variables as last listed, for `variables` requests on a VarStore's reference.
    listed: Vec<VariableView>,
}

impl KernelDebugger {
    pub fn new(variables: SharedVariables) -> KernelDebugger {
        let cells_dir =
            std::env::temp_dir().join(format!("tch-kernel-debug-{}", std::process::id()));
        KernelDebugger {
            variables,
            cells_dir,
            seq: AtomicI64::new(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
            "stoppedThreads": [],
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
        let answer: Vec<Value> = lines
            .iter()
            .map(|line| json!({ "verified": false, "line": line, "message": NO_STOP }))
            .collect();
        let mut state = self.state();
        if lines.is_empty() {
            state.breakpoints.remove(path);
        } else {
            state.breakpoints.insert(path.to_owned(), lines);
        }
        Ok(json!({ "breakpoints": answer }))
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
                    "type": v.type_name,
                    "evaluateName": v.name,
                    // A VarStore's parameters are its children (reference i + 1).
                    "variablesReference": if v.children.is_empty() { 0 } else { i + 1 },
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
        let state = self.state();
        let parent = (reference as usize)
            .checked_sub(1)
            .and_then(|i| state.listed.get(i))
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
    fn handle(&self, request: &Value, event: &dyn Fn(Value)) -> Value {
        let command = request.get("command").and_then(Value::as_str).unwrap_or("");
        let arguments = request.get("arguments").cloned().unwrap_or(Value::Null);
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
                event(self.event("initialized", json!({})));
                Ok(json!({}))
            }
            "disconnect" => {
                let mut state = self.state();
                state.started = false;
                state.breakpoints.clear();
                Ok(json!({}))
            }
            "configurationDone" => Ok(json!({})),
            "debugInfo" => Ok(self.debug_info()),
            "dumpCell" => self.dump_cell(&arguments),
            "setBreakpoints" => self.set_breakpoints(&arguments),
            "inspectVariables" => Ok(self.inspect_variables()),
            "variables" => self.children(&arguments),
            "richInspectVariables" => self.rich_inspect(&arguments),
            "threads" => Ok(json!({ "threads": [] })),
            "setExceptionBreakpoints" => Ok(json!({ "breakpoints": [] })),
            other => Err(format!(
                "{other}: not available (the kernel is not stopped at a breakpoint; {NO_STOP})"
            )),
        };
        self.response(request, result)
    }
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

    fn request(command: &str, arguments: Value) -> Value {
        json!({"seq": 7, "type": "request", "command": command, "arguments": arguments})
    }

    #[test]
    fn a_session_lists_variables_and_keeps_breakpoints() {
        let shared = SharedVariables::default();
        let d = KernelDebugger::new(shared);
        let events = std::cell::RefCell::new(Vec::new());
        let ask = |command: &str, arguments: Value| {
            d.handle(&request(command, arguments), &|e| {
                events.borrow_mut().push(e)
            })
        };
        let info = ask("debugInfo", json!({}));
        assert_eq!(info["success"], true);
        assert_eq!(info["body"]["isStarted"], false);
        assert_eq!(ask("attach", json!({}))["success"], true);
        assert_eq!(events.borrow()[0]["event"], "initialized");
        let dumped = ask("dumpCell", json!({"code": "let x = 1;"}));
        let path = dumped["body"]["sourcePath"].as_str().unwrap().to_owned();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "let x = 1;");
        let set = ask(
            "setBreakpoints",
            json!({"source": {"path": path}, "breakpoints": [{"line": 1}]}),
        );
        assert_eq!(set["body"]["breakpoints"][0]["verified"], false);
        let info = ask("debugInfo", json!({}));
        assert_eq!(info["body"]["isStarted"], true);
        assert_eq!(info["body"]["breakpoints"][0]["source"], path.as_str());
        assert_eq!(
            ask("inspectVariables", json!({}))["body"]["variables"],
            json!([])
        );
        assert_eq!(ask("stepIn", json!({}))["success"], false);
        assert_eq!(ask("disconnect", json!({}))["success"], true);
        drop(d);
        assert!(
            !std::path::Path::new(&path).exists(),
            "cells are removed with the kernel"
        );
    }
}
