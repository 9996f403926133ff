//! Listening sockets: stale files replaced, live ones refused, mode 0660.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error("{path} is in use by another running daemon; stop it or pass a different --address")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A filesystem or socket call failed.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The ttrpc socket path for gRPC socket `address`, as containerd names it.
pub(crate) fn ttrpc_address(address: &Path) -> PathBuf {
    let mut s = address.as_os_str().to_owned();
    s.push(".ttrpc");
    s.into()
}

/// Binds a UNIX socket at `path` owned by `uid:gid` with mode 0660.
///
/// A socket file nobody answers on (left by a killed daemon) is removed; a
/// socket that accepts a connection belongs to a live daemon and is refused.
pub(crate) fn listen(
    path: &Path,
    uid: u32,
    gid: u32,
) -> Result<tokio::net::UnixListener, SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    // The socket grants full control of the host: owner and group only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    if uid != 0 || gid != 0 {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err(io::Error::from(e)))?;
    }
    listener.set_nonblocking(true).map_err(io_err)?;
    tokio::net::UnixListener::from_std(listener).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_replaced_live_refused_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        // A stale socket: bound then dropped, file left behind.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = listen(&path, 0, 0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = listen(&path, 0, 0).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("another running daemon"));
        drop(live);
    }
}
