//! The CRI plugin's errors and their gRPC codes.

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A name or id is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in a state that forbids the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A call did not finish in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Not offered by this plugin (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// A containerd service call failed.
    #[error("{what}: {}", status.message())]
    Service {
        /// What was being done.
        what: String,
        /// The service's answer.
        status: Box<tonic::Status>,
    },
    /// A local operation (files, namespaces, CNI) failed.
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// Wraps a service answer with what was being done.
    pub fn service(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> CriError {
        let what = what.into();
        move |status| CriError::Service {
            what,
            status: Box::new(status),
        }
    }

    /// Whether the service said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            CriError::NotFound(_) => true,
            CriError::Service { status, .. } => status.code() == tonic::Code::NotFound,
            _ => false,
        }
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> tonic::Status {
        let msg = e.to_string();
        match e {
            CriError::NotFound(_) => tonic::Status::not_found(msg),
            CriError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            CriError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            CriError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            CriError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(msg),
            CriError::Unimplemented(_) => tonic::Status::unimplemented(msg),
            CriError::Service { status, .. } => tonic::Status::new(status.code(), msg),
            CriError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

/// Results of the CRI plugin.
pub type Result<T, E = CriError> = std::result::Result<T, E>;
