//! Push: an image's blobs go to the registry children first (layers,
//! config, child manifests by digest), the root manifest or index last
//! under the reference's tag, so the tag never names missing content.

use std::collections::HashSet;
use std::sync::Arc;

use berth_images::manifest::{self, Descriptor};
use berth_images::{Reference, media};
use berth_remotes::Resolver;
use berth_remotes::registry::{Registry, RegistryOptions};
use tokio::io::AsyncWriteExt;

use crate::progress::Progress;
use crate::{ContentStore, Error, Result};

/// Bytes read from the store per step while streaming a blob out.
const CHUNK: usize = 1 << 20;

fn read_small(store: &dyn ContentStore, desc: &Descriptor) -> Result<Vec<u8>> {
    manifest::check_size(desc)?;
    let reader = store.reader_at(&desc.digest).map_err(|_| {
        Error::not_found(format!(
            "{} ({}) is not in the content store: pull the image with all its platforms first",
            desc.digest, desc.media_type
        ))
    })?;
    let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
    reader.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// The blobs of the image at `root` that are in `store`, children before
/// parents (platforms that were not pulled are skipped, as containerd does).
fn push_order(store: &dyn ContentStore, root: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut order: Vec<Descriptor> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let bytes = if media::is_index(&d.media_type) || media::is_manifest(&d.media_type) {
            Some(read_small(store, &d)?)
        } else {
            None
        };
        if let Some(bytes) = bytes {
            let children = berth_images::handlers::children(&d, &bytes)?;
            stack.extend(children.into_iter().filter(|c| {
                if media::is_index(&d.media_type) {
                    store.reader_at(&c.digest).is_ok()
                } else {
                    !media::is_non_distributable(&c.media_type)
                }
            }));
        }
        order.push(d);
    }
    order.reverse();
    let mut seen = HashSet::new();
    order.retain(|d| seen.insert(d.digest.clone()));
    Ok(order)
}

/// A reader streaming blob `desc` out of `store`.
pub(crate) async fn blob_stream(
    store: Arc<dyn ContentStore>,
    desc: &Descriptor,
) -> Result<berth_remotes::PushReader> {
    let digest = desc.digest.clone();
    let reader = crate::blocking(move || {
        store
            .reader_at(&digest)
            .map_err(|e| Error::not_found(format!("{digest} is not in the content store: {e}")))
    })
    .await?;
    let (mut tx, rx) = tokio::io::duplex(CHUNK);
    tokio::spawn(async move {
        let reader: Arc<dyn berth_content::ReaderAt> = reader.into();
        let mut offset = 0;
        loop {
            let r = reader.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; CHUNK];
                let n = r.read_at(&mut buf, offset)?;
                buf.truncate(n);
                Ok::<_, berth_content::Error>(buf)
            })
            .await;
            // A failed read ends the stream short: the registry then
            // refuses the blob for its size or digest.
            let Ok(Ok(chunk)) = chunk else { return };
            if chunk.is_empty() || tx.write_all(&chunk).await.is_err() {
                return;
            }
            offset += chunk.len() as u64;
        }
    });
    Ok(Box::new(rx))
}

/// Pushes the image whose root is `root`, with every blob in `store`, to
/// `reference`.
///
/// Errors: NotFound when a blob is not in the store, InvalidArgument for a
/// bad reference, the registry's refusals by their category.
pub async fn push(
    store: Arc<dyn ContentStore>,
    root: &Descriptor,
    reference: &str,
    options: RegistryOptions,
    progress: &Progress,
) -> Result<()> {
    let reference = Reference::parse_normalized(reference)
        .map_err(|e| Error::invalid_argument(e.to_string()))?;
    let name = reference.to_string();
    let registry = Registry::new(options)?;
    let by_digest =
        |d: &Descriptor| format!("{}/{}@{}", reference.domain(), reference.path(), d.digest);
    let order = {
        let (store, root) = (store.clone(), root.clone());
        crate::blocking(move || push_order(&*store, &root)).await?
    };
    for d in order {
        let is_root = d.digest == root.digest;
        let target = if is_root { name.clone() } else { by_digest(&d) };
        let pusher = registry.pusher(&target)?;
        let label = format!("{}-{}", ref_key_kind(&d.media_type), d.digest);
        progress.event("uploading", &label, 0, d.size, None);
        pusher
            .push(&d, blob_stream(store.clone(), &d).await?)
            .await?;
        progress.event("complete", &label, d.size, d.size, None);
    }
    progress.event("pushed", &name, root.size, root.size, None);
    Ok(())
}

/// The kind prefix containerd's `remotes.MakeRefKey` gives a blob's
/// progress name: `manifest-`, `index-`, `config-`, `layer-` (else `unknown-`).
pub(crate) fn ref_key_kind(media_type: &str) -> &'static str {
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
