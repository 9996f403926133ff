//! Namespaced snapshotters: containerd's metadata snapshotter for berthd.
//!
//! The work is berth-metadata's ([`berth_metadata::snapshot_view`]): each
//! loaded driver is wrapped in a [`MetaSnapshotter`], and a namespace sees
//! it through a [`NamespacedSnapshotter`] (its own keys, recorded in the
//! metadata DB, held by the caller's lease). `Snapshotters` is the daemon's
//! side: the drivers by name, the async calls the services make (each a
//! blocking call of the view), the `/snapshot/*` events, and the driver's
//! part of removals, started after the reply. Everything that uses
//! snapshots in berthd (the Snapshots API, image unpack, containers) goes
//! through here, so events and leases are uniform.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_events::Exchange;
use berth_metadata::{Db, MetaSnapshotter, NamespacedSnapshotter, SnapshotObserver};
use berth_snapshots::{Info, Labels, Mount, Snapshotter, Usage};

use crate::wire::pack;

/// Why a namespaced snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No snapshotter by that name is loaded.
    #[error("snapshotter {0:?} was not found (see `ctr plugins ls` for the loaded ones)")]
    UnknownSnapshotter(String),
    /// The view (the metadata DB or the driver) refused or failed.
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
            Error::Driver(d) => d.category(),
            Error::Task(_) => Category::Internal,
        }
    }
}

/// Results of namespaced snapshot operations.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A snapshotter plugin's instance: the driver berthd wraps.
#[derive(Clone)]
pub struct SnapshotterPlugin(pub Arc<dyn Snapshotter>);

impl std::fmt::Debug for SnapshotterPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotterPlugin")
    }
}

/// Publishes what the views do as containerd's events, and has the
/// driver's part of each removal done after the reply, in order.
struct Publisher {
    exchange: Arc<Exchange>,
}

impl Publisher {
    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        if let Err(e) = self.exchange.publish(ns, topic, event) {
            tracing::warn!(error = %e, topic, "cannot publish snapshot event");
        }
    }
}

impl SnapshotObserver for Publisher {
    fn prepared(&self, sn: &Arc<MetaSnapshotter>, ns: &str, key: &str, parent: Option<&str>) {
        self.publish(
            ns,
            "/snapshot/prepare",
            pack(&SnapshotPrepare {
                key: key.to_owned(),
                parent: parent.unwrap_or_default().to_owned(),
                snapshotter: sn.name().to_owned(),
            }),
        );
    }

    fn committed(&self, sn: &Arc<MetaSnapshotter>, ns: &str, name: &str, key: &str) {
        self.publish(
            ns,
            "/snapshot/commit",
            pack(&SnapshotCommit {
                key: key.to_owned(),
                name: name.to_owned(),
                snapshotter: sn.name().to_owned(),
            }),
        );
    }

    /// The record is gone (what containerd's Remove answers after); the
    /// driver's snapshot (its own commit, the directory tree) is removed
    /// now, off the caller's thread, in the order removals were asked for.
    fn removed(&self, sn: &Arc<MetaSnapshotter>, ns: &str, key: &str) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let sn = sn.clone();
            rt.spawn_blocking(move || sn.remove_pending());
        }
        self.publish(
            ns,
            "/snapshot/remove",
            pack(&SnapshotRemove {
                key: key.to_owned(),
                snapshotter: sn.name().to_owned(),
            }),
        );
    }
}

/// Every loaded snapshotter, seen per namespace (see the module docs).
pub(crate) struct Snapshotters {
    drivers: BTreeMap<String, Arc<MetaSnapshotter>>,
}

impl std::fmt::Debug for Snapshotters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotters")
            .field("drivers", &self.drivers.keys().collect::<Vec<_>>())
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> berth_snapshots::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Driver)
}

impl Snapshotters {
    /// Namespaced access to `drivers` (name → driver), recording in `db`
    /// and publishing `/snapshot/*` events on `exchange`.
    pub(crate) fn new(
        drivers: BTreeMap<String, Arc<dyn Snapshotter>>,
        db: Db,
        exchange: Arc<Exchange>,
    ) -> Snapshotters {
        let publisher: Arc<dyn SnapshotObserver> = Arc::new(Publisher { exchange });
        Snapshotters {
            drivers: drivers
                .into_iter()
                .map(|(name, sn)| {
                    let meta = MetaSnapshotter::new(db.clone(), name.clone(), sn)
                        .with_observer(publisher.clone());
                    (name, Arc::new(meta))
                })
                .collect(),
        }
    }

    fn driver(&self, name: &str) -> Result<&Arc<MetaSnapshotter>> {
        self.drivers
            .get(name)
            .ok_or_else(|| Error::UnknownSnapshotter(name.to_owned()))
    }

    /// Snapshotter `snapshotter` as namespace `ns` sees it, creating into
    /// `lease`: what image unpack works on. Its methods block.
    pub(crate) fn view(
        &self,
        ns: &str,
        snapshotter: &str,
        lease: Option<&str>,
    ) -> Result<NamespacedSnapshotter> {
        Ok(self
            .driver(snapshotter)?
            .namespace(ns)
            .with_lease(lease.map(str::to_owned)))
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
        let v = self.view(ns, snapshotter, lease)?;
        let (key, parent) = (key.to_owned(), parent.map(str::to_owned));
        blocking(move || {
            if view {
                v.view(&key, parent.as_deref(), labels)
            } else {
                v.prepare(&key, parent.as_deref(), labels)
            }
        })
        .await
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
        let v = self.view(ns, snapshotter, lease)?;
        let (name, key) = (name.to_owned(), key.to_owned());
        blocking(move || v.commit(&name, &key, labels)).await
    }

    /// Removes `key` of namespace `ns` (FailedPrecondition while it has children).
    ///
    /// Returns once the record is gone, as containerd's metadata
    /// snapshotter does (its garbage collector removes the driver's
    /// snapshot later): the driver's part runs after the reply, in order
    /// with the other removals.
    pub(crate) async fn remove(&self, ns: &str, snapshotter: &str, key: &str) -> Result<()> {
        let v = self.view(ns, snapshotter, None)?;
        let key = key.to_owned();
        blocking(move || v.remove(&key)).await
    }

    /// The record of `key` in namespace `ns`.
    pub(crate) async fn stat(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Info> {
        let v = self.view(ns, snapshotter, None)?;
        let key = key.to_owned();
        blocking(move || v.stat(&key)).await
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
        let v = self.view(ns, snapshotter, None)?;
        let mut info = Info::new(key);
        info.labels = labels;
        blocking(move || {
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            v.update(info, &paths)
        })
        .await
    }

    /// Every snapshot of namespace `ns` in `snapshotter`.
    pub(crate) async fn list(&self, ns: &str, snapshotter: &str) -> Result<Vec<Info>> {
        let v = self.view(ns, snapshotter, None)?;
        blocking(move || {
            let mut all = Vec::new();
            v.walk(&mut |i| {
                all.push(i.clone());
                Ok(())
            })?;
            Ok(all)
        })
        .await
    }

    /// The mounts of active snapshot or view `key`.
    pub(crate) async fn mounts(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<Vec<Mount>> {
        let v = self.view(ns, snapshotter, None)?;
        let key = key.to_owned();
        blocking(move || v.mounts(&key)).await
    }

    /// The disk usage of `key` (its own files).
    pub(crate) async fn usage(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Usage> {
        let v = self.view(ns, snapshotter, None)?;
        let key = key.to_owned();
        blocking(move || v.usage(&key)).await
    }

    /// Reconciles `snapshotter` with the records, then asks the driver to
    /// reclaim what no snapshot uses.
    pub(crate) async fn cleanup(&self, snapshotter: &str) -> Result<()> {
        let sn = self.driver(snapshotter)?.clone();
        blocking(move || sn.cleanup()).await
    }

    /// Finishes or rolls back commits a crash interrupted, in every driver.
    pub(crate) async fn recover(&self) {
        for sn in self.drivers.values() {
            let sn = sn.clone();
            let _ = blocking(move || Ok(sn.recover())).await;
        }
    }

    /// Removes the driver's snapshots that no namespace's record refers to
    /// (children before parents); returns how many were removed.
    pub(crate) async fn reconcile(&self, snapshotter: &str) -> Result<usize> {
        let sn = self.driver(snapshotter)?.clone();
        blocking(move || sn.reconcile()).await
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
