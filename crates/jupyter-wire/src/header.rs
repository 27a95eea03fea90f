//! Message headers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub msg_id: String,
    pub session: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub date: String,
    pub msg_type: String,
    #[serde(default)]
    pub version: String,
    /// Fields we do not model (e.g. `subshell_id`) survive a round trip, so a parent header is
    /// echoed back exactly as the client sent it.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Header {
    /// A fresh header owned by this kernel: unique `msg_id`, the kernel's own session id.
    pub fn new(session: &str, msg_type: &str) -> Self {
        Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            session: session.to_owned(),
            username: "kernel".to_owned(),
            date: now(),
            msg_type: msg_type.to_owned(),
            version: crate::PROTOCOL_VERSION.to_owned(),
            extra: Default::default(),
        }
    }
}

/// ISO 8601 in UTC with exactly 6 fractional digits: jupyter_client's date regex accepts at most 6.
pub fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_has_six_fraction_digits_and_zone() {
        let d = now();
        let frac = d.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), 7, "{d}");
        assert!(d.ends_with('Z'));
    }

    #[test]
    fn unknown_fields_round_trip() {
        let text = r#"{"msg_id":"1","session":"s","username":"u","date":"d","msg_type":"execute_request","version":"5.5","subshell_id":"abc"}"#;
        let h: Header = serde_json::from_str(text).unwrap();
        let back = serde_json::to_value(&h).unwrap();
        assert_eq!(back["subshell_id"], "abc");
    }

    #[test]
    fn fresh_ids_are_unique() {
        assert_ne!(
            Header::new("s", "status").msg_id,
            Header::new("s", "status").msg_id
        );
    }
}
