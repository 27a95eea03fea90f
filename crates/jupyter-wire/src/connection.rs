//! Connection files written by jupyter_client (`kernel-*.json`).

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Ipc,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionInfo {
    pub transport: Transport,
    pub ip: String,
    pub shell_port: u16,
    pub control_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub hb_port: u16,
    #[serde(default)]
    pub key: String,
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
    // Unknown keys (kernel_name, jupyter_session, curve_*) are ignored on purpose.
}

fn default_scheme() -> String {
    "hmac-sha256".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot read connection file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("connection file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("unsupported signature_scheme {0:?}: only hmac-sha256 (or an empty key) is supported")]
    Scheme(String),
}

impl ConnectionInfo {
    pub fn from_file(path: &Path) -> Result<Self, ConnectionError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConnectionError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ConnectionError::Parse { source, .. } => ConnectionError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, ConnectionError> {
        let info: ConnectionInfo =
            serde_json::from_str(text).map_err(|source| ConnectionError::Parse {
                path: String::new(),
                source,
            })?;
        if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
            return Err(ConnectionError::Scheme(info.signature_scheme));
        }
        Ok(info)
    }

    /// ZeroMQ endpoint for a port. For ipc, jupyter_client uses `ipc://{ip}-{port}` where `ip` is a
    /// path prefix (jupyter_client `connect.py::_make_url`).
    pub fn endpoint(&self, port: u16) -> String {
        match self.transport {
            Transport::Tcp => format!("tcp://{}:{}", self.ip, port),
            Transport::Ipc => format!("ipc://{}-{}", self.ip, port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"control_port":50160,"shell_port":57503,"transport":"tcp",
        "signature_scheme":"hmac-sha256","stdin_port":52597,"hb_port":42540,"ip":"127.0.0.1",
        "iopub_port":40885,"key":"a0436f6c-1916-498b-8eb9-e81ab9368e84","kernel_name":"x"}"#;

    #[test]
    fn parses_tcp_and_ignores_unknown_keys() {
        let info = ConnectionInfo::from_json(SAMPLE).unwrap();
        assert_eq!(info.endpoint(info.shell_port), "tcp://127.0.0.1:57503");
        assert_eq!(info.transport, Transport::Tcp);
    }

    #[test]
    fn ipc_endpoint_uses_path_prefix() {
        let text = SAMPLE
            .replace(r#""tcp""#, r#""ipc""#)
            .replace("127.0.0.1", "/run/user/kernel-1-ipc");
        let info = ConnectionInfo::from_json(&text).unwrap();
        assert_eq!(info.endpoint(3), "ipc:///run/user/kernel-1-ipc-3");
    }

    #[test]
    fn rejects_unknown_scheme() {
        let text = SAMPLE.replace("hmac-sha256", "hmac-md5");
        assert!(matches!(
            ConnectionInfo::from_json(&text),
            Err(ConnectionError::Scheme(_))
        ));
    }
}
