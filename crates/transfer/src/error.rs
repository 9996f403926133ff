//! Errors of a transfer, each with a [`Category`] so a server maps them to
//! its status codes in one place (a registry's "not found" stays NotFound).

/// What kind of failure an [`Error`] is; servers map it to their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// Something named (an image, a blob, a platform) does not exist.
    NotFound,
    /// The request or the data read (a manifest, an archive) is malformed.
    InvalidArgument,
    /// Something to be created exists already.
    AlreadyExists,
    /// The system is not in a state where the operation can run.
    FailedPrecondition,
    /// A remote or a resource is unavailable right now; a retry may work.
    Unavailable,
    /// A remote stopped sending for longer than allowed.
    DeadlineExceeded,
    /// Content arrived corrupt or incomplete.
    DataLoss,
    /// The caller went away.
    Cancelled,
    /// The operation was aborted midway (a stream broke).
    Aborted,
    /// The registry wants credentials.
    Unauthenticated,
    /// The registry refused the credentials given.
    PermissionDenied,
    /// A disk or quota is full.
    ResourceExhausted,
    /// Anything else: a bug or an I/O failure.
    Internal,
}

/// Why a transfer failed: a [`Category`] and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    category: Category,
    message: String,
}

/// Results of transfers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($name:ident => $cat:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("An error of category [`Category::", stringify!($cat), "`].")]
                pub fn $name(message: impl Into<String>) -> Error {
                    Error::new(Category::$cat, message)
                }
            )*
        }
    };
}

constructors! {
    not_found => NotFound,
    invalid_argument => InvalidArgument,
    already_exists => AlreadyExists,
    failed_precondition => FailedPrecondition,
    unavailable => Unavailable,
    deadline_exceeded => DeadlineExceeded,
    data_loss => DataLoss,
    cancelled => Cancelled,
    aborted => Aborted,
    unauthenticated => Unauthenticated,
    permission_denied => PermissionDenied,
    resource_exhausted => ResourceExhausted,
    internal => Internal,
}

impl Error {
    /// An error of `category` saying `message`.
    pub fn new(category: Category, message: impl Into<String>) -> Error {
        Error {
            category,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The message, without the category.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix: ` before its message.
    pub fn context(self, prefix: impl std::fmt::Display) -> Error {
        Error {
            category: self.category,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

impl From<berth_remotes::Error> for Error {
    fn from(e: berth_remotes::Error) -> Error {
        use berth_remotes::Error as E;
        let category = match &e {
            E::NotFound { .. } => Category::NotFound,
            E::InvalidArgument(_) => Category::InvalidArgument,
            E::Unauthorized { .. } => Category::Unauthenticated,
            E::PermissionDenied { .. } => Category::PermissionDenied,
            _ => Category::Unavailable,
        };
        Error::new(category, e.to_string())
    }
}

impl From<berth_content::Error> for Error {
    fn from(e: berth_content::Error) -> Error {
        use berth_content::Error as E;
        let category = match &e {
            E::NotFound(_) => Category::NotFound,
            E::AlreadyExists(_) => Category::AlreadyExists,
            E::InvalidArgument(_) => Category::InvalidArgument,
            E::FailedPrecondition(_) => Category::FailedPrecondition,
            E::Unavailable(_) => Category::Unavailable,
            // A full disk: "free space", not a bug.
            E::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                Category::ResourceExhausted
            }
            _ => Category::Internal,
        };
        Error::new(category, format!("content store: {e}"))
    }
}

impl From<berth_snapshots::Error> for Error {
    fn from(e: berth_snapshots::Error) -> Error {
        let category = if e.is_not_found() {
            Category::NotFound
        } else if e.is_already_exists() {
            Category::AlreadyExists
        } else if e.is_invalid_argument() {
            Category::InvalidArgument
        } else if e.is_failed_precondition() {
            Category::FailedPrecondition
        } else if e.is_unavailable() {
            Category::Unavailable
        } else {
            Category::Internal
        };
        Error::new(category, format!("snapshotter: {e}"))
    }
}

impl From<berth_images::Error> for Error {
    fn from(e: berth_images::Error) -> Error {
        Error::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_survive_conversion() {
        let e: Error = berth_remotes::Error::NotFound {
            what: "x".into(),
            errors: Default::default(),
        }
        .into();
        assert_eq!(e.category(), Category::NotFound);
        let e: Error = berth_content::Error::AlreadyExists("blob".into()).into();
        assert_eq!(e.category(), Category::AlreadyExists);
        let e: Error = berth_snapshots::Error::Unavailable("locked".into()).into();
        assert_eq!(e.category(), Category::Unavailable);
        let e = Error::data_loss("short").context("layer sha256:1");
        assert_eq!(e.category(), Category::DataLoss);
        assert_eq!(e.to_string(), "layer sha256:1: short");
    }
}
