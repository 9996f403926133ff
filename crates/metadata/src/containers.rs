//! Container records (containerd's `core/metadata/containers.go`): what a
//! container is made of — spec, runtime, image, snapshot — not the running
//! process, which is a task.
//!
//! # Encoding
//!
//! `containers` table, key `(namespace, id)`, value a protobuf message
//! (labels, image, runtime, spec, snapshotter, snapshot key, extensions,
//! sandbox, times); records written by earlier versions are JSON and are
//! still read. The collector reads `snapshotter`, `snapshot_key`
//! and `labels`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::debug;

use crate::container_codec;
use crate::content::{apply_label_paths, collect_labels};
use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::gc::Node;
use crate::identifiers;
use crate::labels::Labels;
use crate::namespaces;
use crate::schema::{self, end_of};
use crate::timestamp;

/// An opaque typed value (a protobuf `Any`): type URL and encoded bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyValue {
    /// The type URL.
    pub type_url: String,
    /// The encoded message.
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    pub value: Vec<u8>,
}

fn to_base64<S: Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

fn from_base64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(serde::de::Error::custom)
}

/// The runtime a container runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// Runtime name, e.g. `io.containerd.runc.v2`.
    pub name: String,
    /// Runtime-specific options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<AnyValue>,
}

/// A namespace's container record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    #[serde(skip)]
    pub id: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The image it was made from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Its runtime.
    #[serde(default)]
    pub runtime: Runtime,
    /// The OCI runtime spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AnyValue>,
    /// Snapshotter of its root filesystem.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshotter: String,
    /// Snapshot key of its root filesystem.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_key: String,
    /// Client-defined extensions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, AnyValue>,
    /// Sandbox id (containerd 2.x).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// Creation time, ns since the epoch.
    #[serde(default)]
    created: i64,
    /// Last update, ns since the epoch.
    #[serde(default)]
    updated: i64,
}

impl ContainerRecord {
    /// When it was created.
    pub fn created_at(&self) -> SystemTime {
        timestamp::from_nanos(self.created)
    }

    /// When it last changed.
    pub fn updated_at(&self) -> SystemTime {
        timestamp::from_nanos(self.updated)
    }

    /// Creation and update times, ns since the epoch.
    pub(crate) fn times(&self) -> (i64, i64) {
        (self.created, self.updated)
    }

    /// Sets the creation and update times, ns since the epoch.
    pub(crate) fn set_times(&mut self, created: i64, updated: i64) {
        self.created = created;
        self.updated = updated;
    }

    pub(crate) fn decode(ns: &str, id: &str, bytes: &[u8]) -> Result<ContainerRecord> {
        let mut r = container_codec::decode(bytes).map_err(|e| {
            Error::DataLoss(format!(
                "container record {id:?} in namespace {ns:?}: cannot decode: {e}"
            ))
        })?;
        r.id = id.to_owned();
        Ok(r)
    }

    fn encode(&self) -> Vec<u8> {
        container_codec::encode(self)
    }
}

fn validate(c: &ContainerRecord) -> Result<()> {
    identifiers::validate(&c.id)
        .map_err(|e| Error::InvalidArgument(format!("container id: {e}")))?;
    if c.runtime.name.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: must specify a runtime name",
            c.id
        )));
    }
    if c.spec.is_none() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: spec must be set",
            c.id
        )));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: snapshotter must be set with a snapshot key",
            c.id
        )));
    }
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: extension keys must not be empty",
            c.id
        )));
    }
    Ok(())
}

fn open(
    txn: &WriteTransaction,
) -> Result<redb::Table<'_, (&'static str, &'static str), &'static [u8]>> {
    txn.open_table(schema::CONTAINERS)
        .context("open table containers")
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("container {id:?}"))
}

/// The container records of every namespace.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    db: Db,
}

impl ContainerStore {
    /// A store over `db`.
    pub(crate) fn new(db: Db) -> ContainerStore {
        ContainerStore { db }
    }

    /// Namespace `ns`'s container `id`; [`Error::NotFound`] if none.
    pub fn get(&self, ns: &str, id: &str) -> Result<ContainerRecord> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::CONTAINERS)
                .context("open table containers")?;
            let Some(v) = table.get((ns, id)).context("read container")? else {
                return Err(not_found(id));
            };
            ContainerRecord::decode(ns, id, v.value())
        })
    }

    /// All of namespace `ns`'s containers, sorted by id.
    pub fn list(&self, ns: &str) -> Result<Vec<ContainerRecord>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::CONTAINERS)
                .context("open table containers")?;
            let end = end_of(ns);
            let mut out = Vec::new();
            for entry in table
                .range((ns, "")..(end.as_str(), ""))
                .context("scan containers")?
            {
                let (k, v) = entry.context("read container")?;
                out.push(ContainerRecord::decode(ns, k.value().1, v.value())?);
            }
            Ok(out)
        })
    }

    /// Creates container `c.id` in `ns` (creating the namespace).
    ///
    /// [`Error::InvalidArgument`] for a bad id, no runtime name, no spec, a
    /// snapshot key without snapshotter or bad labels; [`Error::AlreadyExists`].
    pub fn create(&self, ns: &str, mut c: ContainerRecord) -> Result<ContainerRecord> {
        validate(&c)?;
        c.labels = collect_labels(std::mem::take(&mut c.labels))?;
        let now = timestamp::to_nanos(SystemTime::now());
        c.created = now;
        c.updated = now;
        self.db.update(|txn| {
            namespaces::create_if_missing(txn, ns)?;
            let mut table = open(txn)?;
            if table
                .get((ns, c.id.as_str()))
                .context("read container")?
                .is_some()
            {
                return Err(Error::AlreadyExists(format!("container {:?}", c.id)));
            }
            table
                .insert((ns, c.id.as_str()), c.encode().as_slice())
                .context("insert container")?;
            self.db.track(Node::container(ns, &c.id));
            Ok(())
        })?;
        debug!(namespace = ns, id = %c.id, "created container");
        Ok(c)
    }

    /// Updates container `c.id` by containerd's field paths: `labels`,
    /// `labels.<k>`, `extensions`, `extensions.<k>`, `image`, `spec`,
    /// `snapshotkey`; none = all of those (then a changed snapshotter or
    /// runtime name is [`Error::InvalidArgument`]: they are immutable).
    pub fn update(
        &self,
        ns: &str,
        c: ContainerRecord,
        fieldpaths: &[String],
    ) -> Result<ContainerRecord> {
        if c.id.is_empty() {
            return Err(Error::InvalidArgument(
                "container id must not be empty".into(),
            ));
        }
        let now = timestamp::to_nanos(SystemTime::now());
        let updated = self.db.update(|txn| {
            let mut table = open(txn)?;
            let mut cur = match table.get((ns, c.id.as_str())).context("read container")? {
                Some(v) => ContainerRecord::decode(ns, &c.id, v.value())?,
                None => return Err(not_found(&c.id)),
            };
            let mut paths: Vec<String> = fieldpaths.to_vec();
            if paths.is_empty() {
                if c.snapshotter != cur.snapshotter {
                    return Err(Error::InvalidArgument(format!(
                        "container {:?}: snapshotter is immutable",
                        c.id
                    )));
                }
                if c.runtime.name != cur.runtime.name {
                    return Err(Error::InvalidArgument(format!(
                        "container {:?}: runtime name is immutable",
                        c.id
                    )));
                }
                paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
                    .map(str::to_owned)
                    .to_vec();
            }
            let mut label_paths = Vec::new();
            for p in &paths {
                if p == "labels" || p.starts_with("labels.") {
                    label_paths.push(p.clone());
                    continue;
                }
                if let Some(k) = p.strip_prefix("extensions.") {
                    match c.extensions.get(k) {
                        Some(v) => cur.extensions.insert(k.to_owned(), v.clone()),
                        None => cur.extensions.remove(k),
                    };
                    continue;
                }
                match p.as_str() {
                    "spec" => cur.spec = c.spec.clone(),
                    "extensions" => cur.extensions = c.extensions.clone(),
                    "image" => cur.image = c.image.clone(),
                    "snapshotkey" => cur.snapshot_key = c.snapshot_key.clone(),
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update {other:?} field on container {:?}",
                            c.id
                        )));
                    }
                }
            }
            if !label_paths.is_empty() {
                cur.labels = apply_label_paths(cur.labels, c.labels.clone(), &label_paths)?;
            }
            validate(&cur)?;
            cur.updated = now;
            table
                .insert((ns, c.id.as_str()), cur.encode().as_slice())
                .context("update container")?;
            self.db.track(Node::container(ns, &c.id));
            Ok(cur)
        })?;
        debug!(namespace = ns, id = %updated.id, "updated container");
        Ok(updated)
    }

    /// Deletes container `id`; [`Error::NotFound`] if missing.
    pub fn delete(&self, ns: &str, id: &str) -> Result<()> {
        self.db.update(|txn| {
            let mut table = open(txn)?;
            if table
                .remove((ns, id))
                .context("remove container")?
                .is_none()
            {
                return Err(not_found(id));
            }
            self.db.mark_dirty();
            Ok(())
        })?;
        debug!(namespace = ns, id, "deleted container");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            runtime: Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{\"ociVersion\":\"1.1.0\"}".to_vec(),
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_records_of_older_databases_are_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("m.redb")).unwrap();
        let s = db.containers();
        let created = s.create("ns", container("new")).unwrap();
        // A record as earlier versions wrote it.
        let mut old = created.clone();
        old.id = "old".into();
        old.labels.insert("k".into(), "v".into());
        let raw = |id: &str| -> Vec<u8> {
            db.view(|txn| {
                let t = txn.open_table(schema::CONTAINERS).context("open")?;
                Ok(t.get(("ns", id)).context("get")?.unwrap().value().to_vec())
            })
            .unwrap()
        };
        db.update(|txn| {
            namespaces::create_if_missing(txn, "ns")?;
            open(txn)?
                .insert(("ns", "old"), serde_json::to_vec(&old).unwrap().as_slice())
                .context("insert")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(raw("old").first(), Some(&b'{'));
        assert_ne!(raw("new").first(), Some(&b'{'));
        assert_eq!(s.get("ns", "old").unwrap(), old);
        let ids: Vec<String> = s.list("ns").unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["new", "old"]);
        // An update writes the current encoding.
        let mut u = old.clone();
        u.image = "img".into();
        let updated = s.update("ns", u, &["image".into()]).unwrap();
        assert_ne!(raw("old").first(), Some(&b'{'));
        assert_eq!(s.get("ns", "old").unwrap(), updated);
        assert_eq!(updated.labels.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn create_update_delete_with_containerd_rules() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("m.redb")).unwrap();
        let s = db.containers();
        let created = s.create("ns", container("c1")).unwrap();
        assert_eq!(s.get("ns", "c1").unwrap().spec, created.spec);
        assert!(matches!(
            s.create("ns", container("c1")),
            Err(Error::AlreadyExists(_))
        ));
        let mut bad = container("c2");
        bad.spec = None;
        assert!(matches!(
            s.create("ns", bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            s.create("ns", container("bad id!")),
            Err(Error::InvalidArgument(_))
        ));

        let mut u = container("c1");
        u.image = "docker.io/library/busybox:latest".into();
        u.labels.insert("a".into(), "1".into());
        let r = s.update("ns", u.clone(), &["image".into()]).unwrap();
        assert_eq!(r.image, u.image);
        assert!(r.labels.is_empty(), "labels were not in the mask");
        let r = s.update("ns", u.clone(), &["labels.a".into()]).unwrap();
        assert_eq!(r.labels["a"], "1");
        let mut imm = u.clone();
        imm.snapshotter = "native".into();
        assert!(matches!(
            s.update("ns", imm, &[]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            s.update("ns", u, &["runtime".into()]),
            Err(Error::InvalidArgument(_))
        ));

        assert_eq!(s.list("ns").unwrap().len(), 1);
        s.delete("ns", "c1").unwrap();
        assert!(matches!(s.delete("ns", "c1"), Err(Error::NotFound(_))));
    }
}
