//! A small gRPC client for a containerd-compatible daemon on a UNIX socket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_api::client::Client;
//! use berth_api::containerd::services::version::v1::version_client::VersionClient;
//!
//! let client = Client::connect("/run/berth/berthd.sock").await?.with_namespace("default");
//! let mut version = VersionClient::with_interceptor(client.channel(), client.interceptor());
//! let reply = version.version(()).await?.into_inner();
//! println!("{}", reply.version);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::{LEASE_HEADER, NAMESPACE_HEADER};

/// Errors connecting to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket exists, but this user may not open it (EACCES).
    #[error(
        "permission denied connecting to {path}: run as root (sudo), or as a member of the group owning the socket"
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be reached.
    #[error(
        "cannot connect to {path}: {reason} (is the daemon running, and is the address right?)"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the transport said (its innermost cause, once).
        reason: String,
    },
}

impl ConnectError {
    fn new(path: PathBuf, source: &tonic::transport::Error) -> ConnectError {
        // The transport wraps the dial's io::Error; its message alone says it.
        let mut cause: &(dyn std::error::Error + 'static) = source;
        let mut io = None;
        while let Some(next) = cause.source() {
            if let Some(e) = next.downcast_ref::<std::io::Error>() {
                io = Some(e);
            }
            cause = next;
        }
        match io {
            Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                ConnectError::PermissionDenied { path }
            }
            Some(e) => ConnectError::Connect {
                path,
                reason: e.to_string(),
            },
            None => ConnectError::Connect {
                path,
                reason: cause.to_string(),
            },
        }
    }
}

/// A connection to a daemon plus the namespace and lease its calls carry.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    namespace: Option<String>,
    lease: Option<String>,
}

impl Client {
    /// Connects to the gRPC server listening on the UNIX socket `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ConnectError> {
        let path = path.as_ref().to_path_buf();
        let dial = path.clone();
        // The URI is a placeholder: every connection dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let dial = dial.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(dial).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| ConnectError::new(path, &source))?;
        Ok(Client {
            channel,
            namespace: None,
            lease: None,
        })
    }

    /// The same connection with calls in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Client {
        self.namespace = Some(namespace.into());
        self
    }

    /// The same connection with new objects attached to `lease`.
    pub fn with_lease(mut self, lease: impl Into<String>) -> Client {
        self.lease = Some(lease.into());
        self
    }

    /// The underlying channel, to build any generated service client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// An interceptor that adds the namespace and lease headers to each call.
    pub fn interceptor(&self) -> ContextInterceptor {
        ContextInterceptor {
            namespace: self.namespace.clone(),
            lease: self.lease.clone(),
        }
    }
}

/// Adds `containerd-namespace` and `containerd-lease` to outgoing calls.
#[derive(Debug, Clone, Default)]
pub struct ContextInterceptor {
    namespace: Option<String>,
    lease: Option<String>,
}

impl tonic::service::Interceptor for ContextInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        for (key, value) in [
            (NAMESPACE_HEADER, &self.namespace),
            (LEASE_HEADER, &self.lease),
        ] {
            if let Some(value) = value {
                let value: MetadataValue<_> = value.parse().map_err(|_| {
                    Status::invalid_argument(format!("{key} {value:?} is not a valid header value"))
                })?;
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}
