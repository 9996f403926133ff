//! Errors that stop the daemon.

use std::path::PathBuf;

/// Why the daemon could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The plugin set could not be built.
    #[error(transparent)]
    Registry(#[from] crate::plugins::RegistryError),
    /// A socket could not be set up.
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    /// A directory could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another berthd holds the lock on this root or state directory.
    #[error(
        "{dir} is in use by another berthd{holder} (it holds the lock on {lock}); \
         stop it, or give this daemon its own --root and --state"
    )]
    InUse {
        /// The root or state directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ` (pid N)` when the lock file names its holder.
        holder: String,
    },
    /// A server failed while serving.
    #[error("{server} server failed: {message}")]
    Serve {
        /// `grpc` or `ttrpc`.
        server: &'static str,
        /// What it said.
        message: String,
    },
}

/// Result with the daemon [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
