//! The client's one error type, with containerd's error category.

use berth_api::Category;

/// Everything a client call can fail with.
///
/// [`Error::category`] tells "not found" from "already exists" (and the
/// rest of containerd's categories) without parsing messages: daemon
/// answers carry it from their gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon's socket could not be reached.
    #[error(transparent)]
    Connect(#[from] berth_api::client::ConnectError),
    /// The daemon answered a call with an error.
    #[error("{context}: {message} ({category})")]
    Daemon {
        /// What the client was doing (`creating container "x"`).
        context: String,
        /// The category of the gRPC status code.
        category: Category,
        /// The daemon's message.
        message: String,
    },
    /// The daemon serves no Transfer service (containerd before 2.0).
    ///
    /// `pull`, `push`, `import` and `export` do the work in the client
    /// instead of returning this; it names the missing service where a
    /// call has no client-side path.
    #[error(
        "{operation}: the daemon does not serve containerd.services.transfer.v1.Transfer \
         (containerd 1.x has none; use berthd or containerd 2.x, or bring the image in with \
         `ctr images import` on that daemon)"
    )]
    TransferUnavailable {
        /// What was asked (`pulling docker.io/library/busybox:latest`).
        operation: String,
    },
    /// Work the client does itself on a daemon without a Transfer service
    /// (a registry, an archive, the image graph) failed.
    #[error("{context}: {message} ({category})")]
    ClientSide {
        /// What the client was doing (`pulling docker.io/library/busybox:latest`).
        context: String,
        /// containerd's category of the failure.
        category: Category,
        /// What went wrong.
        message: String,
    },
    /// An argument given to the client was not usable.
    #[error("{0}")]
    InvalidArgument(String),
    /// An image's manifest, index or config could not be used.
    #[error("image {name:?}: {reason}")]
    Image {
        /// The image (name or digest).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Building the OCI runtime spec failed.
    #[error("building the spec of container {id:?}: {source}")]
    Spec {
        /// The container.
        id: String,
        /// What the spec builder said.
        #[source]
        source: berth_spec::SpecError,
    },
    /// A local file or FIFO operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the client was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Data from the daemon could not be decoded.
    #[error("decoding {what}: {reason}")]
    Decode {
        /// What was decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    /// containerd's category of this error.
    pub fn category(&self) -> Category {
        match self {
            Error::Connect(_) => Category::Unavailable,
            Error::Daemon { category, .. } | Error::ClientSide { category, .. } => *category,
            Error::TransferUnavailable { .. } => Category::NotImplemented,
            Error::InvalidArgument(_) | Error::Spec { .. } => Category::InvalidArgument,
            Error::Image { .. } => Category::FailedPrecondition,
            Error::Io { .. } | Error::Decode { .. } => Category::Unknown,
        }
    }

    /// Whether this is a "not found" error.
    pub fn is_not_found(&self) -> bool {
        self.category() == Category::NotFound
    }

    /// Whether this is an "already exists" error.
    pub fn is_already_exists(&self) -> bool {
        self.category() == Category::AlreadyExists
    }

    /// A daemon's status as an error, with what the client was doing.
    pub(crate) fn status(context: impl Into<String>, status: tonic::Status) -> Error {
        Error::Daemon {
            context: context.into(),
            category: berth_api::errdefs::category_of(&status),
            message: status.message().to_string(),
        }
    }

    /// An I/O error with what the client was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl berth_api::ErrorCategory for Error {
    fn category(&self) -> Category {
        Error::category(self)
    }
}

/// Adds context to a gRPC result.
pub(crate) trait StatusContext<T> {
    /// Maps a status to [`Error::Daemon`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> StatusContext<T> for Result<tonic::Response<T>, tonic::Status> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| Error::status(context(), s))
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_grpc_codes() {
        let e = Error::status("getting image \"x\"", tonic::Status::not_found("image x"));
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "getting image \"x\": image x (not found)");
        let e = Error::status("creating", tonic::Status::already_exists("exists"));
        assert!(e.is_already_exists());
        let e = Error::TransferUnavailable {
            operation: "pulling x".into(),
        };
        assert_eq!(e.category(), Category::NotImplemented);
        assert!(
            e.to_string()
                .contains("containerd.services.transfer.v1.Transfer")
        );
    }
}
