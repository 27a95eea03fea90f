//! A Debug Adapter Protocol client over an adapter's stdin/stdout (the DAP's base protocol:
//! `Content-Length` headers, JSON bodies). The kernel's debugger uses it to drive `lldb-dap`
//! attached to the evaluation process; it knows nothing of Jupyter.
//!
//! One reader thread reads what the adapter writes: a response goes to the request waiting for
//! it (by `request_seq`), an event to the callback given at start. Requests from the adapter
//! (`runInTerminal`) are not used by an attach session and are ignored.

use crossbeam_channel::{Receiver, Sender, bounded};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The adapters looked for on `PATH`, in order: LLVM 18+ calls it lldb-dap, earlier lldb-vscode;
/// Debian and Ubuntu suffix the LLVM version.
const ADAPTER_NAMES: &[&str] = &["lldb-dap", "lldb-vscode"];
const VERSIONS: std::ops::RangeInclusive<u32> = 14..=30;

#[derive(Debug, thiserror::Error)]
pub enum DapError {
    #[error("cannot start the debug adapter {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the debug adapter is gone")]
    Gone,
    #[error("the debug adapter did not answer {command} within {seconds} s")]
    Timeout { command: String, seconds: u64 },
    #[error("{command} failed: {message}")]
    Failed { command: String, message: String },
}

/// Finds an adapter: `configured` if given (a path, or a name looked up on `PATH`), else the
/// newest `lldb-dap` / `lldb-vscode` on `path_var` (as `PATH` is written).
pub fn find_adapter(configured: Option<&Path>, path_var: Option<OsString>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let on_path = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
    if let Some(configured) = configured {
        if configured.components().count() > 1 {
            return is_executable(configured).then(|| configured.to_owned());
        }
        return on_path(&configured.to_string_lossy());
    }
    ADAPTER_NAMES.iter().find_map(|name| {
        on_path(name).or_else(|| VERSIONS.rev().find_map(|v| on_path(&format!("{name}-{v}"))))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

type Pending = Arc<Mutex<HashMap<i64, Sender<Value>>>>;

/// A running adapter. Dropping it kills the adapter (which detaches from what it debugs).
pub struct Adapter {
    child: Mutex<Child>,
    /// None once [`Adapter::finish`] closed it.
    stdin: Mutex<Option<ChildStdin>>,
    seq: AtomicI64,
    pending: Pending,
    /// Disconnected when the reader thread ends: the adapter closed its stdout (it exited).
    ended: Receiver<()>,
}

impl Adapter {
    /// Starts `program` and its reader thread; `on_event` gets each event the adapter sends.
    pub fn spawn(
        program: &Path,
        on_event: impl Fn(Value) + Send + 'static,
    ) -> Result<Adapter, DapError> {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| DapError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(DapError::Gone);
        };
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let (ending, ended) = bounded::<()>(0);
        let spawned = std::thread::Builder::new()
            .name("dap-reader".into())
            .spawn(move || {
                let _ending = ending;
                let mut reader = BufReader::new(stdout);
                while let Some(message) = read_message(&mut reader) {
                    match message.get("type").and_then(Value::as_str) {
                        Some("response") => {
                            let seq = message.get("request_seq").and_then(Value::as_i64);
                            let waiting = seq.and_then(|s| {
                                reader_pending
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .remove(&s)
                            });
                            if let Some(waiting) = waiting {
                                let _ = waiting.send(message);
                            }
                        }
                        Some("event") => on_event(message),
                        _ => log::debug!("ignored from the debug adapter: {message}"),
                    }
                }
                // Whoever still waits learns the adapter is gone (their senders drop).
                reader_pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            });
        if let Err(source) = spawned {
            let _ = child.kill();
            return Err(DapError::Spawn {
                program: program.to_owned(),
                source,
            });
        }
        Ok(Adapter {
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            seq: AtomicI64::new(1),
            pending,
            ended,
        })
    }

    /// Sends a request; the receiver gets its response (the whole message).
    pub fn send(&self, command: &str, arguments: Value) -> Result<Receiver<Value>, DapError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = bounded(1);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq, tx);
        let message = json!({
            "seq": seq,
            "type": "request",
            "command": command,
            "arguments": arguments,
        });
        let body = message.to_string();
        let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
        let stdin = stdin.as_mut().ok_or(DapError::Gone)?;
        write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len())
            .and_then(|()| stdin.flush())
            .map_err(|_| DapError::Gone)?;
        Ok(rx)
    }

    /// Sends a request and waits up to `limit` for its response; an unsuccessful one is an
    /// error with the adapter's message. `limit` guards against a stuck adapter only.
    pub fn request(
        &self,
        command: &str,
        arguments: Value,
        limit: Duration,
    ) -> Result<Value, DapError> {
        let rx = self.send(command, arguments)?;
        let response = wait(&rx, command, limit)?;
        if response.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(response)
        } else {
            Err(DapError::Failed {
                command: command.to_owned(),
                message: response_message(&response),
            })
        }
    }

    /// Ends the session: closes the adapter's input and waits up to `limit` for it to exit by
    /// itself (after a `disconnect`, an adapter finishes detaching first; killed midway, it
    /// can leave its breakpoints in the debuggee). Returns whether it did; it is killed if not.
    pub fn finish(&self, limit: Duration) -> bool {
        self.stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let exited = matches!(
            self.ended.recv_timeout(limit),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        if exited {
            let _ = self
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wait();
        }
        exited
    }

    /// Whether the adapter process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(child.try_wait(), Ok(None))
    }
}

/// Waits for a response sent with [`Adapter::send`].
pub fn wait(rx: &Receiver<Value>, command: &str, limit: Duration) -> Result<Value, DapError> {
    rx.recv_timeout(limit).map_err(|e| match e {
        crossbeam_channel::RecvTimeoutError::Timeout => DapError::Timeout {
            command: command.to_owned(),
            seconds: limit.as_secs(),
        },
        crossbeam_channel::RecvTimeoutError::Disconnected => DapError::Gone,
    })
}

/// What an unsuccessful response says.
pub fn response_message(response: &Value) -> String {
    response
        .pointer("/body/error/format")
        .or_else(|| response.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .to_owned()
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One message of the base protocol, or None at the end of the stream (or on garbage, which
/// ends the session: the stream cannot be resynchronised).
fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("Content-Length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_back_to_back() {
        let a = r#"{"type":"event","event":"stopped"}"#;
        let b = r#"{"type":"response","request_seq":2,"success":true}"#;
        let stream = format!(
            "Content-Length: {}\r\n\r\n{a}content-length:{}\r\n\r\n{b}",
            a.len(),
            b.len()
        );
        let mut reader = std::io::Cursor::new(stream.into_bytes());
        assert_eq!(read_message(&mut reader).unwrap()["event"], "stopped");
        assert_eq!(read_message(&mut reader).unwrap()["request_seq"], 2);
        assert!(read_message(&mut reader).is_none());
    }

    #[test]
    fn a_truncated_body_ends_the_stream() {
        let mut reader = std::io::Cursor::new(b"Content-Length: 50\r\n\r\n{}".to_vec());
        assert!(read_message(&mut reader).is_none());
    }

    #[test]
    fn adapters_are_found_by_version_suffix_or_configured_path() {
        let dir = std::env::temp_dir().join(format!("dap-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let make = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(name);
            std::fs::write(&p, "").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let path = Some(dir.clone().into_os_string());
        assert_eq!(find_adapter(None, path.clone()), None);
        let v18 = make("lldb-dap-18");
        let v19 = make("lldb-dap-19");
        assert_eq!(find_adapter(None, path.clone()), Some(v19.clone()));
        let plain = make("lldb-dap");
        assert_eq!(find_adapter(None, path.clone()), Some(plain));
        assert_eq!(
            find_adapter(Some(Path::new("lldb-dap-18")), path.clone()),
            Some(v18.clone())
        );
        assert_eq!(find_adapter(Some(&v18), None), Some(v18));
        assert_eq!(find_adapter(Some(&dir.join("none")), path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
