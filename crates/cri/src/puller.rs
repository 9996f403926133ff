//! The one seam to the daemon's pull engine: the CRI plugin never fetches
//! from registries itself. berthd implements [`ImagePuller`] with its own
//! pull code, so moving that code (into a transfer library) changes one
//! adapter, not this crate.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullSpec {
    /// Namespace the image record lands in (`k8s.io`).
    pub namespace: String,
    /// Fully qualified reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Snapshotter to unpack into.
    pub snapshotter: String,
    /// Labels of the image record (`io.cri-containerd.image=managed`).
    pub labels: BTreeMap<String, String>,
    /// `hosts.toml` directory for mirrors and TLS (`<dir>/<host>/hosts.toml`).
    pub hosts_dir: Option<PathBuf>,
    /// Registry credentials from the request (user, secret).
    pub credentials: Option<(String, String)>,
}

/// The image record a pull wrote.
#[derive(Debug, Clone, Default)]
pub struct PulledImage {
    /// The record's name (the reference).
    pub name: String,
    /// Digest of its target (manifest or index).
    pub target_digest: String,
}

/// Pulls images for the CRI plugin.
#[async_trait::async_trait]
pub trait ImagePuller: Send + Sync + 'static {
    /// Pulls and unpacks `spec.reference`; the error text is shown to the
    /// kubelet as is.
    async fn pull(&self, spec: PullSpec) -> Result<PulledImage, tonic::Status>;
}
