//! The crate's error type: containerd's error categories plus I/O failures.
//!
//! Category variants print like containerd's wrapped `errdefs` errors
//! (`content sha256:...: not found`), so a client sees the same text over gRPC
//! as it would from containerd. Turning a variant into a status code is the
//! RPC boundary's job (`berth-api`), not this crate's.

use std::io;

use berth_types::{Category, ErrorCategory};
use std::path::PathBuf;

/// What went wrong in a content store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No blob or ingest by that name; the message names it.
    #[error("{0}: not found")]
    NotFound(String),

    /// The blob exists already (returned by `commit`, and by `writer` when the
    /// expected digest is present).
    #[error("{0}: already exists")]
    AlreadyExists(String),

    /// The request is malformed: a bad digest, an empty ref, an unknown field path.
    #[error("{0}: invalid argument")]
    InvalidArgument(String),

    /// The content or writer is not in the state the operation needs: a commit
    /// whose size or digest does not match, a writer already closed.
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),

    /// The ref is locked by another writer, in this process or another one.
    #[error("{0}: unavailable")]
    Unavailable(String),

    /// A filesystem operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The path that was being touched.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// Whether this is [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists(_))
    }

    /// Whether this is [`Error::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<berth_types::DigestError> for Error {
    /// A digest that does not parse is an invalid argument.
    fn from(e: berth_types::DigestError) -> Error {
        Error::InvalidArgument(e.to_string())
    }
}

impl ErrorCategory for Error {
    fn category(&self) -> Category {
        match self {
            Error::NotFound(_) => Category::NotFound,
            Error::AlreadyExists(_) => Category::AlreadyExists,
            Error::InvalidArgument(_) => Category::InvalidArgument,
            Error::FailedPrecondition(_) => Category::FailedPrecondition,
            Error::Unavailable(_) => Category::Unavailable,
            // A full disk: "free space", not a bug.
            Error::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) =>
            {
                Category::ResourceExhausted
            }
            Error::Io { .. } => Category::Internal,
        }
    }
}

/// Results of content store operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_print_like_containerd() {
        let e = Error::NotFound("content sha256:abc".into());
        assert_eq!(e.to_string(), "content sha256:abc: not found");
        assert!(e.is_not_found());
        let e = Error::Unavailable("ref x locked".into());
        assert_eq!(e.to_string(), "ref x locked: unavailable");
        assert!(e.is_unavailable() && !e.is_already_exists());
    }

    #[test]
    fn categories_are_containerd_s() {
        assert_eq!(Error::NotFound("x".into()).category(), Category::NotFound);
        let full = Error::io("/x", io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.category(), Category::ResourceExhausted);
        let other = Error::io("/x", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(other.category(), Category::Internal);
        let bad: Error = berth_types::Digest::parse("x").unwrap_err().into();
        assert_eq!(bad.category(), Category::InvalidArgument);
        assert!(bad.to_string().ends_with(": invalid argument"), "{bad}");
    }

    #[test]
    fn io_errors_name_the_path() {
        let e = Error::io("/x/y", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(e.to_string().starts_with("/x/y: "), "{e}");
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 48);
    }
}
