//! The CRI plugin's seam to the daemon: its image pulls go through the
//! daemon's own pull engine (`transfer::Puller`), the one place
//! to change when that engine moves into a library crate.

use berth_cri::{ImagePuller, PullSpec, PulledImage};
use berth_remotes::auth::{Credential, StaticCredentials};
use berth_remotes::registry::RegistryOptions;

use crate::transfer::{PullRequest, Puller};

/// Pulls for the CRI plugin with the Transfer service's engine.
#[derive(Debug)]
pub struct DaemonPuller {
    pub(crate) puller: Puller,
    pub(crate) pull_bytes: Option<prometheus_client::metrics::counter::Counter>,
}

#[async_trait::async_trait]
impl ImagePuller for DaemonPuller {
    async fn pull(&self, spec: PullSpec) -> Result<PulledImage, tonic::Status> {
        let mut registry = RegistryOptions::default();
        if let Some(dir) = &spec.hosts_dir {
            registry = registry.with_hosts_dir(dir);
        }
        if let Some((user, secret)) = spec.credentials {
            let host = berth_types::Reference::parse_normalized(&spec.reference)
                .map_err(crate::wire::status)?
                .domain()
                .to_string();
            registry = registry.with_credentials(
                StaticCredentials::new().with_host(&host, Credential::new(user, secret)),
            );
        }
        let req = PullRequest {
            namespace: spec.namespace,
            reference: spec.reference,
            platforms: Vec::new(),
            all_platforms: false,
            unpack: Some(spec.snapshotter),
            registry,
            labels: spec.labels,
        };
        let pulled = self
            .puller
            .pull(req, crate::transfer::Progress::default())
            .await?;
        if let Some(counter) = &self.pull_bytes {
            counter.inc_by(pulled.downloaded);
        }
        Ok(PulledImage {
            name: pulled.image.name.clone(),
            target_digest: pulled.image.target.digest.clone(),
        })
    }
}
