//! Errors of a transfer, each with a [`Category`] so a server maps them to
//! its status codes in one place (a registry's "not found" stays NotFound).
//!
//! [`Category`] is `berth-types`' (containerd's error categories); an error
//! of any other berth crate converts with the category it names through
//! [`ErrorCategory`].

pub use berth_types::{Category, ErrorCategory};

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

impl ErrorCategory for Error {
    fn category(&self) -> Category {
        self.category
    }
}

impl Error {
    /// `e` with its own category, its text prefixed with `prefix: ` (or
    /// as is for an empty prefix).
    pub fn categorized<E: ErrorCategory + ?Sized>(e: &E, prefix: &str) -> Error {
        let message = if prefix.is_empty() {
            e.to_string()
        } else {
            format!("{prefix}: {e}")
        };
        Error::new(e.category(), message)
    }
}

impl From<berth_remotes::Error> for Error {
    fn from(e: berth_remotes::Error) -> Error {
        Error::categorized(&e, "")
    }
}

impl From<berth_content::Error> for Error {
    fn from(e: berth_content::Error) -> Error {
        Error::categorized(&e, "content store")
    }
}

impl From<berth_snapshots::Error> for Error {
    fn from(e: berth_snapshots::Error) -> Error {
        Error::categorized(&e, "snapshotter")
    }
}

impl From<berth_images::Error> for Error {
    fn from(e: berth_images::Error) -> Error {
        Error::categorized(&e, "")
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
        let e: Error = berth_images::Error::NoMatchingManifest {
            platform: "linux/amd64".into(),
            index: berth_types::Digest::of(b"x"),
            available: vec!["linux/arm64".into()],
        }
        .into();
        assert_eq!(e.category(), Category::NotFound, "{e}");
        let e: Error =
            berth_images::Error::Content(berth_content::Error::NotFound("blob".into())).into();
        assert_eq!(e.category(), Category::NotFound, "{e}");
        let e = Error::data_loss("short").context("layer sha256:1");
        assert_eq!(e.category(), Category::DataLoss);
        assert_eq!(e.to_string(), "layer sha256:1: short");
    }
}
