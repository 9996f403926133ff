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

impl berth_api::ErrorCategory for CriError {
    fn category(&self) -> berth_api::Category {
        use berth_api::Category;
        match self {
            CriError::NotFound(_) => Category::NotFound,
            CriError::InvalidArgument(_) => Category::InvalidArgument,
            CriError::AlreadyExists(_) => Category::AlreadyExists,
            CriError::FailedPrecondition(_) => Category::FailedPrecondition,
            CriError::DeadlineExceeded(_) => Category::DeadlineExceeded,
            CriError::Unimplemented(_) => Category::NotImplemented,
            // The service's own code, whatever it is.
            CriError::Service { status, .. } => berth_api::errdefs::category_of(status),
            CriError::Internal(_) => Category::Internal,
        }
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> tonic::Status {
        berth_api::errdefs::status(&e)
    }
}

/// Results of the CRI plugin.
pub type Result<T, E = CriError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed pull keeps the pull engine's code: a registry's NotFound
    /// reaches the kubelet as NotFound, not Internal.
    #[test]
    fn a_service_s_code_survives() {
        let e = CriError::service("failed to pull and unpack image \"x\"")(
            tonic::Status::not_found("docker.io/library/x:latest: not found"),
        );
        assert!(e.is_not_found());
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(
            s.message(),
            "failed to pull and unpack image \"x\": docker.io/library/x:latest: not found"
        );
        let s = tonic::Status::from(CriError::Unimplemented("x".into()));
        assert_eq!(s.code(), tonic::Code::Unimplemented);
    }
}
