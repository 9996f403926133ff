//! The containerd services the CRI plugin builds on, reached as any
//! containerd client reaches them: gRPC on the daemon's own socket, in the
//! `k8s.io` namespace. So pods and containers are ordinary containers,
//! tasks, snapshots and images there (visible to `ctr -n k8s.io`), and the
//! daemon's task, container and image code paths are the only ones.

use std::path::PathBuf;

use berth_api::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_api::containerd::services::content::v1::ReadContentRequest;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{CriError, Result};

/// The containerd namespace of everything CRI makes (containerd's constant).
pub const K8S_NAMESPACE: &str = "k8s.io";

/// A channel whose calls carry the `k8s.io` namespace.
pub(crate) type Chan = InterceptedService<Channel, NamespaceHeader>;

/// Adds `containerd-namespace: k8s.io` to each call, and the lease new
/// objects belong to when there is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceHeader(Option<String>);

impl tonic::service::Interceptor for NamespaceHeader {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert(
            berth_api::NAMESPACE_HEADER,
            tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
        );
        if let Some(lease) = &self.0 {
            let value = lease
                .parse()
                .map_err(|_| tonic::Status::invalid_argument(format!("lease {lease:?}")))?;
            r.metadata_mut().insert(berth_api::LEASE_HEADER, value);
        }
        Ok(r)
    }
}

/// A temporary lease holding what a pod or container start makes until
/// its record refers to it (as containerd's client `WithLease`: a
/// collection in between must not take the fresh snapshot).
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) id: String,
    backend: Backend,
}

impl Lease {
    /// Ends the lease (what it held is now referenced by records).
    pub(crate) async fn release(self) {
        let r = LeasesClient::with_interceptor(self.backend.channel.clone(), NamespaceHeader(None))
            .delete(DeleteRequest {
                id: self.id.clone(),
                sync: false,
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(lease = %self.id, error = %e, "deleting a CRI lease (it expires anyway)");
        }
    }
}

/// Clients of the daemon's containerd services.
#[derive(Debug, Clone)]
pub struct Backend {
    channel: Channel,
}

impl Backend {
    /// Clients of the daemon listening on `socket`; nothing is dialled
    /// until the first call (the plugin is built before the socket serves).
    pub fn lazy(socket: impl Into<PathBuf>) -> Result<Backend> {
        let socket = socket.into();
        let channel = Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }),
        );
        Ok(Backend { channel })
    }

    /// A lease that expires in a day (if berthd dies before releasing it).
    pub(crate) async fn lease(&self) -> Result<Lease> {
        let id = format!("berth-cri-{}", uuid::Uuid::new_v4().simple());
        let expire = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600),
        )
        .to_string();
        LeasesClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
            .create(CreateRequest {
                id: id.clone(),
                labels: std::collections::HashMap::from([(
                    "containerd.io/gc.expire".to_string(),
                    expire,
                )]),
            })
            .await
            .map_err(CriError::service("creating a lease"))?;
        Ok(Lease {
            id,
            backend: self.clone(),
        })
    }

    /// The containers service with new records in `lease`.
    pub(crate) fn containers_in(&self, lease: &Lease) -> ContainersClient<Chan> {
        ContainersClient::with_interceptor(
            self.channel.clone(),
            NamespaceHeader(Some(lease.id.clone())),
        )
        .max_decoding_message_size(64 << 20)
    }

    /// The snapshots service with new snapshots in `lease`.
    pub(crate) fn snapshots_in(&self, lease: &Lease) -> SnapshotsClient<Chan> {
        SnapshotsClient::with_interceptor(
            self.channel.clone(),
            NamespaceHeader(Some(lease.id.clone())),
        )
    }

    pub(crate) fn containers(&self) -> ContainersClient<Chan> {
        ContainersClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
            .max_decoding_message_size(64 << 20)
    }
    pub(crate) fn tasks(&self) -> TasksClient<Chan> {
        TasksClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
    }
    /// SIGKILL to every process of task `id`; a task already gone is
    /// fine. `what` names the task in the error.
    pub(crate) async fn kill_all(&self, id: &str, what: &str) -> Result<()> {
        let r = self
            .tasks()
            .kill(berth_api::containerd::services::tasks::v1::KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(CriError::Service {
                what: format!("killing {what}"),
                status: Box::new(s),
            }),
        }
    }

    pub(crate) fn images(&self) -> ImagesClient<Chan> {
        ImagesClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
            .max_decoding_message_size(64 << 20)
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Chan> {
        SnapshotsClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
    }
    pub(crate) fn content(&self) -> ContentClient<Chan> {
        ContentClient::with_interceptor(self.channel.clone(), NamespaceHeader(None))
    }

    /// The whole blob `digest` from the content store.
    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let what = || format!("reading blob {digest}");
        let mut stream = self
            .content()
            .read(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            })
            .await
            .map_err(CriError::service(what()))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(CriError::service(what()))? {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }
}
