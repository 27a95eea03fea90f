//! A DAP adapter (lldb-dap) attached to the evaluation process, by pid: never to the kernel,
//! which keeps answering while the evaluation process is stopped.

use dap_client::{Adapter, DapError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// How long attaching may take: lldb reads the symbols of every library loaded (libtorch's are
/// large). A guard against a stuck adapter, not a wait for something.
const ATTACH_LIMIT: Duration = Duration::from_secs(120);
/// Any other request.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Signals the kernel and the evaluation process use among themselves: the interrupt
/// (SIGINT), and those of libraries and the snapshot writer. They go to the process as if no
/// debugger were there, instead of stopping it.
const PASSED_SIGNALS: &str = "SIGINT SIGTERM SIGUSR1 SIGUSR2 SIGPIPE SIGALRM SIGCHLD";

pub(super) struct Session {
    adapter: Adapter,
    pub(super) pid: u32,
}

impl Session {
    /// Starts `program`, attaches it to `pid` and lets the process go on; `on_event` gets
    /// the adapter's events from then on.
    pub(super) fn attach(
        program: &Path,
        pid: u32,
        on_event: impl Fn(Value) + Send + 'static,
    ) -> Result<Session, DapError> {
        let adapter = Adapter::spawn(program, on_event)?;
        adapter.request(
            "initialize",
            json!({
                "clientID": "tch-kernel",
                "adapterID": "lldb-dap",
                "linesStartAt1": true,
                "columnsStartAt1": true,
                "pathFormat": "path",
                "supportsVariableType": true,
            }),
            REQUEST_LIMIT,
        )?;
        let attach = adapter.send("attach", json!({ "pid": pid }))?;
        let response = dap_client::wait(&attach, "attach", ATTACH_LIMIT)?;
        if response.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(DapError::Failed {
                command: "attach".into(),
                message: dap_client::response_message(&response),
            });
        }
        let session = Session { adapter, pid };
        session.command(&format!(
            "process handle {PASSED_SIGNALS} --pass true --stop false --notify false"
        ))?;
        // A thread that gets the attach's SIGSTOP late would stop the process again.
        session.command("process handle SIGSTOP --pass false --stop false --notify false")?;
        // The process stays stopped until the configuration is done.
        session
            .adapter
            .request("configurationDone", json!({}), REQUEST_LIMIT)?;
        session.keep_running()?;
        Ok(session)
    }

    /// Makes sure the process runs, when nothing the user asked for stopped it: after the
    /// attach, and after breakpoints change while it runs (lldb halts it for a moment to set
    /// them). lldb-dap 19 sometimes leaves it stopped after `configurationDone` (seen once in
    /// about ten attaches in the kernel's tests); the next cell then never started. lldb's public
    /// state says so ("stopped"), and the process goes on.
    pub(super) fn keep_running(&self) -> Result<(), DapError> {
        let status = self.command("process status")?;
        let text = status
            .pointer("/body/result")
            .and_then(Value::as_str)
            .unwrap_or("");
        if text.contains(" stopped") {
            log::warn!("debugger: {} was left stopped; continuing it", self.pid);
            // It may have gone on meanwhile ("process is running"): nothing to do then.
            if let Err(e) =
                self.adapter
                    .request("continue", json!({ "threadId": 0 }), REQUEST_LIMIT)
            {
                log::info!("debugger: continuing {}: {e}", self.pid);
            }
        }
        Ok(())
    }

    /// An lldb command, through the adapter's console (the backtick marks a command).
    fn command(&self, command: &str) -> Result<Value, DapError> {
        self.adapter.request(
            "evaluate",
            json!({ "expression": format!("`{command}"), "context": "repl" }),
            REQUEST_LIMIT,
        )
    }

    /// Sets the breakpoints of one build's source file (replacing its earlier ones).
    pub(super) fn set_breakpoints(&self, file: &str, lines: &[usize]) -> Result<Value, DapError> {
        let breakpoints: Vec<Value> = lines.iter().map(|l| json!({ "line": l })).collect();
        self.adapter.request(
            "setBreakpoints",
            json!({
                "source": { "path": file, "name": file_name(file) },
                "breakpoints": breakpoints,
            }),
            REQUEST_LIMIT,
        )
    }

    /// A request from JupyterLab, as it is; the adapter's whole response.
    pub(super) fn forward(&self, command: &str, arguments: Value) -> Result<Value, DapError> {
        self.adapter.request(command, arguments, REQUEST_LIMIT)
    }

    pub(super) fn is_running(&self) -> bool {
        self.adapter.is_running()
    }

    /// Detaches, leaving the process running: the adapter removes its breakpoints and exits
    /// by itself (killing it midway left a breakpoint's trap in the process, which the next
    /// attach then hung on). A process left stopped is continued.
    pub(super) fn detach(&self) {
        let detached = self.adapter.request(
            "disconnect",
            json!({ "terminateDebuggee": false }),
            REQUEST_LIMIT,
        );
        if let Err(e) = detached {
            log::warn!("debugger: detaching from {}: {e}", self.pid);
        }
        let started = std::time::Instant::now();
        if !self.adapter.finish(REQUEST_LIMIT) {
            log::warn!("debugger: the adapter did not exit after detaching; killed");
        }
        log::info!(
            "debugger: detached from {} in {:.1} s",
            self.pid,
            started.elapsed().as_secs_f64()
        );
        if process_state(self.pid) == Some('T') {
            log::warn!("debugger: {} was left stopped; continuing it", self.pid);
            // SAFETY: a signal to a process of ours.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGCONT);
            }
        }
    }
}

/// The state letter of `/proc/<pid>/status` (`S`, `R`, `T` stopped, `t` traced).
fn process_state(pid: u32) -> Option<char> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|s| s.trim().chars().next())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
