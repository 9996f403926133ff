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
use sha2::Digest as _;

use crate::commands::run::{host_arch, read_blob};

/// The parts of an image an unpack needs.
pub(crate) struct ImageLayers {
    /// Layer descriptors, base first.
    pub(crate) layers: Vec<Descriptor>,
    /// Chain IDs of the layers, base first.
    pub(crate) chain: Vec<String>,
    /// Digest of the image config.
    pub(crate) config: String,
}

fn descriptor(v: &serde_json::Value) -> Descriptor {
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_i64().unwrap_or_default(),
        annotations: v["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
    }
}

/// Chain IDs of `diff_ids`, as the OCI image spec defines them.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{:x}",
                sha2::Sha256::digest(format!("{prev} {d}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

/// Reads the manifest (the host's, through indexes) and config of `target`.
pub(crate) async fn image_layers(
    client: &Client,
    target: &Descriptor,
) -> anyhow::Result<ImageLayers> {
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let mut digest = target.digest.clone();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&read_blob(&mut content, &digest).await?)?;
    for _ in 0..4 {
        if !manifest["manifests"].is_array() {
            break;
        }
        let entries = manifest["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch()
            })
            .or_else(|| entries.iter().find(|m| m["platform"].is_null()))
            .with_context(|| format!("{} has no linux/{} manifest", target.digest, host_arch()))?;
        digest = chosen["digest"].as_str().unwrap_or_default().to_string();
        manifest = serde_json::from_slice(&read_blob(&mut content, &digest).await?)?;
    }
    let config = manifest["config"]["digest"]
        .as_str()
        .with_context(|| format!("manifest {digest} has no config"))?
        .to_string();
    let config_json: serde_json::Value =
        serde_json::from_slice(&read_blob(&mut content, &config).await?)?;
    let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(descriptor)
        .collect();
    if layers.len() != diff_ids.len() {
        bail!(
            "manifest {digest} has {} layers but its config {config} {} diff IDs",
            layers.len(),
            diff_ids.len()
        );
    }
    Ok(ImageLayers {
        chain: chain_ids(&diff_ids),
        layers,
        config,
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
