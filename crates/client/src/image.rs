//! Images: records from the Images service, and what a container needs
//! from one (process defaults, top layer's chain ID) read through Content.

use std::collections::HashMap;
use std::time::SystemTime;

use berth_api::containerd::services::content::v1 as content_pb;
use berth_api::containerd::services::images::v1 as pb;
use sha2::Digest as _;

use crate::client::Client;
use crate::error::{Error, Result, StatusContext};

pub use berth_types::Descriptor;

/// A wire descriptor as berth-types' [`Descriptor`]; a digest that does
/// not parse is a [`Error::Decode`].
pub fn descriptor_from_wire(d: berth_api::containerd::types::Descriptor) -> Result<Descriptor> {
    let digest = berth_types::Digest::parse(&d.digest).map_err(|e| Error::Decode {
        what: "descriptor".into(),
        reason: e.to_string(),
    })?;
    let mut desc = Descriptor::new(d.media_type, digest, u64::try_from(d.size).unwrap_or(0));
    desc.annotations = d.annotations.into_iter().collect();
    Ok(desc)
}

/// A [`Descriptor`] in its wire form.
pub fn descriptor_to_wire(d: &Descriptor) -> berth_api::containerd::types::Descriptor {
    berth_api::containerd::types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// An image record as the Images service stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// The root descriptor (manifest or index).
    pub target: Descriptor,
    /// When the record was created.
    pub created_at: Option<SystemTime>,
    /// When the record was last updated.
    pub updated_at: Option<SystemTime>,
}

impl TryFrom<pb::Image> for ImageRecord {
    type Error = Error;

    /// Errors: [`Error::Decode`] for a record without a target, or with a
    /// target digest that does not parse.
    fn try_from(i: pb::Image) -> Result<ImageRecord> {
        let time = |t: Option<prost_types::Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
        let target = i.target.ok_or_else(|| Error::Decode {
            what: format!("image {:?}", i.name),
            reason: "the record has no target".into(),
        })?;
        Ok(ImageRecord {
            target: descriptor_from_wire(target)?,
            name: i.name,
            labels: i.labels,
            created_at: time(i.created_at),
            updated_at: time(i.updated_at),
        })
    }
}

/// The process defaults of an image's config (`config` of the OCI image
/// config), as containerd's `WithImageConfig` uses them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User` (`uid`, `name`, `uid:gid`, `name:group`, or empty for root).
    pub user: String,
}

/// An image resolved for the host platform: its record, the manifest
/// chosen, the process defaults of its config, and the chain ID of its
/// top layer (the snapshot a container's root filesystem starts from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The record.
    pub record: ImageRecord,
    /// Digest of the host platform's manifest.
    pub manifest: String,
    /// Digest of the image config.
    pub config_digest: String,
    /// Process defaults from the config.
    pub config: ImageConfig,
    /// The uncompressed digests of the layers, bottom first.
    pub diff_ids: Vec<String>,
    /// Chain ID of the top layer: the parent of a container's snapshot.
    pub chain_id: String,
}

impl Image {
    /// The image's name.
    pub fn name(&self) -> &str {
        &self.record.name
    }
}

/// The chain ID of layers with these diff IDs (OCI image spec: the first
/// is its own; each next is `sha256(parent + " " + diff_id)`).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut chain: Option<String> = None;
    for d in diff_ids {
        chain = Some(match chain {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{:x}",
                sha2::Sha256::digest(format!("{parent} {d}").as_bytes())
            ),
        });
    }
    chain
}

/// `reference` in the form pull stores (`busybox` ->
/// `docker.io/library/busybox:latest`).
pub fn normalize(reference: &str) -> Result<String> {
    berth_images::Reference::parse(reference)
        .map(|r| r.to_string())
        .map_err(|e| Error::InvalidArgument(format!("image reference {reference:?}: {e}")))
}

impl Client {
    /// Reads a whole blob through the Content service.
    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .content()
            .read(content_pb::ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            })
            .await
            .ctx(|| format!("reading blob {digest}"))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| Error::status(format!("reading blob {digest}"), s))?
        {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    /// The image record `name`, looked up as given, then normalised
    /// (`busybox` finds `docker.io/library/busybox:latest`).
    pub async fn get_image_record(&self, name: &str) -> Result<ImageRecord> {
        let get = |name: String| {
            let mut images = self.images();
            async move { images.get(pb::GetImageRequest { name }).await }
        };
        let mut found = get(name.to_string()).await;
        if matches!(&found, Err(s) if s.code() == tonic::Code::NotFound)
            && let Ok(full) = normalize(name)
            && full != name
        {
            found = get(full).await;
        }
        let image = found.ctx(|| format!("getting image {name:?}"))?.image;
        image
            .ok_or_else(|| Error::Decode {
                what: format!("image {name:?}"),
                reason: "the daemon answered without a record".into(),
            })
            .and_then(ImageRecord::try_from)
    }

    /// The image `name` resolved for the host platform (see [`Image`]).
    pub async fn get_image(&self, name: &str) -> Result<Image> {
        let record = self.get_image_record(name).await?;
        self.resolve_image(record).await
    }

    /// Image records matching `filters` (containerd filter syntax, OR'd;
    /// none lists all).
    pub async fn list_images(&self, filters: &[&str]) -> Result<Vec<ImageRecord>> {
        let reply = self
            .images()
            .list(pb::ListImagesRequest {
                filters: filters.iter().map(|f| f.to_string()).collect(),
            })
            .await
            .ctx(|| "listing images".to_string())?;
        reply
            .images
            .into_iter()
            .map(ImageRecord::try_from)
            .collect()
    }

    /// Deletes the image record `name` (its content becomes garbage once
    /// nothing else refers to it).
    pub async fn delete_image(&self, name: &str) -> Result<()> {
        self.images()
            .delete(pb::DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                target: None,
            })
            .await
            .ctx(|| format!("deleting image {name:?}"))?;
        Ok(())
    }

    /// The manifest for `platforms` under `root` (through nested indexes),
    /// its layers and its config, read through the Content service
    /// (berth-images' `image_layers_and_config`). A blob that cannot be
    /// read fails with the client's error for it; anything else wrong with
    /// the image is an [`Error::Image`] naming `name`.
    pub async fn image_layers(
        &self,
        name: &str,
        root: &Descriptor,
        platforms: &berth_images::Matcher,
    ) -> Result<berth_images::handlers::ResolvedImage> {
        let resolved = berth_images::handlers::image_layers_and_config(
            &crate::client_side::Blobs(self.clone()),
            root,
            platforms,
        )
        .await;
        let bad = |reason: String| Error::Image {
            name: name.to_string(),
            reason,
        };
        match resolved {
            Ok(r) => Ok(r),
            Err(berth_images::Error::Read { source, .. }) => match source.downcast::<Error>() {
                Ok(e) => Err(*e),
                Err(other) => Err(bad(other.to_string())),
            },
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Reads an image's manifest (the host platform's, through nested
    /// indexes) and config.
    pub async fn resolve_image(&self, record: ImageRecord) -> Result<Image> {
        let resolved = self
            .image_layers(&record.name, &record.target, &berth_images::Matcher::host())
            .await?;
        let bad = |reason: String| Error::Image {
            name: record.name.clone(),
            reason,
        };
        let diff_ids: Vec<String> = resolved.diff_ids().iter().map(|d| d.to_string()).collect();
        let chain = chain_id(&diff_ids).ok_or_else(|| bad("it has no layers".into()))?;
        let c = resolved.image_config.config.unwrap_or_default();
        Ok(Image {
            record,
            manifest: resolved.manifest.digest.to_string(),
            config_digest: resolved.config.digest.to_string(),
            config: ImageConfig {
                env: c.env,
                entrypoint: c.entrypoint,
                cmd: c.cmd,
                working_dir: c.working_dir,
                user: c.user,
            },
            diff_ids,
            chain_id: chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        assert_eq!(chain_id(&[]), None);
        let a = "sha256:aaaa".to_string();
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let two = chain_id(&[a.clone(), "sha256:bbbb".into()]).unwrap_or_default();
        let want = format!(
            "sha256:{:x}",
            sha2::Sha256::digest(b"sha256:aaaa sha256:bbbb")
        );
        assert_eq!(two, want);
    }

    #[test]
    fn references_are_normalised() {
        assert_eq!(
            normalize("busybox").ok().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert!(normalize("Not A Ref").is_err());
    }
}
