//! Single objects to and from a registry, by reference and digest (ctr's
//! `content fetch-object` and `content push-object`): no graph walk, no
//! image record, the bytes exactly as stored.

use std::sync::Arc;

use berth_images::Reference;
use berth_images::manifest::Descriptor;
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{ByteStream, Pushed, Resolver};

use crate::progress::Progress;
use crate::{ContentStore, Error, Result};

/// `reference` normalised (`busybox` -> `docker.io/library/busybox:latest`),
/// pointed at `digest` when one is given (`host/repo@digest`).
fn object_reference(reference: &str, digest: Option<&str>) -> Result<String> {
    let parsed = Reference::parse(reference).map_err(|e| Error::invalid_argument(e.to_string()))?;
    Ok(match digest {
        Some(d) => {
            berth_content::Digest::parse(d)
                .map_err(|e| Error::invalid_argument(format!("object {d:?}: {e}")))?;
            format!("{}/{}@{d}", parsed.domain(), parsed.path())
        }
        None => parsed.to_string(),
    })
}

/// Resolves `reference` (or, given `digest`, that object in the
/// reference's repository: a manifest, else a blob) and streams its bytes.
///
/// Errors: InvalidArgument for a bad reference or digest, NotFound when the
/// registry has no such object, the registry's refusals by their category.
pub async fn fetch_object(
    reference: &str,
    digest: Option<&str>,
    options: RegistryOptions,
) -> Result<(berth_remotes::Descriptor, ByteStream)> {
    let target = object_reference(reference, digest)?;
    let registry = Registry::new(options)?;
    let (resolved, desc) = registry.resolve(&target).await?;
    let stream = registry.fetcher(&resolved)?.fetch(&desc).await?;
    Ok((desc, stream))
}

/// Pushes object `desc`, read from `store`, to the repository of
/// `reference` (a manifest goes under the reference's tag, if it has one).
/// Returns whether it was uploaded or the registry had it already.
///
/// Errors: NotFound when the store lacks the object, InvalidArgument for a
/// bad reference, the registry's refusals by their category.
pub async fn push_object(
    store: Arc<dyn ContentStore>,
    desc: &Descriptor,
    reference: &str,
    options: RegistryOptions,
    progress: &Progress,
) -> Result<Pushed> {
    let target = object_reference(reference, None)?;
    let registry = Registry::new(options)?;
    let pusher = registry.pusher(&target)?;
    let label = format!(
        "{}-{}",
        crate::push::ref_key_kind(&desc.media_type),
        desc.digest
    );
    progress.event("uploading", &label, 0, desc.size, None);
    let pushed = pusher
        .push(desc, crate::push::blob_stream(store, desc).await?)
        .await?;
    progress.event("complete", &label, desc.size, desc.size, None);
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::object_reference;

    #[test]
    fn objects_are_addressed_in_the_references_repository() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            object_reference("127.0.0.1:5000/x/y:tag", Some(&d)).ok(),
            Some(format!("127.0.0.1:5000/x/y@{d}"))
        );
        assert_eq!(
            object_reference("busybox", None).ok().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert!(object_reference("busybox", Some("nope")).is_err());
    }
}
