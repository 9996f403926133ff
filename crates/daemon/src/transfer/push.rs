//! Daemon-side push: an image's blobs go to the registry children first
//! (layers, config, child manifests by digest), the root manifest or index
//! last under the reference's tag, so the tag never names missing content.

use std::sync::Arc;

use berth_content::Provider;
use berth_content::local::LocalStore;
use berth_images::manifest::{self, Descriptor};
use berth_images::{Reference, media};
use berth_remotes::Resolver;
use berth_remotes::registry::{Registry, RegistryOptions};
use tonic::Status;

use super::progress::Progress;

fn remote_status(e: berth_remotes::Error) -> Status {
    use berth_remotes::Error as E;
    match e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::Unauthorized { .. } => Status::unauthenticated(e.to_string()),
        E::PermissionDenied { .. } => Status::permission_denied(e.to_string()),
        E::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn read_blob(store: &LocalStore, desc: &Descriptor) -> Result<Vec<u8>, Status> {
    manifest::check_size(desc).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let reader = store.reader_at(&desc.digest).map_err(|_| {
        Status::not_found(format!(
            "{} ({}) is not in the content store: pull the image with all its platforms first",
            desc.digest, desc.media_type
        ))
    })?;
    let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
    reader
        .read_exact_at(&mut data, 0)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(data)
}

fn remote(d: &Descriptor) -> berth_remotes::Descriptor {
    berth_remotes::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
    }
}

/// Pushes the image whose root is `root` to `reference`.
pub(crate) async fn push(
    store: Arc<LocalStore>,
    root: Descriptor,
    reference: &str,
    options: RegistryOptions,
    progress: Progress,
) -> Result<(), Status> {
    let reference = Reference::parse_normalized(reference)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let name = reference.to_string();
    let registry = Registry::new(options).map_err(remote_status)?;
    let by_digest =
        |d: &Descriptor| format!("{}/{}@{}", reference.domain(), reference.path(), d.digest);

    // Children before parents: collect the graph depth-first, push in reverse.
    let mut order: Vec<Descriptor> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if media::is_index(&d.media_type) {
            let bytes = read_blob(&store, &d)?;
            let index = manifest::parse_index(&d, &bytes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            for m in index.manifests {
                // Platforms that were not pulled are skipped, as containerd does.
                if store.reader_at(&m.digest).is_ok() {
                    stack.push(m);
                }
            }
        } else if media::is_manifest(&d.media_type) {
            let bytes = read_blob(&store, &d)?;
            let m = manifest::parse_manifest(&d, &bytes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            stack.push(m.config.clone());
            stack.extend(
                m.layers
                    .iter()
                    .filter(|l| !media::is_non_distributable(&l.media_type))
                    .cloned(),
            );
        }
        order.push(d);
    }
    order.reverse();
    let mut seen = std::collections::HashSet::new();
    for d in order {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let is_root = d.digest == root.digest;
        let target = if is_root { name.clone() } else { by_digest(&d) };
        let pusher = registry.pusher(&target).map_err(remote_status)?;
        let label = format!("{}-{}", ref_key_kind(&d.media_type), d.digest);
        progress.event("uploading", &label, 0, d.size, None);
        let path = store.blob_path(&d.digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            Status::not_found(format!("{} is not in the content store: {e}", d.digest))
        })?;
        pusher
            .push(&remote(&d), Box::new(file))
            .await
            .map_err(remote_status)?;
        progress.event("complete", &label, d.size, d.size, None);
    }
    progress.event("pushed", &name, root.size, root.size, None);
    Ok(())
}

/// The kind prefix containerd's `remotes.MakeRefKey` gives a blob's
/// progress name: `manifest-`, `index-`, `config-`, `layer-` (else `unknown-`).
fn ref_key_kind(media_type: &str) -> &'static str {
    if media::is_manifest(media_type) {
        "manifest"
    } else if media::is_index(media_type) {
        "index"
    } else if media::is_config(media_type) {
        "config"
    } else if media::is_layer(media_type) {
        "layer"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod ref_key_tests {
    #[test]
    fn kinds_as_containerd_names_them() {
        for (mt, kind) in [
            ("application/vnd.oci.image.manifest.v1+json", "manifest"),
            (
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "index",
            ),
            ("application/vnd.oci.image.config.v1+json", "config"),
            ("application/vnd.docker.container.image.v1+json", "config"),
            ("application/vnd.oci.image.layer.v1.tar+gzip", "layer"),
            ("application/x-unknown", "unknown"),
        ] {
            assert_eq!(super::ref_key_kind(mt), kind, "{mt}");
        }
    }
}
