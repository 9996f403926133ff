//! Each namespace's view of each snapshotter (containerd's metadata
//! snapshotter, `core/metadata/snapshot.go`).
//!
//! Snapshotters (the drivers in `berth-snapshots`, or a proxy) know nothing
//! of namespaces. Every namespace gets its own key space on each of them:
//! its key `k` is stored in the driver under a *backend name* made unique by
//! the caller ([`NamespacedSnapshotter`](crate::NamespacedSnapshotter)
//! uses `<namespace>/<sequence>/<k>`), and this store maps
//! `(namespace, snapshotter, key)` to that name, the parent's key, the kind,
//! times and labels. Labels live here, so the garbage collector sees them.
//!
//! # Crash safety
//!
//! The caller changes the driver and this store in an order that a crash
//! cannot tear: a new snapshot is made in the driver first and recorded
//! here second (a crash leaves an unrecorded driver snapshot, which the
//! caller's reconciliation removes); a commit is first recorded as
//! *pending* ([`SnapshotStore::begin_commit`]), then done in the driver,
//! then finished ([`SnapshotStore::finish_commit`]); after a crash,
//! [`SnapshotStore::pending_commits`] lists what to finish or roll back.
//!
//! # Encoding
//!
//! Rows of the `snapshots` table, key `(namespace, snapshotter, key)`, value
//! JSON: `{"name": "<backend name>", "parent": "<parent key>", "kind":
//! "active", "created": <ns>, "updated": <ns>, "labels": {..}, "pending":
//! {"name": "<new name>", "backend": "<new backend name>"}}` (`parent`,
//! `labels` and `pending` omitted when empty).

use std::collections::HashSet;
use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::content::{apply_label_paths, collect_labels};
use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::gc::Node;
use crate::labels::Labels;
use crate::leases::{self, SNAPSHOTS_PREFIX};
use crate::namespaces;
use crate::schema::{self, end_of};
use crate::timestamp;

/// What a namespace's snapshot is: writable, read-only, or committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Read-only, never committed.
    View,
    /// Writable.
    Active,
    /// Immutable; the only kind that can be a parent.
    Committed,
}

/// A namespace's record of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The key (or, committed, the name) in the namespace.
    pub key: String,
    /// The name the snapshotter itself knows it by.
    pub backend_name: String,
    /// The parent's key in the namespace, if any.
    pub parent: Option<String>,
    /// Active, view or committed.
    pub kind: SnapshotKind,
    /// When it was created (committed, for a committed one).
    pub created_at: SystemTime,
    /// When it or its labels last changed.
    pub updated_at: SystemTime,
    /// Labels.
    pub labels: Labels,
}

/// A commit that was started but not finished (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommit {
    /// Namespace.
    pub namespace: String,
    /// Snapshotter.
    pub snapshotter: String,
    /// The active snapshot's key.
    pub key: String,
    /// The committed snapshot's name.
    pub name: String,
    /// The committed snapshot's backend name.
    pub backend_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    name: String,
    backend: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    parent: String,
    kind: SnapshotKind,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    updated: i64,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

impl Stored {
    fn decode(ns: &str, sn: &str, key: &str, bytes: &[u8]) -> Result<Stored> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::DataLoss(format!(
                "snapshot record {key:?} of {sn} in namespace {ns:?}: cannot decode: {e}"
            ))
        })
    }

    fn encode(&self) -> Vec<u8> {
        // Strings, integers and string maps always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn record(self, key: &str) -> SnapshotRecord {
        SnapshotRecord {
            key: key.to_owned(),
            backend_name: self.name,
            parent: Some(self.parent).filter(|p| !p.is_empty()),
            kind: self.kind,
            created_at: timestamp::from_nanos(self.created),
            updated_at: timestamp::from_nanos(self.updated),
            labels: self.labels,
        }
    }
}

type Table<'t> = redb::Table<'t, (&'static str, &'static str, &'static str), &'static [u8]>;

fn open(txn: &WriteTransaction) -> Result<Table<'_>> {
    txn.open_table(schema::SNAPSHOTS)
        .context("open table snapshots")
}

fn load(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<Stored>> {
    match table.get((ns, sn, key)).context("read snapshot")? {
        Some(v) => Ok(Some(Stored::decode(ns, sn, key, v.value())?)),
        None => Ok(None),
    }
}

fn not_found(key: &str) -> Error {
    Error::NotFound(format!("snapshot {key:?}"))
}

/// The namespaced snapshot records (see the module docs).
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    db: Db,
}

impl SnapshotStore {
    /// A store over `db`.
    pub(crate) fn new(db: Db) -> SnapshotStore {
        SnapshotStore { db }
    }

    /// Namespace `ns`'s record of `key` in snapshotter `sn`; [`Error::NotFound`] if none.
    pub fn get(&self, ns: &str, sn: &str, key: &str) -> Result<SnapshotRecord> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::SNAPSHOTS)
                .context("open table snapshots")?;
            load(&table, ns, sn, key)?
                .map(|s| s.record(key))
                .ok_or_else(|| not_found(key))
        })
    }

    /// All of namespace `ns`'s records for snapshotter `sn`, sorted by key.
    pub fn list(&self, ns: &str, sn: &str) -> Result<Vec<SnapshotRecord>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::SNAPSHOTS)
                .context("open table snapshots")?;
            let end = end_of(sn);
            let mut out = Vec::new();
            for entry in table
                .range((ns, sn, "")..(ns, end.as_str(), ""))
                .context("scan snapshots")?
            {
                let (k, v) = entry.context("read snapshot")?;
                let key = k.value().2;
                out.push(Stored::decode(ns, sn, key, v.value())?.record(key));
            }
            Ok(out)
        })
    }

    /// Checks that `key` may be created on `parent` and returns the parent's
    /// backend name: [`Error::AlreadyExists`] if `key` is taken,
    /// [`Error::NotFound`] if `parent` is missing, [`Error::InvalidArgument`]
    /// if it is not committed or `key` is empty.
    pub fn check_new(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: Option<&str>,
    ) -> Result<Option<String>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::SNAPSHOTS)
                .context("open table snapshots")?;
            check_new_in(&table, ns, sn, key, parent)
        })
    }

    /// Records a new active snapshot or view `key` on `parent`, stored in the
    /// driver as `backend_name`; adds it to `lease` if given.
    ///
    /// Errors as [`SnapshotStore::check_new`], checked again inside the
    /// transaction; [`Error::NotFound`] for a missing lease.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: Option<&str>,
        kind: SnapshotKind,
        backend_name: &str,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<SnapshotRecord> {
        let labels = collect_labels(labels)?;
        let now = timestamp::to_nanos(SystemTime::now());
        let stored = Stored {
            name: backend_name.to_owned(),
            parent: parent.unwrap_or_default().to_owned(),
            kind,
            created: now,
            updated: now,
            labels,
            pending: None,
        };
        self.db.update(|txn| {
            namespaces::create_if_missing(txn, ns)?;
            let mut table = open(txn)?;
            check_new_in(&table, ns, sn, key, parent)?;
            table
                .insert((ns, sn, key), stored.encode().as_slice())
                .context("insert snapshot")?;
            if let Some(lease) = lease {
                let kind = format!("{SNAPSHOTS_PREFIX}{sn}");
                leases::add_resource_in(txn, &self.db, ns, lease, &kind, key)?;
            }
            self.db.track(Node::snapshot(ns, sn, key));
            Ok(())
        })?;
        debug!(
            namespace = ns,
            snapshotter = sn,
            key,
            backend = backend_name,
            "recorded snapshot"
        );
        Ok(stored.record(key))
    }

    /// Starts committing active `key` as `name` (stored in the driver as
    /// `backend_name`): checks and records the intent, returns the active
    /// snapshot's record. Then commit in the driver and call
    /// [`SnapshotStore::finish_commit`].
    ///
    /// [`Error::NotFound`] if `key` is missing, [`Error::AlreadyExists`] if
    /// `name` is taken, [`Error::FailedPrecondition`] if `key` is not
    /// active or already being committed, [`Error::InvalidArgument`] for an
    /// empty name or bad labels.
    pub fn begin_commit(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        backend_name: &str,
        labels: Labels,
    ) -> Result<SnapshotRecord> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot name must not be empty".into(),
            ));
        }
        let labels = collect_labels(labels)?;
        self.db.update(|txn| {
            let mut table = open(txn)?;
            if load(&table, ns, sn, name)?.is_some() {
                return Err(Error::AlreadyExists(format!("snapshot {name:?}")));
            }
            let mut active = load(&table, ns, sn, key)?.ok_or_else(|| not_found(key))?;
            if active.kind != SnapshotKind::Active {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is not active (it is {:?}); only active snapshots can be committed",
                    active.kind
                )));
            }
            if let Some(p) = &active.pending {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is already being committed as {:?}",
                    p.name
                )));
            }
            active.pending = Some(Pending {
                name: name.to_owned(),
                backend: backend_name.to_owned(),
                labels,
            });
            table
                .insert((ns, sn, key), active.encode().as_slice())
                .context("update snapshot")?;
            Ok(active.record(key))
        })
    }

    /// Finishes (`done`) or abandons (`!done`) the pending commit of `key`;
    /// finishing replaces `key` by the committed record and adds it to
    /// `lease` if given. Returns the committed record, if finished.
    pub fn finish_commit(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        done: bool,
        lease: Option<&str>,
    ) -> Result<Option<SnapshotRecord>> {
        let now = timestamp::to_nanos(SystemTime::now());
        self.db.update(|txn| {
            let mut table = open(txn)?;
            let mut active = load(&table, ns, sn, key)?.ok_or_else(|| not_found(key))?;
            let Some(pending) = active.pending.take() else {
                return Ok(None);
            };
            if !done {
                table
                    .insert((ns, sn, key), active.encode().as_slice())
                    .context("update snapshot")?;
                return Ok(None);
            }
            let committed = Stored {
                name: pending.backend,
                parent: active.parent,
                kind: SnapshotKind::Committed,
                created: now,
                updated: now,
                labels: pending.labels,
                pending: None,
            };
            table.remove((ns, sn, key)).context("remove snapshot")?;
            table
                .insert(
                    (ns, sn, pending.name.as_str()),
                    committed.encode().as_slice(),
                )
                .context("insert snapshot")?;
            if let Some(lease) = lease {
                let kind = format!("{SNAPSHOTS_PREFIX}{sn}");
                leases::add_resource_in(txn, &self.db, ns, lease, &kind, &pending.name)?;
            }
            self.db.track(Node::snapshot(ns, sn, &pending.name));
            Ok(Some(committed.record(&pending.name)))
        })
    }

    /// Commits started and not finished, in every namespace (for recovery
    /// after a crash).
    pub fn pending_commits(&self) -> Result<Vec<PendingCommit>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::SNAPSHOTS)
                .context("open table snapshots")?;
            let mut out = Vec::new();
            for entry in table.iter().context("scan snapshots")? {
                let (k, v) = entry.context("read snapshot")?;
                let (ns, sn, key) = k.value();
                let stored = Stored::decode(ns, sn, key, v.value())?;
                if let Some(p) = stored.pending {
                    out.push(PendingCommit {
                        namespace: ns.to_owned(),
                        snapshotter: sn.to_owned(),
                        key: key.to_owned(),
                        name: p.name,
                        backend_name: p.backend,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Changes the labels of `key` by containerd's field paths (`labels`,
    /// `labels.<k>`, none = all labels); other paths are
    /// [`Error::InvalidArgument`].
    pub fn update(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        labels: Labels,
        fieldpaths: &[String],
    ) -> Result<SnapshotRecord> {
        if let Some(path) = fieldpaths
            .iter()
            .find(|p| *p != "labels" && !p.starts_with("labels."))
        {
            return Err(Error::InvalidArgument(format!(
                "cannot update {path:?} field on snapshot {key:?}"
            )));
        }
        let now = timestamp::to_nanos(SystemTime::now());
        self.db.update(|txn| {
            let mut table = open(txn)?;
            let mut stored = load(&table, ns, sn, key)?.ok_or_else(|| not_found(key))?;
            stored.labels = apply_label_paths(stored.labels, labels, fieldpaths)?;
            stored.updated = now;
            table
                .insert((ns, sn, key), stored.encode().as_slice())
                .context("update snapshot")?;
            self.db.track(Node::snapshot(ns, sn, key));
            Ok(stored.record(key))
        })
    }

    /// Deletes the record of `key` and returns it; the caller then removes
    /// the driver's snapshot. [`Error::NotFound`] if missing,
    /// [`Error::FailedPrecondition`] if another snapshot of the namespace
    /// has it as parent.
    pub fn remove(&self, ns: &str, sn: &str, key: &str) -> Result<SnapshotRecord> {
        self.db.update(|txn| {
            let mut table = open(txn)?;
            let stored = load(&table, ns, sn, key)?.ok_or_else(|| not_found(key))?;
            if stored.kind == SnapshotKind::Committed {
                let end = end_of(sn);
                for entry in table
                    .range((ns, sn, "")..(ns, end.as_str(), ""))
                    .context("scan snapshots")?
                {
                    let (k, v) = entry.context("read snapshot")?;
                    let child = k.value().2;
                    if Stored::decode(ns, sn, child, v.value())?.parent == key {
                        return Err(Error::FailedPrecondition(format!(
                            "cannot remove snapshot {key:?}: snapshot {child:?} has it as parent"
                        )));
                    }
                }
            }
            table.remove((ns, sn, key)).context("remove snapshot")?;
            self.db.mark_dirty();
            Ok(stored.record(key))
        })
    }

    /// The backend names that any namespace's records of snapshotter `sn`
    /// refer to, including pending commits' new names (what the driver must keep).
    pub fn backend_names(&self, sn: &str) -> Result<HashSet<String>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::SNAPSHOTS)
                .context("open table snapshots")?;
            let mut out = HashSet::new();
            for entry in table.iter().context("scan snapshots")? {
                let (k, v) = entry.context("read snapshot")?;
                let (ns, s, key) = k.value();
                if s != sn {
                    continue;
                }
                let stored = Stored::decode(ns, s, key, v.value())?;
                if let Some(p) = stored.pending {
                    out.insert(p.backend);
                }
                out.insert(stored.name);
            }
            Ok(out)
        })
    }
}

fn check_new_in(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
    parent: Option<&str>,
) -> Result<Option<String>> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "snapshot key must not be empty".into(),
        ));
    }
    if load(table, ns, sn, key)?.is_some() {
        return Err(Error::AlreadyExists(format!("snapshot {key:?}")));
    }
    let Some(parent) = parent else {
        return Ok(None);
    };
    let p = load(table, ns, sn, parent)?
        .ok_or_else(|| Error::NotFound(format!("parent snapshot {parent:?}")))?;
    if p.kind != SnapshotKind::Committed {
        return Err(Error::InvalidArgument(format!(
            "parent snapshot {parent:?} is not committed (it is {:?})",
            p.kind
        )));
    }
    Ok(Some(p.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SnapshotStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("m.redb")).unwrap();
        (db.snapshots(), dir)
    }

    #[test]
    fn create_commit_remove_follow_containerd_rules() {
        let (s, _d) = store();
        let l = Labels::new();
        s.create(
            "ns",
            "overlayfs",
            "a",
            None,
            SnapshotKind::Active,
            "ns/1/a",
            l.clone(),
            None,
        )
        .unwrap();
        let e = s
            .create(
                "ns",
                "overlayfs",
                "a",
                None,
                SnapshotKind::Active,
                "x",
                l.clone(),
                None,
            )
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        let e = s.check_new("ns", "overlayfs", "b", Some("a")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = s.check_new("ns", "overlayfs", "b", Some("zz")).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        // Another namespace, another key space.
        assert_eq!(s.check_new("other", "overlayfs", "a", None).unwrap(), None);

        let pending = s
            .begin_commit("ns", "overlayfs", "A", "a", "ns/2/A", l.clone())
            .unwrap();
        assert_eq!(pending.backend_name, "ns/1/a");
        assert_eq!(s.pending_commits().unwrap().len(), 1);
        assert!(s.backend_names("overlayfs").unwrap().contains("ns/2/A"));
        let c = s
            .finish_commit("ns", "overlayfs", "a", true, None)
            .unwrap()
            .unwrap();
        assert_eq!((c.key.as_str(), c.kind), ("A", SnapshotKind::Committed));
        assert!(s.get("ns", "overlayfs", "a").is_err());
        assert!(s.pending_commits().unwrap().is_empty());

        assert_eq!(
            s.check_new("ns", "overlayfs", "b", Some("A"))
                .unwrap()
                .as_deref(),
            Some("ns/2/A")
        );
        s.create(
            "ns",
            "overlayfs",
            "b",
            Some("A"),
            SnapshotKind::View,
            "ns/3/b",
            l,
            None,
        )
        .unwrap();
        let e = s.remove("ns", "overlayfs", "A").unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        s.remove("ns", "overlayfs", "b").unwrap();
        s.remove("ns", "overlayfs", "A").unwrap();
        assert!(s.list("ns", "overlayfs").unwrap().is_empty());
    }

    #[test]
    fn abandoned_commit_keeps_the_active_snapshot() {
        let (s, _d) = store();
        s.create(
            "ns",
            "n",
            "a",
            None,
            SnapshotKind::Active,
            "ns/1/a",
            Labels::new(),
            None,
        )
        .unwrap();
        s.begin_commit("ns", "n", "A", "a", "ns/2/A", Labels::new())
            .unwrap();
        assert!(
            s.finish_commit("ns", "n", "a", false, None)
                .unwrap()
                .is_none()
        );
        assert_eq!(s.get("ns", "n", "a").unwrap().kind, SnapshotKind::Active);
        assert!(!s.backend_names("n").unwrap().contains("ns/2/A"));
    }

    #[test]
    fn labels_update_by_path() {
        let (s, _d) = store();
        let labels: Labels = [("x".to_owned(), "1".to_owned())].into();
        s.create(
            "ns",
            "n",
            "a",
            None,
            SnapshotKind::Active,
            "b",
            labels,
            None,
        )
        .unwrap();
        let r = s
            .update(
                "ns",
                "n",
                "a",
                [("y".to_owned(), "2".to_owned())].into(),
                &["labels.y".into()],
            )
            .unwrap();
        assert_eq!(r.labels.len(), 2);
        let e = s
            .update("ns", "n", "a", Labels::new(), &["parent".into()])
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}
