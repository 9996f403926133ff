//! Namespaced, leased snapshotters (containerd's `metadata/snapshot.go`):
//! a [`MetaSnapshotter`] wraps one driver with the [`Db`], and each
//! namespace sees it through a [`NamespacedSnapshotter`], which implements
//! berth-snapshots' [`Snapshotter`].
//!
//! Drivers (built-in or proxies) have one flat key space and no labels the
//! collector can see. Here each namespace gets its own keys on each driver:
//! namespace `ns`'s key `k` is the driver's snapshot `ns/<sequence>/k`,
//! recorded in the DB ([`crate::snapshots`]) with its parent, kind, labels
//! and, with a lease, in the lease. Snapshots of namespace `a` are
//! [`NotFound`](berth_snapshots::Error::NotFound) from namespace `b`, and
//! both may use the same keys.
//!
//! Order of work, so a crash never leaves a record without its snapshot:
//! new snapshots are made in the driver first and recorded second; commits
//! are recorded as pending, done in the driver, then finished
//! ([`MetaSnapshotter::recover`] settles the ones a crash interrupted);
//! removals delete the record and answer, as containerd's do, and the
//! driver's snapshot is removed later ([`MetaSnapshotter::remove_pending`],
//! in the order the removals were asked for, or by
//! [`MetaSnapshotter::reconcile`], which removes every driver snapshot no
//! record refers to, under a lock that keeps in-flight creations out).
//!
//! Every method blocks (DB transactions, driver work): from async code call
//! it through `spawn_blocking`.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_snapshots::{DirectApply, Info, Kind, Labels, Mount, Snapshotter, Usage, Whiteouts};

use crate::db::Db;
use crate::snapshots::{SnapshotKind, SnapshotRecord};

/// Told of each change a [`NamespacedSnapshotter`] makes, after it is made
/// (berthd publishes them as `/snapshot/*` events and starts the driver's
/// part of removals). Every method does nothing by default.
pub trait SnapshotObserver: Send + Sync {
    /// Active snapshot or view `key` was created on `parent`.
    fn prepared(&self, sn: &Arc<MetaSnapshotter>, ns: &str, key: &str, parent: Option<&str>) {
        let _ = (sn, ns, key, parent);
    }

    /// Active snapshot `key` was committed as `name`.
    fn committed(&self, sn: &Arc<MetaSnapshotter>, ns: &str, name: &str, key: &str) {
        let _ = (sn, ns, name, key);
    }

    /// The record of `key` was removed; its driver snapshot waits for
    /// [`MetaSnapshotter::remove_pending`] (or the next reconcile).
    fn removed(&self, sn: &Arc<MetaSnapshotter>, ns: &str, key: &str) {
        let _ = (sn, ns, key);
    }
}

/// One snapshotter driver with the metadata DB: the part shared by every
/// namespace. Make views with [`MetaSnapshotter::namespace`].
pub struct MetaSnapshotter {
    name: String,
    driver: Arc<dyn Snapshotter>,
    db: Db,
    /// Read: a creation between its driver call and its record. Write: reconcile.
    creating: RwLock<()>,
    /// Backend names whose records are gone, in the order they went.
    removals: Mutex<VecDeque<String>>,
    /// Held while driver snapshots are removed: removals happen one at a
    /// time, in order (a child before its parent), and reconcile sees them done.
    removing: Mutex<()>,
    seq: AtomicU64,
    observer: Option<Arc<dyn SnapshotObserver>>,
}

impl std::fmt::Debug for MetaSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaSnapshotter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A metadata error as a snapshot error, category and message kept.
pub fn snapshot_error(e: crate::Error) -> berth_snapshots::Error {
    use crate::Error as M;
    use berth_snapshots::Error as S;
    match e {
        M::NotFound(m) => S::NotFound(m),
        M::AlreadyExists(m) => S::AlreadyExists(m),
        M::InvalidArgument(m) => S::InvalidArgument(m),
        M::FailedPrecondition(m) => S::FailedPrecondition(m),
        other => S::io("metadata", std::io::Error::other(other.to_string())),
    }
}

fn kind_of(k: SnapshotKind) -> Kind {
    match k {
        SnapshotKind::View => Kind::View,
        SnapshotKind::Active => Kind::Active,
        SnapshotKind::Committed => Kind::Committed,
    }
}

/// The [`Info`] a namespace sees for its record.
pub fn info_of(r: &SnapshotRecord) -> Info {
    Info {
        kind: kind_of(r.kind),
        name: r.key.clone(),
        parent: r.parent.clone(),
        labels: r.labels.clone(),
        created: r.created_at,
        updated: r.updated_at,
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetaSnapshotter {
    /// Driver `driver`, loaded as snapshotter `name`, recorded in `db`.
    pub fn new(db: Db, name: impl Into<String>, driver: Arc<dyn Snapshotter>) -> MetaSnapshotter {
        // Backend names must never repeat, across restarts too: start the
        // sequence at the clock, which only a large step back could revisit
        // (and a clash is then an AlreadyExists from the driver).
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1);
        MetaSnapshotter {
            name: name.into(),
            driver,
            db,
            creating: RwLock::new(()),
            removals: Mutex::new(VecDeque::new()),
            removing: Mutex::new(()),
            seq: AtomicU64::new(start),
            observer: None,
        }
    }

    /// Tells `observer` of every change made through this snapshotter's views.
    pub fn with_observer(mut self, observer: Arc<dyn SnapshotObserver>) -> MetaSnapshotter {
        self.observer = Some(observer);
        self
    }

    /// The name the snapshotter is loaded as (`overlayfs`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn Snapshotter> {
        &self.driver
    }

    /// Namespace `ns`'s view, with no lease.
    pub fn namespace(self: &Arc<Self>, ns: impl Into<String>) -> NamespacedSnapshotter {
        NamespacedSnapshotter {
            sn: self.clone(),
            ns: ns.into(),
            lease: None,
        }
    }

    fn backend_name(&self, ns: &str, key: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{ns}/{n}/{key}")
    }

    /// Removes from the driver, in order, the snapshots whose records were
    /// removed; returns how many. A failure is logged and left to
    /// [`MetaSnapshotter::reconcile`].
    pub fn remove_pending(&self) -> usize {
        let _turn = lock(&self.removing);
        self.drain_removals()
    }

    /// [`MetaSnapshotter::remove_pending`] with `removing` held.
    fn drain_removals(&self) -> usize {
        let mut removed = 0;
        loop {
            let Some(backend) = lock(&self.removals).pop_front() else {
                return removed;
            };
            match self.driver.remove(&backend) {
                Ok(()) => removed += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(snapshot = %backend, snapshotter = %self.name, error = %e, "cannot remove snapshot from its driver yet");
                }
            }
        }
    }

    /// Finishes or rolls back the commits a crash interrupted; returns how
    /// many were settled.
    pub fn recover(&self) -> usize {
        let store = self.db.snapshots();
        let pending = match store.pending_commits() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interrupted snapshot commits");
                return 0;
            }
        };
        let mut settled = 0;
        for p in pending.into_iter().filter(|p| p.snapshotter == self.name) {
            let done = match self.driver.stat(&p.backend_name) {
                Ok(info) => info.kind == Kind::Committed,
                Err(e) if e.is_not_found() => false,
                Err(e) => {
                    tracing::warn!(error = %e, key = %p.key, "cannot check an interrupted commit");
                    continue;
                }
            };
            match store.finish_commit(&p.namespace, &p.snapshotter, &p.key, done, None) {
                Ok(_) => {
                    settled += 1;
                    tracing::info!(
                        namespace = %p.namespace, key = %p.key, name = %p.name, finished = done,
                        "recovered an interrupted snapshot commit"
                    );
                }
                Err(e) => tracing::warn!(error = %e, key = %p.key, "cannot recover a commit"),
            }
        }
        settled
    }

    /// Removes the driver's snapshots that no namespace's record refers to
    /// (children before parents); returns how many were removed.
    pub fn reconcile(&self) -> berth_snapshots::Result<usize> {
        let _exclusive = self
            .creating
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let _turn = lock(&self.removing);
        let mut removed = self.drain_removals();
        let keep = self
            .db
            .snapshots()
            .backend_names(&self.name)
            .map_err(snapshot_error)?;
        let mut orphans: Vec<Info> = Vec::new();
        self.driver.walk(&mut |i| {
            if !keep.contains(&i.name) {
                orphans.push(i.clone());
            }
            Ok(())
        })?;
        // Leaves first: a parent goes once none of its children remain.
        while !orphans.is_empty() {
            let parents: HashSet<String> =
                orphans.iter().filter_map(|i| i.parent.clone()).collect();
            let (leaves, rest): (Vec<Info>, Vec<Info>) = orphans
                .into_iter()
                .partition(|i| !parents.contains(&i.name));
            if leaves.is_empty() {
                break;
            }
            for leaf in &leaves {
                match self.driver.remove(&leaf.name) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(name = %leaf.name, error = %e, "cannot remove orphaned snapshot");
                    }
                }
            }
            orphans = rest;
        }
        if removed > 0 {
            tracing::info!(snapshotter = %self.name, removed, "removed orphaned snapshots");
        }
        Ok(removed)
    }

    /// Reconciles, then asks the driver to reclaim what no snapshot uses.
    pub fn cleanup(&self) -> berth_snapshots::Result<()> {
        self.reconcile()?;
        self.driver.cleanup()
    }
}

/// Snapshotter `sn` as namespace `ns` sees it, creating into an optional
/// lease. See the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct NamespacedSnapshotter {
    sn: Arc<MetaSnapshotter>,
    ns: String,
    lease: Option<String>,
}

impl std::fmt::Debug for NamespacedSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespacedSnapshotter")
            .field("snapshotter", &self.sn.name)
            .field("ns", &self.ns)
            .field("lease", &self.lease)
            .finish()
    }
}

impl NamespacedSnapshotter {
    /// The same view, holding what it creates and commits in `lease`
    /// (containerd's `containerd-lease` header).
    pub fn with_lease(mut self, lease: Option<String>) -> NamespacedSnapshotter {
        self.lease = lease;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The shared snapshotter this is a view of.
    pub fn snapshotter(&self) -> &Arc<MetaSnapshotter> {
        &self.sn
    }

    /// The driver's name for the namespace's `key`.
    pub fn backend_name(&self, key: &str) -> berth_snapshots::Result<String> {
        Ok(self.record(key)?.backend_name)
    }

    fn record(&self, key: &str) -> berth_snapshots::Result<SnapshotRecord> {
        self.sn
            .db
            .snapshots()
            .get(&self.ns, &self.sn.name, key)
            .map_err(snapshot_error)
    }

    /// Creates active snapshot (or, with `view`, a view) `key` on `parent`.
    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        view: bool,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        let sn = &self.sn;
        let store = sn.db.snapshots();
        let mounts = {
            let _creating = read(&sn.creating);
            let parent_backend = store
                .check_new(&self.ns, &sn.name, key, parent)
                .map_err(snapshot_error)?;
            let backend = sn.backend_name(&self.ns, key);
            // Only the labels drivers act on reach them; the rest live in metadata.
            let inherited = berth_snapshots::inherited_labels(&labels);
            let mounts = if view {
                sn.driver
                    .view(&backend, parent_backend.as_deref(), inherited)?
            } else {
                sn.driver
                    .prepare(&backend, parent_backend.as_deref(), inherited)?
            };
            let kind = if view {
                SnapshotKind::View
            } else {
                SnapshotKind::Active
            };
            let recorded = store.create(
                &self.ns,
                &sn.name,
                key,
                parent,
                kind,
                &backend,
                labels,
                self.lease.as_deref(),
            );
            if let Err(e) = recorded {
                // Lost a race for the key, or a lease vanished: undo the driver's part.
                let _ = sn.driver.remove(&backend);
                return Err(snapshot_error(e));
            }
            mounts
        };
        if let Some(o) = &sn.observer {
            o.prepared(sn, &self.ns, key, parent);
        }
        Ok(mounts)
    }

    fn direct(&self) -> berth_snapshots::Result<&dyn DirectApply> {
        self.sn.driver.direct_apply().ok_or_else(|| {
            berth_snapshots::Error::FailedPrecondition(format!(
                "snapshotter {} cannot be written directly",
                self.sn.name
            ))
        })
    }
}

impl Snapshotter for NamespacedSnapshotter {
    fn stat(&self, key: &str) -> berth_snapshots::Result<Info> {
        Ok(info_of(&self.record(key)?))
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> berth_snapshots::Result<Info> {
        let paths: Vec<String> = fieldpaths.iter().map(ToString::to_string).collect();
        let r = self
            .sn
            .db
            .snapshots()
            .update(&self.ns, &self.sn.name, &info.name, info.labels, &paths)
            .map_err(snapshot_error)?;
        Ok(info_of(&r))
    }

    fn usage(&self, key: &str) -> berth_snapshots::Result<Usage> {
        let backend = self.backend_name(key)?;
        self.sn.driver.usage(&backend)
    }

    fn mounts(&self, key: &str) -> berth_snapshots::Result<Vec<Mount>> {
        let backend = self.backend_name(key)?;
        self.sn.driver.mounts(&backend)
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        self.create(key, parent, labels, false)
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        self.create(key, parent, labels, true)
    }

    /// Commits in the driver and records the committed snapshot in the
    /// namespace and the lease.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> berth_snapshots::Result<()> {
        let sn = &self.sn;
        {
            let _creating = read(&sn.creating);
            let store = sn.db.snapshots();
            let backend = sn.backend_name(&self.ns, name);
            let inherited = berth_snapshots::inherited_labels(&labels);
            let active = store
                .begin_commit(&self.ns, &sn.name, name, key, &backend, labels)
                .map_err(snapshot_error)?;
            let committed = sn.driver.commit(&backend, &active.backend_name, inherited);
            store
                .finish_commit(
                    &self.ns,
                    &sn.name,
                    key,
                    committed.is_ok(),
                    self.lease.as_deref(),
                )
                .map_err(snapshot_error)?;
            committed?;
        }
        if let Some(o) = &sn.observer {
            o.committed(sn, &self.ns, name, key);
        }
        Ok(())
    }

    /// Removes the record (FailedPrecondition while the snapshot has
    /// children) and answers; the driver's snapshot goes with
    /// [`MetaSnapshotter::remove_pending`] or the next reconcile.
    fn remove(&self, key: &str) -> berth_snapshots::Result<()> {
        let sn = &self.sn;
        let record = sn
            .db
            .snapshots()
            .remove(&self.ns, &sn.name, key)
            .map_err(snapshot_error)?;
        lock(&sn.removals).push_back(record.backend_name);
        if let Some(o) = &sn.observer {
            o.removed(sn, &self.ns, key);
        }
        Ok(())
    }

    fn walk(
        &self,
        f: &mut dyn FnMut(&Info) -> berth_snapshots::Result<()>,
    ) -> berth_snapshots::Result<()> {
        let records = self
            .sn
            .db
            .snapshots()
            .list(&self.ns, &self.sn.name)
            .map_err(snapshot_error)?;
        records.iter().map(info_of).try_for_each(|i| f(&i))
    }

    /// The driver's garbage is everyone's: this reconciles the driver with
    /// every namespace's records, then runs the driver's own cleanup.
    fn cleanup(&self) -> berth_snapshots::Result<()> {
        self.sn.cleanup()
    }

    fn direct_apply(&self) -> Option<&dyn DirectApply> {
        self.sn
            .driver
            .direct_apply()
            .map(|_| self as &dyn DirectApply)
    }
}

impl DirectApply for NamespacedSnapshotter {
    fn whiteouts(&self) -> Whiteouts {
        self.sn
            .driver
            .direct_apply()
            .map_or(Whiteouts::Remove, DirectApply::whiteouts)
    }

    fn writable_dir(&self, key: &str) -> berth_snapshots::Result<PathBuf> {
        let backend = self.backend_name(key)?;
        self.direct()?.writable_dir(&backend)
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.sn
            .driver
            .direct_apply()
            .and_then(DirectApply::staging_dir)
    }

    fn adopt(&self, key: &str, staged: &Path) -> berth_snapshots::Result<()> {
        let backend = self.backend_name(key)?;
        self.direct()?.adopt(&backend, staged)
    }
}
