//! Daemon-side pull: berth-transfer's [`berth_transfer::Puller`] over the
//! namespace's view of the content store and snapshotters, inside a lease.
//! The image record is written last, so a reader never sees an image whose
//! content is missing; everything is held by the lease until then. A pull
//! that stops halfway leaves its ingests behind, and the next pull resumes
//! them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::containerd::services::images::v1::{ImageCreate, ImageUpdate};
use berth_events::Exchange;
use berth_images::Platform;
use berth_images::manifest::Descriptor;
use berth_metadata::Db;
use berth_metadata::images::{ImageRecord, Target};
use berth_remotes::Fetcher;
use berth_remotes::registry::RegistryOptions;
use berth_transfer::{PullOptions, Unpacker};
use tonic::Status;

use super::progress::Progress;
use super::views::{Backend, TransferContent};
use crate::services::blocking;
use crate::snapshotters::Snapshotters;
use crate::wire::pack;

/// How long a pull's lease protects what it fetched if berthd dies mid-pull.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// What to pull and how.
#[derive(Debug, Clone, Default)]
pub(crate) struct PullRequest {
    /// The namespace the image lands in.
    pub(crate) namespace: String,
    /// The reference as the user typed it (`busybox`, `host:5000/x:tag`).
    pub(crate) reference: String,
    /// Platforms wanted; empty means the host's.
    pub(crate) platforms: Vec<Platform>,
    /// Fetch every platform's content (unpack still only the first match).
    pub(crate) all_platforms: bool,
    /// Snapshotter to unpack into; `None` leaves the image packed.
    pub(crate) unpack: Option<String>,
    /// Registry options: TLS, mirrors, credentials.
    pub(crate) registry: RegistryOptions,
    /// Labels for the image record.
    pub(crate) labels: BTreeMap<String, String>,
}

/// Everything a pull touches.
#[derive(Clone)]
pub(crate) struct Puller {
    pub(crate) store: Backend,
    pub(crate) db: Db,
    pub(crate) snapshotters: Arc<Snapshotters>,
    pub(crate) exchange: Arc<Exchange>,
    /// Where snapshots that cannot be written directly are mounted.
    pub(crate) tmp_mounts: PathBuf,
    /// How long a registry may send nothing before the pull gives up
    /// (`stall_timeout` of `[plugins."io.containerd.transfer.v1.local"]`).
    pub(crate) stall_timeout: Duration,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").finish_non_exhaustive()
    }
}

/// The result of a pull.
#[derive(Debug)]
pub(crate) struct Pulled {
    /// The image record written.
    pub(crate) image: ImageRecord,
    /// Bytes downloaded (not counting blobs already present).
    pub(crate) downloaded: u64,
}

/// Deletes a pull's lease when the pull ends, even when it is cancelled.
pub(crate) struct LeaseGuard {
    db: Db,
    ns: String,
    lease: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (db, ns, lease) = (self.db.clone(), self.ns.clone(), self.lease.clone());
        // Blocking DB work, off the async threads; a runtime shutting down
        // leaves it to the lease's expiry.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || {
                if let Err(e) = db.leases().delete(&ns, &lease) {
                    tracing::debug!(namespace = %ns, lease = %lease, error = %e, "cannot delete pull lease");
                }
            });
        }
    }
}

/// How a pull or import fetches its root.
enum Source {
    /// Resolve the request's reference at its registry.
    Registry,
    /// The image `name` at `root`, from `fetcher` (an import: the archive).
    Resolved(Box<Resolved>),
}

/// An image already resolved, and where its blobs come from.
struct Resolved {
    name: String,
    root: Descriptor,
    fetcher: Arc<dyn Fetcher>,
}

impl Puller {
    /// Pulls `req.reference` into `req.namespace`.
    #[tracing::instrument(name = "pull", skip_all, fields(namespace = %req.namespace, reference = %req.reference))]
    pub(crate) async fn pull(
        &self,
        req: PullRequest,
        progress: Progress,
    ) -> Result<Pulled, Status> {
        self.run(&req, Source::Registry, progress).await
    }

    /// Everything of `root` that `req` asks for, from `fetcher` where the
    /// store lacks it, unpacked when asked; then the image record `name`.
    pub(crate) async fn fetch_and_record(
        &self,
        req: &PullRequest,
        name: &str,
        root: &Descriptor,
        fetcher: Arc<dyn Fetcher>,
        progress: Progress,
    ) -> Result<Pulled, Status> {
        let source = Source::Resolved(Box::new(Resolved {
            name: name.to_string(),
            root: root.clone(),
            fetcher,
        }));
        self.run(req, source, progress).await
    }

    /// A new lease `<prefix>-<uuid>` in namespace `ns`, expiring after
    /// [`LEASE_EXPIRY`] if berthd dies first, and the guard that deletes it.
    /// The image (or nothing) holds what the lease held once the guard goes.
    pub(crate) async fn temp_lease(
        &self,
        ns: &str,
        prefix: &str,
    ) -> Result<(String, LeaseGuard), Status> {
        let lease = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let expire = humantime_rfc3339(SystemTime::now() + LEASE_EXPIRY);
        {
            let (db, ns, lease) = (self.db.clone(), ns.to_owned(), lease.clone());
            blocking(move || {
                let labels =
                    BTreeMap::from([(berth_metadata::gc::LABEL_EXPIRE.to_string(), expire)]);
                db.leases()
                    .create(&ns, &lease, labels)
                    .map(drop)
                    .map_err(crate::wire::status)
            })
            .await?;
        }
        let guard = LeaseGuard {
            db: self.db.clone(),
            ns: ns.to_owned(),
            lease: lease.clone(),
        };
        Ok((lease, guard))
    }

    async fn run(
        &self,
        req: &PullRequest,
        source: Source,
        progress: Progress,
    ) -> Result<Pulled, Status> {
        // Bad references fail before anything is created.
        if matches!(source, Source::Registry) {
            berth_types::Reference::parse_normalized(&req.reference)
                .map_err(crate::wire::status)?;
        }
        let (lease, guard) = self.temp_lease(&req.namespace, "berth-pull").await?;
        let content = Arc::new(TransferContent::new(
            self.store.clone(),
            self.db.clone(),
            &req.namespace,
            Some(lease.clone()),
        ));
        let unpack = match &req.unpack {
            Some(name) => {
                let sn = self
                    .snapshotters
                    .view(&req.namespace, name, Some(&lease))
                    .map_err(crate::wire::status)?;
                Some(Unpacker::new(name.clone(), Arc::new(sn), &self.tmp_mounts))
            }
            None => None,
        };
        let options = PullOptions {
            platforms: req.platforms.clone(),
            all_platforms: req.all_platforms,
            unpack,
            registry: req.registry.clone(),
            progress: progress.library(),
        };
        // The view names the ingests `<namespace>/<ref>` in the store.
        let puller = berth_transfer::Puller::new(content).with_stall_timeout(self.stall_timeout);
        let result = match source {
            Source::Registry => puller.pull(&req.reference, &options).await,
            Source::Resolved(r) => {
                puller
                    .fetch(&r.name, &r.root, r.fetcher, None, &options)
                    .await
            }
        };
        let pulled = match result {
            Ok(pulled) => pulled,
            Err(e) => {
                drop(guard);
                return Err(crate::wire::status(e));
            }
        };
        // The lease goes only once the image record holds the content: a
        // collection between the two would find it unreferenced.
        let image = self.record_image(req, &pulled.name, &pulled.root).await;
        drop(guard);
        let image = image?;
        progress.event("saved", &pulled.name, 0, 0, Some(&pulled.root));
        Ok(Pulled {
            image,
            downloaded: pulled.downloaded,
        })
    }

    pub(crate) async fn record_image(
        &self,
        req: &PullRequest,
        name: &str,
        root: &Descriptor,
    ) -> Result<ImageRecord, Status> {
        let target = Target {
            media_type: root.media_type.clone(),
            digest: root.digest.to_string(),
            size: i64::try_from(root.size).unwrap_or(i64::MAX),
            annotations: BTreeMap::new(),
        };
        let (db, ns, name_o, labels) = (
            self.db.clone(),
            req.namespace.clone(),
            name.to_string(),
            req.labels.clone(),
        );
        let (record, created) = blocking(move || {
            let images = db.images();
            match images.create(&ns, &name_o, target.clone(), labels.clone()) {
                Ok(r) => Ok((r, true)),
                Err(berth_metadata::Error::AlreadyExists(_)) => {
                    let mut paths = vec!["target".to_string()];
                    if !labels.is_empty() {
                        paths.push("labels".to_string());
                    }
                    images
                        .update(&ns, &name_o, target, labels, &paths)
                        .map(|r| (r, false))
                        .map_err(crate::wire::status)
                }
                Err(e) => Err(crate::wire::status(e)),
            }
        })
        .await?;
        let topic_event = if created {
            (
                "/images/create",
                pack(&ImageCreate {
                    name: name.to_string(),
                    labels: record.labels.clone().into_iter().collect(),
                }),
            )
        } else {
            (
                "/images/update",
                pack(&ImageUpdate {
                    name: name.to_string(),
                    labels: record.labels.clone().into_iter().collect(),
                }),
            )
        };
        if let Err(e) = self
            .exchange
            .publish(&req.namespace, topic_event.0, topic_event.1)
        {
            tracing::warn!(error = %e, "cannot publish image event");
        }
        Ok(record)
    }
}

/// containerd's lease expiry format (RFC 3339, UTC, seconds).
fn humantime_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_is_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(humantime_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(
            humantime_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
