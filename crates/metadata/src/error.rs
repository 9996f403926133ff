//! The crate's error type: containerd's error categories plus storage failures.
//!
//! The category variants print like containerd's wrapped `errdefs` errors
//! (`namespace "x": not found`), so the message a client sees over gRPC reads
//! the same as containerd's. Mapping a variant to a status code is the RPC
//! boundary's job (`berth-api`), not this crate's.

use std::path::PathBuf;

use berth_types::{Category, ErrorCategory};

/// What went wrong in a metadata operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist; the message names it (`namespace "x"`).
    #[error("{0}: not found")]
    NotFound(String),

    /// An object with that name exists already; the message names it.
    #[error("{0}: already exists")]
    AlreadyExists(String),

    /// The request was malformed (bad identifier, oversized label, ...).
    #[error("{0}: invalid argument")]
    InvalidArgument(String),

    /// The object is not in the state the operation needs (e.g. not empty).
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),

    /// The request is well-formed but asks for something this store does not
    /// support (e.g. a lease resource type it does not know).
    #[error("{0}: not implemented")]
    NotImplemented(String),

    /// A stored record could not be decoded; the message names the record.
    #[error("{0}: data loss")]
    DataLoss(String),

    /// The database file was written by a newer berth with a schema this
    /// build does not know; opening it could corrupt it, so it is refused.
    #[error(
        "metadata database {path} has schema version {found}, newer than version {supported} \
         that this build of berth understands; refusing to open it (was berth downgraded?)"
    )]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// The schema version recorded in the file.
        found: u64,
        /// The newest schema version this build understands.
        supported: u64,
    },

    /// The embedded database (redb) failed while doing what `context` says.
    #[error("metadata db: {context}: {source}")]
    Db {
        /// What was being done, e.g. `"begin write transaction"`.
        context: String,
        /// The storage error (boxed: redb's error is large).
        #[source]
        source: Box<redb::Error>,
    },

    /// A filesystem operation on `path` failed (e.g. creating the DB's parent directory).
    #[error("{path}: {source}")]
    Io {
        /// The path that was being touched.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the database failed because its disk (or a quota) is full:
    /// the RPC boundary reports that as "resource exhausted".
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Db { source, .. } => berth_redb::is_storage_full(source),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

impl ErrorCategory for Error {
    fn category(&self) -> Category {
        match self {
            Error::NotFound(_) => Category::NotFound,
            Error::AlreadyExists(_) => Category::AlreadyExists,
            Error::InvalidArgument(_) => Category::InvalidArgument,
            Error::FailedPrecondition(_) | Error::SchemaVersion { .. } => {
                Category::FailedPrecondition
            }
            Error::NotImplemented(_) => Category::NotImplemented,
            Error::DataLoss(_) => Category::DataLoss,
            // A full disk is "free space", as for the content store.
            e if e.is_storage_full() => Category::ResourceExhausted,
            Error::Db { .. } | Error::Io { .. } => Category::Internal,
        }
    }
}

/// Results of metadata operations.
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
        let e = Error::NotFound(r#"namespace "x""#.into());
        assert_eq!(e.to_string(), r#"namespace "x": not found"#);
        let e = Error::AlreadyExists(r#"namespace "x""#.into());
        assert_eq!(e.to_string(), r#"namespace "x": already exists"#);
        let e = Error::NotImplemented("resource type widgets not supported yet".into());
        assert_eq!(
            e.to_string(),
            "resource type widgets not supported yet: not implemented"
        );
    }

    #[test]
    fn db_context_wraps_redb_errors() {
        let r: std::result::Result<(), redb::StorageError> =
            Err(redb::StorageError::Corrupted("bad page".into()));
        let e = r.context("open table images").unwrap_err();
        assert!(matches!(&e, Error::Db { context, .. } if context == "open table images"));
        assert!(e.to_string().contains("bad page"), "{e}");
    }

    #[test]
    fn error_stays_small() {
        // Keeps `Result<T>` cheap to return and clippy's `result_large_err` quiet.
        assert!(std::mem::size_of::<Error>() <= 64);
    }
}
