//! The protocol state machine for shell requests. It runs on its own OS thread, so a long cell
//! never blocks the socket tasks: control, heartbeat and IOPub stay live.

use crate::history::History;
use crate::publisher::{Publisher, StdinHandle};
use crate::startup::Startup;
use jupyter_wire::Message;
use jupyter_wire::content::{
    CommClose, CommInfoReply, CompleteReply, ErrorInfo, ExecuteInput, ExecuteReply, ExecuteRequest,
    ExecuteResult, ExecutionState, HelpLink, HistoryReply, InspectReply, IsCompleteReply,
    KernelInfoReply, LanguageInfo, MimeBundle, Payload, Request, ShutdownReply, Status,
};
use serde::Serialize;
use serde_json::Map;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc::UnboundedSender;

/// What the kernel reports about itself in `kernel_info_reply`.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub implementation: String,
    pub implementation_version: String,
    pub language_info: LanguageInfo,
    pub banner: String,
    pub help_links: Vec<HelpLink>,
}

impl KernelInfo {
    pub(crate) fn reply(&self) -> KernelInfoReply {
        KernelInfoReply {
            status: "ok",
            protocol_version: jupyter_wire::PROTOCOL_VERSION.to_owned(),
            implementation: self.implementation.clone(),
            implementation_version: self.implementation_version.clone(),
            language_info: self.language_info.clone(),
            banner: self.banner.clone(),
            help_links: self.help_links.clone(),
            supported_features: Vec::new(),
            debugger: false,
        }
    }
}

pub enum ExecuteOutcome {
    Ok {
        /// The cell's value, shown as `execute_result` (should include `text/plain`).
        result: Option<MimeBundle>,
        payload: Vec<Payload>,
    },
    Error(ErrorInfo),
}

/// A language engine. Every method runs on the kernel's executor thread, one request at a time.
pub trait Interpreter: Send + 'static {
    /// Runs a cell. Output goes through `publisher` while it runs; everything the cell printed
    /// must have been handed to the publisher before this returns.
    fn execute(
        &mut self,
        code: &str,
        execution_count: u64,
        publisher: &Publisher,
        stdin: &StdinHandle,
    ) -> ExecuteOutcome;
    /// `cursor_pos` and the returned cursor offsets are in Unicode code points.
    fn complete(&mut self, code: &str, cursor_pos: usize) -> CompleteReply;
    fn inspect(&mut self, code: &str, cursor_pos: usize, detail_level: u8) -> InspectReply;
    fn is_complete(&mut self, code: &str) -> IsCompleteReply;
    /// Called once before the process exits.
    fn shutdown(&mut self, _restart: bool) {}
}

/// What the executor loop does after a request.
enum Flow {
    Continue,
    /// A cell failed with `stop_on_error`: answer these queued execute requests "aborted".
    Abort(Vec<Message>),
    /// `shutdown_request` arrived on shell.
    Exit,
}

pub(crate) enum ShellEvent {
    Request(Message),
    Shutdown { restart: bool },
}

pub(crate) struct Core<I: Interpreter> {
    pub(crate) info: KernelInfo,
    pub(crate) publisher: Publisher,
    pub(crate) stdin: StdinHandle,
    pub(crate) shell_out: UnboundedSender<Message>,
    pub(crate) history: History,
    pub(crate) execution_count: u64,
    /// Built in the background so that `kernel_info` is answered at once; the first request
    /// that needs it waits.
    slot: Startup<I>,
    events: crossbeam_channel::Receiver<ShellEvent>,
    /// Events taken off the channel early (while aborting) that still have to be handled.
    pending: VecDeque<ShellEvent>,
}

impl<I: Interpreter> Core<I> {
    pub(crate) fn new(
        info: KernelInfo,
        publisher: Publisher,
        stdin: StdinHandle,
        shell_out: UnboundedSender<Message>,
        history: History,
        interpreter: Startup<I>,
        events: crossbeam_channel::Receiver<ShellEvent>,
    ) -> Self {
        Core {
            info,
            publisher,
            stdin,
            shell_out,
            history,
            execution_count: 0,
            slot: interpreter,
            events,
            pending: VecDeque::new(),
        }
    }

    fn interpreter(&mut self) -> Result<&mut I, String> {
        self.slot.wait()
    }

    fn status(&self, state: ExecutionState, parent: &Message) {
        self.publisher.send(
            "status",
            Status {
                execution_state: state,
            },
            Some(parent),
        );
    }

    fn reply(&self, parent: &Message, content: impl Serialize) {
        let msg_type = Request::reply_type(parent.msg_type());
        let reply = Message::new(self.publisher.session(), &msg_type, content, Some(parent));
        if self.shell_out.send(reply).is_err() {
            log::warn!("shell socket closed; dropped {msg_type}");
        }
    }

    /// The executor loop: one request at a time, each bracketed by busy/idle. Returns after a
    /// shutdown, once the interpreter (and its child process and temp files) is released.
    pub(crate) fn run(mut self) {
        let mut exit_requested = false;
        loop {
            let event = match self.pending.pop_front() {
                Some(e) => e,
                None => match self.events.recv() {
                    Ok(e) => e,
                    Err(_) => break,
                },
            };
            match event {
                ShellEvent::Shutdown { restart } => {
                    if let Ok(i) = self.interpreter() {
                        i.shutdown(restart);
                    }
                    break;
                }
                ShellEvent::Request(msg) => {
                    self.status(ExecutionState::Busy, &msg);
                    let flow = self.handle(&msg);
                    self.status(ExecutionState::Idle, &msg);
                    match flow {
                        Flow::Continue => {}
                        Flow::Abort(queued) => {
                            for msg in queued {
                                self.status(ExecutionState::Busy, &msg);
                                self.reply(&msg, ExecuteReply::Aborted {});
                                self.status(ExecutionState::Idle, &msg);
                            }
                        }
                        Flow::Exit => {
                            exit_requested = true;
                            break;
                        }
                    }
                }
            }
        }
        drop(self);
        if exit_requested {
            crate::transport::exit_soon();
        }
    }

    /// After a failed cell with `stop_on_error`, every execute request already queued is to be
    /// answered "aborted" without running. They are taken before the failed cell's reply goes
    /// out: a request sent after the client saw that reply must run. Other requests stay queued.
    fn take_queued_executes(&mut self) -> Vec<Message> {
        let mut queued = Vec::new();
        let mut kept = VecDeque::new();
        let events: Vec<ShellEvent> = self.events.try_iter().collect();
        for event in self.pending.drain(..).chain(events) {
            match event {
                ShellEvent::Request(msg) if msg.msg_type() == "execute_request" => queued.push(msg),
                other => kept.push_back(other),
            }
        }
        self.pending = kept;
        queued
    }

    fn handle(&mut self, msg: &Message) -> Flow {
        let request = match Request::parse(msg.msg_type(), &msg.content) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("malformed {} content: {e}", msg.msg_type());
                self.reply(
                    msg,
                    ErrorInfo {
                        ename: "BadRequest".to_owned(),
                        evalue: format!("malformed {}: {e}", msg.msg_type()),
                        traceback: vec![],
                    }
                    .with_status(),
                );
                return Flow::Continue;
            }
        };
        match request {
            Request::KernelInfo => self.reply(msg, self.info.reply()),
            Request::Execute(req) => return self.execute(msg, req),
            Request::Complete(req) => {
                let reply = match self.interpreter() {
                    Ok(i) => i.complete(&req.code, req.cursor_pos),
                    Err(_) => CompleteReply {
                        status: "ok",
                        matches: vec![],
                        cursor_start: req.cursor_pos,
                        cursor_end: req.cursor_pos,
                        metadata: Map::new(),
                    },
                };
                self.reply(msg, reply);
            }
            Request::Inspect(req) => {
                let reply = match self.interpreter() {
                    Ok(i) => i.inspect(&req.code, req.cursor_pos, req.detail_level),
                    Err(_) => InspectReply {
                        status: "ok",
                        found: false,
                        data: Map::new(),
                        metadata: Map::new(),
                    },
                };
                self.reply(msg, reply);
            }
            Request::IsComplete(req) => {
                let reply = match self.interpreter() {
                    Ok(i) => i.is_complete(&req.code),
                    Err(_) => IsCompleteReply {
                        status: jupyter_wire::content::Completeness::Unknown,
                        indent: None,
                    },
                };
                self.reply(msg, reply);
            }
            Request::History(req) => {
                let history = self.history.query(&req);
                self.reply(
                    msg,
                    HistoryReply {
                        status: "ok",
                        history,
                    },
                );
            }
            Request::CommInfo(_) => self.reply(
                msg,
                CommInfoReply {
                    status: "ok",
                    comms: Map::new(),
                },
            ),
            Request::CommOpen(open) => {
                // No comm targets are registered: the spec says to close unknown ones at once.
                log::info!(
                    "closing comm {} for unknown target {:?}",
                    open.comm_id,
                    open.target_name
                );
                self.publisher.send(
                    "comm_close",
                    CommClose {
                        comm_id: open.comm_id,
                        data: Map::new(),
                    },
                    Some(msg),
                );
            }
            Request::CommMsg(_) | Request::CommClose(_) => {}
            Request::Shutdown(req) => {
                // Deprecated on shell since 5.4, still accepted: reply, then exit like control does.
                self.reply(
                    msg,
                    ShutdownReply {
                        status: "ok",
                        restart: req.restart,
                    },
                );
                self.publisher.send(
                    "shutdown_reply",
                    ShutdownReply {
                        status: "ok",
                        restart: req.restart,
                    },
                    Some(msg),
                );
                if let Ok(i) = self.interpreter() {
                    i.shutdown(req.restart);
                }
                return Flow::Exit;
            }
            Request::Interrupt => {
                log::warn!("interrupt_request belongs on control; ignoring it on shell");
            }
            Request::Unknown(t) => log::info!("ignoring unsupported request {t}"),
        }
        Flow::Continue
    }

    fn execute(&mut self, msg: &Message, req: ExecuteRequest) -> Flow {
        let silent = req.silent;
        let store_history = req.store_history && !silent;
        if store_history {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !silent {
            self.publisher.send(
                "execute_input",
                ExecuteInput {
                    code: req.code.clone(),
                    execution_count: count,
                },
                Some(msg),
            );
        }
        self.publisher.set_current(msg, silent);
        self.stdin.allowed.store(req.allow_stdin, Ordering::SeqCst);
        self.stdin.interrupted.store(false, Ordering::SeqCst);

        let publisher = self.publisher.clone();
        let stdin = self.stdin.clone();
        let outcome = match self.interpreter() {
            Ok(i) => i.execute(&req.code, count, &publisher, &stdin),
            Err(e) => ExecuteOutcome::Error(ErrorInfo {
                ename: "KernelStartupError".to_owned(),
                evalue: e.clone(),
                traceback: vec![format!("The evaluator could not start: {e}")],
            }),
        };
        self.stdin.allowed.store(false, Ordering::SeqCst);

        let (reply, output, failed) = match outcome {
            ExecuteOutcome::Ok { result, payload } => {
                let text = result
                    .as_ref()
                    .and_then(|r| r.get("text/plain"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                if let (Some(data), false) = (result, silent) {
                    self.publisher.send(
                        "execute_result",
                        ExecuteResult {
                            execution_count: count,
                            data,
                            metadata: Map::new(),
                        },
                        Some(msg),
                    );
                }
                (
                    ExecuteReply::Ok {
                        execution_count: count,
                        payload,
                        user_expressions: Map::new(),
                    },
                    text,
                    false,
                )
            }
            ExecuteOutcome::Error(error) => {
                if !silent {
                    self.publisher.send("error", error.clone(), Some(msg));
                }
                (
                    ExecuteReply::Error {
                        execution_count: count,
                        error,
                    },
                    None,
                    true,
                )
            }
        };
        if store_history {
            self.history.record(count as i64, &req.code, output);
        }
        let flow = if failed && req.stop_on_error && !silent {
            Flow::Abort(self.take_queued_executes())
        } else {
            Flow::Continue
        };
        self.reply(msg, reply);
        flow
    }
}

/// `{"status": "error", ename, evalue, traceback}` for non-execute replies.
#[derive(Serialize)]
struct ErrorReply {
    status: &'static str,
    #[serde(flatten)]
    error: ErrorInfo,
}

trait WithStatus {
    fn with_status(self) -> ErrorReply;
}

impl WithStatus for ErrorInfo {
    fn with_status(self) -> ErrorReply {
        ErrorReply {
            status: "error",
            error: self,
        }
    }
}
