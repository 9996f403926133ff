//! containerd's error categories and how they travel over gRPC and ttrpc.
//!
//! Library crates keep their own typed errors; each names its category with
//! [`Category`]. Only at the RPC boundary does a category become a status
//! code, and a code received from a peer becomes a category again, so a
//! client can tell "not found" from "already exists" without parsing text.

use std::fmt;

/// The kinds of failure containerd distinguishes (its `errdefs` package).
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
    /// An internal invariant was broken.
    Internal,
    /// The data is corrupted or lost.
    DataLoss,
    /// The range given is outside what exists.
    OutOfRange,
}

impl Category {
    /// The gRPC status code number (`google.rpc.Code`) for this category.
    pub fn code(self) -> i32 {
        match self {
            Category::Unknown => 2,
            Category::Cancelled => 1,
            Category::InvalidArgument => 3,
            Category::DeadlineExceeded => 4,
            Category::NotFound => 5,
            Category::AlreadyExists => 6,
            Category::PermissionDenied => 7,
            Category::ResourceExhausted => 8,
            Category::FailedPrecondition => 9,
            Category::Aborted => 10,
            Category::OutOfRange => 11,
            Category::NotImplemented => 12,
            Category::Internal => 13,
            Category::Unavailable => 14,
            Category::DataLoss => 15,
        }
    }

    /// The category a status code number stands for (unknown codes map to
    /// [`Category::Unknown`]).
    pub fn from_code(code: i32) -> Category {
        match code {
            1 => Category::Cancelled,
            3 => Category::InvalidArgument,
            4 => Category::DeadlineExceeded,
            5 => Category::NotFound,
            6 => Category::AlreadyExists,
            7 => Category::PermissionDenied,
            8 => Category::ResourceExhausted,
            9 => Category::FailedPrecondition,
            10 => Category::Aborted,
            11 => Category::OutOfRange,
            12 => Category::NotImplemented,
            13 => Category::Internal,
            14 => Category::Unavailable,
            15 => Category::DataLoss,
            _ => Category::Unknown,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
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
            Category::Internal => "internal",
            Category::DataLoss => "data loss",
            Category::OutOfRange => "out of range",
        };
        f.write_str(s)
    }
}

/// A category with a message, as received from or sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// What kind of failure this is.
    pub category: Category,
    /// What went wrong, in words.
    pub message: String,
}

impl RpcError {
    /// An error of `category` saying `message`.
    pub fn new(category: Category, message: impl Into<String>) -> RpcError {
        RpcError {
            category,
            message: message.into(),
        }
    }
}

#[cfg(feature = "grpc")]
impl From<RpcError> for tonic::Status {
    fn from(e: RpcError) -> tonic::Status {
        tonic::Status::new(tonic::Code::from_i32(e.category.code()), e.message)
    }
}

#[cfg(feature = "grpc")]
impl From<tonic::Status> for RpcError {
    fn from(s: tonic::Status) -> RpcError {
        RpcError {
            category: Category::from_code(s.code() as i32),
            message: s.message().to_string(),
        }
    }
}

#[cfg(feature = "ttrpc")]
impl From<RpcError> for ttrpc::Error {
    fn from(e: RpcError) -> ttrpc::Error {
        let code = ttrpc::Code::try_from(e.category.code()).unwrap_or(ttrpc::Code::Unknown);
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.message))
    }
}

#[cfg(feature = "ttrpc")]
impl From<ttrpc::Error> for RpcError {
    fn from(e: ttrpc::Error) -> RpcError {
        match e {
            ttrpc::Error::RpcStatus(s) => RpcError::new(Category::from_code(s.code), s.message),
            other => RpcError::new(Category::Unavailable, format!("shim connection: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
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
            Category::Internal,
            Category::DataLoss,
            Category::OutOfRange,
        ] {
            assert_eq!(Category::from_code(c.code()), c);
        }
    }

    #[test]
    fn matches_grpc_codes() {
        assert_eq!(Category::NotFound.code(), tonic::Code::NotFound as i32);
        assert_eq!(
            Category::FailedPrecondition.code(),
            tonic::Code::FailedPrecondition as i32
        );
        assert_eq!(
            Category::NotImplemented.code(),
            tonic::Code::Unimplemented as i32
        );
        let status: tonic::Status = RpcError::new(Category::AlreadyExists, "x exists").into();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(status.message(), "x exists");
    }
}
