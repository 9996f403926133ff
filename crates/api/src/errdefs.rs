//! containerd's error categories on the wire: the one place where a
//! [`Category`] becomes a gRPC or ttrpc status code, and back.
//!
//! [`Category`] and the [`ErrorCategory`] trait are `berth-types`' (every
//! library error of berth implements the trait); they are re-exported here.
//! A server answers with [`status`] (gRPC) or [`ttrpc_error`] (ttrpc) for
//! any categorized error; a client turns a status back into a category
//! with [`CategoryCode::from_code`] or into an [`RpcError`].

pub use berth_types::errdefs::{Category, ErrorCategory};

/// The status code numbers of categories (`google.rpc.Code`, shared by
/// gRPC and ttrpc): `Category::NotFound.code()` is 5.
///
/// The mapping is written once, here; everything else goes through it.
pub trait CategoryCode: Sized {
    /// The status code number for this category.
    fn code(self) -> i32;

    /// The category a status code number stands for (0, OK, and unknown
    /// numbers map to [`Category::Unknown`]).
    fn from_code(code: i32) -> Self;
}

impl CategoryCode for Category {
    fn code(self) -> i32 {
        match self {
            Category::Cancelled => 1,
            Category::Unknown => 2,
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
            Category::Unauthenticated => 16,
        }
    }

    fn from_code(code: i32) -> Category {
        Category::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(Category::Unknown)
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

    /// `e`'s category and its whole text.
    pub fn of<E: ErrorCategory + ?Sized>(e: &E) -> RpcError {
        RpcError::new(e.category(), e.to_string())
    }
}

impl ErrorCategory for RpcError {
    fn category(&self) -> Category {
        self.category
    }
}

/// The gRPC code of `category`.
#[cfg(feature = "grpc")]
pub fn grpc_code(category: Category) -> tonic::Code {
    tonic::Code::from_i32(category.code())
}

/// The gRPC status containerd would send for `e`: its category's code and
/// its whole text as the message.
#[cfg(feature = "grpc")]
pub fn status<E: ErrorCategory + ?Sized>(e: &E) -> tonic::Status {
    tonic::Status::new(grpc_code(e.category()), e.to_string())
}

/// The category a gRPC status stands for.
#[cfg(feature = "grpc")]
pub fn category_of(s: &tonic::Status) -> Category {
    Category::from_code(s.code() as i32)
}

/// The ttrpc error containerd's shim would send for `e`.
#[cfg(feature = "ttrpc")]
pub fn ttrpc_error<E: ErrorCategory + ?Sized>(e: &E) -> ttrpc::Error {
    RpcError::of(e).into()
}

#[cfg(feature = "grpc")]
impl From<RpcError> for tonic::Status {
    fn from(e: RpcError) -> tonic::Status {
        tonic::Status::new(grpc_code(e.category), e.message)
    }
}

#[cfg(feature = "grpc")]
impl From<tonic::Status> for RpcError {
    fn from(s: tonic::Status) -> RpcError {
        RpcError {
            category: category_of(&s),
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
        for c in Category::ALL {
            assert_eq!(Category::from_code(c.code()), c);
        }
        assert_eq!(Category::from_code(0), Category::Unknown);
        assert_eq!(Category::from_code(99), Category::Unknown);
    }

    #[test]
    fn matches_grpc_codes() {
        let pairs = [
            (Category::Cancelled, tonic::Code::Cancelled),
            (Category::Unknown, tonic::Code::Unknown),
            (Category::InvalidArgument, tonic::Code::InvalidArgument),
            (Category::DeadlineExceeded, tonic::Code::DeadlineExceeded),
            (Category::NotFound, tonic::Code::NotFound),
            (Category::AlreadyExists, tonic::Code::AlreadyExists),
            (Category::PermissionDenied, tonic::Code::PermissionDenied),
            (Category::ResourceExhausted, tonic::Code::ResourceExhausted),
            (
                Category::FailedPrecondition,
                tonic::Code::FailedPrecondition,
            ),
            (Category::Aborted, tonic::Code::Aborted),
            (Category::OutOfRange, tonic::Code::OutOfRange),
            (Category::NotImplemented, tonic::Code::Unimplemented),
            (Category::Internal, tonic::Code::Internal),
            (Category::Unavailable, tonic::Code::Unavailable),
            (Category::DataLoss, tonic::Code::DataLoss),
            (Category::Unauthenticated, tonic::Code::Unauthenticated),
        ];
        assert_eq!(pairs.len(), Category::ALL.len());
        for (c, code) in pairs {
            assert_eq!(grpc_code(c), code, "{c}");
            assert_eq!(
                ttrpc::Code::try_from(c.code()).ok().map(|k| k as i32),
                Some(code as i32),
                "{c}"
            );
        }
        let status: tonic::Status = RpcError::new(Category::AlreadyExists, "x exists").into();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(status.message(), "x exists");
    }

    #[test]
    fn any_categorized_error_becomes_its_status() {
        let e = berth_types::Digest::parse("sha256:1").unwrap_err();
        let s = status(&e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), e.to_string());
        let back = RpcError::from(s);
        assert_eq!(back.category(), Category::InvalidArgument);
        let t = ttrpc_error(&e);
        assert!(
            matches!(&t, ttrpc::Error::RpcStatus(s) if s.code == 3),
            "{t:?}"
        );
    }
}
