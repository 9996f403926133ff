//! containerd's error categories (its `errdefs` package) and the trait every
//! library error of berth implements to name its category.
//!
//! Library crates keep their own typed errors; each implements
//! [`ErrorCategory`]. Only at the RPC boundary does a category become a
//! status code (`berth-api` maps [`Category`] to gRPC and ttrpc codes, in one
//! place), so a client can tell "not found" from "already exists" without
//! parsing text.

use std::fmt;

/// The kinds of failure containerd distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Anything that is not one of the categories below.
    Unknown,
    /// The request was malformed.
    InvalidArgument,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The system is not in the state the operation needs (e.g. not empty).
    FailedPrecondition,
    /// The resource is temporarily unavailable (e.g. locked); retry later.
    Unavailable,
    /// The operation is not implemented.
    NotImplemented,
    /// The call was cancelled.
    Cancelled,
    /// The deadline passed before the operation completed.
    DeadlineExceeded,
    /// The operation conflicted with a concurrent one.
    Aborted,
    /// A quota or limit was reached.
    ResourceExhausted,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller did not say who it is (a registry wants credentials).
    Unauthenticated,
    /// An internal invariant was broken.
    Internal,
    /// The data is corrupted or lost.
    DataLoss,
    /// The range given is outside what exists.
    OutOfRange,
}

impl Category {
    /// Every category, [`Category::Unknown`] first.
    pub const ALL: [Category; 16] = [
        Category::Unknown,
        Category::InvalidArgument,
        Category::NotFound,
        Category::AlreadyExists,
        Category::FailedPrecondition,
        Category::Unavailable,
        Category::NotImplemented,
        Category::Cancelled,
        Category::DeadlineExceeded,
        Category::Aborted,
        Category::ResourceExhausted,
        Category::PermissionDenied,
        Category::Unauthenticated,
        Category::Internal,
        Category::DataLoss,
        Category::OutOfRange,
    ];

    /// The words containerd's wrapped errors end with (`not found`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Unknown => "unknown",
            Category::InvalidArgument => "invalid argument",
            Category::NotFound => "not found",
            Category::AlreadyExists => "already exists",
            Category::FailedPrecondition => "failed precondition",
            Category::Unavailable => "unavailable",
            Category::NotImplemented => "not implemented",
            Category::Cancelled => "cancelled",
            Category::DeadlineExceeded => "deadline exceeded",
            Category::Aborted => "aborted",
            Category::ResourceExhausted => "resource exhausted",
            Category::PermissionDenied => "permission denied",
            Category::Unauthenticated => "unauthenticated",
            Category::Internal => "internal",
            Category::DataLoss => "data loss",
            Category::OutOfRange => "out of range",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its containerd [`Category`].
///
/// Every library error of berth implements it; the RPC boundary turns the
/// category into a status code (`berth_api::errdefs`), and callers test for
/// a kind of failure without matching variants of another crate's error.
pub trait ErrorCategory: std::error::Error {
    /// What kind of failure this is.
    fn category(&self) -> Category;

    /// Whether this is [`Category::NotFound`].
    fn is_not_found(&self) -> bool {
        self.category() == Category::NotFound
    }

    /// Whether this is [`Category::AlreadyExists`].
    fn is_already_exists(&self) -> bool {
        self.category() == Category::AlreadyExists
    }

    /// Whether this is [`Category::InvalidArgument`].
    fn is_invalid_argument(&self) -> bool {
        self.category() == Category::InvalidArgument
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("gone")]
    struct Gone;

    impl ErrorCategory for Gone {
        fn category(&self) -> Category {
            Category::NotFound
        }
    }

    #[test]
    fn categories_print_like_containerd() {
        assert_eq!(Category::NotFound.to_string(), "not found");
        assert_eq!(
            Category::FailedPrecondition.to_string(),
            "failed precondition"
        );
        let names: std::collections::HashSet<&str> =
            Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Category::ALL.len());
    }

    #[test]
    fn the_trait_answers_the_usual_questions() {
        let e = Gone;
        assert!(e.is_not_found() && !e.is_already_exists() && !e.is_invalid_argument());
        let dynamic: &dyn ErrorCategory = &e;
        assert_eq!(dynamic.category(), Category::NotFound);
    }
}
