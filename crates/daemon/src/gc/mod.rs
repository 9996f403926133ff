//! The garbage collector: runs collections when its [`scheduler`] says.
//!
//! Differs from containerd on purpose in one point: the startup collection
//! runs before berthd serves (see [`Collector::startup`]) instead of
//! `startup_delay` after the plugin starts, while clients may already be
//! connected; so nothing a client makes can be taken by it.
//!
//! The metadata DB decides what is unreachable in one read transaction and
//! removes the records in one short write transaction; the blob files are
//! deleted here afterwards, outside any transaction, so writers never wait
//! on file deletion.

pub(crate) mod scheduler;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_content::local::LocalStore;
use berth_content::{Digest, IngestManager, Manager};
use berth_metadata::Db;
use tokio::sync::Mutex;

use scheduler::{Collect, Collecting, Scheduler, SchedulerConfig};

/// Something that removes, after a collection, what the collection's
/// removed records referred to outside the metadata DB (driver snapshots).
#[async_trait::async_trait]
pub(crate) trait Sweeper: Send + Sync {
    /// Called after each collection that removed snapshot records, with the
    /// snapshotters they belonged to.
    async fn sweep(&self, snapshotters: &[String]);
}

/// What one collection did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Collection {
    /// Blob files deleted.
    pub blobs_deleted: usize,
    /// Leases that had expired and were removed.
    pub leases_expired: usize,
    /// Snapshot records removed.
    pub snapshots_removed: usize,
    /// Wall time of the whole collection.
    pub duration: Duration,
    /// Time of the metadata phase (mark and sweep), what the scheduler's
    /// pause threshold measures.
    pub metadata_duration: Duration,
}

struct Inner {
    db: Db,
    /// The local store itself, not a view: the collector deletes the files
    /// of blobs no namespace holds and expires ingests by age
    /// (`abort_expired`, the local store's own rule), across namespaces.
    store: Arc<LocalStore>,
    scheduler: std::sync::OnceLock<Scheduler<Collection>>,
    /// Whether the config asks for a startup collection.
    startup: std::sync::atomic::AtomicBool,
    running: Mutex<()>,
    sweepers: std::sync::Mutex<Vec<Arc<dyn Sweeper>>>,
    metrics: std::sync::OnceLock<crate::metrics::Handle>,
}

/// Handle to the collector; cheap to clone.
#[derive(Clone)]
pub(crate) struct Collector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

impl Collector {
    /// A collector over `db` and `store`; call [`Collector::start`] inside a
    /// tokio runtime to collect as scheduled.
    pub(crate) fn new(db: Db, store: Arc<LocalStore>) -> Collector {
        Collector {
            inner: Arc::new(Inner {
                db,
                store,
                scheduler: std::sync::OnceLock::new(),
                startup: std::sync::atomic::AtomicBool::new(false),
                running: Mutex::new(()),
                sweepers: std::sync::Mutex::new(Vec::new()),
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts the scheduler (once; later calls do nothing) and has the DB
    /// report every write to it.
    pub(crate) fn start(&self, config: SchedulerConfig) {
        if self.inner.scheduler.get().is_some() {
            return;
        }
        // The scheduler's task holds only a weak handle, so dropping every
        // Collector ends it.
        self.inner.startup.store(
            config.startup_delay > Duration::ZERO,
            std::sync::atomic::Ordering::SeqCst,
        );
        let weak = Arc::downgrade(&self.inner);
        let scheduler = Scheduler::spawn(config, Runner(weak));
        if self.inner.scheduler.set(scheduler.clone()).is_ok() {
            self.inner
                .db
                .on_mutation(Arc::new(move |dirty| scheduler.mutated(dirty)));
        }
    }

    /// The startup collection (if `startup_delay` is not 0): the server
    /// awaits it before serving. Ticks after it collect only after a
    /// deletion (or `mutation_threshold` writes), as in containerd.
    pub(crate) async fn startup(&self) {
        if !self.inner.startup.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.schedule_and_wait().await {
            tracing::error!(error = %e, "startup garbage collection failed");
        }
    }

    /// Asks for a collection and waits for one that begins after this call
    /// (what `sync` deletions do); collects directly if not started.
    pub(crate) async fn schedule_and_wait(&self) -> Result<Collection, String> {
        match self.inner.scheduler.get() {
            Some(s) => s.schedule_and_wait().await,
            None => self.collect().await,
        }
    }

    /// Adds a sweeper, called after each collection that removed snapshots.
    pub(crate) fn add_sweeper(&self, sweeper: Arc<dyn Sweeper>) {
        self.inner
            .sweepers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sweeper);
    }

    /// Records every collection's run and duration into `metrics` (set once).
    pub(crate) fn set_metrics(&self, metrics: crate::metrics::Handle) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Aborts the ingests `refs` (client refs) of namespace `ns`, whose
    /// lease was deleted; ones already gone are skipped.
    pub(crate) async fn abort_ingests(&self, ns: &str, refs: Vec<String>) {
        if refs.is_empty() {
            return;
        }
        let store = self.inner.store.clone();
        let ns = ns.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            for r in refs {
                let bref = format!("{ns}/{r}");
                match store.abort(&bref) {
                    Ok(()) | Err(berth_content::Error::NotFound(_)) => {}
                    Err(e) => tracing::warn!(ingest = %bref, error = %e, "cannot abort ingest"),
                }
            }
        })
        .await;
    }

    /// Collects now and returns what was removed. Collections never overlap.
    pub(crate) async fn collect(&self) -> Result<Collection, String> {
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
            inner.db.while_deleting_blob_files(|| {
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
            metadata_duration: report.duration,
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

/// What the scheduler runs: a collection, if the collector still exists.
struct Runner(std::sync::Weak<Inner>);

impl Collect<Collection> for Runner {
    fn collect(&self) -> Collecting<'_, Collection> {
        Box::pin(async move {
            let inner = self
                .0
                .upgrade()
                .ok_or_else(|| "the collector was dropped".to_string())?;
            let c = Collector { inner }.collect().await?;
            Ok((c.metadata_duration, c))
        })
    }
}
