//! The Jupyter messaging protocol (5.x) as plain data: connection files, headers, typed message
//! contents, the multipart wire format and HMAC signing. Nothing here touches a socket, so every
//! rule can be unit-tested in-process.

pub mod connection;
pub mod content;
pub mod header;
pub mod message;
pub mod signing;

pub use connection::{ConnectionInfo, Transport};
pub use header::Header;
pub use message::{DELIMITER, Message, RawMessage, WireError};
pub use signing::Signer;

/// The protocol version this implementation speaks (5.5: XPUB IOPub with `iopub_welcome`,
/// kernel_info on control); stamped into every header and kernel_info.
pub const PROTOCOL_VERSION: &str = "5.5";
