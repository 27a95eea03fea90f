//! The multipart wire format:
//! `[identities…, "<IDS|MSG>", signature, header, parent_header, metadata, content, buffers…]`.

use crate::header::Header;
use crate::signing::Signer;
use serde::Serialize;
use serde_json::{Map, Value};

pub const DELIMITER: &[u8] = b"<IDS|MSG>";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter among {0} frames")]
    MissingDelimiter(usize),
    #[error("expected at least 5 frames after the delimiter, got {0}")]
    TooFewFrames(usize),
    #[error("invalid signature")]
    BadSignature,
    #[error("invalid {part}: {source}")]
    Json {
        part: &'static str,
        source: serde_json::Error,
    },
    #[error("{part} must be a JSON object")]
    NotAnObject { part: &'static str },
}

/// A verified message whose header and parent header are decoded; `content` stays JSON until the
/// receiver asks for its typed form (see [`crate::content::Request`]).
#[derive(Debug, Clone)]
pub struct Message {
    /// ROUTER routing prefix (or the IOPub topic for published messages).
    pub identities: Vec<Vec<u8>>,
    pub header: Header,
    /// `None` is written as `{}` on the wire.
    pub parent_header: Option<Header>,
    pub metadata: Map<String, Value>,
    pub content: Value,
    pub buffers: Vec<Vec<u8>>,
}

pub type RawMessage = Vec<Vec<u8>>;

impl Message {
    /// A new kernel message. With a parent, it is routed back to the parent's identities and
    /// carries the parent's header.
    pub fn new(
        session: &str,
        msg_type: &str,
        content: impl Serialize,
        parent: Option<&Message>,
    ) -> Self {
        Message {
            identities: parent.map(|p| p.identities.clone()).unwrap_or_default(),
            header: Header::new(session, msg_type),
            parent_header: parent.map(|p| p.header.clone()),
            metadata: Map::new(),
            // Our content types always serialize to objects; fall back to {} rather than panic.
            content: serde_json::to_value(content).unwrap_or_else(|_| Value::Object(Map::new())),
            buffers: Vec::new(),
        }
    }

    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// Parses and verifies frames received from a socket.
    pub fn from_frames(frames: Vec<Vec<u8>>, signer: &Signer) -> Result<Self, WireError> {
        let total = frames.len();
        let split = frames
            .iter()
            .position(|f| f.as_slice() == DELIMITER)
            .ok_or(WireError::MissingDelimiter(total))?;
        let mut frames = frames.into_iter();
        let identities: Vec<Vec<u8>> = frames.by_ref().take(split).collect();
        frames.next(); // the delimiter
        let rest: Vec<Vec<u8>> = frames.collect();
        if rest.len() < 5 {
            return Err(WireError::TooFewFrames(rest.len()));
        }
        let mut rest = rest.into_iter();
        let signature = rest.next().unwrap_or_default();
        let header = rest.next().unwrap_or_default();
        let parent = rest.next().unwrap_or_default();
        let metadata = rest.next().unwrap_or_default();
        let content = rest.next().unwrap_or_default();
        let buffers: Vec<Vec<u8>> = rest.collect();

        if !signer.verify(&signature, &[&header, &parent, &metadata, &content]) {
            return Err(WireError::BadSignature);
        }

        let header: Header = serde_json::from_slice(&header).map_err(|source| WireError::Json {
            part: "header",
            source,
        })?;
        let parent_value = parse_object(&parent, "parent_header")?;
        let parent_header = if parent_value.is_empty() {
            None
        } else {
            Some(
                serde_json::from_value(Value::Object(parent_value)).map_err(|source| {
                    WireError::Json {
                        part: "parent_header",
                        source,
                    }
                })?,
            )
        };
        let metadata = parse_object(&metadata, "metadata")?;
        let content = Value::Object(parse_object(&content, "content")?);
        Ok(Message {
            identities,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        })
    }

    /// Serializes and signs for sending.
    pub fn to_frames(&self, signer: &Signer) -> RawMessage {
        let header = to_json(&self.header);
        let parent = match &self.parent_header {
            Some(h) => to_json(h),
            None => b"{}".to_vec(),
        };
        let metadata = to_json(&self.metadata);
        let content = to_json(&self.content);
        let signature = signer.sign(&[&header, &parent, &metadata, &content]);
        let mut frames = self.identities.clone();
        frames.push(DELIMITER.to_vec());
        frames.push(signature.into_bytes());
        frames.push(header);
        frames.push(parent);
        frames.push(metadata);
        frames.push(content);
        frames.extend(self.buffers.iter().cloned());
        frames
    }
}

fn parse_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, WireError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WireError::NotAnObject { part }),
        Err(source) => Err(WireError::Json { part, source }),
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing our own header/map/Value types cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(signer: &Signer) -> Vec<Vec<u8>> {
        let mut msg = Message::new("client", "execute_request", json!({"code": "1+1"}), None);
        msg.identities = vec![b"id-1".to_vec()];
        msg.to_frames(signer)
    }

    #[test]
    fn round_trip_with_identities_and_buffers() {
        let signer = Signer::new("key");
        let mut frames = request(&signer);
        frames.push(b"buffer".to_vec());
        let msg = Message::from_frames(frames, &signer).unwrap();
        assert_eq!(msg.identities, vec![b"id-1".to_vec()]);
        assert_eq!(msg.msg_type(), "execute_request");
        assert_eq!(msg.content["code"], "1+1");
        assert!(msg.parent_header.is_none());
        assert_eq!(msg.buffers, vec![b"buffer".to_vec()]);
    }

    #[test]
    fn reply_carries_parent_and_identities() {
        let signer = Signer::new("key");
        let req = Message::from_frames(request(&signer), &signer).unwrap();
        let reply = Message::new(
            "kernel",
            "execute_reply",
            json!({"status": "ok"}),
            Some(&req),
        );
        let frames = reply.to_frames(&signer);
        assert_eq!(frames[0], b"id-1");
        let back = Message::from_frames(frames, &signer).unwrap();
        assert_eq!(back.parent_header.unwrap().msg_id, req.header.msg_id);
        assert_eq!(back.header.session, "kernel");
    }

    #[test]
    fn wrong_key_is_rejected() {
        let frames = request(&Signer::new("other"));
        assert!(matches!(
            Message::from_frames(frames, &Signer::new("key")),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let s = Signer::new("");
        assert!(matches!(
            Message::from_frames(vec![], &s),
            Err(WireError::MissingDelimiter(0))
        ));
        let short = vec![DELIMITER.to_vec(), b"".to_vec(), b"{}".to_vec()];
        assert!(matches!(
            Message::from_frames(short, &s),
            Err(WireError::TooFewFrames(2))
        ));
        let bad_json = vec![
            DELIMITER.to_vec(),
            b"".to_vec(),
            b"not json".to_vec(),
            b"{}".to_vec(),
            b"{}".to_vec(),
            b"{}".to_vec(),
        ];
        assert!(matches!(
            Message::from_frames(bad_json, &s),
            Err(WireError::Json { part: "header", .. })
        ));
        let array_content = vec![
            DELIMITER.to_vec(),
            b"".to_vec(),
            serde_json::to_vec(&Header::new("s", "x")).unwrap(),
            b"{}".to_vec(),
            b"{}".to_vec(),
            b"[1]".to_vec(),
        ];
        assert!(matches!(
            Message::from_frames(array_content, &s),
            Err(WireError::NotAnObject { part: "content" })
        ));
    }
}
