//! Namespaced snapshotters: containerd's metadata snapshotter for berthd.
//!
//! Drivers (built-in or proxies) have one flat key space and no labels that
//! the collector can see. `Snapshotters` gives each namespace its own keys
//! on each driver: namespace `ns`'s key `k` is the driver's snapshot
//! `ns/<sequence>/k`, recorded in the metadata DB
//! ([`berth_metadata::SnapshotStore`]) with its parent, kind and labels.
//! Everything that uses snapshots in berthd (the Snapshots API, image unpack,
//! containers) goes through here, so events and leases are uniform.
//!
//! Order of work, so a crash never leaves a record without its snapshot:
//! new snapshots are made in the driver first and recorded second; commits
//! are recorded as pending, done, then finished; removals delete the record
//! first. Driver snapshots no record refers to are removed by
//! `Snapshotters::reconcile`, run at startup and after each garbage
//! collection, under a lock that keeps in-flight creations out.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_events::Exchange;
use berth_metadata::{Db, SnapshotKind, SnapshotRecord};
use berth_snapshots::{Info, Kind, Labels, Mount, Snapshotter, Usage};
use tokio::sync::RwLock;

use crate::wire::pack;

/// Why a namespaced snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No snapshotter by that name is loaded.
    #[error("snapshotter {0:?} was not found (see `ctr plugins ls` for the loaded ones)")]
    UnknownSnapshotter(String),
    /// The metadata DB refused or failed.
    #[error(transparent)]
    Metadata(#[from] berth_metadata::Error),
    /// The driver refused or failed.
    #[error(transparent)]
    Driver(#[from] berth_snapshots::Error),
    /// A blocking task died.
    #[error("snapshot task failed: {0}")]
    Task(String),
}

impl berth_api::ErrorCategory for Error {
    fn category(&self) -> berth_api::Category {
        use berth_api::Category;
        match self {
            Error::UnknownSnapshotter(_) => Category::InvalidArgument,
            Error::Metadata(m) => m.category(),
            Error::Driver(d) => d.category(),
            Error::Task(_) => Category::Internal,
        }
    }
}

/// Results of namespaced snapshot operations.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// One loaded driver and the locks that order its work.
struct Driver {
    sn: Arc<dyn Snapshotter>,
    /// Read: a creation between its driver call and its record. Write: reconcile.
    creating: RwLock<()>,
    /// Held by the driver's part of a removal (which runs after the reply,
    /// see [`Snapshotters::remove`]) and by reconcile: removals happen one
    /// at a time, in the order they were asked for (a child before its
    /// parent), and reconcile sees them done.
    removing: Arc<tokio::sync::Mutex<()>>,
}

/// A snapshotter plugin's instance: the driver berthd wraps.
#[derive(Clone)]
pub struct SnapshotterPlugin(pub Arc<dyn Snapshotter>);

impl std::fmt::Debug for SnapshotterPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotterPlugin")
    }
}

/// Every loaded snapshotter, seen per namespace (see the module docs).
pub(crate) struct Snapshotters {
    drivers: BTreeMap<String, Driver>,
    db: Db,
    exchange: Arc<Exchange>,
    seq: AtomicU64,
}

impl std::fmt::Debug for Snapshotters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotters")
            .field("drivers", &self.drivers.keys().collect::<Vec<_>>())
            .finish()
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
pub(crate) fn info_of(r: &SnapshotRecord) -> Info {
    Info {
        kind: kind_of(r.kind),
        name: r.key.clone(),
        parent: r.parent.clone(),
        labels: r.labels.clone(),
        created: r.created_at,
        updated: r.updated_at,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

impl Snapshotters {
    /// Namespaced access to `drivers` (name → driver), recording in `db`
    /// and publishing `/snapshot/*` events on `exchange`.
    pub(crate) fn new(
        drivers: BTreeMap<String, Arc<dyn Snapshotter>>,
        db: Db,
        exchange: Arc<Exchange>,
    ) -> Snapshotters {
        // Backend names must never repeat, across restarts too: start the
        // sequence at the clock, which only a large step back could revisit
        // (and a clash is then an AlreadyExists from the driver, retried).
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1);
        Snapshotters {
            drivers: drivers
                .into_iter()
                .map(|(name, sn)| {
                    (
                        name,
                        Driver {
                            sn,
                            creating: RwLock::new(()),
                            removing: Arc::new(tokio::sync::Mutex::new(())),
                        },
                    )
                })
                .collect(),
            db,
            exchange,
            seq: AtomicU64::new(start),
        }
    }

    fn driver(&self, name: &str) -> Result<&Driver> {
        self.drivers
            .get(name)
            .ok_or_else(|| Error::UnknownSnapshotter(name.to_owned()))
    }

    fn backend_name(&self, ns: &str, key: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{ns}/{n}/{key}")
    }

    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        if let Err(e) = self.exchange.publish(ns, topic, event) {
            tracing::warn!(error = %e, topic, "cannot publish snapshot event");
        }
    }

    /// Creates active snapshot (or, with `view`, a view) `key` on `parent`
    /// in namespace `ns`, held by `lease` if given; returns its mounts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        lease: Option<&str>,
        view: bool,
    ) -> Result<Vec<Mount>> {
        let driver = self.driver(snapshotter)?;
        let _creating = driver.creating.read().await;
        let store = self.db.snapshots();
        let (ns_o, sn_o, key_o) = (ns.to_owned(), snapshotter.to_owned(), key.to_owned());
        let parent_o = parent.map(str::to_owned);
        let parent_backend = {
            let store = store.clone();
            blocking(move || Ok(store.check_new(&ns_o, &sn_o, &key_o, parent_o.as_deref())?))
                .await?
        };
        let backend = self.backend_name(ns, key);
        // Only the labels drivers act on reach them; the rest live in metadata.
        let inherited = berth_snapshots::inherited_labels(&labels);
        let mounts = {
            let (sn, backend, parent_backend) =
                (driver.sn.clone(), backend.clone(), parent_backend.clone());
            blocking(move || {
                Ok(if view {
                    sn.view(&backend, parent_backend.as_deref(), inherited)?
                } else {
                    sn.prepare(&backend, parent_backend.as_deref(), inherited)?
                })
            })
            .await?
        };
        let kind = if view {
            SnapshotKind::View
        } else {
            SnapshotKind::Active
        };
        let recorded = {
            let (ns, sn, key, backend) = (
                ns.to_owned(),
                snapshotter.to_owned(),
                key.to_owned(),
                backend.clone(),
            );
            let (parent, lease) = (parent.map(str::to_owned), lease.map(str::to_owned));
            blocking(move || {
                Ok(store.create(
                    &ns,
                    &sn,
                    &key,
                    parent.as_deref(),
                    kind,
                    &backend,
                    labels,
                    lease.as_deref(),
                )?)
            })
            .await
        };
        if let Err(e) = recorded {
            // Lost a race for the key, or a lease vanished: undo the driver's part.
            let sn = driver.sn.clone();
            let _ = blocking(move || Ok(sn.remove(&backend)?)).await;
            return Err(e);
        }
        self.publish(
            ns,
            "/snapshot/prepare",
            pack(&SnapshotPrepare {
                key: key.to_owned(),
                parent: parent.unwrap_or_default().to_owned(),
                snapshotter: snapshotter.to_owned(),
            }),
        );
        Ok(mounts)
    }

    /// Commits active `key` of namespace `ns` as `name`, held by `lease` if given.
    pub(crate) async fn commit(
        &self,
        ns: &str,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<()> {
        let driver = self.driver(snapshotter)?;
        let _creating = driver.creating.read().await;
        let store = self.db.snapshots();
        let backend = self.backend_name(ns, name);
        let inherited = berth_snapshots::inherited_labels(&labels);
        let active = {
            let (store, ns, sn, name, key, backend) = (
                store.clone(),
                ns.to_owned(),
                snapshotter.to_owned(),
                name.to_owned(),
                key.to_owned(),
                backend.clone(),
            );
            blocking(move || Ok(store.begin_commit(&ns, &sn, &name, &key, &backend, labels)?))
                .await?
        };
        let committed = {
            let (sn, backend, from) = (driver.sn.clone(), backend.clone(), active.backend_name);
            blocking(move || Ok(sn.commit(&backend, &from, inherited)?)).await
        };
        let (ns_o, sn_o, key_o, lease_o) = (
            ns.to_owned(),
            snapshotter.to_owned(),
            key.to_owned(),
            lease.map(str::to_owned),
        );
        let done = committed.is_ok();
        blocking(move || {
            Ok(store.finish_commit(&ns_o, &sn_o, &key_o, done, lease_o.as_deref())?)
        })
        .await?;
        committed?;
        self.publish(
            ns,
            "/snapshot/commit",
            pack(&SnapshotCommit {
                key: key.to_owned(),
                name: name.to_owned(),
                snapshotter: snapshotter.to_owned(),
            }),
        );
        Ok(())
    }

    /// Removes `key` of namespace `ns` (FailedPrecondition while it has children).
    ///
    /// Returns once the record is gone, as containerd's metadata
    /// snapshotter does (its garbage collector removes the driver's
    /// snapshot later): the driver's part (its own commit, the directory
    /// tree) runs after the reply, in order with the other removals.
    pub(crate) async fn remove(&self, ns: &str, snapshotter: &str, key: &str) -> Result<()> {
        let driver = self.driver(snapshotter)?;
        let store = self.db.snapshots();
        let (ns_o, sn_o, key_o) = (ns.to_owned(), snapshotter.to_owned(), key.to_owned());
        let record = blocking(move || Ok(store.remove(&ns_o, &sn_o, &key_o)?)).await?;
        let sn = driver.sn.clone();
        let backend = record.backend_name;
        // Taken here, so removals reach the driver in the order asked for.
        let turn = driver.removing.clone().lock_owned().await;
        let (key_o, sn_o) = (key.to_owned(), snapshotter.to_owned());
        tokio::spawn(async move {
            if let Err(e) = blocking(move || Ok(sn.remove(&backend)?)).await {
                // The record is gone; reconciliation retries the driver's part.
                tracing::warn!(key = %key_o, snapshotter = %sn_o, error = %e, "cannot remove snapshot from its driver yet");
            }
            drop(turn);
        });
        self.publish(
            ns,
            "/snapshot/remove",
            pack(&SnapshotRemove {
                key: key.to_owned(),
                snapshotter: snapshotter.to_owned(),
            }),
        );
        Ok(())
    }

    /// The record of `key` in namespace `ns`.
    pub(crate) async fn stat(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Info> {
        self.driver(snapshotter)?;
        let store = self.db.snapshots();
        let (ns, sn, key) = (ns.to_owned(), snapshotter.to_owned(), key.to_owned());
        blocking(move || Ok(info_of(&store.get(&ns, &sn, &key)?))).await
    }

    /// Changes labels of `key` by containerd's field paths.
    pub(crate) async fn update(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        labels: Labels,
        paths: Vec<String>,
    ) -> Result<Info> {
        self.driver(snapshotter)?;
        let store = self.db.snapshots();
        let (ns, sn, key) = (ns.to_owned(), snapshotter.to_owned(), key.to_owned());
        blocking(move || Ok(info_of(&store.update(&ns, &sn, &key, labels, &paths)?))).await
    }

    /// Every snapshot of namespace `ns` in `snapshotter`.
    pub(crate) async fn list(&self, ns: &str, snapshotter: &str) -> Result<Vec<Info>> {
        self.driver(snapshotter)?;
        let store = self.db.snapshots();
        let (ns, sn) = (ns.to_owned(), snapshotter.to_owned());
        blocking(move || Ok(store.list(&ns, &sn)?.iter().map(info_of).collect())).await
    }

    /// The mounts of active snapshot or view `key`.
    pub(crate) async fn mounts(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<Vec<Mount>> {
        let driver = self.driver(snapshotter)?;
        let backend = self.backend_of(ns, snapshotter, key).await?;
        let sn = driver.sn.clone();
        blocking(move || Ok(sn.mounts(&backend)?)).await
    }

    /// The disk usage of `key` (its own files).
    pub(crate) async fn usage(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Usage> {
        let driver = self.driver(snapshotter)?;
        let backend = self.backend_of(ns, snapshotter, key).await?;
        let sn = driver.sn.clone();
        blocking(move || Ok(sn.usage(&backend)?)).await
    }

    /// Asks the driver to reclaim what no snapshot uses.
    pub(crate) async fn cleanup(&self, snapshotter: &str) -> Result<()> {
        self.reconcile(snapshotter).await?;
        let sn = self.driver(snapshotter)?.sn.clone();
        blocking(move || Ok(sn.cleanup()?)).await
    }

    /// The driver loaded as `name`.
    pub(crate) fn driver_of(&self, name: &str) -> Result<Arc<dyn Snapshotter>> {
        Ok(self.driver(name)?.sn.clone())
    }

    /// The driver's name for `key` of namespace `ns`.
    pub(crate) async fn backend_of(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<String> {
        let store = self.db.snapshots();
        let (ns, sn, key) = (ns.to_owned(), snapshotter.to_owned(), key.to_owned());
        blocking(move || Ok(store.get(&ns, &sn, &key)?.backend_name)).await
    }

    /// Finishes or rolls back commits a crash interrupted, in every driver.
    pub(crate) async fn recover(&self) {
        let store = self.db.snapshots();
        let pending = match blocking(move || Ok(store.pending_commits()?)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interrupted snapshot commits");
                return;
            }
        };
        for p in pending {
            let Ok(driver) = self.driver(&p.snapshotter) else {
                continue;
            };
            let sn = driver.sn.clone();
            let backend = p.backend_name.clone();
            let done = match blocking(move || Ok(sn.stat(&backend)?)).await {
                Ok(info) => info.kind == Kind::Committed,
                Err(Error::Driver(e)) if e.is_not_found() => false,
                Err(e) => {
                    tracing::warn!(error = %e, key = %p.key, "cannot check an interrupted commit");
                    continue;
                }
            };
            let store = self.db.snapshots();
            let q = p.clone();
            let r = blocking(move || {
                Ok(store.finish_commit(&q.namespace, &q.snapshotter, &q.key, done, None)?)
            })
            .await;
            match r {
                Ok(_) => tracing::info!(
                    namespace = %p.namespace, key = %p.key, name = %p.name, finished = done,
                    "recovered an interrupted snapshot commit"
                ),
                Err(e) => tracing::warn!(error = %e, key = %p.key, "cannot recover a commit"),
            }
        }
    }

    /// Removes the driver's snapshots that no namespace's record refers to
    /// (children before parents); returns how many were removed.
    pub(crate) async fn reconcile(&self, snapshotter: &str) -> Result<usize> {
        let driver = self.driver(snapshotter)?;
        let _exclusive = driver.creating.write().await;
        let _removals_done = driver.removing.lock().await;
        let store = self.db.snapshots();
        let sn_name = snapshotter.to_owned();
        let sn = driver.sn.clone();
        blocking(move || {
            let keep = store.backend_names(&sn_name)?;
            let mut orphans: Vec<Info> = Vec::new();
            sn.walk(&mut |i| {
                if !keep.contains(&i.name) {
                    orphans.push(i.clone());
                }
                Ok(())
            })?;
            let mut removed = 0;
            // Leaves first: a parent goes once none of its children remain.
            while !orphans.is_empty() {
                let parents: HashSet<String> =
                    orphans.iter().filter_map(|i| i.parent.clone()).collect();
                let (leaves, rest): (Vec<Info>, Vec<Info>) =
                    orphans.into_iter().partition(|i| !parents.contains(&i.name));
                if leaves.is_empty() {
                    break;
                }
                for leaf in &leaves {
                    match sn.remove(&leaf.name) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(name = %leaf.name, error = %e, "cannot remove orphaned snapshot"),
                    }
                }
                orphans = rest;
            }
            if removed > 0 {
                tracing::info!(snapshotter = %sn_name, removed, "removed orphaned snapshots");
            }
            Ok(removed)
        })
        .await
    }

    /// Reconciles every driver (after a garbage collection, at startup).
    pub(crate) async fn reconcile_all(&self) {
        for name in self.drivers.keys() {
            if let Err(e) = self.reconcile(name).await {
                tracing::warn!(snapshotter = %name, error = %e, "cannot reconcile snapshots");
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::gc::Sweeper for Snapshotters {
    async fn sweep(&self, snapshotters: &[String]) {
        for name in snapshotters {
            if !self.drivers.contains_key(name) {
                continue;
            }
            if let Err(e) = self.reconcile(name).await {
                tracing::warn!(snapshotter = %name, error = %e, "cannot reconcile snapshots");
            }
        }
    }
}
