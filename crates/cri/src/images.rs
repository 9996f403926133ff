//! ImageService: CRI images over the `k8s.io` image records.
//!
//! As containerd's CRI plugin: an image is identified by its config
//! digest (the image id); one pull writes up to three records pointing at
//! the same target (the tag reference, the repo digest reference and the
//! id), all labelled `io.cri-containerd.image=managed`.

use std::collections::{BTreeMap, HashMap};

use berth_api::containerd::services::images::v1 as ipb;
use berth_api::runtime::v1 as cri;
use berth_images::reference::Reference;
use serde_json::Value;

use crate::Cri;
use crate::error::{CriError, Result};
use crate::puller::PullSpec;

/// containerd's label marking images the CRI plugin manages.
pub const IMAGE_LABEL: &str = "io.cri-containerd.image";

/// What the CRI needs to know of one image target.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageFacts {
    /// The config digest: the image id.
    pub(crate) id: String,
    /// Manifest, config and layers, in bytes.
    pub(crate) size: u64,
    /// The image config (`config` of the config blob).
    pub(crate) config: Value,
    /// The whole config blob.
    pub(crate) blob: Value,
    /// Chain id of the top layer (the snapshot parent).
    pub(crate) chain_id: String,
}

/// An image with every record naming it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CriImage {
    pub(crate) facts: ImageFacts,
    pub(crate) names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The chain id of `diff_ids` (the image spec's definition).
pub(crate) fn chain_id(diff_ids: &[String]) -> String {
    use sha2::Digest as _;
    let mut chain = String::new();
    for d in diff_ids {
        chain = if chain.is_empty() {
            d.clone()
        } else {
            format!("sha256:{:x}", sha2::Sha256::digest(format!("{chain} {d}")))
        };
    }
    chain
}

impl Cri {
    /// Facts of the image whose record targets `digest` (cached: targets
    /// are content addressed).
    pub(crate) async fn image_facts(&self, digest: &str) -> Result<ImageFacts> {
        if let Some(f) = self.inner.image_cache.lock().await.get(digest) {
            return Ok(f.clone());
        }
        let parse = |b: &[u8], what: &str| -> Result<Value> {
            serde_json::from_slice(b)
                .map_err(|e| CriError::Internal(format!("{what} is not JSON: {e}")))
        };
        let mut size = 0_u64;
        let mut d = digest.to_string();
        let mut blob = self.inner.backend.read_blob(&d).await?;
        size += blob.len() as u64;
        let mut manifest = parse(&blob, &d)?;
        let mut depth = 0;
        while manifest["manifests"].is_array() {
            depth += 1;
            if depth > 4 {
                return Err(CriError::Internal(format!(
                    "image {digest}: indexes nested too deep"
                )));
            }
            let entries = manifest["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let chosen = entries
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux"
                        && m["platform"]["architecture"] == berth_images::platform::host_arch()
                })
                .or_else(|| entries.iter().find(|m| m["platform"].is_null()))
                .ok_or_else(|| {
                    CriError::NotFound(format!(
                        "image {digest} has no linux/{} manifest",
                        berth_images::platform::host_arch()
                    ))
                })?;
            d = chosen["digest"].as_str().unwrap_or_default().to_string();
            blob = self.inner.backend.read_blob(&d).await?;
            size += blob.len() as u64;
            manifest = parse(&blob, &d)?;
        }
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        size += manifest["config"]["size"].as_u64().unwrap_or(0);
        for l in manifest["layers"].as_array().into_iter().flatten() {
            size += l["size"].as_u64().unwrap_or(0);
        }
        let config_blob = parse(
            &self.inner.backend.read_blob(&config_digest).await?,
            &config_digest,
        )?;
        let facts = ImageFacts {
            id: config_digest,
            size,
            config: config_blob["config"].clone(),
            chain_id: chain_id(&strings(&config_blob["rootfs"]["diff_ids"])),
            blob: config_blob,
        };
        self.inner
            .image_cache
            .lock()
            .await
            .insert(digest.to_string(), facts.clone());
        Ok(facts)
    }

    /// Every image in `k8s.io`, grouped by id.
    pub(crate) async fn list_images(&self) -> Result<Vec<CriImage>> {
        let records = self
            .inner
            .backend
            .images()
            .list(ipb::ListImagesRequest::default())
            .await
            .map_err(CriError::service("listing images"))?
            .into_inner()
            .images;
        let mut by_id: BTreeMap<String, CriImage> = BTreeMap::new();
        for r in records {
            let target = r.target.unwrap_or_default().digest;
            let facts = match self.image_facts(&target).await {
                Ok(f) => f,
                Err(e) => {
                    // An image whose content is not all here (a pull in
                    // progress) is not an image to the CRI yet.
                    tracing::debug!(image = %r.name, error = %e, "skipping image");
                    continue;
                }
            };
            let entry = by_id.entry(facts.id.clone()).or_insert_with(|| CriImage {
                facts: facts.clone(),
                names: Vec::new(),
            });
            entry.names.push(r.name);
        }
        Ok(by_id.into_values().collect())
    }

    /// The image `reference` names: an id (`sha256:...`, or its unique
    /// hex prefix), a reference, or a repo digest.
    pub(crate) async fn find_image(&self, reference: &str) -> Result<Option<CriImage>> {
        let images = self.list_images().await?;
        let normalized = Reference::parse(reference).ok().map(|r| r.to_string());
        let by_id = |i: &CriImage| {
            i.facts.id == reference
                || i.facts.id.strip_prefix("sha256:") == Some(reference)
                || (reference.len() >= 12
                    && reference.chars().all(|c| c.is_ascii_hexdigit())
                    && i.facts
                        .id
                        .trim_start_matches("sha256:")
                        .starts_with(reference))
        };
        Ok(images.into_iter().find(|i| {
            by_id(i)
                || i.names
                    .iter()
                    .any(|n| n == reference || normalized.as_deref() == Some(n.as_str()))
        }))
    }

    /// Pulls `reference` through the daemon's pull engine and writes the
    /// CRI's extra records; returns the image id.
    pub(crate) async fn pull(
        &self,
        reference: &str,
        auth: Option<&cri::AuthConfig>,
    ) -> Result<String> {
        let r = Reference::parse(reference).map_err(|e| {
            CriError::InvalidArgument(format!(
                "failed to parse image reference {reference:?}: {e}"
            ))
        })?;
        let name = r.to_string();
        let credentials = auth.and_then(|a| {
            if !a.username.is_empty() {
                Some((a.username.clone(), a.password.clone()))
            } else if !a.identity_token.is_empty() {
                Some((String::new(), a.identity_token.clone()))
            } else {
                None
            }
        });
        let labels = BTreeMap::from([(IMAGE_LABEL.to_string(), "managed".to_string())]);
        let pulled = self
            .inner
            .puller
            .pull(PullSpec {
                namespace: crate::backend::K8S_NAMESPACE.to_string(),
                reference: name.clone(),
                snapshotter: self.inner.config.containerd.snapshotter.clone(),
                labels: labels.clone(),
                hosts_dir: self.inner.hosts_dir.clone(),
                credentials,
            })
            .await
            .map_err(|status| CriError::Service {
                what: format!("failed to pull and unpack image {name:?}"),
                status: Box::new(status),
            })?;
        let facts = self.image_facts(&pulled.target_digest).await?;
        let target = self
            .inner
            .backend
            .images()
            .get(ipb::GetImageRequest {
                name: pulled.name.clone(),
            })
            .await
            .map_err(CriError::service(format!("reading image {}", pulled.name)))?
            .into_inner()
            .image
            .and_then(|i| i.target);
        let repo_digest = format!("{}@{}", r.name_only(), pulled.target_digest);
        for extra in [repo_digest, facts.id.clone()] {
            if extra == pulled.name {
                continue;
            }
            self.put_image(&extra, target.clone(), &labels).await?;
        }
        Ok(facts.id)
    }

    /// Creates or updates image record `name`.
    async fn put_image(
        &self,
        name: &str,
        target: Option<berth_api::containerd::types::Descriptor>,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let image = ipb::Image {
            name: name.to_string(),
            labels: labels.clone().into_iter().collect(),
            target,
            ..Default::default()
        };
        let mut images = self.inner.backend.images();
        match images
            .create(ipb::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => images
                .update(ipb::UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_string(), "labels".to_string()],
                    }),
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(CriError::service(format!("updating image {name}"))),
            Err(s) => Err(CriError::Service {
                what: format!("creating image {name}"),
                status: Box::new(s),
            }),
        }
    }

    /// Removes every record of the image `reference` names; nothing to
    /// remove is success.
    pub(crate) async fn remove_image(&self, reference: &str) -> Result<()> {
        let Some(image) = self.find_image(reference).await? else {
            return Ok(());
        };
        let mut images = self.inner.backend.images();
        // The id record last, as containerd: it is what finds the others.
        let mut names = image.names.clone();
        names.sort_by_key(|n| n == &image.facts.id);
        for name in names {
            match images
                .delete(ipb::DeleteImageRequest {
                    name: name.clone(),
                    sync: false,
                    target: None,
                })
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => {
                    return Err(CriError::Service {
                        what: format!("removing image {name}"),
                        status: Box::new(s),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The CRI view of an image.
pub(crate) fn to_cri(image: &CriImage) -> cri::Image {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for n in &image.names {
        if n.starts_with("sha256:") {
            continue;
        }
        if n.contains('@') {
            repo_digests.push(n.clone());
        } else {
            repo_tags.push(n.clone());
        }
    }
    let user = image.facts.config["User"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (uid, username) = user_of(&user);
    let annotations: HashMap<String, String> = HashMap::new();
    cri::Image {
        id: image.facts.id.clone(),
        repo_tags,
        repo_digests,
        size: image.facts.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: image.facts.id.clone(),
            annotations,
            ..Default::default()
        }),
        pinned: false,
    }
}

/// containerd's split of an image's `User`: a numeric user is `uid`, a
/// name is `username` (a group part is dropped).
fn user_of(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or_default();
    if u.is_empty() {
        return (None, String::new());
    }
    match u.parse::<i64>() {
        Ok(n) => (Some(n), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_as_containerd() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        assert_eq!(chain_id(&["sha256:aa".to_string()]), "sha256:aa");
        assert!(
            chain_id(&["sha256:aa".to_string(), "sha256:bb".to_string()]).starts_with("sha256:")
        );
    }
}
