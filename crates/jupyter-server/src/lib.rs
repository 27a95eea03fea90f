//! A Jupyter kernel server in the xeus mould: this crate owns the sockets and every protocol rule
//! (busy/idle around each request, execution counts, stop-on-error aborts, history, stdin
//! round-trips, interrupts, shutdown) and knows nothing about the language. A language plugs in
//! through [`Interpreter`].

mod core;
pub mod history;
mod publisher;
mod startup;
mod transport;
pub mod usage;

pub use crate::core::{DebugEvents, Debugger, ExecuteOutcome, Interpreter, KernelInfo, Stopped};
pub use crate::publisher::{InputError, Publisher, StdinHandle};
pub use crate::startup::Startup;
pub use crate::transport::{ServeOptions, serve};
pub use jupyter_wire as wire;
