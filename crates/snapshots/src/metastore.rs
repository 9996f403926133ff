//! The snapshot records every driver keeps: a redb file per driver root.
//!
//! This is containerd's `core/snapshots/storage` for berth. A driver stores,
//! per snapshot key (or committed name), a `Record`-like entry: a numeric
//! *id*, the kind, the parent's name, labels, timestamps and, once committed,
//! its disk usage. Ids name the snapshot's directory on disk
//! (`root/snapshots/<id>`), so they are short (which keeps overlay mount
//! options short, see [`crate::overlay`]) and they survive a commit: a commit
//! changes the record, never the directory. Ids come from a sequence and are
//! never reused once a transaction that took one has committed.
//!
//! A second table holds the parent → child relation as `(parent id, child
//! id) → child name`, so "has this snapshot children?" is one range lookup.
//!
//! # Transactions and crashes
//!
//! Drivers do each operation in one [`WriteTxn`], ordering their directory
//! work around it so that a crash at any instant leaves the old state or
//! the new one, never a record without its directory:
//!
//! - **prepare/view**: create the directory under a temporary name
//!   (`new-XXXXXX`) and fill it; insert the record (taking an id); rename the
//!   directory to `<id>` and fsync the parent; commit the transaction. A
//!   crash before the commit leaves no record, only a directory nobody
//!   refers to: a `new-*` one, or `<id>` with an id the sequence will hand
//!   out again (the driver replaces such a stale directory when it does).
//! - **commit**: one transaction replaces the active record by the
//!   committed one, with the same id, so the directory is untouched. There
//!   is no in-between state to crash in.
//! - **remove**: commit the transaction that deletes the record first, then
//!   delete the directory. A crash in between leaves an unreferenced
//!   directory, which [`Snapshotter::cleanup`](crate::Snapshotter::cleanup)
//!   deletes.
//!
//! Only one write transaction exists at a time (others wait in
//! [`MetaStore::write`]); readers run alongside and see the last commit.
//! Commits are durable (fsynced) when they return. The file is locked: a
//! second open, from this process or another, fails with
//! [`Error::Unavailable`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_redb::RecoveringDb;
use redb::{DatabaseError, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::DbContext;
use crate::{Error, Info, Kind, Labels, Result, Usage};

/// Snapshot records by key or name; values are JSON [`Record`]s.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `(parent id, child id)` → child key or name.
const PARENTS: TableDefinition<(u64, u64), &str> = TableDefinition::new("parents");
/// Schema version and the id sequence.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_VERSION: &str = "version";
const META_NEXT_ID: &str = "next_id";
/// The layout this code reads and writes; files with a higher one are refused.
const SCHEMA_VERSION: u64 = 1;

/// One stored snapshot (the value in the `snapshots` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    created: SystemTime,
    updated: SystemTime,
    #[serde(default)]
    usage: Usage,
}

impl Record {
    fn info(&self, name: &str) -> Info {
        Info {
            kind: self.kind,
            name: name.to_owned(),
            parent: self.parent.clone(),
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// An active snapshot or view, as a driver needs it to build mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id (its directory name).
    pub id: u64,
    /// [`Kind::Active`] or [`Kind::View`].
    pub kind: Kind,
    /// The ids of its committed ancestors, nearest (the parent) first.
    pub parent_ids: Vec<u64>,
}

/// The record store of one driver root: a redb file.
pub struct MetaStore {
    /// Reopened by itself after an I/O error (a full disk).
    db: RecoveringDb,
    path: PathBuf,
    /// Set while the file is closed until used and holds no snapshot: a
    /// walk (the garbage collector's, over every snapshotter) is answered
    /// without opening it. Cleared by the next write transaction.
    closed_empty: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.path)
            .finish()
    }
}

impl MetaStore {
    /// Opens the store at `path` (e.g. `root/metadata.redb`), creating it if
    /// needed. The parent directory must exist.
    ///
    /// [`Error::Unavailable`] if the file is open already (in this process
    /// or another), [`Error::FailedPrecondition`] if a newer berth wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<MetaStore> {
        let path = path.as_ref().to_path_buf();
        // redb's v3 file format is the one later redb majors read without an
        // upgrade step (the metadata crate makes the same choice).
        let db = RecoveringDb::open(&path, "snapshot").map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => Error::Unavailable(format!(
                "snapshot metadata {} is open already (another snapshotter on this root?)",
                path.display()
            )),
            e => Error::Db {
                context: format!("open {}", path.display()),
                source: Box::new(e.into()),
            },
        })?;

        let txn = db.begin_write().context("begin write transaction")?;
        {
            txn.open_table(SNAPSHOTS).context("open snapshots table")?;
            txn.open_table(PARENTS).context("open parents table")?;
            let mut meta = txn.open_table(META).context("open meta table")?;
            let version = meta
                .get(META_VERSION)
                .context("read schema version")?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_VERSION, SCHEMA_VERSION)
                        .context("write schema version")?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::FailedPrecondition(format!(
                        "snapshot metadata {} has schema version {v}, newer than {SCHEMA_VERSION} \
                         that this build understands (was berth downgraded?)",
                        path.display()
                    )));
                }
                Some(_) => {}
            }
        }
        txn.commit().context("commit schema")?;
        debug!(path = %path.display(), "opened snapshot metadata");
        Ok(MetaStore {
            db,
            path,
            closed_empty: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Closes the file until the next transaction opens it again (it
    /// stays locked), if it holds no snapshot: a store that may never be
    /// used costs no memory (an open redb file keeps ~0.5 MB of allocator
    /// state). A store with snapshots stays open.
    pub fn close_until_used(&self) -> Result<()> {
        if !self.read()?.infos()?.is_empty() {
            return Ok(());
        }
        self.db.close_until_used();
        self.closed_empty
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Every snapshot's info (without opening a file closed until used
    /// while it holds none).
    pub fn infos(&self) -> Result<Vec<Info>> {
        if self.closed_empty.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Vec::new());
        }
        self.read()?.infos()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Begins a read-only transaction: a consistent view of the last commit.
    pub fn read(&self) -> Result<ReadTxn> {
        let txn = self.db.begin_read().context("begin read transaction")?;
        Ok(ReadTxn { txn })
    }

    /// Begins the write transaction, waiting while another one is open.
    /// Dropping it without [`WriteTxn::commit`] discards its changes.
    pub fn write(&self) -> Result<WriteTxn> {
        let txn = self.db.begin_write().context("begin write transaction")?;
        // Only writes add snapshots, and only while this transaction is
        // open, which keeps other writers out until it ends.
        self.closed_empty
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(WriteTxn { txn })
    }
}

/// A read-only transaction on a [`MetaStore`].
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn").finish_non_exhaustive()
    }
}

impl ReadTxn {
    /// The id, [`Info`] and stored [`Usage`] of snapshot `key` (any kind);
    /// [`Error::NotFound`] if absent. The usage is zero until committed.
    pub fn info(&self, key: &str) -> Result<(u64, Info, Usage)> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        info_in(&table, key)
    }

    /// The active snapshot or view `key` with its ancestry;
    /// [`Error::NotFound`] if absent, [`Error::FailedPrecondition`] if committed.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        snapshot_in(&table, key)
    }

    /// The `Info` of every snapshot, sorted by name.
    pub fn infos(&self) -> Result<Vec<Info>> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        infos_in(&table)
    }

    /// The ids of all snapshots.
    pub fn ids(&self) -> Result<BTreeSet<u64>> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        ids_in(&table)
    }
}

/// The write transaction on a [`MetaStore`]; changes are visible to others
/// only after [`WriteTxn::commit`].
pub struct WriteTxn {
    txn: redb::WriteTransaction,
}

impl fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTxn").finish_non_exhaustive()
    }
}

impl WriteTxn {
    /// Like [`ReadTxn::info`], seeing this transaction's changes.
    pub fn info(&self, key: &str) -> Result<(u64, Info, Usage)> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        info_in(&table, key)
    }

    /// Like [`ReadTxn::snapshot`], seeing this transaction's changes.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        snapshot_in(&table, key)
    }

    /// Like [`ReadTxn::ids`], seeing this transaction's changes.
    pub fn ids(&self) -> Result<BTreeSet<u64>> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        ids_in(&table)
    }

    /// The kind of every snapshot, by id (for drivers whose directory
    /// depends on the kind, like btrfs).
    pub fn kinds(&self) -> Result<std::collections::BTreeMap<u64, Kind>> {
        let table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        Ok(records(&table)?
            .iter()
            .map(|(_, rec)| (rec.id, rec.kind))
            .collect())
    }

    /// Records a new active snapshot or view `key` on `parent`, with a fresh id.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty key, a committed
    /// `kind` or a parent that is not committed; [`Error::AlreadyExists`] if
    /// `key` is taken; [`Error::NotFound`] if `parent` does not exist.
    pub fn create(
        &mut self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        mut labels: Labels,
    ) -> Result<Snapshot> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        if kind == Kind::Committed {
            return Err(Error::InvalidArgument(format!(
                "snapshot {key:?}: only active snapshots and views can be created, not {kind}"
            )));
        }
        let id = self.next_id()?;
        let mut table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        if load(&table, key)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {key:?}")));
        }
        let parent_ids = match parent {
            None => Vec::new(),
            Some(p) => {
                let rec = load(&table, p)?
                    .ok_or_else(|| Error::NotFound(format!("parent snapshot {p:?}")))?;
                if rec.kind != Kind::Committed {
                    return Err(Error::InvalidArgument(format!(
                        "parent {p:?} is not a committed snapshot (it is {})",
                        rec.kind.as_str()
                    )));
                }
                chain(&table, p)?
            }
        };
        labels.retain(|_, v| !v.is_empty());
        let now = SystemTime::now();
        let rec = Record {
            id,
            kind,
            parent: parent.map(str::to_owned),
            labels,
            created: now,
            updated: now,
            usage: Usage::default(),
        };
        store(&mut table, key, &rec)?;
        if let Some(&pid) = parent_ids.first() {
            let mut parents = self.txn.open_table(PARENTS).context("open parents table")?;
            parents
                .insert((pid, id), key)
                .context("write parent link")?;
        }
        Ok(Snapshot {
            id,
            kind,
            parent_ids,
        })
    }

    /// Changes the labels of snapshot `info.name`, as
    /// [`Snapshotter::update`](crate::Snapshotter::update) describes.
    pub fn update(&mut self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        let mut table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        let mut rec = load(&table, &info.name)?
            .ok_or_else(|| Error::NotFound(format!("snapshot {:?}", info.name)))?;
        if fieldpaths.is_empty() {
            rec.labels = info.labels.clone();
        }
        for path in fieldpaths {
            if let Some(label) = path.strip_prefix("labels.") {
                match info.labels.get(label) {
                    Some(v) => rec.labels.insert(label.to_owned(), v.clone()),
                    None => rec.labels.remove(label),
                };
            } else if *path == "labels" {
                rec.labels = info.labels.clone();
            } else {
                return Err(Error::InvalidArgument(format!(
                    "cannot update {path:?} field on snapshot {:?}",
                    info.name
                )));
            }
        }
        rec.labels.retain(|_, v| !v.is_empty());
        rec.updated = SystemTime::now();
        store(&mut table, &info.name, &rec)?;
        Ok(rec.info(&info.name))
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`,
    /// keeping its id and parent, with `usage` and `labels`; returns the id.
    ///
    /// Errors as [`Snapshotter::commit`](crate::Snapshotter::commit) lists.
    pub fn commit_active(
        &mut self,
        key: &str,
        name: &str,
        usage: Usage,
        mut labels: Labels,
    ) -> Result<u64> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot name must not be empty".into(),
            ));
        }
        let mut table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        // Like containerd, a taken name wins over a missing key.
        if load(&table, name)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name:?}")));
        }
        let active =
            load(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key:?}")))?;
        if active.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is not active (it is {})",
                active.kind.as_str()
            )));
        }
        labels.retain(|_, v| !v.is_empty());
        let now = SystemTime::now();
        let committed = Record {
            id: active.id,
            kind: Kind::Committed,
            parent: active.parent.clone(),
            labels,
            created: now,
            updated: now,
            usage,
        };
        table.remove(key).context("delete active snapshot")?;
        store(&mut table, name, &committed)?;
        if let Some(parent) = &active.parent {
            let prec = load(&table, parent)?
                .ok_or_else(|| Error::NotFound(format!("parent snapshot {parent:?} of {key:?}")))?;
            let mut parents = self.txn.open_table(PARENTS).context("open parents table")?;
            parents
                .insert((prec.id, active.id), name)
                .context("write parent link")?;
        }
        Ok(active.id)
    }

    /// Deletes the record of snapshot `key`; returns its id and kind.
    ///
    /// [`Error::NotFound`] if absent, [`Error::FailedPrecondition`] if it has children.
    pub fn remove(&mut self, key: &str) -> Result<(u64, Kind)> {
        let mut table = self
            .txn
            .open_table(SNAPSHOTS)
            .context("open snapshots table")?;
        let rec = load(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key:?}")))?;
        let mut parents = self.txn.open_table(PARENTS).context("open parents table")?;
        let child = parents
            .range((rec.id, 0)..=(rec.id, u64::MAX))
            .context("read children")?
            .next()
            .transpose()
            .context("read children")?
            .map(|(_, child)| child.value().to_owned());
        if let Some(child) = child {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove snapshot {key:?} with child {child:?}"
            )));
        }
        if let Some(parent) = &rec.parent {
            let prec = load(&table, parent)?
                .ok_or_else(|| Error::NotFound(format!("parent snapshot {parent:?} of {key:?}")))?;
            parents
                .remove((prec.id, rec.id))
                .context("delete parent link")?;
        }
        table.remove(key).context("delete snapshot")?;
        Ok((rec.id, rec.kind))
    }

    /// Makes the changes durable and visible.
    pub fn commit(self) -> Result<()> {
        self.txn.commit().context("commit transaction")
    }

    /// Takes the next id from the sequence.
    fn next_id(&mut self) -> Result<u64> {
        let mut meta = self.txn.open_table(META).context("open meta table")?;
        let id = meta
            .get(META_NEXT_ID)
            .context("read id sequence")?
            .map_or(1, |v| v.value());
        meta.insert(META_NEXT_ID, id + 1)
            .context("write id sequence")?;
        Ok(id)
    }
}

/// Reads and decodes the record of `key`, if any.
fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Record>> {
    match table.get(key).context("read snapshot")? {
        Some(raw) => decode(key, raw.value()).map(Some),
        None => Ok(None),
    }
}

/// Decodes a stored record.
fn decode(key: &str, raw: &[u8]) -> Result<Record> {
    serde_json::from_slice(raw).map_err(|e| Error::Db {
        context: format!("decode snapshot {key:?}"),
        source: Box::new(redb::Error::Corrupted(e.to_string())),
    })
}

/// Every record, with its key, in key order.
fn records(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, Record)>> {
    let mut all = Vec::new();
    for entry in table.iter().context("list snapshots")? {
        let (k, v) = entry.context("list snapshots")?;
        let key = k.value();
        all.push((key.to_owned(), decode(key, v.value())?));
    }
    Ok(all)
}

/// Encodes and writes the record of `key`.
fn store(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    rec: &Record,
) -> Result<()> {
    let raw = serde_json::to_vec(rec).map_err(|e| Error::Db {
        context: format!("encode snapshot {key:?}"),
        source: Box::new(redb::Error::Corrupted(e.to_string())),
    })?;
    table
        .insert(key, raw.as_slice())
        .context("write snapshot")?;
    Ok(())
}

/// The ids of `first` and its ancestors, nearest first.
fn chain(table: &impl ReadableTable<&'static str, &'static [u8]>, first: &str) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(name) = next {
        let rec = load(table, &name)?
            .ok_or_else(|| Error::NotFound(format!("ancestor snapshot {name:?}")))?;
        ids.push(rec.id);
        next = rec.parent;
    }
    Ok(ids)
}

fn info_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<(u64, Info, Usage)> {
    let rec = load(table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key:?}")))?;
    Ok((rec.id, rec.info(key), rec.usage))
}

fn snapshot_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Snapshot> {
    let rec = load(table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key:?}")))?;
    if rec.kind == Kind::Committed {
        return Err(Error::FailedPrecondition(format!(
            "snapshot {key:?} is committed, not active or a view"
        )));
    }
    let parent_ids = match &rec.parent {
        Some(p) => chain(table, p)?,
        None => Vec::new(),
    };
    Ok(Snapshot {
        id: rec.id,
        kind: rec.kind,
        parent_ids,
    })
}

fn infos_in(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<Info>> {
    Ok(records(table)?
        .iter()
        .map(|(key, rec)| rec.info(key))
        .collect())
}

fn ids_in(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<BTreeSet<u64>> {
    Ok(records(table)?.iter().map(|(_, rec)| rec.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (MetaStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ms = MetaStore::open(dir.path().join("metadata.redb")).unwrap();
        (ms, dir)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids_are_sequential_and_survive_commit() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        let a = tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
        assert_eq!(a.id, 1);
        assert!(a.parent_ids.is_empty());
        let id = tx
            .commit_active("a", "A", Usage { size: 7, inodes: 1 }, Labels::new())
            .unwrap();
        assert_eq!(id, 1);
        let b = tx
            .create(Kind::Active, "b", Some("A"), Labels::new())
            .unwrap();
        assert_eq!((b.id, b.parent_ids.clone()), (2, vec![1]));
        tx.commit().unwrap();

        let rx = ms.read().unwrap();
        let (id, info, usage) = rx.info("A").unwrap();
        assert_eq!((id, info.kind), (1, Kind::Committed));
        assert_eq!(usage, Usage { size: 7, inodes: 1 });
        assert!(rx.info("a").unwrap_err().is_not_found());
        assert_eq!(rx.snapshot("b").unwrap(), b);
        assert_eq!(rx.ids().unwrap().into_iter().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn uncommitted_transactions_leave_nothing() {
        let (ms, _dir) = store();
        {
            let mut tx = ms.write().unwrap();
            tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
        }
        assert!(ms.read().unwrap().info("a").unwrap_err().is_not_found());
        // The id was not taken for good either: the sequence rolled back.
        let mut tx = ms.write().unwrap();
        assert_eq!(
            tx.create(Kind::View, "v", None, Labels::new()).unwrap().id,
            1
        );
    }

    #[test]
    fn parents_must_exist_and_be_committed() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
        let e = tx
            .create(Kind::Active, "b", Some("a"), Labels::new())
            .unwrap_err();
        assert!(e.is_invalid_argument(), "{e}");
        let e = tx
            .create(Kind::Active, "b", Some("nope"), Labels::new())
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = tx
            .create(Kind::Committed, "c", None, Labels::new())
            .unwrap_err();
        assert!(e.is_invalid_argument(), "{e}");
        let e = tx
            .create(Kind::Active, "", None, Labels::new())
            .unwrap_err();
        assert!(e.is_invalid_argument(), "{e}");
        let e = tx.create(Kind::View, "a", None, Labels::new()).unwrap_err();
        assert!(e.is_already_exists(), "{e}");
    }

    #[test]
    fn children_block_removal_until_removed() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
        tx.commit_active("a", "A", Usage::default(), Labels::new())
            .unwrap();
        tx.create(Kind::Active, "b", Some("A"), Labels::new())
            .unwrap();
        tx.commit_active("b", "B", Usage::default(), Labels::new())
            .unwrap();
        tx.create(Kind::View, "v", Some("B"), Labels::new())
            .unwrap();

        let e = tx.remove("A").unwrap_err();
        assert!(e.is_failed_precondition(), "{e}");
        assert!(e.to_string().contains("\"B\""), "{e}");
        let e = tx.remove("B").unwrap_err();
        assert!(e.to_string().contains("\"v\""), "{e}");
        assert_eq!(tx.remove("v").unwrap(), (3, Kind::View));
        assert_eq!(tx.remove("B").unwrap(), (2, Kind::Committed));
        assert_eq!(tx.remove("A").unwrap(), (1, Kind::Committed));
        assert!(tx.remove("A").unwrap_err().is_not_found());
    }

    #[test]
    fn commit_checks_name_then_key_then_kind() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
        tx.create(Kind::View, "v", None, Labels::new()).unwrap();
        let u = Usage::default();
        assert!(
            tx.commit_active("missing", "a", u, Labels::new())
                .unwrap_err()
                .is_already_exists()
        );
        assert!(
            tx.commit_active("missing", "X", u, Labels::new())
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            tx.commit_active("v", "X", u, Labels::new())
                .unwrap_err()
                .is_failed_precondition()
        );
        assert!(
            tx.commit_active("a", "", u, Labels::new())
                .unwrap_err()
                .is_invalid_argument()
        );
        tx.commit_active("a", "A", u, Labels::new()).unwrap();
        assert!(
            tx.commit_active("A", "Z", u, Labels::new())
                .unwrap_err()
                .is_failed_precondition()
        );
    }

    #[test]
    fn commit_replaces_labels_and_resets_times() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        tx.create(Kind::Active, "a", None, labels(&[("x", "1")]))
            .unwrap();
        let (_, before, _) = tx.info("a").unwrap();
        tx.commit_active(
            "a",
            "A",
            Usage::default(),
            labels(&[("y", "2"), ("empty", "")]),
        )
        .unwrap();
        let (_, after, _) = tx.info("A").unwrap();
        assert_eq!(after.labels, labels(&[("y", "2")]));
        assert!(after.created >= before.created);
        assert_eq!(after.created, after.updated);
    }

    #[test]
    fn update_follows_fieldpaths() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        tx.create(
            Kind::Active,
            "a",
            None,
            labels(&[("l1", "v1"), ("l2", "v2")]),
        )
        .unwrap();
        let mut info = Info::new("a");
        info.labels = labels(&[("l1", "new"), ("l3", "v3")]);
        let got = tx.update(&info, &["labels.l1", "labels.l2"]).unwrap();
        assert_eq!(got.labels, labels(&[("l1", "new")]));
        let got = tx.update(&info, &[]).unwrap();
        assert_eq!(got.labels, labels(&[("l1", "new"), ("l3", "v3")]));
        assert!(got.updated >= got.created);
        info.labels = labels(&[("only", "1"), ("blank", "")]);
        assert_eq!(
            tx.update(&info, &["labels"]).unwrap().labels,
            labels(&[("only", "1")])
        );
        assert!(
            tx.update(&info, &["parent"])
                .unwrap_err()
                .is_invalid_argument()
        );
        assert!(
            tx.update(&Info::new("nope"), &[])
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn reopen_keeps_records_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.redb");
        {
            let ms = MetaStore::open(&path).unwrap();
            assert!(MetaStore::open(&path).unwrap_err().is_unavailable());
            let mut tx = ms.write().unwrap();
            tx.create(Kind::Active, "a", None, Labels::new()).unwrap();
            tx.commit().unwrap();
        }
        let ms = MetaStore::open(&path).unwrap();
        assert_eq!(ms.read().unwrap().info("a").unwrap().0, 1);
        let mut tx = ms.write().unwrap();
        assert_eq!(
            tx.create(Kind::Active, "b", None, Labels::new())
                .unwrap()
                .id,
            2
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(META_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let e = MetaStore::open(&path).unwrap_err();
        assert!(e.is_failed_precondition(), "{e}");
    }

    #[test]
    fn infos_list_everything_sorted() {
        let (ms, _dir) = store();
        let mut tx = ms.write().unwrap();
        for k in ["c", "a", "b"] {
            tx.create(Kind::Active, k, None, Labels::new()).unwrap();
        }
        tx.commit().unwrap();
        let names: Vec<_> = ms
            .read()
            .unwrap()
            .infos()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
