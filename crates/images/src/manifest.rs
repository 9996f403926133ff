//! Descriptors, manifests, indexes and image configs: the JSON of an image.
//!
//! These are berth's own lean serde types rather than `oci-spec`'s: they
//! read Docker schema 2 and OCI alike (Docker configs write `null` for empty
//! lists, which `oci-spec` rejects), keep digests as validated
//! [`Digest`]s, carry no builders or getters, and compile in a fraction of
//! the time. Unknown fields are ignored.
//!
//! Blobs are parsed with the descriptor that pointed at them:
//! [`parse_manifest`], [`parse_index`] and [`parse_config`] first check the
//! size limits ([`MAX_MANIFEST_SIZE`], [`MAX_CONFIG_SIZE`]) against the
//! descriptor and the bytes, *before* parsing, so a hostile registry cannot
//! make berth allocate for a huge document; then that the content is what
//! the descriptor says (its `mediaType` field, when present, must equal the
//! descriptor's; a manifest may not have an index's `manifests` and vice
//! versa, as containerd's `validateMediaType` checks).

use std::collections::BTreeMap;
use std::fmt;

use berth_types::Digest;
use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::media;
use crate::platform::Platform;

/// The largest manifest or index berth reads: 4 MiB, the size the OCI
/// distribution spec says registries should accept and clients may rely on.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The largest image config berth reads: 8 MiB (configs carry history and
/// labels and can outgrow manifests).
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

pub use berth_types::Descriptor;

/// An image manifest: one config and the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`media::OCI_MANIFEST`] or [`media::DOCKER_MANIFEST`]; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type, for artifacts (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base layer first.
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (signatures, SBOMs; OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An index (Docker: manifest list): manifests, usually one per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`media::OCI_INDEX`] or [`media::DOCKER_MANIFEST_LIST`]; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type, for artifacts (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests (or nested indexes), each with its platform if known.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// The OCI image config (Docker's is the same JSON, with more fields that
/// berth ignores).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features (Windows).
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// How to run a container from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
    /// How each layer was made, bottom first.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The platform the config declares, normalised.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
        }
        .normalize()
    }
}

/// The run defaults of an image (the config's `config` object).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// Ports to expose: `80/tcp`, `53/udp`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// Environment, `NAME=value`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// The command's fixed prefix.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// The default arguments (or command, without an entrypoint).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// Paths that should be volumes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    /// The working directory.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// Image labels.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// The signal that stops the container (`SIGTERM`, `15`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// Windows: the command line is already escaped.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_false"
    )]
    pub args_escaped: bool,
}

/// The `{}` value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// The config's `rootfs`: its layers' diff IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub fs_type: String,
    /// The sha256 of each uncompressed layer, bottom first.
    #[serde(default, with = "digest_vec_serde")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    /// `type: layers` with no diff IDs.
    fn default() -> RootFs {
        RootFs {
            fs_type: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One build step of an image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The step made no layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

/// The size limit and name for blobs of media type `mt` that are read whole
/// into memory: manifests, indexes, configs. `None` for anything else.
pub fn size_limit(mt: &str) -> Option<(&'static str, u64)> {
    if media::is_manifest(mt) {
        Some(("manifest", MAX_MANIFEST_SIZE))
    } else if media::is_index(mt) {
        Some(("index", MAX_MANIFEST_SIZE))
    } else if media::is_config(mt) {
        Some(("config", MAX_CONFIG_SIZE))
    } else {
        None
    }
}

/// Fails with [`Error::TooLarge`] if `desc` claims to be bigger than the
/// limit for its media type; call it before reading the blob.
pub fn check_size(desc: &Descriptor) -> Result<()> {
    if let Some((what, limit)) = size_limit(&desc.media_type)
        && desc.size > limit
    {
        return Err(Error::TooLarge {
            what,
            digest: desc.digest.clone(),
            size: desc.size,
            limit,
        });
    }
    Ok(())
}

/// Checks `bytes` against the limit and `desc.size`, before parsing.
fn check_bytes(desc: &Descriptor, what: &'static str, limit: u64, bytes: &[u8]) -> Result<()> {
    let actual = bytes.len() as u64;
    for size in [desc.size, actual] {
        if size > limit {
            return Err(Error::TooLarge {
                what,
                digest: desc.digest.clone(),
                size,
                limit,
            });
        }
    }
    if actual != desc.size {
        return Err(Error::SizeMismatch {
            what,
            digest: desc.digest.clone(),
            expected: desc.size,
            actual,
        });
    }
    Ok(())
}

/// Any manifest-like document, for checking what it really is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    #[serde(default, deserialize_with = "null_default")]
    annotations: BTreeMap<String, String>,
    fs_layers: Option<IgnoredAny>,
}

/// Parses a manifest or index blob after the size and kind checks.
fn parse_raw(desc: &Descriptor, what: &'static str, bytes: &[u8]) -> Result<Raw> {
    media::check_supported(&desc.media_type)?;
    check_bytes(desc, what, MAX_MANIFEST_SIZE, bytes)?;
    let raw: Raw = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what,
        digest: desc.digest.clone(),
        source,
    })?;
    if raw.fs_layers.is_some() || raw.schema_version == Some(1) {
        return Err(Error::Unsupported {
            media_type: media::DOCKER_SCHEMA1_MANIFEST.to_owned(),
            why: media::SCHEMA1_UNSUPPORTED,
        });
    }
    if let Some(mt) = &raw.media_type
        && *mt != desc.media_type
    {
        return Err(Error::MediaTypeMismatch {
            digest: desc.digest.clone(),
            expected: desc.media_type.clone(),
            found: format!("says its mediaType is {mt}"),
        });
    }
    Ok(raw)
}

fn missing_field(desc: &Descriptor, what: &'static str, field: &'static str) -> Error {
    Error::Json {
        what,
        digest: desc.digest.clone(),
        source: de::Error::missing_field(field),
    }
}

/// Parses manifest `bytes`, which `desc` points at; see the module docs for
/// the checks.
///
/// Errors: [`Error::UnexpectedMediaType`] if `desc` is not a manifest type,
/// [`Error::Unsupported`] for schema 1, [`Error::TooLarge`],
/// [`Error::SizeMismatch`], [`Error::Json`], [`Error::MediaTypeMismatch`].
pub fn parse_manifest(desc: &Descriptor, bytes: &[u8]) -> Result<Manifest> {
    const WHAT: &str = "manifest";
    media::check_supported(&desc.media_type)?;
    if !media::is_manifest(&desc.media_type) {
        return Err(Error::UnexpectedMediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            want: WHAT,
        });
    }
    let raw = parse_raw(desc, WHAT, bytes)?;
    if raw.manifests.is_some() {
        return Err(Error::MediaTypeMismatch {
            digest: desc.digest.clone(),
            expected: desc.media_type.clone(),
            found: "is an index (it has a manifests field)".to_owned(),
        });
    }
    let config = raw
        .config
        .ok_or_else(|| missing_field(desc, WHAT, "config"))?;
    Ok(Manifest {
        schema_version: raw.schema_version.unwrap_or(2),
        media_type: raw.media_type,
        artifact_type: raw.artifact_type,
        config,
        layers: raw.layers.unwrap_or_default(),
        subject: raw.subject,
        annotations: raw.annotations,
    })
}

/// Parses index (manifest list) `bytes`, which `desc` points at; the
/// checks and errors mirror [`parse_manifest`].
pub fn parse_index(desc: &Descriptor, bytes: &[u8]) -> Result<Index> {
    const WHAT: &str = "index";
    media::check_supported(&desc.media_type)?;
    if !media::is_index(&desc.media_type) {
        return Err(Error::UnexpectedMediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            want: WHAT,
        });
    }
    let raw = parse_raw(desc, WHAT, bytes)?;
    if raw.config.is_some() || raw.layers.is_some() {
        return Err(Error::MediaTypeMismatch {
            digest: desc.digest.clone(),
            expected: desc.media_type.clone(),
            found: "is a manifest (it has config or layers)".to_owned(),
        });
    }
    let manifests = raw
        .manifests
        .ok_or_else(|| missing_field(desc, WHAT, "manifests"))?;
    Ok(Index {
        schema_version: raw.schema_version.unwrap_or(2),
        media_type: raw.media_type,
        artifact_type: raw.artifact_type,
        manifests,
        subject: raw.subject,
        annotations: raw.annotations,
    })
}

/// Parses image config `bytes`, which `desc` points at, after checking its
/// media type, [`MAX_CONFIG_SIZE`] and its size.
pub fn parse_config(desc: &Descriptor, bytes: &[u8]) -> Result<ImageConfig> {
    const WHAT: &str = "config";
    if !media::is_config(&desc.media_type) {
        return Err(Error::UnexpectedMediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            want: WHAT,
        });
    }
    check_bytes(desc, WHAT, MAX_CONFIG_SIZE, bytes)?;
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: WHAT,
        digest: desc.digest.clone(),
        source,
    })
}

/// The chain ID of a stack of layers (the snapshot name of its top), from
/// their diff IDs, bottom first: the first layer's is its diff ID, each next
/// one `sha256("<parent chain ID> <diff ID>")`. `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The chain ID of every prefix of `diff_ids`: one per layer, bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let mut d = berth_content::Algorithm::Sha256.digester();
                d.update(parent.as_str().as_bytes());
                d.update(b" ");
                d.update(diff_id.as_str().as_bytes());
                d.digest()
            }
        };
        out.push(next);
    }
    out
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads `null` as the type's default (Docker writes `"Env": null`).
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

struct DigestVisitor;

impl de::Visitor<'_> for DigestVisitor {
    type Value = Digest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a digest such as sha256:<64 hex characters>")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Digest, E> {
        Digest::parse(v).map_err(E::custom)
    }
}

mod digest_vec_serde {
    use super::*;

    struct One(Digest);

    impl<'de> Deserialize<'de> for One {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<One, D::Error> {
            d.deserialize_str(DigestVisitor).map(One)
        }
    }

    pub(super) fn serialize<S: Serializer>(
        v: &[Digest],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(Digest::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<Digest>, D::Error> {
        let v: Option<Vec<One>> = Option::deserialize(d)?;
        Ok(v.unwrap_or_default().into_iter().map(|o| o.0).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real Docker Hub manifest list (busybox, trimmed to three platforms).
    pub(crate) const INDEX: &str = r#"{
  "manifests": [
    {"digest": "sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79",
     "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "platform": {"architecture": "amd64", "os": "linux"}, "size": 528},
    {"digest": "sha256:2a06d2b00fc2a1ccf1b1d6e7b0a1e8ea7a0f0b3ed6ed4e6b1bd3b0d6cc56cc2c",
     "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}, "size": 528},
    {"digest": "sha256:5cd3db04b8be5773388576a83177aff4f40a03457a63855f4b9cbe30542b9a43",
     "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}, "size": 528}
  ],
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "schemaVersion": 2
}"#;

    /// A real Docker schema 2 manifest (busybox, linux/amd64).
    pub(crate) const MANIFEST: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1457,
      "digest": "sha256:a416a98b71e224a31ee99cff8e16063554498227d2b696152a9c3e0aa65e5824"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2219949,
         "digest": "sha256:3f4d90098f5b5a6f6a76e9d217da85aa39b2081e30fa1f7d287138d6e7bf0ad7"
      }
   ]
}"#;

    /// A Docker image config with the `null`s Docker writes.
    pub(crate) const CONFIG: &str = r#"{"architecture":"amd64","config":{"Hostname":"","User":"","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"Entrypoint":null,"Volumes":null,"WorkingDir":"","OnBuild":null,"Labels":null,"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGTERM"},"created":"2023-07-18T23:19:33.655005962Z","docker_version":"20.10.23","history":[{"created":"2023-07-18T23:19:33.538571854Z","created_by":"/bin/sh -c #(nop) ADD file:7e9002edaafd4e4579b65c8f0aaabde1aeb7fd3f8d95579f7fd3443cef785fd1 in / "},{"created":"2023-07-18T23:19:33.655005962Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:3d24ee258efc3bfe4066a1a9fb83febf6dc0b1548dfe896161533668281c9f4f"]}}"#;

    pub(crate) fn desc(mt: &str, json: &str) -> Descriptor {
        Descriptor::of(mt, json.as_bytes())
    }

    #[test]
    fn parses_a_real_manifest_list() {
        let idx = parse_index(&desc(media::DOCKER_MANIFEST_LIST, INDEX), INDEX.as_bytes()).unwrap();
        assert_eq!(idx.schema_version, 2);
        assert_eq!(idx.manifests.len(), 3);
        let arm = idx.manifests[1].platform.as_ref().unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert_eq!(idx.manifests[2].size, 528);
        assert!(
            idx.manifests[0]
                .digest
                .as_str()
                .starts_with("sha256:3fbc6321")
        );
    }

    #[test]
    fn parses_a_real_manifest_and_config() {
        let m =
            parse_manifest(&desc(media::DOCKER_MANIFEST, MANIFEST), MANIFEST.as_bytes()).unwrap();
        assert_eq!(m.config.media_type, media::DOCKER_CONFIG);
        assert_eq!(m.config.size, 1457);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, media::DOCKER_LAYER_GZIP);

        let c = parse_config(&desc(media::DOCKER_CONFIG, CONFIG), CONFIG.as_bytes()).unwrap();
        assert_eq!(c.platform().to_string(), "linux/amd64");
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.cmd, ["sh"]);
        assert!(cc.entrypoint.is_empty(), "null reads as empty");
        assert!(cc.labels.is_empty());
        assert_eq!(cc.stop_signal, "SIGTERM");
        assert!(cc.exposed_ports.contains_key("80/tcp"));
        assert_eq!(c.rootfs.fs_type, "layers");
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
    }

    #[test]
    fn oci_manifest_without_media_type_field_round_trips() {
        let layer = Descriptor::of(media::OCI_LAYER_GZIP, b"layer");
        let m = Manifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: Descriptor::of(media::OCI_CONFIG, b"{}"),
            layers: vec![layer],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let json = serde_json::to_vec(&m).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(!text.contains("mediaType\":null"), "{text}");
        assert!(!text.contains("annotations"), "{text}");
        let back = parse_manifest(&Descriptor::of(media::OCI_MANIFEST, &json), &json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn size_limits_are_checked_before_parsing() {
        // Not JSON at all: the size check must fire first.
        let junk = vec![b'x'; usize::try_from(MAX_MANIFEST_SIZE + 1).unwrap()];
        let d = Descriptor::of(media::OCI_MANIFEST, &junk);
        let err = parse_manifest(&d, &junk).unwrap_err().to_string();
        assert!(
            err.contains("is 4194305 bytes, over the 4 MiB limit"),
            "{err}"
        );

        // The descriptor alone is enough to refuse, before reading anything.
        let mut big = Descriptor::of(media::DOCKER_MANIFEST_LIST, b"{}");
        big.size = 9 << 20;
        let err = check_size(&big).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("index {} is 9 MiB, over the 4 MiB limit", big.digest)
        );
        let err = parse_index(&big, b"{}").unwrap_err().to_string();
        assert!(err.contains("is 9 MiB, over the 4 MiB limit"), "{err}");

        let mut cfg = Descriptor::of(media::OCI_CONFIG, b"{}");
        cfg.size = 8 << 20;
        check_size(&cfg).unwrap();
        cfg.size += 1;
        let err = check_size(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("config sha256:"), "{err}");
        assert!(err.contains("over the 8 MiB limit"), "{err}");

        let err = parse_manifest(&desc(media::DOCKER_MANIFEST, MANIFEST), b"{}").unwrap_err();
        assert!(
            matches!(err, Error::SizeMismatch { actual: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn content_must_be_what_the_descriptor_says() {
        // Index bytes under a manifest descriptor: mediaType field disagrees.
        let d = desc(media::DOCKER_MANIFEST, INDEX);
        let err = parse_manifest(&d, INDEX.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "says its mediaType is application/vnd.docker.distribution.manifest.list.v2+json"
            ),
            "{err}"
        );

        // No mediaType field: the fields give it away.
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        let err = parse_manifest(&desc(media::OCI_MANIFEST, idx), idx.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("is an index (it has a manifests field)"),
            "{err}"
        );
        let man = r#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:3d24ee258efc3bfe4066a1a9fb83febf6dc0b1548dfe896161533668281c9f4f","size":1},"layers":[]}"#;
        let err = parse_index(&desc(media::OCI_INDEX, man), man.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a manifest (it has config or layers)"),
            "{err}"
        );

        // Wrong kind of descriptor.
        let err = parse_index(&desc(media::OCI_MANIFEST, man), man.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not an index"), "{err}");
        let err = parse_config(&desc(media::OCI_LAYER, "{}"), b"{}").unwrap_err();
        assert!(err.to_string().contains("not a config"), "{err}");

        // Missing required parts and bad digests are JSON errors naming the blob.
        let none = r#"{"schemaVersion":2}"#;
        let err = parse_manifest(&desc(media::OCI_MANIFEST, none), none.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("manifest sha256:"), "{err}");
        assert!(err.to_string().contains("missing field `config`"), "{err}");
        let bad =
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:abc","size":1}]}"#;
        let err = parse_index(&desc(media::OCI_INDEX, bad), bad.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("sha256 needs 64 hex characters"),
            "{err}"
        );
        let neg = r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:3d24ee258efc3bfe4066a1a9fb83febf6dc0b1548dfe896161533668281c9f4f","size":-1}]}"#;
        assert!(parse_index(&desc(media::OCI_INDEX, neg), neg.as_bytes()).is_err());
    }

    #[test]
    fn schema1_is_unsupported_by_type_and_by_content() {
        let s1 =
            r#"{"schemaVersion":1,"name":"x","tag":"latest","fsLayers":[{"blobSum":"sha256:a"}]}"#;
        let err = parse_manifest(
            &desc(media::DOCKER_SCHEMA1_MANIFEST_SIGNED, s1),
            s1.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        let err = parse_manifest(&desc(media::DOCKER_MANIFEST, s1), s1.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("schema 1 images are not supported"),
            "{err}"
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        let abc = Digest::of(format!("{ab} {c}").as_bytes());
        assert_eq!(
            chain_ids(&[a.clone(), b.clone(), c.clone()]),
            [a.clone(), ab, abc.clone()]
        );
        assert_eq!(chain_id(&[a, b, c]), Some(abc));
    }

    #[test]
    fn chain_id_of_a_known_image() {
        // Two diff IDs from the OCI image spec's config example.
        let d = |h: &str| Digest::parse(&format!("sha256:{h}")).unwrap();
        let ids = [
            d("c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1"),
            d("5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"),
        ];
        // `printf 'sha256:c6f9... sha256:5f70...' | sha256sum`
        let want = d("c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f");
        assert_eq!(chain_id(&ids), Some(want));
    }
}
