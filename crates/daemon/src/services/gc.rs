//! The garbage collector's scheduler: collects on demand and shortly after
//! deletions.
//!
//! The metadata DB decides what is unreachable in one read transaction and
//! removes the records in one short write transaction; the blob files are
//! deleted here afterwards, outside any transaction, so writers never wait
//! on file deletion.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_content::local::LocalStore;
use berth_content::{Digest, Manager};
use berth_metadata::Db;
use tokio::sync::{Mutex, Notify};

/// Delay between a deletion and the collection it schedules, so a burst of
/// deletions is collected once.
const SCHEDULE_DELAY: Duration = Duration::from_millis(100);

/// Something that removes, after a collection, what the collection's
/// removed records referred to outside the metadata DB (driver snapshots).
#[async_trait::async_trait]
pub trait Sweeper: Send + Sync {
    /// Called after each collection that removed snapshot records, with the
    /// snapshotters they belonged to.
    async fn sweep(&self, snapshotters: &[String]);
}

/// What one collection did.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// Blob files deleted.
    pub blobs_deleted: usize,
    /// Leases that had expired and were removed.
    pub leases_expired: usize,
    /// Snapshot records removed.
    pub snapshots_removed: usize,
    /// Wall time of the whole collection.
    pub duration: Duration,
}

struct Inner {
    db: Db,
    store: Arc<LocalStore>,
    /// Held for writing while blob files are deleted, and for reading by
    /// anyone who records a blob it found already stored (dedupe): a file
    /// is never deleted between "the blob is there" and "a namespace holds it".
    files: std::sync::RwLock<()>,
    wake: Notify,
    running: Mutex<()>,
    sweepers: std::sync::Mutex<Vec<Arc<dyn Sweeper>>>,
    metrics: std::sync::OnceLock<crate::metrics::Handle>,
}

/// Handle to the collector; cheap to clone.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

impl Collector {
    /// A collector over `db` and `store`; call [`Collector::start`] inside a
    /// tokio runtime to collect after deletions.
    pub fn new(db: Db, store: Arc<LocalStore>) -> Collector {
        Collector {
            inner: Arc::new(Inner {
                db,
                store,
                wake: Notify::new(),
                files: std::sync::RwLock::new(()),
                running: Mutex::new(()),
                sweepers: std::sync::Mutex::new(Vec::new()),
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts the background task that runs scheduled collections.
    pub fn start(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.inner.wake.notified().await;
                tokio::time::sleep(SCHEDULE_DELAY).await;
                if let Err(e) = me.collect().await {
                    tracing::warn!(error = %e, "scheduled garbage collection failed");
                }
            }
        });
    }

    /// Runs `f` while no blob file can be deleted; used when recording a
    /// blob that is already in the shared store.
    pub fn while_files_kept<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .inner
            .files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }

    /// Adds a sweeper, called after each collection that removed snapshots.
    pub fn add_sweeper(&self, sweeper: Arc<dyn Sweeper>) {
        self.inner
            .sweepers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sweeper);
    }

    /// Records every collection's run and duration into `metrics` (set once).
    pub fn set_metrics(&self, metrics: crate::metrics::Handle) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Asks for a collection soon (after a deletion).
    pub fn schedule(&self) {
        self.inner.wake.notify_one();
    }

    /// Collects now and returns what was removed. Collections never overlap.
    pub async fn collect(&self) -> Result<Collection, String> {
        let _running = self.inner.running.lock().await;
        let started = Instant::now();
        let db = self.inner.db.clone();
        let report = tokio::task::spawn_blocking(move || db.collect_garbage(SystemTime::now()))
            .await
            .map_err(|e| format!("gc task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let me = self.clone();
        let digests = report.removed_content.clone();
        let blobs_deleted = tokio::task::spawn_blocking(move || {
            let inner = &me.inner;
            let store = &inner.store;
            let _guard = inner
                .files
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut deleted = 0;
            for d in &digests {
                // A namespace may have taken the blob up again since the sweep.
                if inner.db.content().exists_anywhere(d).unwrap_or(true) {
                    continue;
                }
                let Ok(digest) = Digest::parse(d) else {
                    tracing::warn!(digest = %d, "gc: skipping malformed digest");
                    continue;
                };
                match store.delete(&digest) {
                    Ok(()) => deleted += 1,
                    Err(berth_content::Error::NotFound(_)) => {}
                    Err(e) => tracing::warn!(digest = %d, error = %e, "gc: cannot delete blob"),
                }
            }
            // Ingests nobody finished (a failed pull's layer) expire as in
            // containerd; the content store keeps the rule.
            let expiry = berth_content::local::INGEST_EXPIRY;
            if let Err(e) = store.abort_expired(expiry, std::time::SystemTime::now()) {
                tracing::warn!(error = %e, "gc: cannot abort expired ingests");
            }
            deleted
        })
        .await
        .map_err(|e| format!("gc delete task failed: {e}"))?;
        let mut snapshotters: Vec<String> = report
            .removed_snapshots
            .iter()
            .map(|(_, sn, _)| sn.clone())
            .collect();
        snapshotters.sort();
        snapshotters.dedup();
        if !snapshotters.is_empty() {
            let sweepers = self
                .inner
                .sweepers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for s in sweepers {
                s.sweep(&snapshotters).await;
            }
        }
        let collection = Collection {
            blobs_deleted,
            leases_expired: report.removed_leases.len(),
            snapshots_removed: report.removed_snapshots.len(),
            duration: started.elapsed(),
        };
        tracing::info!(
            blobs = collection.blobs_deleted,
            leases = collection.leases_expired,
            snapshots = collection.snapshots_removed,
            mark_sweep = ?report.duration,
            total = ?collection.duration,
            "garbage collected"
        );
        if let Some(m) = self.inner.metrics.get() {
            m.observe_gc(collection.duration);
        }
        Ok(collection)
    }
}
