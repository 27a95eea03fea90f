//! Typed message contents (the `content` frame), one struct per message type we send or handle.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type MimeBundle = Map<String, Value>;

// ----------------------------------------------------------------------------------------------
// Requests (client → kernel)

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default)]
    pub silent: bool,
    #[serde(default = "yes")]
    pub store_history: bool,
    #[serde(default)]
    pub user_expressions: Map<String, Value>,
    #[serde(default)]
    pub allow_stdin: bool,
    #[serde(default = "yes")]
    pub stop_on_error: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompleteRequest {
    pub code: String,
    pub cursor_pos: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InspectRequest {
    pub code: String,
    pub cursor_pos: usize,
    #[serde(default)]
    pub detail_level: u8,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IsCompleteRequest {
    pub code: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistAccessType {
    Tail,
    Range,
    Search,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryRequest {
    #[serde(default)]
    pub output: bool,
    #[serde(default)]
    pub raw: bool,
    pub hist_access_type: HistAccessType,
    #[serde(default)]
    pub session: i64,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub stop: Option<i64>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub pattern: String,
    #[serde(default)]
    pub unique: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommInfoRequest {
    #[serde(default)]
    pub target_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommOpen {
    pub comm_id: String,
    pub target_name: String,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommId {
    pub comm_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ShutdownRequest {
    #[serde(default)]
    pub restart: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputReply {
    pub value: String,
}

/// Every request a kernel receives on shell or control, decoded from `(msg_type, content)`.
#[derive(Debug, Clone)]
pub enum Request {
    KernelInfo,
    Execute(ExecuteRequest),
    Complete(CompleteRequest),
    Inspect(InspectRequest),
    IsComplete(IsCompleteRequest),
    History(HistoryRequest),
    CommInfo(CommInfoRequest),
    CommOpen(CommOpen),
    CommMsg(CommId),
    CommClose(CommId),
    Shutdown(ShutdownRequest),
    Interrupt,
    /// ipykernel's `usage_request` (jupyter-resource-usage's kernel panel), on control.
    Usage,
    /// `debug_request`: a Debug Adapter Protocol request, on control.
    Debug(Value),
    /// A message type we do not implement; the spec allows not replying to it.
    Unknown(String),
}

impl Request {
    pub fn parse(msg_type: &str, content: &Value) -> Result<Request, serde_json::Error> {
        fn de<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, serde_json::Error> {
            T::deserialize(v)
        }
        Ok(match msg_type {
            "kernel_info_request" => Request::KernelInfo,
            "execute_request" => Request::Execute(de(content)?),
            "complete_request" => Request::Complete(de(content)?),
            "inspect_request" => Request::Inspect(de(content)?),
            "is_complete_request" => Request::IsComplete(de(content)?),
            "history_request" => Request::History(de(content)?),
            "comm_info_request" => Request::CommInfo(de(content)?),
            "comm_open" => Request::CommOpen(de(content)?),
            "comm_msg" => Request::CommMsg(de(content)?),
            "comm_close" => Request::CommClose(de(content)?),
            "shutdown_request" => Request::Shutdown(de(content)?),
            "interrupt_request" => Request::Interrupt,
            "usage_request" => Request::Usage,
            "debug_request" => Request::Debug(content.clone()),
            other => Request::Unknown(other.to_owned()),
        })
    }

    /// The reply type for a request type (`x_request` → `x_reply`).
    pub fn reply_type(msg_type: &str) -> String {
        match msg_type.strip_suffix("_request") {
            Some(stem) => format!("{stem}_reply"),
            None => format!("{msg_type}_reply"),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Replies (kernel → client)

#[derive(Debug, Clone, Serialize)]
pub struct HelpLink {
    pub text: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LanguageInfo {
    pub name: String,
    pub version: String,
    pub mimetype: String,
    pub file_extension: String,
    pub pygments_lexer: String,
    pub codemirror_mode: String,
    pub nbconvert_exporter: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelInfoReply {
    pub status: &'static str,
    pub protocol_version: String,
    pub implementation: String,
    pub implementation_version: String,
    pub language_info: LanguageInfo,
    pub banner: String,
    pub help_links: Vec<HelpLink>,
    pub supported_features: Vec<String>,
    pub debugger: bool,
}

/// Error fields shared by `execute_reply`, `error` and other failed replies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorInfo {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ExecuteReply {
    Ok {
        execution_count: u64,
        payload: Vec<Payload>,
        user_expressions: Map<String, Value>,
    },
    Error {
        execution_count: u64,
        #[serde(flatten)]
        error: ErrorInfo,
    },
    /// Requests skipped after an earlier error (ipykernel and clients still use "aborted").
    Aborted {},
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Payload {
    Page { data: MimeBundle, start: u64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct CompleteReply {
    pub status: &'static str,
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReply {
    pub status: &'static str,
    pub found: bool,
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Completeness {
    Complete,
    Incomplete,
    Invalid,
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct IsCompleteReply {
    pub status: Completeness,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

/// `(session, line, input)` or `(session, line, (input, output))`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum HistoryEntry {
    Input(i64, i64, String),
    WithOutput(i64, i64, (String, Option<String>)),
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryReply {
    pub status: &'static str,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommInfoReply {
    pub status: &'static str,
    pub comms: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReply {
    pub status: &'static str,
    pub restart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusOnly {
    pub status: &'static str,
}

// ----------------------------------------------------------------------------------------------
// IOPub and stdin (kernel → client)

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    Starting,
    Busy,
    Idle,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub execution_state: ExecutionState,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteInput {
    pub code: String,
    pub execution_count: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    pub name: StreamName,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Transient {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DisplayData {
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
    pub transient: Transient,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecuteResult {
    pub execution_count: u64,
    pub data: MimeBundle,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClearOutput {
    pub wait: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommClose {
    pub comm_id: String,
    pub data: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IopubWelcome {
    pub subscription: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputRequest {
    pub prompt: String,
    pub password: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_request_defaults() {
        let r = Request::parse("execute_request", &json!({"code": "1"})).unwrap();
        let Request::Execute(e) = r else { panic!() };
        assert!(e.store_history && e.stop_on_error && !e.silent && !e.allow_stdin);
    }

    #[test]
    fn bad_content_is_an_error() {
        assert!(Request::parse("execute_request", &json!({"code": 5})).is_err());
        assert!(matches!(
            Request::parse("debug_request", &json!({})).unwrap(),
            Request::Debug(_)
        ));
        assert!(matches!(
            Request::parse("subshell_request", &json!({})).unwrap(),
            Request::Unknown(_)
        ));
    }

    #[test]
    fn execute_reply_shapes() {
        let ok = ExecuteReply::Ok {
            execution_count: 3,
            payload: vec![],
            user_expressions: Map::new(),
        };
        assert_eq!(
            serde_json::to_value(ok).unwrap(),
            json!({"status":"ok","execution_count":3,"payload":[],"user_expressions":{}})
        );
        let err = ExecuteReply::Error {
            execution_count: 1,
            error: ErrorInfo {
                ename: "E".into(),
                evalue: "v".into(),
                traceback: vec![],
            },
        };
        assert_eq!(
            serde_json::to_value(err).unwrap(),
            json!({"status":"error","execution_count":1,"ename":"E","evalue":"v","traceback":[]})
        );
        assert_eq!(
            serde_json::to_value(ExecuteReply::Aborted {}).unwrap(),
            json!({"status":"aborted"})
        );
    }

    #[test]
    fn history_entries_serialize_as_tuples() {
        let e = HistoryEntry::WithOutput(1, 2, ("a".into(), Some("b".into())));
        assert_eq!(serde_json::to_value(e).unwrap(), json!([1, 2, ["a", "b"]]));
        let e = HistoryEntry::Input(1, 2, "a".into());
        assert_eq!(serde_json::to_value(e).unwrap(), json!([1, 2, "a"]));
    }

    #[test]
    fn page_payload() {
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), json!("help"));
        assert_eq!(
            serde_json::to_value(Payload::Page { data, start: 0 }).unwrap(),
            json!({"source":"page","data":{"text/plain":"help"},"start":0})
        );
    }
}
