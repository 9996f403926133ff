//! The requests a CRI plugin hands the streaming server: the fields of CRI's
//! `ExecRequest`, `AttachRequest` and `PortForwardRequest`, as plain data.

use crate::Error;

/// A command to run in a container (CRI `ExecRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// The container to run the command in.
    pub container_id: String,
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// Run the command on a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// The client sends standard input.
    pub stdin: bool,
    /// The client wants standard output.
    pub stdout: bool,
    /// The client wants standard error (never with `tty`).
    pub stderr: bool,
}

/// A connection to a running container's main process (CRI `AttachRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachRequest {
    /// The container to attach to.
    pub container_id: String,
    /// The container runs on a terminal.
    pub tty: bool,
    /// The client sends standard input.
    pub stdin: bool,
    /// The client wants standard output.
    pub stdout: bool,
    /// The client wants standard error (never with `tty`).
    pub stderr: bool,
}

/// Port forwarding into a pod's network namespace (CRI `PortForwardRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardRequest {
    /// The pod sandbox whose network namespace the ports are in.
    pub pod_sandbox_id: String,
    /// Ports the client may forward. SPDY clients name the port of each
    /// connection themselves; WebSocket clients name theirs in the URL.
    pub ports: Vec<i32>,
}

/// kubelet's checks for exec and attach (its streaming server's
/// `validateExecRequest`), with its messages: a container, at least one
/// stream, and no stderr on a terminal (a terminal merges it into stdout).
pub(crate) fn validate_streams(
    container_id: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), Error> {
    if container_id.is_empty() {
        return Err(Error::InvalidRequest(
            "missing required container_id".into(),
        ));
    }
    if tty && stderr {
        return Err(Error::InvalidRequest(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::InvalidRequest(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_checks_and_messages() {
        let msg = |r: Result<(), Error>| r.err().map(|e| e.to_string());
        assert_eq!(msg(validate_streams("c", false, true, true, true)), None);
        assert_eq!(
            msg(validate_streams("", false, true, false, false)).as_deref(),
            Some("missing required container_id")
        );
        assert_eq!(
            msg(validate_streams("c", true, true, true, true)).as_deref(),
            Some("tty and stderr cannot both be true")
        );
        assert_eq!(
            msg(validate_streams("c", false, false, false, false)).as_deref(),
            Some("one of stdin, stdout, or stderr must be set")
        );
    }
}
