//! The database handle: opening the redb file, checking its schema, and
//! running short transactions for the stores.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use berth_redb::RecoveringDb;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use tracing::{debug, info, warn};

use crate::content::ContentStore;
use crate::error::{DbContext, Error, Result};
use crate::gc::{self, GcReport, Node};
use crate::leases::LeaseStore;
use crate::namespaces::Namespaces;
use crate::schema::{self, SCHEMA_VERSION, SCHEMA_VERSION_KEY};

/// A handle on berth's metadata database; cheap to clone and share between threads.
///
/// All clones share one open redb file. redb allows one writer at a time
/// (others wait) alongside any number of readers, each seeing a consistent
/// snapshot. Every commit is durable (fsynced) before it returns.
///
/// A file can be open only once per process: open it once and clone the
/// handle; a second [`Db::open`] of the same path fails.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reopened by itself after an I/O error (a full disk), so one failed
    /// write never leaves the daemon unable to write until a restart.
    db: RecoveringDb,
    path: PathBuf,
    /// Held for a whole garbage collection, so collections never overlap.
    gc: Mutex<()>,
    /// While a collection is between its mark and its sweep: the objects
    /// that writes have created or changed since the mark's snapshot (see
    /// [`Db::track`]). `None` when no collection is running.
    tracked: Mutex<Option<HashSet<Node>>>,
    /// Deletions (of records that may have held references) since the
    /// last collection began: containerd's `dirty` counter.
    dirty: AtomicU64,
    /// Called after each committed write with whether `dirty` is set.
    on_mutation: RwLock<Vec<MutationCallback>>,
    /// Held for writing while a collection's blob files are deleted, and
    /// for reading by whoever records a blob that is in the shared store
    /// (a commit, a deduplicated write): a file is never deleted between
    /// "the blob is there" and "a namespace holds it".
    blob_files: RwLock<()>,
}

/// A function told of every committed write; its argument says whether a
/// deletion happened since the last garbage collection began.
pub type MutationCallback = Arc<dyn Fn(bool) + Send + Sync>;

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Db {
    /// Opens the database at `path`, creating the file and its parent directories if needed.
    ///
    /// A new file gets every table of the current [`schema`] and records
    /// [`SCHEMA_VERSION`]. An existing file written by a newer berth (a higher
    /// schema version) is refused with [`Error::SchemaVersion`] rather than
    /// risk misreading it.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }

        // New files use redb's v3 file format, which later redb majors read
        // without an upgrade step.
        let db = RecoveringDb::open(&path, "metadata").context("open database file")?;
        init_schema(&db, &path)?;
        debug!(path = %path.display(), "opened metadata database");

        Ok(Db {
            inner: Arc::new(Inner {
                db,
                path,
                gc: Mutex::new(()),
                tracked: Mutex::new(None),
                dirty: AtomicU64::new(0),
                on_mutation: RwLock::new(Vec::new()),
                blob_files: RwLock::new(()),
            }),
        })
    }

    /// Runs `f` while no blob file can be deleted (see
    /// [`Db::while_deleting_blob_files`]): for recording a blob found in,
    /// or just committed to, the shared content store. Many callers may
    /// hold this at once.
    pub fn while_blob_files_kept<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .inner
            .blob_files
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f()
    }

    /// Runs `f`, the deletion of blob files that a collection found
    /// unreferenced, while nobody records a blob ([`Db::while_blob_files_kept`]).
    /// `f` should re-check each digest with
    /// [`ContentStore::exists_anywhere`] before deleting its file.
    pub fn while_deleting_blob_files<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .inner
            .blob_files
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f()
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The namespace store of this database.
    pub fn namespaces(&self) -> Namespaces {
        Namespaces::new(self.clone())
    }

    /// The per-namespace view of content blobs (records only: blob files are the caller's).
    pub fn content(&self) -> ContentStore {
        ContentStore::new(self.clone())
    }

    /// Container records.
    pub fn containers(&self) -> crate::containers::ContainerStore {
        crate::containers::ContainerStore::new(self.clone())
    }

    /// Image records.
    pub fn images(&self) -> crate::images::ImageStore {
        crate::images::ImageStore::new(self.clone())
    }

    /// Each namespace's view of the snapshotters.
    pub fn snapshots(&self) -> crate::snapshots::SnapshotStore {
        crate::snapshots::SnapshotStore::new(self.clone())
    }

    /// The lease manager of this database.
    pub fn leases(&self) -> LeaseStore {
        LeaseStore::new(self.clone())
    }

    /// Collects garbage: removes the content and snapshot records that
    /// nothing references any more, and the leases that expired before `now`.
    ///
    /// The reachability scan runs in one read transaction, which never
    /// blocks writers; the removal runs in short write transactions (at
    /// most 1024 records each) that re-check whatever was written
    /// meanwhile. Blob files are **not**
    /// deleted: [`GcReport::removed_content`] lists the digests that no
    /// namespace references any more, whose files the caller deletes
    /// afterwards, outside any transaction. Collections never overlap: a
    /// second call waits for the first. See [`crate::gc`] for the rules.
    pub fn collect_garbage(&self, now: SystemTime) -> Result<GcReport> {
        let _one_at_a_time = self.inner.gc.lock().unwrap_or_else(PoisonError::into_inner);
        gc::collect(self, now)
    }

    /// Registers `f` to be called after every committed write (not the
    /// collector's own), with whether a deletion happened since the last
    /// collection began: what a garbage-collection scheduler counts
    /// (containerd's `RegisterMutationCallback`).
    pub fn on_mutation(&self, f: MutationCallback) {
        self.inner
            .on_mutation
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    /// Whether a deletion happened since the last collection began.
    pub fn is_dirty(&self) -> bool {
        self.inner.dirty.load(Ordering::SeqCst) > 0
    }

    /// Notes, inside a write transaction, that it deletes a record that may
    /// have held references (an image, container, lease, lease resource,
    /// content or snapshot record): the next collection has work to do.
    pub(crate) fn mark_dirty(&self) {
        self.inner.dirty.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `f` in a read transaction: a consistent snapshot, never blocked by writers.
    pub(crate) fn view<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self
            .inner
            .db
            .begin_read()
            .context("begin read transaction")?;
        f(&txn)
    }

    /// Begins the read transaction of a garbage collection's mark phase and
    /// starts tracking writes (see [`Db::track`]) from that snapshot on.
    ///
    /// Taking the write lock for a moment (without writing) orders this
    /// against every writer: a write transaction either committed before, so
    /// the snapshot holds it, or runs after, so it sees tracking switched on.
    pub(crate) fn begin_tracked_read(&self) -> Result<ReadTransaction> {
        let lock = self
            .inner
            .db
            .begin_write()
            .context("begin write transaction")?;
        *self.tracked() = Some(HashSet::new());
        // This collection sees every deletion committed so far; only later
        // ones make the next collection needed.
        self.inner.dirty.store(0, Ordering::SeqCst);
        let read = self.inner.db.begin_read().context("begin read transaction");
        if read.is_err() {
            *self.tracked() = None;
        }
        lock.abort().context("abort transaction")?;
        read
    }

    /// Records that the current write transaction created or changed `node`
    /// (a record that may add references), if a garbage collection is
    /// between its mark and its sweep; otherwise does nothing.
    ///
    /// Call it inside the write transaction's closure. The sweep treats
    /// tracked objects as live and keeps everything they reach, so a record
    /// written after the mark's snapshot is never collected on that
    /// snapshot's evidence. Tracking too much (say, in a transaction that
    /// then aborts) only makes a collection keep more.
    pub(crate) fn track(&self, node: Node) {
        if let Some(set) = self.tracked().as_mut() {
            set.insert(node);
        }
    }

    /// Stops tracking and returns what was tracked; the sweep calls this
    /// inside its write transaction, so no write can fall in between.
    pub(crate) fn take_tracked(&self) -> HashSet<Node> {
        self.tracked().take().unwrap_or_default()
    }

    /// What was tracked so far, tracking on (a sweep transaction that is not the last).
    pub(crate) fn tracked_now(&self) -> HashSet<Node> {
        self.tracked().clone().unwrap_or_default()
    }

    /// Stops tracking (an abandoned collection); idempotent.
    pub(crate) fn stop_tracking(&self) {
        *self.tracked() = None;
    }

    fn tracked(&self) -> MutexGuard<'_, Option<HashSet<Node>>> {
        // A panic while holding this lock cannot leave the set half-updated
        // in a way that matters: at worst it tracks an extra object.
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in a write transaction, committing if it returns `Ok` and
    /// aborting (writing nothing) if it returns `Err`.
    ///
    /// Writers are serialised, so keep `f` short: no I/O beyond the database.
    /// After a commit, every [`Db::on_mutation`] callback is called.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let out = self.update_unobserved(f)?;
        self.tell_mutation();
        Ok(out)
    }

    /// [`Db::update`], committed without waiting for the disk: the change
    /// is visible at once and reaches the disk with the next durable commit
    /// (or is lost in a crash before it). For writes a durable one follows.
    pub(crate) fn update_lazily<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let out = self.transact(false, |txn| f(txn).map(|out| (out, true)))?;
        self.tell_mutation();
        Ok(out)
    }

    /// Calls every [`Db::on_mutation`] callback, after a commit.
    fn tell_mutation(&self) {
        let dirty = self.is_dirty();
        let callbacks = self
            .inner
            .on_mutation
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for callback in callbacks {
            callback(dirty);
        }
    }

    /// [`Db::update`] without telling the mutation callbacks: the
    /// collector's own writes, which must not schedule another collection.
    pub(crate) fn update_unobserved<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        self.update_unobserved_if_written(|txn| f(txn).map(|out| (out, true)))
    }

    /// [`Db::update_unobserved`] for a transaction that may turn out to
    /// have written nothing: `f` says whether it wrote, and one that did
    /// not is aborted instead of committed, which spares the commit's
    /// fdatasync (an empty collection's sweep).
    pub(crate) fn update_unobserved_if_written<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool)>,
    ) -> Result<T> {
        self.transact(true, f)
    }

    /// Runs `f` in a write transaction (`durable`: the commit waits for the
    /// disk) and commits it if `f` says it wrote; aborts it otherwise or
    /// on an error.
    fn transact<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool)>,
    ) -> Result<T> {
        let mut txn = self
            .inner
            .db
            .begin_write()
            .context("begin write transaction")?;
        if !durable {
            txn.set_durability(redb::Durability::None);
        }
        match f(&txn) {
            Ok((out, true)) => {
                txn.commit().context("commit transaction")?;
                Ok(out)
            }
            Ok((out, false)) => {
                txn.abort().context("abort transaction")?;
                Ok(out)
            }
            Err(err) => {
                if let Err(abort) = txn.abort() {
                    warn!(error = %abort, "failed to abort metadata transaction");
                }
                Err(err)
            }
        }
    }
}

/// Checks or records the schema version and creates any missing table, in one transaction.
fn init_schema(db: &RecoveringDb, path: &Path) -> Result<()> {
    let mut txn = db.begin_write().context("begin write transaction")?;
    // Creating tables and the version record is idempotent: if this commit
    // is lost in a crash, the next open simply does it again. Skipping the
    // fsync keeps a fresh daemon's startup short.
    txn.set_durability(redb::Durability::None);
    {
        let mut meta = txn.open_table(schema::META).context("open table meta")?;
        let found = meta
            .get(SCHEMA_VERSION_KEY)
            .context("read schema version")?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
                    .context("record schema version")?;
                info!(path = %path.display(), version = SCHEMA_VERSION, "created metadata database");
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(1) => {
                // 1 -> 2 only adds tables, created below; no record changes
                // (no store wrote content or lease records in version 1).
                meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
                    .context("record schema version")?;
                info!(path = %path.display(), from = 1, to = SCHEMA_VERSION, "migrated metadata database");
            }
            Some(v) if v > SCHEMA_VERSION => {
                // Dropping `txn` aborts it: the file is left exactly as found.
                return Err(Error::SchemaVersion {
                    path: path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(v) => {
                // Version 1 is the first; there is nothing older to migrate.
                return Err(Error::FailedPrecondition(format!(
                    "metadata database {} has schema version {v}, and there is no migration \
                     from it to version {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
    }
    // Opening a table in a write transaction creates it if missing.
    txn.open_table(schema::NAMESPACES)
        .context("create table namespaces")?;
    txn.open_table(schema::NAMESPACE_LABELS)
        .context("create table namespace_labels")?;
    txn.open_table(schema::IMAGES)
        .context("create table images")?;
    txn.open_table(schema::CONTAINERS)
        .context("create table containers")?;
    txn.open_table(schema::CONTENT)
        .context("create table content")?;
    txn.open_table(schema::LEASES)
        .context("create table leases")?;
    txn.open_table(schema::LEASE_RESOURCES)
        .context("create table lease_resources")?;
    txn.open_table(schema::SNAPSHOTS)
        .context("create table snapshots")?;
    txn.open_table(schema::RELEASED_CONTENT)
        .context("create table released_content")?;
    txn.commit().context("commit schema")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::TableHandle;

    use super::*;

    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn db_is_clone_send_sync() {
        assert_shareable::<Db>();
    }

    #[test]
    fn writes_report_whether_a_deletion_happened_since_the_last_collection() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        db.on_mutation(Arc::new(move |dirty| log.lock().unwrap().push(dirty)));
        let leases = db.leases();
        leases.create("ns", "a", crate::Labels::new()).unwrap();
        leases.create("ns", "b", crate::Labels::new()).unwrap();
        leases.delete("ns", "a").unwrap();
        // A failed deletion commits nothing and reports nothing.
        assert!(leases.delete("ns", "nope").is_err());
        leases.create("ns", "c", crate::Labels::new()).unwrap();
        assert_eq!(*seen.lock().unwrap(), [false, false, true, true]);
        // A collection resets the flag and reports nothing itself.
        db.collect_garbage(SystemTime::now()).unwrap();
        assert!(!db.is_dirty());
        leases.create("ns", "d", crate::Labels::new()).unwrap();
        assert_eq!(*seen.lock().unwrap(), [false, false, true, true, false]);
    }

    #[test]
    fn open_creates_file_and_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/meta.db");
        let db = Db::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(db.path(), path);
        assert!(format!("{db:?}").contains("meta.db"));
    }

    #[test]
    fn open_creates_every_table_and_records_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        let tables: Vec<String> = db
            .view(|txn| {
                Ok(txn
                    .list_tables()
                    .context("list")?
                    .map(|t| t.name().to_owned())
                    .collect())
            })
            .unwrap();
        for name in [
            "meta",
            "namespaces",
            "namespace_labels",
            "images",
            "containers",
            "content",
            "leases",
            "lease_resources",
            "snapshots",
            "released_content",
        ] {
            assert!(tables.iter().any(|t| t == name), "missing table {name}");
        }
        let version = db
            .view(|txn| {
                let meta = txn.open_table(schema::META).context("open")?;
                Ok(meta
                    .get(SCHEMA_VERSION_KEY)
                    .context("get")?
                    .map(|v| v.value()))
            })
            .unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
    }

    #[test]
    fn reopen_keeps_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let db = Db::open(&path).unwrap();
        db.namespaces().create("kept", [("team", "a")]).unwrap();
        drop(db);
        assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
        let db = Db::open(&path).unwrap();
        assert!(
            db.namespaces().exists("kept").unwrap(),
            "data survives a reopen"
        );
        drop(db);
        assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
    }

    /// The schema version recorded in the file at `path`, read without Db.
    fn stored_version(path: &Path) -> Option<u64> {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(schema::META).unwrap();
        meta.get(SCHEMA_VERSION_KEY).unwrap().map(|v| v.value())
    }

    fn write_version(path: &Path, version: u64) {
        let db = Db::open(path).unwrap();
        db.update(|txn| {
            let mut meta = txn.open_table(schema::META).context("open")?;
            meta.insert(SCHEMA_VERSION_KEY, version).context("insert")?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        write_version(&path, SCHEMA_VERSION + 1);

        let err = Db::open(&path).unwrap_err();
        match &err {
            Error::SchemaVersion {
                found, supported, ..
            } => {
                assert_eq!(*found, SCHEMA_VERSION + 1);
                assert_eq!(*supported, SCHEMA_VERSION);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("refusing to open"), "{err}");

        // Still refused: the failed open did not rewrite the version.
        assert!(matches!(Db::open(&path), Err(Error::SchemaVersion { .. })));
    }

    #[test]
    fn version_1_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        // A version 1 file: the version record, and none of the v2 tables.
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(schema::META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, 1)
                .unwrap();
            txn.open_table(schema::NAMESPACES)
                .unwrap()
                .insert("default", ())
                .unwrap();
            txn.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert!(db.namespaces().exists("default").unwrap());
        let version = db
            .view(|txn| {
                let meta = txn.open_table(schema::META).context("open")?;
                Ok(meta
                    .get(SCHEMA_VERSION_KEY)
                    .context("get")?
                    .map(|v| v.value()))
            })
            .unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
        db.leases()
            .create("default", "l", Default::default())
            .unwrap();
    }

    #[test]
    fn older_schema_without_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        write_version(&path, 0);
        assert!(matches!(Db::open(&path), Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn garbage_file_is_a_db_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        std::fs::write(&path, b"this is not a redb file, just some bytes").unwrap();
        let err = Db::open(&path).unwrap_err();
        assert!(matches!(err, Error::Db { .. }), "{err:?}");
    }

    #[test]
    fn parent_that_is_a_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let err = Db::open(blocker.join("meta.db")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn second_open_of_same_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let _db = Db::open(&path).unwrap();
        assert!(matches!(Db::open(&path), Err(Error::Db { .. })));
    }

    #[test]
    fn failed_update_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        let res: Result<()> = db.update(|txn| {
            let mut t = txn.open_table(schema::NAMESPACES).context("open")?;
            t.insert("ghost", ()).context("insert")?;
            Err(Error::InvalidArgument("changed my mind".into()))
        });
        assert!(res.is_err());
        assert!(!db.namespaces().exists("ghost").unwrap());
    }
}
