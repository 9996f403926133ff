//! The crate's error type: containerd's error categories plus what was touched.
//!
//! Category variants print like containerd's wrapped `errdefs` errors
//! (`snapshot "foo": not found`), so a client sees the same text over gRPC as
//! it would from containerd. Turning a variant into a status code is the RPC
//! boundary's job (`berth-api`), not this crate's.

use std::io;
use std::path::PathBuf;

use berth_types::{Category, ErrorCategory};

/// What went wrong in a snapshotter operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No snapshot (or parent) by that key; the message names it.
    #[error("{0}: not found")]
    NotFound(String),

    /// The key or name is taken already (by a snapshot of any kind).
    #[error("{0}: already exists")]
    AlreadyExists(String),

    /// The request is malformed: an empty key, a parent that is not
    /// committed, an immutable field in an update, a mount that cannot be
    /// expressed.
    #[error("{0}: invalid argument")]
    InvalidArgument(String),

    /// The snapshot or host is not in the state the operation needs: commit of
    /// a view or of a committed snapshot, removal of a snapshot that still has
    /// children, a kernel without overlayfs.
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),

    /// The snapshotter cannot serve the request right now, e.g. its metadata
    /// file is held by another process.
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

    /// mount(2) or umount(2) of `target` failed.
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        /// The filesystem type (`overlay`, `bind`, ...), or `umount`.
        fstype: String,
        /// The mount point.
        target: PathBuf,
        /// The errno, as an I/O error.
        #[source]
        source: io::Error,
    },

    /// The metadata database (redb) failed while doing what `context` says.
    #[error("snapshot metadata: {context}: {source}")]
    Db {
        /// What was being done, e.g. `"begin write transaction"`.
        context: String,
        /// The storage error (boxed: redb's error is large).
        #[source]
        source: Box<redb::Error>,
    },
}

impl Error {
    /// Whether the disk (or a quota) is full: reported as "resource exhausted".
    pub fn is_storage_full(&self) -> bool {
        let full = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        };
        match self {
            Error::Io { source, .. } => full(source),
            Error::Db { source, .. } => berth_redb::is_storage_full(source),
            _ => false,
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
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

    /// Whether this is [`Error::InvalidArgument`].
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Error::InvalidArgument(_))
    }

    /// Whether this is [`Error::FailedPrecondition`].
    pub fn is_failed_precondition(&self) -> bool {
        matches!(self, Error::FailedPrecondition(_))
    }

    /// Whether this is [`Error::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl ErrorCategory for Error {
    /// containerd's category; a driver's I/O, mount or database failure is
    /// an unwrapped error there, so `Unknown`, except a full disk, which is
    /// `ResourceExhausted`.
    fn category(&self) -> Category {
        match self {
            Error::NotFound(_) => Category::NotFound,
            Error::AlreadyExists(_) => Category::AlreadyExists,
            Error::InvalidArgument(_) => Category::InvalidArgument,
            Error::FailedPrecondition(_) => Category::FailedPrecondition,
            Error::Unavailable(_) => Category::Unavailable,
            e if e.is_storage_full() => Category::ResourceExhausted,
            Error::Io { .. } | Error::Mount { .. } | Error::Db { .. } => Category::Unknown,
        }
    }
}

/// Results of snapshotter operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Attaches a context to redb's errors, turning them into [`Error::Db`].
pub(crate) trait DbContext<T> {
    /// Wraps the error, if any, with `context` (allocated only on error).
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for std::result::Result<T, E> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            context: context.to_owned(),
            source: Box::new(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_print_like_containerd() {
        let e = Error::NotFound(r#"snapshot "foo""#.into());
        assert_eq!(e.to_string(), r#"snapshot "foo": not found"#);
        assert!(e.is_not_found() && !e.is_already_exists());
        let e = Error::FailedPrecondition("cannot remove snapshot with child".into());
        assert_eq!(
            e.to_string(),
            "cannot remove snapshot with child: failed precondition"
        );
        assert!(e.is_failed_precondition());
        assert!(Error::InvalidArgument("x".into()).is_invalid_argument());
        assert!(Error::Unavailable("x".into()).is_unavailable());
    }

    #[test]
    fn io_and_mount_errors_name_the_path() {
        let e = Error::io("/x/y", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(e.to_string().starts_with("/x/y: "), "{e}");
        let e = Error::Mount {
            fstype: "overlay".into(),
            target: "/mnt".into(),
            source: io::Error::from_raw_os_error(22),
        };
        assert!(e.to_string().starts_with("mount overlay on /mnt: "), "{e}");
    }

    #[test]
    fn db_errors_carry_their_context() {
        let r: std::result::Result<(), redb::StorageError> =
            Err(redb::StorageError::Corrupted("bad page".into()));
        let e = r.context("read snapshot").unwrap_err();
        assert!(e.to_string().contains("read snapshot"), "{e}");
    }

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 64);
    }
}
