//! The OCI content descriptor: what a blob is, its digest and size.
//!
//! One type for every crate: manifests and indexes hold it, registries
//! resolve to it, content stores are read by it. Serde reads and writes the
//! OCI JSON (`mediaType`, `digest`, `size`, `urls`, `annotations`,
//! `platform`, `artifactType`, `data`); `null` lists and maps, which Docker
//! writes, read as empty. Unknown fields are ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// A reference to a blob: its media type, digest and size, plus optional
/// URLs, annotations and platform (the OCI content descriptor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is, e.g. [`crate::media::OCI_MANIFEST`].
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Where else the blob can be fetched from (foreign layers).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Free-form metadata.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The platform of the manifest this points at (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type, for artifacts (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The blob itself, base64-encoded, when embedded (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    /// A descriptor with just media type, digest and size.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }

    /// The descriptor of `data` (sha256) with media type `media_type`.
    pub fn of(media_type: impl Into<String>, data: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::of(data), data.len() as u64)
    }
}

impl fmt::Display for Descriptor {
    /// `sha256:... (media type, N bytes)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {} bytes)",
            self.digest, self.media_type, self.size
        )
    }
}

/// Reads `null` as the type's default (Docker writes `"urls": null`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_is_the_oci_json() {
        let d = Descriptor::of("application/vnd.oci.image.layer.v1.tar", b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":1}}"#,
                d.digest
            )
        );
        assert_eq!(serde_json::from_str::<Descriptor>(&json).unwrap(), d);
        let docker = format!(
            r#"{{"mediaType":"x","digest":"{}","size":1,"urls":null,"annotations":null,"extra":1}}"#,
            d.digest
        );
        let back: Descriptor = serde_json::from_str(&docker).unwrap();
        assert!(back.urls.is_empty() && back.annotations.is_empty());
        assert_eq!(
            d.to_string(),
            format!(
                "{} (application/vnd.oci.image.layer.v1.tar, 1 bytes)",
                d.digest
            )
        );
    }

    #[test]
    fn a_bad_digest_is_refused() {
        let err =
            serde_json::from_str::<Descriptor>(r#"{"mediaType":"x","digest":"sha256:1","size":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("needs 64 hex characters"), "{err}");
    }
}
