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
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{CriError, Result};

/// The containerd namespace of everything CRI makes (containerd's constant).
pub const K8S_NAMESPACE: &str = "k8s.io";

/// A channel whose calls carry the `k8s.io` namespace.
pub(crate) type Chan = InterceptedService<Channel, NamespaceHeader>;

/// Adds `containerd-namespace: k8s.io` to each call.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceHeader;

impl tonic::service::Interceptor for NamespaceHeader {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert(
            berth_api::NAMESPACE_HEADER,
            tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
        );
        Ok(r)
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

    pub(crate) fn containers(&self) -> ContainersClient<Chan> {
        ContainersClient::with_interceptor(self.channel.clone(), NamespaceHeader)
            .max_decoding_message_size(64 << 20)
    }
    pub(crate) fn tasks(&self) -> TasksClient<Chan> {
        TasksClient::with_interceptor(self.channel.clone(), NamespaceHeader)
    }
    pub(crate) fn images(&self) -> ImagesClient<Chan> {
        ImagesClient::with_interceptor(self.channel.clone(), NamespaceHeader)
            .max_decoding_message_size(64 << 20)
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Chan> {
        SnapshotsClient::with_interceptor(self.channel.clone(), NamespaceHeader)
    }
    pub(crate) fn content(&self) -> ContentClient<Chan> {
        ContentClient::with_interceptor(self.channel.clone(), NamespaceHeader)
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
