//! What a kernel and its zygote say on their Unix socket: length-prefixed JSON messages, the
//! request carrying the new process's standard streams as `SCM_RIGHTS`.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A message is at most this long (an environment of 16 MiB is not a kernel's).
const MAX_MESSAGE: usize = 16 << 20;

/// What the kernel asks for: a process with this environment and working directory, whose
/// stdin, stdout and stderr are the three descriptors sent with it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// Each variable as `NAME=value` bytes (not always UTF-8).
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub umask: u32,
    /// The CPUs the kernel may run on (Slurm's task affinity), empty: leave as is.
    pub cpus: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Started {
        pid: i32,
    },
    Failed {
        error: String,
    },
    /// The process ended with this wait status (`waitpid`'s).
    Exited {
        status: i32,
    },
}

fn frame(value: &impl Serialize) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

/// Sends `value` with `fds` attached.
pub(crate) fn send(
    conn: &UnixStream,
    value: &impl Serialize,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let bytes = frame(value)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let mut sent = rustix::net::sendmsg(
        conn,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // A stream socket may take a long message in parts; the descriptors went with the first.
    while sent < bytes.len() {
        sent += rustix::net::send(conn, &bytes[sent..], SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Receives one message and the descriptors sent with it. `Ok(None)`: the peer closed the
/// connection before a message began.
pub(crate) fn receive<T: for<'de> Deserialize<'de>>(
    conn: &UnixStream,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut head = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
    )?
    .bytes;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got == 0 {
        return Ok(None);
    }
    let mut reader = conn;
    if got < head.len() {
        reader.read_exact(&mut head[got..])?;
    }
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes"),
        ));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let value =
        serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((value, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_request_arrives_with_its_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let request = Request {
            env: vec![b"A=\xff1".to_vec()],
            cwd: b"/tmp".to_vec(),
            umask: 0o022,
            cpus: vec![0, 1],
        };
        send(&a, &request, &[reader.as_fd()]).unwrap();
        drop(reader);
        let (got, fds): (Request, _) = receive(&b).unwrap().unwrap();
        assert_eq!(got.env, request.env);
        assert_eq!(got.cpus, vec![0, 1]);
        assert_eq!(fds.len(), 1);
        writer.write_all(b"through").unwrap();
        drop(writer);
        let mut text = String::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "through");
    }

    #[test]
    fn a_closed_connection_is_none_and_garbage_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(receive::<Reply>(&b).unwrap().is_none());
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&4u32.to_le_bytes()).unwrap();
        a.write_all(b"nope").unwrap();
        let err = receive::<Reply>(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(receive::<Reply>(&b).is_err());
    }
}
