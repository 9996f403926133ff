//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd
//! starts units after berthd only once it has sent `READY=1` on the datagram
//! socket named by `$NOTIFY_SOCKET`. Without that variable (not run by
//! systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The readiness message: the sockets are bound and served.
pub(crate) const READY: &str = "READY=1";
/// The message berthd sends when it begins shutting down.
pub(crate) const STOPPING: &str = "STOPPING=1";

/// Errors sending a notification.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@abstract`.
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    /// The datagram could not be sent.
    #[error("cannot notify systemd at {socket}: {source}")]
    Send {
        /// The socket.
        socket: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `state` to `$NOTIFY_SOCKET` if set; `Ok(false)` when unset.
pub(crate) fn notify(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    send(&socket, state)?;
    Ok(true)
}

/// Sends `state` to the notify socket `socket` (a path, or `@name` for
/// an abstract socket, as systemd sets it).
pub(crate) fn send(socket: &str, state: &str) -> Result<(), NotifyError> {
    let addr = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)
    } else {
        return Err(NotifyError::BadAddress(socket.to_string()));
    }
    .map_err(|source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    })?;
    let sender = UnixDatagram::unbound().map_err(|source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    })?;
    sender
        .send_to_addr(state.as_bytes(), &addr)
        .map_err(|source| NotifyError::Send {
            socket: socket.to_string(),
            source,
        })?;
    Ok(())
}

/// Tells systemd (if it started berthd) about `state`; a failure is logged,
/// never fatal: the daemon works without its supervisor knowing.
pub(crate) fn tell(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "sd_notify"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), READY).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), STOPPING).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn relative_address_is_refused() {
        assert!(matches!(
            send("notify.sock", READY),
            Err(NotifyError::BadAddress(_))
        ));
    }
}
