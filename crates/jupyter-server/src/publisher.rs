//! Handles that let an interpreter (and its helper threads) publish on IOPub and ask for input
//! on stdin while a cell runs, without seeing a socket.

use jupyter_wire::Message;
use jupyter_wire::content::{
    ClearOutput, DisplayData, InputRequest, MimeBundle, Stream, StreamName, Transient,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The request whose outputs are being produced. Output that arrives after a cell ends keeps the
/// last parent, so JupyterLab still routes late background output to the right cell.
#[derive(Default)]
struct Current {
    parent: Option<Message>,
    silent: bool,
}

/// Publishes IOPub messages. Cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Publisher {
    session: Arc<str>,
    iopub: UnboundedSender<Message>,
    current: Arc<Mutex<Current>>,
}

impl Publisher {
    pub(crate) fn new(session: &str, iopub: UnboundedSender<Message>) -> Self {
        Publisher {
            session: session.into(),
            iopub,
            current: Arc::default(),
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    pub(crate) fn set_current(&self, parent: &Message, silent: bool) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.parent = Some(parent.clone());
        current.silent = silent;
    }

    pub(crate) fn current_parent(&self) -> Option<Message> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .parent
            .clone()
    }

    /// Publishes with an explicit parent (used by the kernel core).
    pub(crate) fn send(&self, msg_type: &str, content: impl Serialize, parent: Option<&Message>) {
        let mut msg = Message::new(&self.session, msg_type, content, parent);
        // On IOPub the routing prefix is a topic; clients subscribe to everything.
        msg.identities = vec![format!("kernel.{}.{}", self.session, msg_type).into_bytes()];
        if self.iopub.send(msg).is_err() {
            log::debug!("iopub closed; dropped {msg_type}");
        }
    }

    /// Publishes on behalf of the running cell, unless it asked to be silent.
    fn send_current(&self, msg_type: &str, content: impl Serialize) {
        let parent = {
            let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.silent {
                return;
            }
            current.parent.clone()
        };
        self.send(msg_type, content, parent.as_ref());
    }

    pub fn stream(&self, name: StreamName, text: &str) {
        if !text.is_empty() {
            self.send_current(
                "stream",
                Stream {
                    name,
                    text: text.to_owned(),
                },
            );
        }
    }

    pub fn display_data(
        &self,
        data: MimeBundle,
        metadata: Map<String, Value>,
        display_id: Option<String>,
    ) {
        self.send_current(
            "display_data",
            DisplayData {
                data,
                metadata,
                transient: Transient { display_id },
            },
        );
    }

    pub fn update_display_data(
        &self,
        data: MimeBundle,
        metadata: Map<String, Value>,
        display_id: String,
    ) {
        self.send_current(
            "update_display_data",
            DisplayData {
                data,
                metadata,
                transient: Transient {
                    display_id: Some(display_id),
                },
            },
        );
    }

    pub fn clear_output(&self, wait: bool) {
        self.send_current("clear_output", ClearOutput { wait });
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("this frontend does not support input requests (allow_stdin is false)")]
    NotAllowed,
    #[error("interrupted while waiting for input")]
    Interrupted,
    #[error("the stdin channel is closed")]
    Disconnected,
}

/// Asks the frontend for a line of input on the stdin channel (`input_request` → `input_reply`).
#[derive(Clone)]
pub struct StdinHandle {
    pub(crate) session: Arc<str>,
    pub(crate) outgoing: UnboundedSender<Message>,
    pub(crate) replies: crossbeam_channel::Receiver<String>,
    pub(crate) allowed: Arc<AtomicBool>,
    pub(crate) interrupted: Arc<AtomicBool>,
    pub(crate) publisher: Publisher,
}

impl StdinHandle {
    pub fn request(&self, prompt: &str, password: bool) -> Result<String, InputError> {
        if !self.allowed.load(Ordering::SeqCst) {
            return Err(InputError::NotAllowed);
        }
        let Some(parent) = self.publisher.current_parent() else {
            return Err(InputError::NotAllowed);
        };
        // Drop replies to earlier, abandoned requests.
        while self.replies.try_recv().is_ok() {}
        // Routed with the shell request's identities: clients use one identity for shell and stdin.
        let request = Message::new(
            &self.session,
            "input_request",
            InputRequest {
                prompt: prompt.to_owned(),
                password,
            },
            Some(&parent),
        );
        self.outgoing
            .send(request)
            .map_err(|_| InputError::Disconnected)?;
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                return Err(InputError::Interrupted);
            }
            match self.replies.recv_timeout(Duration::from_millis(50)) {
                Ok(value) => return Ok(value),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(InputError::Disconnected);
                }
            }
        }
    }
}
