//! The five sockets, each serviced by its own task, and the process lifecycle (startup, SIGINT,
//! parent death, shutdown). Requests are handled by the core ([`Dispatch`]); here they are only
//! received, decoded and routed, and replies sent.

use crate::core::{
    Channel, Dispatch, Executor, Flow, Interpreter, KernelInfo, ShellEvent, Stopped,
};
use crate::history::History;
use crate::publisher::{Publisher, StdinHandle};
use crate::startup::Startup;
use bytes::Bytes;
use jupyter_wire::content::{ExecutionState, IopubWelcome, Status};
use jupyter_wire::{ConnectionInfo, Message, Signer, WireError};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use zeromq::{RepSocket, RouterSocket, Socket, SocketRecv, SocketSend, XPubSocket, ZmqMessage};

pub struct ServeOptions {
    pub info: KernelInfo,
    /// Where history persists across sessions; `None` keeps it in memory.
    pub history_file: Option<PathBuf>,
    /// Stops the running cell. Called from the control task or the SIGINT handler, never from
    /// the executor thread, so it must not need the interpreter.
    pub interrupt: Arc<dyn Fn() + Send + Sync>,
    /// Answers `debug_request` (see [`crate::Debugger`]); none: no debugger.
    pub debugger: Option<Arc<dyn crate::Debugger>>,
    /// The kernel's processes outside its own tree, for `usage_request`.
    pub other_processes: Option<crate::usage::OtherProcesses>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {channel} socket to {endpoint}: {source}")]
    Bind {
        channel: &'static str,
        endpoint: String,
        source: zeromq::ZmqError,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Binds the sockets of `conn` and serves until a shutdown request (or the parent's death), and
/// says which. `make` builds the interpreter on a background thread while requests are already
/// answered.
pub fn serve<I, F>(
    conn: ConnectionInfo,
    options: ServeOptions,
    make: F,
) -> Result<Stopped, ServeError>
where
    I: Interpreter,
    F: FnOnce(Publisher, StdinHandle) -> Result<I, String> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kernel-io")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve_async(conn, options, make))
}

async fn bind<S: Socket>(
    mut socket: S,
    conn: &ConnectionInfo,
    port: u16,
    channel: &'static str,
) -> Result<S, ServeError> {
    let endpoint = conn.endpoint(port);
    socket
        .bind(&endpoint)
        .await
        .map_err(|source| ServeError::Bind {
            channel,
            endpoint,
            source,
        })?;
    Ok(socket)
}

async fn serve_async<I, F>(
    conn: ConnectionInfo,
    options: ServeOptions,
    make: F,
) -> Result<Stopped, ServeError>
where
    I: Interpreter,
    F: FnOnce(Publisher, StdinHandle) -> Result<I, String> + Send + 'static,
{
    let signer = Signer::new(&conn.key);
    if !signer.is_enabled() {
        log::warn!("the connection file has an empty key: messages are not signed");
    }
    let session = uuid::Uuid::new_v4().to_string();

    let shell = bind(RouterSocket::new(), &conn, conn.shell_port, "shell").await?;
    let control = bind(RouterSocket::new(), &conn, conn.control_port, "control").await?;
    let stdin_socket = bind(RouterSocket::new(), &conn, conn.stdin_port, "stdin").await?;
    let iopub = bind(XPubSocket::new(), &conn, conn.iopub_port, "iopub").await?;
    let heartbeat = bind(RepSocket::new(), &conn, conn.hb_port, "heartbeat").await?;

    let (iopub_tx, iopub_rx) = unbounded_channel();
    let (shell_out_tx, shell_out_rx) = unbounded_channel();
    let (stdin_out_tx, stdin_out_rx) = unbounded_channel();
    let (stdin_reply_tx, stdin_reply_rx) = crossbeam_channel::unbounded();
    let (events_tx, events_rx) = crossbeam_channel::unbounded();

    let publisher = Publisher::new(&session, iopub_tx);
    let stdin = StdinHandle {
        session: session.clone().into(),
        outgoing: stdin_out_tx,
        replies: stdin_reply_rx,
        allowed: Arc::new(AtomicBool::new(false)),
        interrupted: Arc::new(AtomicBool::new(false)),
        publisher: publisher.clone(),
    };
    let interrupt: Arc<dyn Fn() + Send + Sync> = {
        let user = options.interrupt.clone();
        let flag = stdin.interrupted.clone();
        Arc::new(move || {
            flag.store(true, Ordering::SeqCst);
            user();
        })
    };

    let (iopub_flush, iopub_flush_rx) = unbounded_channel();
    tokio::spawn(iopub_task(
        iopub,
        iopub_rx,
        iopub_flush_rx,
        signer.clone(),
        session.clone(),
    ));
    let (shell_send, shell_recv) = shell.split();
    let (shell_flush, shell_flush_rx) = unbounded_channel();
    tokio::spawn(router_send_task(
        shell_send,
        shell_out_rx,
        shell_flush_rx,
        signer.clone(),
        "shell",
    ));
    let (stdin_send, stdin_recv) = stdin_socket.split();
    let (stdin_flush, stdin_flush_rx) = unbounded_channel();
    tokio::spawn(router_send_task(
        stdin_send,
        stdin_out_rx,
        stdin_flush_rx,
        signer.clone(),
        "stdin",
    ));
    tokio::spawn(stdin_recv_task(stdin_recv, signer.clone(), stdin_reply_tx));
    tokio::spawn(heartbeat_task(heartbeat));

    // `starting` goes out before anyone can have subscribed, as the spec expects; clients then
    // rely on the welcome message and kernel_info.
    publisher.send(
        "status",
        Status {
            execution_state: ExecutionState::Starting,
        },
        None,
    );

    let interpreter = {
        let (publisher, stdin) = (publisher.clone(), stdin.clone());
        Startup::spawn("interpreter", move || make(publisher, stdin))
            .map_err(ServeError::Runtime)?
    };
    let (control_out_tx, control_out_rx) = unbounded_channel();
    let dispatch = Dispatch {
        info: options.info,
        publisher: publisher.clone(),
        shell_out: shell_out_tx,
        control_out: control_out_tx,
        interrupt: interrupt.clone(),
        executor: events_tx.clone(),
        usage: Arc::new(crate::usage::UsageMeter::new(options.other_processes)),
        debugger: options.debugger,
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Stopped>();
    {
        let executor = Executor::new(
            stdin.clone(),
            History::open(options.history_file.clone()),
            interpreter,
            events_rx,
        );
        let dispatch = dispatch.clone();
        std::thread::Builder::new()
            .name("executor".into())
            .spawn(move || {
                let _ = done_tx.send(executor.run(&dispatch));
            })
            .map_err(ServeError::Runtime)?;
    }

    tokio::spawn(shell_recv_task(shell_recv, signer.clone(), events_tx));
    let (control_send, control_recv) = control.split();
    let (control_flush, control_flush_rx) = unbounded_channel();
    tokio::spawn(router_send_task(
        control_send,
        control_out_rx,
        control_flush_rx,
        signer.clone(),
        "control",
    ));
    let (stop_tx, mut stop_rx) = unbounded_channel::<Stopped>();
    tokio::spawn(control_recv_task::<I>(
        control_recv,
        signer,
        dispatch,
        stop_tx,
    ));
    tokio::spawn(sigint_task(interrupt));

    let stopped = tokio::select! {
        // A shutdown on shell, or the transport gone.
        stopped = &mut done_rx => stopped.unwrap_or(Stopped::Disconnected),
        // A shutdown on control: let the executor release the interpreter (its temp files),
        // but never hang: the manager sends SIGKILL after a few seconds anyway.
        Some(stopped) = stop_rx.recv() => {
            let _ = tokio::time::timeout(Duration::from_secs(3), &mut done_rx).await;
            stopped
        }
        () = parent_gone() => Stopped::ParentGone,
    };
    // The shutdown reply and the last status go out before the process ends: each sending task
    // says when it has sent what was queued (never waited for without end: a peer gone).
    let mut sent = Vec::new();
    for flush in [&iopub_flush, &control_flush, &shell_flush, &stdin_flush] {
        let (done, done_rx) = tokio::sync::oneshot::channel();
        if flush.send(done).is_ok() {
            sent.push(done_rx);
        }
    }
    let all_sent = async {
        for done in sent {
            let _ = done.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), all_sent)
        .await
        .is_err()
    {
        log::warn!("the last messages were not all sent before exit");
    }
    Ok(stopped)
}

/// Asks a sending task to send everything queued so far, and is answered when it has.
type FlushRequest = tokio::sync::oneshot::Sender<()>;

fn to_zmq(frames: Vec<Vec<u8>>) -> Option<ZmqMessage> {
    ZmqMessage::try_from(frames.into_iter().map(Bytes::from).collect::<Vec<_>>()).ok()
}

fn from_zmq(msg: ZmqMessage) -> Vec<Vec<u8>> {
    msg.into_vec().into_iter().map(|b| b.to_vec()).collect()
}

/// Decodes a received message; bad signatures and malformed frames are logged and dropped.
fn decode(frames: Vec<Vec<u8>>, signer: &Signer, channel: &str) -> Option<Message> {
    match Message::from_frames(frames, signer) {
        Ok(m) => Some(m),
        Err(WireError::BadSignature) => {
            log::warn!("{channel}: dropped a message with an invalid signature");
            None
        }
        Err(e) => {
            log::warn!("{channel}: dropped a malformed message: {e}");
            None
        }
    }
}

async fn pause_after_error(channel: &str, e: impl std::fmt::Display) {
    log::debug!("{channel}: socket error: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn iopub_task(
    mut socket: XPubSocket,
    mut rx: UnboundedReceiver<Message>,
    mut flush: UnboundedReceiver<FlushRequest>,
    signer: Signer,
    session: String,
) {
    loop {
        tokio::select! {
            biased;
            sub = socket.recv() => match sub {
                Ok(sub) => {
                    let Some(frame) = sub.get(0) else { continue };
                    // 0x01 + topic subscribes; 0x00 + topic unsubscribes.
                    if frame.first() == Some(&1) {
                        let topic = String::from_utf8_lossy(&frame[1..]).into_owned();
                        let mut welcome = Message::new(&session, "iopub_welcome", IopubWelcome { subscription: topic.clone() }, None);
                        welcome.identities = vec![if topic.is_empty() { format!("kernel.{session}.iopub_welcome") } else { topic }.into_bytes()];
                        if let Some(m) = to_zmq(welcome.to_frames(&signer))
                            && let Err(e) = socket.send(m).await {
                                log::warn!("iopub: cannot send welcome: {e}");
                            }
                    }
                }
                Err(e) => pause_after_error("iopub", e).await,
            },
            msg = rx.recv() => match msg {
                Some(msg) => iopub_send(&mut socket, msg, &signer).await,
                None => break,
            },
            Some(done) = flush.recv() => {
                while let Ok(msg) = rx.try_recv() {
                    iopub_send(&mut socket, msg, &signer).await;
                }
                let _ = done.send(());
            }
        }
    }
}

async fn iopub_send(socket: &mut XPubSocket, msg: Message, signer: &Signer) {
    if let Some(m) = to_zmq(msg.to_frames(signer))
        && let Err(e) = socket.send(m).await
    {
        log::warn!("iopub: send failed: {e}");
    }
}

async fn router_send_task(
    mut socket: impl SocketSend + Send,
    mut rx: UnboundedReceiver<Message>,
    mut flush: UnboundedReceiver<FlushRequest>,
    signer: Signer,
    channel: &'static str,
) {
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(msg) => router_send(&mut socket, msg, &signer, channel).await,
                None => break,
            },
            Some(done) = flush.recv() => {
                while let Ok(msg) = rx.try_recv() {
                    router_send(&mut socket, msg, &signer, channel).await;
                }
                let _ = done.send(());
            }
        }
    }
}

async fn router_send(
    socket: &mut (impl SocketSend + Send),
    msg: Message,
    signer: &Signer,
    channel: &str,
) {
    if msg.identities.is_empty() {
        log::warn!("{channel}: no route for {}", msg.msg_type());
        return;
    }
    if let Some(m) = to_zmq(msg.to_frames(signer)) {
        // Sending to a peer that went away is an error in zmq.rs; log and go on.
        if let Err(e) = socket.send(m).await {
            log::warn!("{channel}: cannot send {}: {e}", msg.msg_type());
        }
    }
}

async fn shell_recv_task(
    mut socket: zeromq::RouterRecvHalf,
    signer: Signer,
    events: crossbeam_channel::Sender<ShellEvent>,
) {
    loop {
        match socket.recv().await {
            Ok(m) => {
                if let Some(msg) = decode(from_zmq(m), &signer, "shell")
                    && events.send(ShellEvent::Request(Box::new(msg))).is_err()
                {
                    break;
                }
            }
            Err(e) => pause_after_error("shell", e).await,
        }
    }
}

async fn stdin_recv_task(
    mut socket: zeromq::RouterRecvHalf,
    signer: Signer,
    replies: crossbeam_channel::Sender<String>,
) {
    loop {
        match socket.recv().await {
            Ok(m) => {
                let Some(msg) = decode(from_zmq(m), &signer, "stdin") else {
                    continue;
                };
                if msg.msg_type() != "input_reply" {
                    log::info!("stdin: ignoring {}", msg.msg_type());
                    continue;
                }
                match msg.content.get("value").and_then(|v| v.as_str()) {
                    Some(v) => {
                        let _ = replies.send(v.to_owned());
                    }
                    None => log::warn!("stdin: input_reply without a string value"),
                }
            }
            Err(e) => pause_after_error("stdin", e).await,
        }
    }
}

async fn heartbeat_task(mut socket: RepSocket) {
    loop {
        match socket.recv().await {
            Ok(m) => {
                if let Err(e) = socket.send(m).await {
                    pause_after_error("heartbeat", e).await;
                }
            }
            Err(e) => pause_after_error("heartbeat", e).await,
        }
    }
}

/// Control requests are dispatched here, beside a running cell (see [`Dispatch::dispatch`]).
async fn control_recv_task<I: Interpreter>(
    mut socket: zeromq::RouterRecvHalf,
    signer: Signer,
    dispatch: Dispatch,
    stop: tokio::sync::mpsc::UnboundedSender<Stopped>,
) {
    loop {
        match socket.recv().await {
            Ok(m) => {
                let Some(msg) = decode(from_zmq(m), &signer, "control") else {
                    continue;
                };
                if let Flow::Stop(stopped) = dispatch.dispatch::<I>(Channel::Control, &msg, None) {
                    let _ = stop.send(stopped);
                }
            }
            Err(e) => pause_after_error("control", e).await,
        }
    }
}

/// In signal mode jupyter_client interrupts with SIGINT; without a handler it would kill us.
async fn sigint_task(interrupt: Arc<dyn Fn() + Send + Sync>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot install a SIGINT handler: {e}");
            return;
        }
    };
    while sigint.recv().await.is_some() {
        log::info!("SIGINT: interrupting the running cell");
        interrupt();
    }
}

/// Resolves when the launching Jupyter process dies (never without `JPY_PARENT_PID`), so
/// orphaned kernels don't hold GPU memory.
async fn parent_gone() {
    let pid = std::env::var("JPY_PARENT_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let proc_path = pid.map(|pid| PathBuf::from(format!("/proc/{pid}")));
    let Some(proc_path) = proc_path.filter(|p| pid > Some(1) && p.exists()) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !proc_path.exists() {
            log::warn!(
                "parent process {} is gone; shutting down",
                proc_path.display()
            );
            return;
        }
    }
}
