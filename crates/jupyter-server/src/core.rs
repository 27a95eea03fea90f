//! Every protocol rule, in one place: [`Dispatch::dispatch`] matches each request type to its
//! handler for both channels, as xeus does. Shell requests are dispatched in order on the
//! executor thread ([`Executor::run`]), which owns the interpreter, so a long cell never blocks
//! the socket tasks; control requests are dispatched by the control task beside a running
//! cell and get only what needs no interpreter (kernel_info, interrupt, shutdown, usage). The
//! transport only moves frames; the executor returns why the kernel stopped ([`Stopped`]).

use crate::history::History;
use crate::publisher::{Publisher, StdinHandle};
use crate::startup::Startup;
use crate::usage::UsageMeter;
use jupyter_wire::Message;
use jupyter_wire::content::{
    CommClose, CommInfoReply, CompleteReply, ErrorInfo, ExecuteInput, ExecuteReply, ExecuteRequest,
    ExecuteResult, ExecutionState, HelpLink, HistoryReply, InspectReply, IsCompleteReply,
    KernelInfoReply, LanguageInfo, MimeBundle, Payload, Request, ShutdownReply, Status, StatusOnly,
};
use serde::Serialize;
use serde_json::Map;
use std::collections::VecDeque;
use std::sync::Arc;
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
    pub(crate) fn reply(&self, debugger: bool) -> KernelInfoReply {
        KernelInfoReply {
            status: "ok",
            protocol_version: jupyter_wire::PROTOCOL_VERSION.to_owned(),
            implementation: self.implementation.clone(),
            implementation_version: self.implementation_version.clone(),
            language_info: self.language_info.clone(),
            banner: self.banner.clone(),
            help_links: self.help_links.clone(),
            // Both: `debugger` is deprecated since protocol 5.5, and JupyterLab reads either.
            supported_features: if debugger {
                vec!["debugger".to_owned()]
            } else {
                Vec::new()
            },
            debugger,
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

/// A language to run cells in. Every method runs on the kernel's executor thread, one request at a
/// time.
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

/// A debugger behind `debug_request` (Debug Adapter Protocol messages on control, xeus-zmq's
/// shape): answered on the control task, beside a running cell, never through the interpreter.
/// With one, kernel_info says `supported_features: ["debugger"]`.
pub trait Debugger: Send + Sync + 'static {
    /// The DAP response to `request` (the request message's content). `events` publishes DAP
    /// events (`{"type": "event", "event": .., "body": ..}`) as `debug_event` on IOPub, now or
    /// later (a debugger keeps it for the events of a process it debugs).
    fn handle(&self, request: &serde_json::Value, events: &DebugEvents) -> serde_json::Value;
}

/// Publishes a DAP event as `debug_event`, parented by the `debug_request` it was given with.
pub type DebugEvents = Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// The socket a request came in on; its reply goes back on the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Shell,
    Control,
}

/// Why the kernel stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A `shutdown_request` (on control, or on shell where it is deprecated).
    Shutdown { restart: bool },
    /// The process that launched the kernel is gone.
    ParentGone,
    /// The transport went away (no more requests can arrive).
    Disconnected,
}

/// What the caller of a dispatch does next.
pub(crate) enum Flow {
    Continue,
    /// A cell failed with `stop_on_error`: answer these queued execute requests "aborted".
    Abort(Vec<Message>),
    Stop(Stopped),
}

/// What reaches the executor thread, in order.
pub(crate) enum ShellEvent {
    Request(Box<Message>),
    /// A shutdown that came in on control: release the interpreter and stop.
    Shutdown {
        restart: bool,
    },
}

/// What handling a request needs on any thread: the control task and the executor share it.
#[derive(Clone)]
pub(crate) struct Dispatch {
    pub(crate) info: KernelInfo,
    pub(crate) publisher: Publisher,
    pub(crate) shell_out: UnboundedSender<Message>,
    pub(crate) control_out: UnboundedSender<Message>,
    /// Stops the running cell; never needs the interpreter.
    pub(crate) interrupt: Arc<dyn Fn() + Send + Sync>,
    /// To the executor thread: a shutdown from control.
    pub(crate) executor: crossbeam_channel::Sender<ShellEvent>,
    /// CPU and memory of the kernel's processes, for `usage_request`.
    pub(crate) usage: Arc<UsageMeter>,
    pub(crate) debugger: Option<Arc<dyn Debugger>>,
}

impl Dispatch {
    fn status(&self, state: ExecutionState, parent: &Message) {
        self.publisher.send(
            "status",
            Status {
                execution_state: state,
            },
            Some(parent),
        );
    }

    fn reply(&self, channel: Channel, parent: &Message, content: impl Serialize) {
        let msg_type = Request::reply_type(parent.msg_type());
        let reply = Message::new(self.publisher.session(), &msg_type, content, Some(parent));
        let out = match channel {
            Channel::Shell => &self.shell_out,
            Channel::Control => &self.control_out,
        };
        if out.send(reply).is_err() {
            log::warn!("{channel:?} socket closed; dropped {msg_type}");
        }
    }

    /// Handles one request, bracketed by busy/idle on IOPub. `executor` is the executor's state
    /// on shell; on control it is `None`, and requests that need the interpreter are refused.
    pub(crate) fn dispatch<I: Interpreter>(
        &self,
        channel: Channel,
        msg: &Message,
        executor: Option<&mut Executor<I>>,
    ) -> Flow {
        self.bracketed(msg, || self.handle(channel, msg, executor))
    }

    /// Runs `handle` between the busy and idle status of `parent` on IOPub.
    fn bracketed<T>(&self, parent: &Message, handle: impl FnOnce() -> T) -> T {
        self.status(ExecutionState::Busy, parent);
        let out = handle();
        self.status(ExecutionState::Idle, parent);
        out
    }

    /// The one table of request types and their handlers.
    fn handle<I: Interpreter>(
        &self,
        channel: Channel,
        msg: &Message,
        executor: Option<&mut Executor<I>>,
    ) -> Flow {
        let request = match Request::parse(msg.msg_type(), &msg.content) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{channel:?}: malformed {} content: {e}", msg.msg_type());
                self.reply(
                    channel,
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
        match (request, executor) {
            (Request::KernelInfo, _) => {
                self.reply(channel, msg, self.info.reply(self.debugger.is_some()))
            }
            (Request::Interrupt, _) if channel == Channel::Shell => {
                log::warn!("interrupt_request belongs on control; ignoring it on shell");
            }
            (Request::Interrupt, _) => {
                (self.interrupt)();
                self.reply(channel, msg, StatusOnly { status: "ok" });
            }
            // Beside a running cell too: it reads /proc, not the interpreter.
            (Request::Usage, _) => self.reply(channel, msg, self.usage.reply()),
            (Request::Debug(request), _) => match &self.debugger {
                Some(debugger) => {
                    let (publisher, parent) = (self.publisher.clone(), msg.clone());
                    let events: DebugEvents = Arc::new(move |event| {
                        publisher.send("debug_event", event, Some(&parent));
                    });
                    let response = debugger.handle(&request, &events);
                    self.reply(channel, msg, response);
                }
                None => log::info!("{channel:?}: no debugger; ignoring debug_request"),
            },
            (Request::Shutdown(req), executor) => {
                let reply = ShutdownReply {
                    status: "ok",
                    restart: req.restart,
                };
                self.reply(channel, msg, &reply);
                self.publisher.send("shutdown_reply", &reply, Some(msg));
                let stopped = Stopped::Shutdown {
                    restart: req.restart,
                };
                match executor {
                    // On shell (deprecated since 5.4, still accepted) the executor is here.
                    Some(executor) => executor.shut_down(req.restart),
                    // On control: stop a running cell, then the executor releases the
                    // interpreter (its child process and temp files) when it gets here.
                    None => {
                        (self.interrupt)();
                        let _ = self.executor.send(ShellEvent::Shutdown {
                            restart: req.restart,
                        });
                    }
                }
                return Flow::Stop(stopped);
            }
            (Request::CommInfo(_), _) => self.reply(
                channel,
                msg,
                CommInfoReply {
                    status: "ok",
                    comms: Map::new(),
                },
            ),
            (Request::CommOpen(open), _) => {
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
            (Request::CommMsg(_) | Request::CommClose(_), _) => {}
            (Request::Unknown(t), _) => log::info!("{channel:?}: ignoring unsupported request {t}"),
            (Request::Execute(req), Some(executor)) => return executor.execute(self, msg, req),
            (Request::Complete(req), Some(executor)) => {
                let reply = match executor.interpreter() {
                    Ok(i) => i.complete(&req.code, req.cursor_pos),
                    Err(_) => CompleteReply {
                        status: "ok",
                        matches: vec![],
                        cursor_start: req.cursor_pos,
                        cursor_end: req.cursor_pos,
                        metadata: Map::new(),
                    },
                };
                self.reply(channel, msg, reply);
            }
            (Request::Inspect(req), Some(executor)) => {
                let reply = match executor.interpreter() {
                    Ok(i) => i.inspect(&req.code, req.cursor_pos, req.detail_level),
                    Err(_) => InspectReply {
                        status: "ok",
                        found: false,
                        data: Map::new(),
                        metadata: Map::new(),
                    },
                };
                self.reply(channel, msg, reply);
            }
            (Request::IsComplete(req), Some(executor)) => {
                let reply = match executor.interpreter() {
                    Ok(i) => i.is_complete(&req.code),
                    Err(_) => IsCompleteReply {
                        status: jupyter_wire::content::Completeness::Unknown,
                        indent: None,
                    },
                };
                self.reply(channel, msg, reply);
            }
            (Request::History(req), Some(executor)) => {
                let history = executor.history.query(&req);
                self.reply(
                    channel,
                    msg,
                    HistoryReply {
                        status: "ok",
                        history,
                    },
                );
            }
            (other, None) => log::info!("control: ignoring {other:?}: it belongs on shell"),
        }
        Flow::Continue
    }
}

/// The executor thread's state: the interpreter and what only shell requests touch.
pub(crate) struct Executor<I: Interpreter> {
    pub(crate) stdin: StdinHandle,
    pub(crate) history: History,
    pub(crate) execution_count: u64,
    /// Built in the background so that `kernel_info` is answered at once; the first request
    /// that needs it waits.
    slot: Startup<I>,
    events: crossbeam_channel::Receiver<ShellEvent>,
    /// Events taken off the channel early (while aborting) that still have to be handled.
    pending: VecDeque<ShellEvent>,
}

impl<I: Interpreter> Executor<I> {
    pub(crate) fn new(
        stdin: StdinHandle,
        history: History,
        interpreter: Startup<I>,
        events: crossbeam_channel::Receiver<ShellEvent>,
    ) -> Self {
        Executor {
            stdin,
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

    fn shut_down(&mut self, restart: bool) {
        if let Ok(i) = self.interpreter() {
            i.shutdown(restart);
        }
    }

    /// The executor loop: shell requests one at a time, in order. Returns why it stopped, once
    /// the interpreter (and its child process and temp files) is released.
    pub(crate) fn run(mut self, dispatch: &Dispatch) -> Stopped {
        loop {
            let event = match self.pending.pop_front() {
                Some(e) => e,
                None => match self.events.recv() {
                    Ok(e) => e,
                    Err(_) => return Stopped::Disconnected,
                },
            };
            let msg = match event {
                ShellEvent::Shutdown { restart } => {
                    self.shut_down(restart);
                    return Stopped::Shutdown { restart };
                }
                ShellEvent::Request(msg) => msg,
            };
            match dispatch.dispatch(Channel::Shell, &msg, Some(&mut self)) {
                Flow::Continue => {}
                Flow::Abort(queued) => {
                    for msg in queued {
                        dispatch.bracketed(&msg, || {
                            dispatch.reply(Channel::Shell, &msg, ExecuteReply::Aborted {})
                        });
                    }
                }
                Flow::Stop(stopped) => return stopped,
            }
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
                ShellEvent::Request(msg) if msg.msg_type() == "execute_request" => {
                    queued.push(*msg)
                }
                other => kept.push_back(other),
            }
        }
        self.pending = kept;
        queued
    }

    fn execute(&mut self, dispatch: &Dispatch, msg: &Message, req: ExecuteRequest) -> Flow {
        let publisher = &dispatch.publisher;
        let silent = req.silent;
        let store_history = req.store_history && !silent;
        if store_history {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !silent {
            publisher.send(
                "execute_input",
                ExecuteInput {
                    code: req.code.clone(),
                    execution_count: count,
                },
                Some(msg),
            );
        }
        publisher.set_current(msg, silent);
        self.stdin.allowed.store(req.allow_stdin, Ordering::SeqCst);
        self.stdin.interrupted.store(false, Ordering::SeqCst);

        let stdin = self.stdin.clone();
        let outcome = match self.interpreter() {
            Ok(i) => i.execute(&req.code, count, publisher, &stdin),
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
                    publisher.send(
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
                    publisher.send("error", error.clone(), Some(msg));
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
        dispatch.reply(Channel::Shell, msg, reply);
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

/// The core against a fake interpreter, without sockets: requests go in as the transport hands
/// them over, replies and IOPub messages are read back from the channels.
#[cfg(test)]
mod tests {
    use super::*;
    use jupyter_wire::content::{Completeness, StreamName};
    use serde_json::{Value, json};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    /// Runs cells of a tiny language: `ok V` (value V), `print T`, `fail`, `input PROMPT` (the
    /// line read), `wait` (until interrupted).
    struct Fake {
        interrupted: Arc<AtomicBool>,
        running: crossbeam_channel::Sender<()>,
        shut_down: Arc<Mutex<Option<bool>>>,
    }

    fn value(text: &str) -> ExecuteOutcome {
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(text.into()));
        ExecuteOutcome::Ok {
            result: Some(data),
            payload: vec![],
        }
    }

    fn error(ename: &str, evalue: &str) -> ExecuteOutcome {
        ExecuteOutcome::Error(ErrorInfo {
            ename: ename.into(),
            evalue: evalue.into(),
            traceback: vec![],
        })
    }

    impl Interpreter for Fake {
        fn execute(
            &mut self,
            code: &str,
            _count: u64,
            publisher: &Publisher,
            stdin: &StdinHandle,
        ) -> ExecuteOutcome {
            let (word, rest) = code.split_once(' ').unwrap_or((code, ""));
            match word {
                "ok" => value(rest),
                "print" => {
                    publisher.stream(StreamName::Stdout, rest);
                    value("printed")
                }
                "input" => {
                    let _ = self.running.send(());
                    match stdin.request(rest, false) {
                        Ok(line) => value(&line),
                        Err(e) => error("InputError", &e.to_string()),
                    }
                }
                "wait" => {
                    let _ = self.running.send(());
                    while !self.interrupted.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    error("KeyboardInterrupt", "interrupted")
                }
                _ => error("Fail", code),
            }
        }

        fn complete(&mut self, _code: &str, cursor_pos: usize) -> CompleteReply {
            CompleteReply {
                status: "ok",
                matches: vec!["fake".into()],
                cursor_start: cursor_pos,
                cursor_end: cursor_pos,
                metadata: Map::new(),
            }
        }

        fn inspect(&mut self, _code: &str, _cursor_pos: usize, _detail: u8) -> InspectReply {
            InspectReply {
                status: "ok",
                found: false,
                data: Map::new(),
                metadata: Map::new(),
            }
        }

        fn is_complete(&mut self, _code: &str) -> IsCompleteReply {
            IsCompleteReply {
                status: Completeness::Complete,
                indent: None,
            }
        }

        fn shutdown(&mut self, restart: bool) {
            *self.shut_down.lock().unwrap() = Some(restart);
        }
    }

    struct Kernel {
        dispatch: Dispatch,
        shell: crossbeam_channel::Sender<ShellEvent>,
        shell_out: UnboundedReceiver<Message>,
        control_out: UnboundedReceiver<Message>,
        iopub: UnboundedReceiver<Message>,
        stdin_out: UnboundedReceiver<Message>,
        stdin_replies: crossbeam_channel::Sender<String>,
        running: crossbeam_channel::Receiver<()>,
        shut_down: Arc<Mutex<Option<bool>>>,
        executor: std::thread::JoinHandle<Stopped>,
    }

    fn kernel() -> Kernel {
        let (iopub_tx, iopub) = unbounded_channel();
        let publisher = Publisher::new("kernel", iopub_tx);
        let (stdin_tx, stdin_out) = unbounded_channel();
        let (stdin_replies, replies) = crossbeam_channel::unbounded();
        let stdin = StdinHandle {
            session: "kernel".into(),
            outgoing: stdin_tx,
            replies,
            allowed: Arc::default(),
            interrupted: Arc::default(),
            publisher: publisher.clone(),
        };
        let interrupted = Arc::new(AtomicBool::new(false));
        let interrupt: Arc<dyn Fn() + Send + Sync> = {
            let (cell, input) = (interrupted.clone(), stdin.interrupted.clone());
            Arc::new(move || {
                cell.store(true, Ordering::SeqCst);
                input.store(true, Ordering::SeqCst);
            })
        };
        let (shell_out_tx, shell_out) = unbounded_channel();
        let (control_out_tx, control_out) = unbounded_channel();
        let (shell, events) = crossbeam_channel::unbounded();
        let dispatch = Dispatch {
            info: KernelInfo {
                implementation: "fake".into(),
                implementation_version: "1".into(),
                language_info: LanguageInfo {
                    name: "fake".into(),
                    version: "1".into(),
                    mimetype: "text/plain".into(),
                    file_extension: ".txt".into(),
                    pygments_lexer: "text".into(),
                    codemirror_mode: "text".into(),
                    nbconvert_exporter: "script".into(),
                },
                banner: String::new(),
                help_links: vec![],
            },
            publisher,
            shell_out: shell_out_tx,
            control_out: control_out_tx,
            usage: Arc::default(),
            debugger: None,
            interrupt,
            executor: shell.clone(),
        };
        let (running_tx, running) = crossbeam_channel::unbounded();
        let shut_down = Arc::new(Mutex::new(None));
        let fake = Fake {
            interrupted,
            running: running_tx,
            shut_down: shut_down.clone(),
        };
        let executor = Executor::new(
            stdin,
            History::open(None),
            Startup::spawn("fake", move || Ok(fake)).unwrap(),
            events,
        );
        let executor = {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || executor.run(&dispatch))
        };
        Kernel {
            dispatch,
            shell,
            shell_out,
            control_out,
            iopub,
            stdin_out,
            stdin_replies,
            running,
            shut_down,
            executor,
        }
    }

    fn request(msg_type: &str, content: Value) -> Message {
        let mut msg = Message::new("client", msg_type, content, None);
        msg.identities = vec![b"client".to_vec()];
        msg
    }

    fn execute(code: &str, extra: Value) -> Message {
        let mut content = json!({"code": code, "silent": false, "store_history": true,
            "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
        if let (Some(c), Some(e)) = (content.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        request("execute_request", content)
    }

    fn is_reply_to(msg: &Message, parent: &Message) -> bool {
        msg.parent_header.as_ref().map(|h| &h.msg_id) == Some(&parent.header.msg_id)
    }

    impl Kernel {
        fn shell(&self, msg: &Message) {
            self.shell
                .send(ShellEvent::Request(Box::new(msg.clone())))
                .unwrap();
        }

        fn control(&self, msg: &Message) -> Flow {
            self.dispatch.dispatch::<Fake>(Channel::Control, msg, None)
        }

        fn shell_reply(&mut self, parent: &Message) -> Value {
            loop {
                let msg = self.shell_out.blocking_recv().expect("a shell reply");
                if is_reply_to(&msg, parent) {
                    return msg.content;
                }
            }
        }

        fn control_reply(&mut self, parent: &Message) -> Message {
            let msg = self.control_out.try_recv().expect("a control reply");
            assert!(is_reply_to(&msg, parent));
            msg
        }

        /// The IOPub messages of `parent` up to its idle status.
        fn iopub_of(&mut self, parent: &Message) -> Vec<(String, Value)> {
            let mut out = Vec::new();
            loop {
                let msg = self.iopub.blocking_recv().expect("IOPub");
                if !is_reply_to(&msg, parent) {
                    continue;
                }
                let idle = msg.msg_type() == "status" && msg.content["execution_state"] == "idle";
                out.push((msg.msg_type().to_owned(), msg.content));
                if idle {
                    return out;
                }
            }
        }

        /// Ends the executor as a control shutdown does, unless it stopped already.
        fn stop(self) -> (Stopped, Option<bool>) {
            let _ = self.shell.send(ShellEvent::Shutdown { restart: false });
            let stopped = self.executor.join().unwrap();
            (stopped, *self.shut_down.lock().unwrap())
        }
    }

    fn types(iopub: &[(String, Value)]) -> Vec<&str> {
        iopub.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn a_failed_cell_aborts_the_queued_ones_only() {
        let mut k = kernel();
        let failing = execute("fail", json!({}));
        let queued = [execute("ok 1", json!({})), execute("ok 2", json!({}))];
        let complete = request("complete_request", json!({"code": "x", "cursor_pos": 1}));
        k.shell(&failing);
        for q in &queued {
            k.shell(q);
        }
        k.shell(&complete);
        assert_eq!(k.shell_reply(&failing)["status"], "error");
        for q in &queued {
            assert_eq!(k.shell_reply(q)["status"], "aborted");
        }
        assert_eq!(k.shell_reply(&complete)["matches"], json!(["fake"]));
        // A request sent after the failure was seen runs again, and the count went on by one
        // for the failed cell only.
        let after = execute("ok 3", json!({}));
        k.shell(&after);
        let reply = k.shell_reply(&after);
        assert_eq!(
            (reply["status"].clone(), reply["execution_count"].clone()),
            (json!("ok"), json!(2))
        );
        k.stop();
    }

    #[test]
    fn silent_and_unstored_cells_do_not_count() {
        let mut k = kernel();
        let silent = execute("print hidden", json!({"silent": true}));
        k.shell(&silent);
        let reply = k.shell_reply(&silent);
        assert_eq!(
            (reply["status"].clone(), reply["execution_count"].clone()),
            (json!("ok"), json!(0))
        );
        // Silent: no execute_input, no result; what the cell printed is not published either.
        assert_eq!(types(&k.iopub_of(&silent)), ["status", "status"]);
        let unstored = execute("ok 7", json!({"store_history": false}));
        k.shell(&unstored);
        assert_eq!(k.shell_reply(&unstored)["execution_count"], 0);
        let iopub = k.iopub_of(&unstored);
        assert_eq!(
            types(&iopub),
            ["status", "execute_input", "execute_result", "status"]
        );
        let history = request(
            "history_request",
            json!({"output": false, "raw": true,
            "hist_access_type": "tail", "n": 10}),
        );
        k.shell(&history);
        assert_eq!(k.shell_reply(&history)["history"], json!([]));
        let stored = execute("ok 8", json!({}));
        k.shell(&stored);
        assert_eq!(k.shell_reply(&stored)["execution_count"], 1);
        k.stop();
    }

    #[test]
    fn control_answers_beside_a_running_cell_and_shutdown_stops_it() {
        let mut k = kernel();
        let cell = execute("wait", json!({}));
        k.shell(&cell);
        k.running.recv().unwrap();
        // kernel_info on control while the cell runs, bracketed by busy/idle of its own.
        let info = request("kernel_info_request", json!({}));
        assert!(matches!(k.control(&info), Flow::Continue));
        assert_eq!(k.control_reply(&info).content["implementation"], "fake");
        assert_eq!(types(&k.iopub_of(&info)), ["status", "status"]);
        // usage_request too (jupyter-resource-usage asks on control every few seconds).
        let usage = request("usage_request", json!({}));
        assert!(matches!(k.control(&usage), Flow::Continue));
        let reply = k.control_reply(&usage);
        assert_eq!(reply.msg_type(), "usage_reply");
        assert_eq!(reply.content["pid"], std::process::id());
        assert!(reply.content["kernel_memory"].as_u64().unwrap() > 0);
        assert!(
            reply.content["host_virtual_memory"]["total"]
                .as_u64()
                .unwrap()
                > 0
        );
        // A shutdown mid-cell: replied on control and on IOPub, the cell is interrupted, the
        // interpreter is shut down, and the executor says why it stopped.
        let shutdown = request("shutdown_request", json!({"restart": true}));
        assert!(matches!(
            k.control(&shutdown),
            Flow::Stop(Stopped::Shutdown { restart: true })
        ));
        assert_eq!(k.control_reply(&shutdown).content["restart"], true);
        assert!(types(&k.iopub_of(&shutdown)).contains(&"shutdown_reply"));
        assert_eq!(k.shell_reply(&cell)["status"], "error");
        let Kernel {
            executor,
            shut_down,
            ..
        } = k;
        assert_eq!(
            executor.join().unwrap(),
            Stopped::Shutdown { restart: true }
        );
        assert_eq!(*shut_down.lock().unwrap(), Some(true));
    }

    #[test]
    fn an_interrupt_while_waiting_for_input_ends_the_cell() {
        let mut k = kernel();
        let cell = execute("input name?", json!({"allow_stdin": true}));
        k.shell(&cell);
        k.running.recv().unwrap();
        let asked = k.stdin_out.blocking_recv().expect("an input_request");
        assert_eq!(asked.msg_type(), "input_request");
        assert_eq!(asked.content["prompt"], "name?");
        let interrupt = request("interrupt_request", json!({}));
        k.control(&interrupt);
        assert_eq!(k.control_reply(&interrupt).content["status"], "ok");
        let reply = k.shell_reply(&cell);
        assert_eq!(reply["ename"], "InputError");
        assert!(reply["evalue"].as_str().unwrap().contains("interrupted"));
        // The next cell reads input normally.
        let again = execute("input again?", json!({"allow_stdin": true}));
        k.shell(&again);
        k.running.recv().unwrap();
        k.stdin_out.blocking_recv().expect("an input_request");
        k.stdin_replies.send("Ada".into()).unwrap();
        k.shell_reply(&again);
        let iopub = k.iopub_of(&again);
        assert!(
            iopub
                .iter()
                .any(|(t, c)| t == "execute_result" && c["data"]["text/plain"] == "Ada")
        );
        k.stop();
    }

    #[test]
    fn a_shutdown_on_shell_stops_after_replying() {
        let mut k = kernel();
        let shutdown = request("shutdown_request", json!({"restart": false}));
        k.shell(&shutdown);
        assert_eq!(k.shell_reply(&shutdown)["restart"], false);
        assert_eq!(
            k.stop(),
            (Stopped::Shutdown { restart: false }, Some(false))
        );
    }

    #[test]
    fn malformed_requests_get_an_error_reply_on_their_channel() {
        let mut k = kernel();
        let bad = request("execute_request", json!({"code": 5}));
        k.shell(&bad);
        let reply = k.shell_reply(&bad);
        assert_eq!(
            (reply["status"].clone(), reply["ename"].clone()),
            (json!("error"), json!("BadRequest"))
        );
        let bad_control = request("shutdown_request", json!({"restart": "no"}));
        assert!(matches!(k.control(&bad_control), Flow::Continue));
        assert_eq!(k.control_reply(&bad_control).content["ename"], "BadRequest");
        // An execute on control needs the interpreter: ignored there, no reply.
        let misplaced = execute("ok 1", json!({}));
        assert!(matches!(k.control(&misplaced), Flow::Continue));
        assert!(k.control_out.try_recv().is_err());
        k.stop();
    }
}
