//! Image records: a name in a namespace pointing at a target descriptor
//! (containerd's `core/metadata/images.go`).
//!
//! An image is a root for garbage collection: its target and everything the
//! target's blobs reference through `containerd.io/gc.ref.*` labels are
//! kept while the image exists.
//!
//! # Encoding
//!
//! `images` table, key `(namespace, name)`, value JSON: `{"target":
//! {"mediaType": "..", "digest": "sha256:..", "size": 123, "annotations":
//! {..}}, "labels": {..}, "created": <ns>, "updated": <ns>}`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::content::{apply_label_paths, collect_labels};
use crate::db::Db;
use crate::digests;
use crate::error::{DbContext, Error, Result};
use crate::gc::Node;
use crate::labels::Labels;
use crate::namespaces;
use crate::schema::{self, end_of};
use crate::timestamp;

/// What an image points at: a manifest, an index, or any blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Media type of the target blob.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the target blob.
    pub digest: String,
    /// Size of the target blob in bytes.
    pub size: i64,
    /// Annotations of the descriptor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A namespace's image record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image name (usually a normalised reference).
    pub name: String,
    /// What it points at.
    pub target: Target,
    /// Labels.
    pub labels: Labels,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    target: Target,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    updated: i64,
}

impl Stored {
    fn decode(ns: &str, name: &str, bytes: &[u8]) -> Result<Stored> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::DataLoss(format!(
                "image record {name:?} in namespace {ns:?}: cannot decode: {e}"
            ))
        })
    }

    fn encode(&self) -> Vec<u8> {
        // Strings, integers and string maps always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn record(self, name: &str) -> ImageRecord {
        ImageRecord {
            name: name.to_owned(),
            target: self.target,
            labels: self.labels,
            created_at: timestamp::from_nanos(self.created),
            updated_at: timestamp::from_nanos(self.updated),
        }
    }
}

fn validate(name: &str, target: &Target) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    if target.media_type.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "image {name:?}: target media type must be set"
        )));
    }
    if target.size < 0 {
        return Err(Error::InvalidArgument(format!(
            "image {name:?}: target size {} is negative",
            target.size
        )));
    }
    digests::validate(&target.digest)
        .map_err(|e| Error::InvalidArgument(format!("image {name:?}: target: {e}")))
}

fn open(
    txn: &WriteTransaction,
) -> Result<redb::Table<'_, (&'static str, &'static str), &'static [u8]>> {
    txn.open_table(schema::IMAGES).context("open table images")
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("image {name:?}"))
}

/// The image records of every namespace.
#[derive(Debug, Clone)]
pub struct ImageStore {
    db: Db,
}

impl ImageStore {
    /// A store over `db`.
    pub(crate) fn new(db: Db) -> ImageStore {
        ImageStore { db }
    }

    /// Namespace `ns`'s image `name`; [`Error::NotFound`] if none.
    pub fn get(&self, ns: &str, name: &str) -> Result<ImageRecord> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::IMAGES)
                .context("open table images")?;
            let Some(v) = table.get((ns, name)).context("read image")? else {
                return Err(not_found(name));
            };
            Ok(Stored::decode(ns, name, v.value())?.record(name))
        })
    }

    /// All of namespace `ns`'s images, sorted by name.
    pub fn list(&self, ns: &str) -> Result<Vec<ImageRecord>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::IMAGES)
                .context("open table images")?;
            let end = end_of(ns);
            let mut out = Vec::new();
            for entry in table
                .range((ns, "")..(end.as_str(), ""))
                .context("scan images")?
            {
                let (k, v) = entry.context("read image")?;
                let name = k.value().1;
                out.push(Stored::decode(ns, name, v.value())?.record(name));
            }
            Ok(out)
        })
    }

    /// Creates image `name` → `target` in `ns` (creating the namespace).
    ///
    /// [`Error::InvalidArgument`] for an empty name, a target without media
    /// type or with a malformed digest, or bad labels;
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create(
        &self,
        ns: &str,
        name: &str,
        target: Target,
        labels: Labels,
    ) -> Result<ImageRecord> {
        validate(name, &target)?;
        let labels = collect_labels(labels)?;
        let now = timestamp::to_nanos(SystemTime::now());
        let stored = Stored {
            target,
            labels,
            created: now,
            updated: now,
        };
        self.db.update(|txn| {
            namespaces::create_if_missing(txn, ns)?;
            let mut table = open(txn)?;
            if table.get((ns, name)).context("read image")?.is_some() {
                return Err(Error::AlreadyExists(format!("image {name:?}")));
            }
            table
                .insert((ns, name), stored.encode().as_slice())
                .context("insert image")?;
            self.db.track(Node::image(ns, name));
            Ok(())
        })?;
        debug!(namespace = ns, name, "created image");
        Ok(stored.record(name))
    }

    /// Updates image `name` by containerd's field paths: `target`, `labels`,
    /// `labels.<k>`, `annotations` (the target's); none = target and labels.
    /// Other paths are [`Error::InvalidArgument`]; [`Error::NotFound`] if missing.
    pub fn update(
        &self,
        ns: &str,
        name: &str,
        target: Target,
        labels: Labels,
        fieldpaths: &[String],
    ) -> Result<ImageRecord> {
        let now = timestamp::to_nanos(SystemTime::now());
        let stored = self.db.update(|txn| {
            let mut table = open(txn)?;
            let mut stored = match table.get((ns, name)).context("read image")? {
                Some(v) => Stored::decode(ns, name, v.value())?,
                None => return Err(not_found(name)),
            };
            let label_paths: Vec<String> = fieldpaths
                .iter()
                .filter(|p| *p == "labels" || p.starts_with("labels."))
                .cloned()
                .collect();
            if fieldpaths.is_empty() {
                validate(name, &target)?;
                stored.target = target;
                stored.labels = collect_labels(labels)?;
            } else {
                for p in fieldpaths {
                    match p.as_str() {
                        "target" => {
                            validate(name, &target)?;
                            stored.target = target.clone();
                        }
                        "annotations" | "target.annotations" => {
                            stored.target.annotations = target.annotations.clone();
                        }
                        p if p == "labels" || p.starts_with("labels.") => {}
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "cannot update {other:?} field on image {name:?}"
                            )));
                        }
                    }
                }
                if !label_paths.is_empty() {
                    stored.labels = apply_label_paths(stored.labels, labels, &label_paths)?;
                }
            }
            stored.updated = now;
            table
                .insert((ns, name), stored.encode().as_slice())
                .context("update image")?;
            self.db.track(Node::image(ns, name));
            Ok(stored)
        })?;
        debug!(namespace = ns, name, "updated image");
        Ok(stored.record(name))
    }

    /// Deletes image `name`; with `target`, only if it still points at that
    /// digest ([`Error::FailedPrecondition`] otherwise). [`Error::NotFound`] if missing.
    pub fn delete(&self, ns: &str, name: &str, target: Option<&str>) -> Result<()> {
        self.db.update(|txn| {
            let mut table = open(txn)?;
            let stored = match table.get((ns, name)).context("read image")? {
                Some(v) => Stored::decode(ns, name, v.value())?,
                None => return Err(not_found(name)),
            };
            if let Some(want) = target.filter(|t| *t != stored.target.digest) {
                return Err(Error::FailedPrecondition(format!(
                    "image {name:?} points at {}, not {want}",
                    stored.target.digest
                )));
            }
            table.remove((ns, name)).context("remove image")?;
            self.db.mark_dirty();
            Ok(())
        })?;
        debug!(namespace = ns, name, "deleted image");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(c: char) -> Target {
        Target {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size: 10,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn create_get_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("m.redb")).unwrap();
        let s = db.images();
        s.create(
            "ns",
            "docker.io/library/busybox:latest",
            target('a'),
            Labels::new(),
        )
        .unwrap();
        let e = s.create(
            "ns",
            "docker.io/library/busybox:latest",
            target('a'),
            Labels::new(),
        );
        assert!(matches!(e, Err(Error::AlreadyExists(_))));
        let mut bad = target('a');
        bad.digest = "sha256:zz".into();
        assert!(matches!(
            s.create("ns", "x", bad, Labels::new()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            s.create("ns", "", target('a'), Labels::new()),
            Err(Error::InvalidArgument(_))
        ));

        let labels: Labels = [("k".to_owned(), "v".to_owned())].into();
        let r = s
            .update(
                "ns",
                "docker.io/library/busybox:latest",
                target('b'),
                labels,
                &["labels.k".into()],
            )
            .unwrap();
        assert_eq!(r.target.digest, target('a').digest, "only labels change");
        assert_eq!(r.labels["k"], "v");
        let r = s
            .update(
                "ns",
                "docker.io/library/busybox:latest",
                target('b'),
                Labels::new(),
                &["target".into()],
            )
            .unwrap();
        assert_eq!(r.target.digest, target('b').digest);
        assert_eq!(r.labels["k"], "v");
        let e = s.update(
            "ns",
            "docker.io/library/busybox:latest",
            target('b'),
            Labels::new(),
            &["name".into()],
        );
        assert!(matches!(e, Err(Error::InvalidArgument(_))));

        assert_eq!(s.list("ns").unwrap().len(), 1);
        assert!(s.list("other").unwrap().is_empty());
        let e = s.delete(
            "ns",
            "docker.io/library/busybox:latest",
            Some(&target('a').digest),
        );
        assert!(matches!(e, Err(Error::FailedPrecondition(_))));
        s.delete("ns", "docker.io/library/busybox:latest", None)
            .unwrap();
        assert!(matches!(
            s.get("ns", "docker.io/library/busybox:latest"),
            Err(Error::NotFound(_))
        ));
    }
}
