//! Client-side unpack: applies an image's layers to snapshots through the
//! Diff service, one committed snapshot per layer named by its chain ID, as
//! containerd's client `Image.Unpack` does (`images mount`, `snapshots
//! unpack`).

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::services::content::v1 as cpb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::diff::v1 as dpb;
use berth_api::containerd::services::diff::v1::diff_client::DiffClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::types::Descriptor;

/// The parts of an image an unpack needs.
pub(crate) struct ImageLayers {
    /// Layer descriptors, base first.
    pub(crate) layers: Vec<Descriptor>,
    /// Chain IDs of the layers, base first.
    pub(crate) chain: Vec<String>,
    /// Digest of the image config.
    pub(crate) config: String,
}

/// Reads the manifest (the host's, through indexes) and config of `target`.
pub(crate) async fn image_layers(
    client: &Client,
    target: &Descriptor,
) -> anyhow::Result<ImageLayers> {
    let root = berth_client::descriptor_from_wire(target.clone())?;
    let image = berth_client::Client::from_raw(client.clone(), "")
        .image_layers(&target.digest, &root, &berth_images::Matcher::host())
        .await?;
    Ok(ImageLayers {
        chain: berth_images::manifest::chain_ids(image.diff_ids())
            .iter()
            .map(ToString::to_string)
            .collect(),
        layers: image
            .layers
            .iter()
            .map(berth_client::descriptor_to_wire)
            .collect(),
        config: image.config.digest.to_string(),
    })
}

/// Applies the layers of `image` missing from `snapshotter`; returns the
/// top chain ID. Labels the config with the snapshot reference, as
/// containerd does, so the unpacked snapshots live as long as the image.
pub(crate) async fn unpack(
    client: &Client,
    snapshotter: &str,
    image: &ImageLayers,
) -> anyhow::Result<String> {
    let mut snapshots = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let mut diff = DiffClient::with_interceptor(client.channel(), client.interceptor());
    let mut parent = String::new();
    for (layer, chain) in image.layers.iter().zip(&image.chain) {
        let exists = snapshots
            .stat(spb::StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: chain.clone(),
            })
            .await;
        if exists.is_err() {
            let key = format!(
                "extract-{}-{chain}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            let mounts = snapshots
                .prepare(spb::PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.clone(),
                    parent: parent.clone(),
                    labels: Default::default(),
                })
                .await
                .with_context(|| format!("preparing snapshot for layer {}", layer.digest))?
                .into_inner()
                .mounts;
            let applied = diff
                .apply(dpb::ApplyRequest {
                    diff: Some(layer.clone()),
                    mounts,
                    ..Default::default()
                })
                .await;
            let committed = match applied {
                Ok(_) => snapshots
                    .commit(spb::CommitSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        name: chain.clone(),
                        key: key.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let _ = snapshots
                    .remove(spb::RemoveSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        key,
                    })
                    .await;
                // Another unpack committed the same layer first: use it.
                if e.code() != tonic::Code::AlreadyExists {
                    bail!("applying layer {}: {}", layer.digest, e.message());
                }
            }
        }
        parent = chain.clone();
    }
    if parent.is_empty() {
        bail!("the image has no layers");
    }
    let label = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    content
        .update(cpb::UpdateRequest {
            info: Some(cpb::Info {
                digest: image.config.clone(),
                labels: [(label.clone(), parent.clone())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{label}")],
            }),
        })
        .await
        .with_context(|| format!("labelling config {}", image.config))?;
    Ok(parent)
}
