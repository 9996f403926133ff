//! The outcome of an exec or attach as Kubernetes clients read it: a
//! `metav1.Status` in JSON (protocol v4 and later) or a plain error text
//! (v1 to v3, where success is an empty error stream).

use serde::Serialize;

/// How the error stream carries the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusFormat {
    /// v1-v3: nothing on success, the error message otherwise.
    Text,
    /// v4+: a JSON `metav1.Status`, which can carry an exit code.
    Json,
}

/// The outcome of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The command exited 0, or the attach ended.
    Success,
    /// The command exited with a non-zero code.
    ExitCode { code: i32, cmd: String },
    /// The runtime failed.
    Internal(String),
}

#[derive(Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl Outcome {
    fn message(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode { code, cmd } => Some(format!(
                "command terminated with non-zero exit code: command '{cmd}' exited with {code}"
            )),
            Outcome::Internal(msg) => Some(format!("Internal error occurred: {msg}")),
        }
    }

    /// The bytes to write on the error stream (may be empty).
    pub(crate) fn encode(&self, format: StatusFormat) -> Vec<u8> {
        if format == StatusFormat::Text {
            return self.message().unwrap_or_default().into_bytes();
        }
        let status = match self {
            Outcome::Success => Status {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            // Clients (client-go's remotecommand, hence crictl and kubectl)
            // take the exit code from the ExitCode cause.
            Outcome::ExitCode { code, .. } => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            Outcome::Internal(msg) => Status {
                metadata: Empty {},
                status: "Failure",
                message: self.message(),
                reason: Some("InternalError"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: None,
                        message: msg.clone(),
                    }],
                }),
                code: Some(500),
            },
        };
        serde_json::to_vec(&status).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_kubelet_json() {
        assert_eq!(
            Outcome::Success.encode(StatusFormat::Json),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let exit = Outcome::ExitCode {
            code: 3,
            cmd: "sh -c exit 3".into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&exit.encode(StatusFormat::Json)).expect("json");
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "3");
        assert!(Outcome::Success.encode(StatusFormat::Text).is_empty());
    }
}
