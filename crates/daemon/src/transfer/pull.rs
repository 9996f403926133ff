//! Daemon-side pull: resolve a reference, fetch its manifests, download
//! every layer concurrently into the content store, and unpack the layers
//! into snapshots named by chain ID while they download. The image record
//! is written last, so a reader never sees an image whose content is
//! missing; everything is held by a lease until then. A pull that stops
//! halfway leaves its ingests behind, and the next pull resumes them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::containerd::services::images::v1::{ImageCreate, ImageUpdate};
use berth_api::containerd::types::Descriptor as ApiDescriptor;
use berth_content::local::LocalStore;
use berth_content::{Digest, Provider, ReadCursor, Writer};
use berth_events::Exchange;
use berth_images::archive::{self, Whiteouts};
use berth_images::manifest::{self, Descriptor, Manifest};
use berth_images::{Matcher, Platform, Reference, media};
use berth_metadata::Db;
use berth_metadata::images::{ImageRecord, Target};
use berth_metadata::leases::Resource;
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Fetcher, Resolver};
use berth_snapshots::mount::MountGuard;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::Status;

use super::blob::{BlobState, TailReader};
use super::progress::Progress;
use crate::services::blocking;
use crate::services::namespaces::pack;
use crate::snapshotters::Snapshotters;

/// Label naming an uncompressed layer's digest (its diffID).
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
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
    pub(crate) store: Arc<LocalStore>,
    pub(crate) db: Db,
    pub(crate) snapshotters: Arc<Snapshotters>,
    pub(crate) exchange: Arc<Exchange>,
    pub(crate) tmp_mounts: PathBuf,
    /// Per snapshotter whose layers apply independently of their parents
    /// (overlayfs: a layer is its own upper directory), a directory on the
    /// same filesystem as its snapshots where layers are applied in
    /// parallel before being moved into their snapshots.
    pub(crate) staging: HashMap<String, PathBuf>,
    /// How long a registry may send nothing before the pull gives up
    /// (`stall_timeout` of `[plugins."io.containerd.transfer.v1.local"]`).
    pub(crate) stall_timeout: Duration,
}

/// The default of [`Puller::stall_timeout`].
pub(crate) const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A spawned task that is aborted when dropped: a pull whose client went
/// away (its future dropped) stops its downloads, releasing their ingests.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Deletes a pull's lease when the pull ends, even when it is cancelled.
struct LeaseGuard {
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

/// The ingest ref of a pulled blob: containerd's (remotes.MakeRefKey) in
/// namespace `ns`, so `ctr content active` lists it and a client pulling
/// the same blob meanwhile shares (waits for) the ingest.
fn ingest_ref(ns: &str, media_type: &str, digest: &Digest) -> String {
    let kind =
        if media_type.contains("manifest.list") || media_type.ends_with("image.index.v1+json") {
            "index"
        } else if media_type.contains("manifest") {
            "manifest"
        } else if media_type.contains("config") {
            "config"
        } else if media_type.contains("layer") || media_type.contains("rootfs") {
            "layer"
        } else {
            "unknown"
        };
    format!("{ns}/{kind}-{digest}")
}

/// `fut`, failing with DeadlineExceeded if the registry is silent for
/// `limit` (`what` names what was awaited).
async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{}: the registry sent nothing for {}s; what was downloaded is kept and a retry \
             resumes it (the limit is stall_timeout in [plugins.\"io.containerd.transfer.v1.local\"])",
            what(),
            limit.as_secs()
        ))),
    }
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

fn remote_status(e: berth_remotes::Error) -> Status {
    use berth_remotes::Error as E;
    match e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
        E::Unauthorized { .. } => Status::unauthenticated(e.to_string()),
        E::PermissionDenied { .. } => Status::permission_denied(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn content_status(e: berth_content::Error) -> Status {
    let status = crate::services::content::store_status(e);
    Status::new(
        status.code(),
        format!("content store: {}", status.message()),
    )
}

fn meta_status(e: berth_metadata::Error) -> Status {
    crate::services::namespaces::to_status(e)
}

fn image_status(e: berth_images::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

fn api_desc(d: &Descriptor) -> ApiDescriptor {
    ApiDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: Default::default(),
    }
}

fn remote_desc(d: &Descriptor) -> berth_remotes::Descriptor {
    berth_remotes::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
    }
}

/// The archive compression of a layer media type.
fn compression(mt: &str) -> Result<archive::Compression, Status> {
    match media::Compression::from_media_type(mt) {
        Ok(media::Compression::Gzip) => Ok(archive::Compression::Gzip),
        Ok(media::Compression::None) => Ok(archive::Compression::None),
        Ok(media::Compression::Zstd) => Ok(archive::Compression::Zstd),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    }
}

/// Where a snapshot's mounts can be written directly.
fn direct_target(mounts: &[berth_snapshots::Mount]) -> Option<(PathBuf, Whiteouts)> {
    let [m] = mounts else { return None };
    let option = |key: &str| {
        m.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    match m.kind.as_str() {
        "overlay" => option("upperdir").map(|u| (PathBuf::from(u), Whiteouts::Overlay)),
        "bind" | "rbind" if !m.options.iter().any(|o| o == "ro") => {
            Some((PathBuf::from(&m.source), Whiteouts::Remove))
        }
        _ => None,
    }
}

/// Where a layer is applied.
enum ApplyTarget {
    /// A snapshot's mounts (written directly when they allow it).
    Mounts(Vec<berth_snapshots::Mount>),
    /// A staging directory, with overlay whiteouts.
    Staged(PathBuf),
}

/// Layers being applied into staging directories, by layer index.
#[derive(Default)]
struct Staged {
    tasks: Vec<Option<tokio::task::JoinHandle<Result<PathBuf, Status>>>>,
    dirs: Vec<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // A cancelled pull: stop the appliers (their directories are
        // cleared at the next start, see the transfer plugin).
        for task in self.tasks.iter().flatten() {
            task.abort();
        }
    }
}

impl Staged {
    /// Stops what still runs and removes every staging directory left.
    async fn abort(&mut self) {
        for task in self.tasks.drain(..).flatten() {
            task.abort();
            let _ = task.await;
        }
        for dir in self.dirs.drain(..) {
            if dir.exists() {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            }
        }
    }
}

/// Moves an applied staging directory into the (empty) upper directory of
/// a freshly created overlay snapshot.
fn move_into(dir: &Path, mounts: &[berth_snapshots::Mount]) -> Result<(), Status> {
    let Some((upper, Whiteouts::Overlay)) = direct_target(mounts) else {
        return Err(Status::internal(
            "a staged layer needs an overlay snapshot to move into",
        ));
    };
    std::fs::remove_dir(&upper)
        .and_then(|()| std::fs::rename(dir, &upper))
        .map_err(|e| {
            Status::internal(format!(
                "moving the applied layer {} into {}: {e}",
                dir.display(),
                upper.display()
            ))
        })
}

/// One pull in progress.
struct Job {
    p: Puller,
    ns: String,
    lease: String,
    fetcher: Arc<dyn Fetcher>,
    progress: Progress,
    /// `containerd.io/distribution.source.<host>` = repository, for pulls.
    source_label: Option<(String, String)>,
}

impl Puller {
    /// Pulls `req.reference` into `req.namespace`.
    #[tracing::instrument(name = "pull", skip_all, fields(namespace = %req.namespace, reference = %req.reference))]
    pub(crate) async fn pull(
        &self,
        req: PullRequest,
        progress: Progress,
    ) -> Result<Pulled, Status> {
        let reference = Reference::parse_normalized(&req.reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = reference.to_string();
        let registry = Registry::new(req.registry.clone()).map_err(remote_status)?;
        progress.event("resolving", &name, 0, 0, None);
        let (resolved, root) = within(self.stall_timeout, || format!("resolving {name}"), async {
            registry.resolve(&name).await.map_err(remote_status)
        })
        .await?;
        let root = Descriptor::new(root.media_type, root.digest, root.size);
        progress.event("resolved", &name, 0, 0, Some(api_desc(&root)));
        let fetcher: Arc<dyn Fetcher> = registry.fetcher(&resolved).map_err(remote_status)?.into();
        let source = (
            format!("containerd.io/distribution.source.{}", reference.domain()),
            reference.path().to_string(),
        );
        self.fetch_and_record(&req, &name, &root, fetcher, Some(source), progress)
            .await
    }

    /// Everything of `root` that `req` asks for, from `fetcher` where the
    /// store lacks it, unpacked when asked; then the image record `name`.
    pub(crate) async fn fetch_and_record(
        &self,
        req: &PullRequest,
        name: &str,
        root: &Descriptor,
        fetcher: Arc<dyn Fetcher>,
        source_label: Option<(String, String)>,
        progress: Progress,
    ) -> Result<Pulled, Status> {
        let lease = format!("berth-pull-{}", uuid::Uuid::new_v4().simple());
        let expire = humantime_rfc3339(SystemTime::now() + LEASE_EXPIRY);
        {
            let (db, ns, lease) = (self.db.clone(), req.namespace.clone(), lease.clone());
            blocking(move || {
                let labels =
                    BTreeMap::from([(berth_metadata::gc::LABEL_EXPIRE.to_string(), expire)]);
                db.leases()
                    .create(&ns, &lease, labels)
                    .map(drop)
                    .map_err(meta_status)
            })
            .await?;
        }
        let job = Job {
            p: self.clone(),
            ns: req.namespace.clone(),
            lease: lease.clone(),
            fetcher,
            progress: progress.clone(),
            source_label,
        };
        // The image (or nothing) holds what the lease held once the pull
        // ends; a failed or cancelled pull drops the guard too.
        let guard = LeaseGuard {
            db: self.db.clone(),
            ns: req.namespace.clone(),
            lease: lease.clone(),
        };
        let downloaded = job.run(name, root, req).await?;
        // The lease goes only once the image record holds the content: a
        // collection between the two would find it unreferenced.
        let image = self.record_image(req, name, root).await;
        drop(guard);
        let image = image?;
        progress.event("saved", name, 0, 0, Some(api_desc(root)));
        Ok(Pulled { image, downloaded })
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
                        .map_err(meta_status)
                }
                Err(e) => Err(meta_status(e)),
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

/// How many indexes below the root a pull follows.
const MAX_NESTED_INDEXES: usize = 16;

impl Job {
    /// Fetches and unpacks; returns the bytes downloaded.
    async fn run(&self, name: &str, root: &Descriptor, req: &PullRequest) -> Result<u64, Status> {
        let matcher = if req.platforms.is_empty() {
            Matcher::host()
        } else {
            Matcher::ordered(req.platforms.clone())
        };
        let root_bytes = self.fetch_small(root).await?;
        let mut manifests: Vec<(Descriptor, Manifest)> = Vec::new();
        if media::is_index(&root.media_type) {
            let index = manifest::parse_index(root, &root_bytes).map_err(image_status)?;
            let wanted = |d: &Descriptor| {
                req.all_platforms || d.platform.as_ref().is_none_or(|p| matcher.matches(p))
            };
            // Indexes may nest (an OCI layout's index.json names an image
            // index): their manifests count as the root's, as containerd's
            // platform walk has it.
            let mut candidates: Vec<Descriptor> = Vec::new();
            let mut nested: Vec<Descriptor> = Vec::new();
            let mut pending = vec![index];
            while let Some(idx) = pending.pop() {
                for d in idx.manifests {
                    if media::is_manifest(&d.media_type) {
                        candidates.push(d);
                    } else if media::is_index(&d.media_type) && wanted(&d) {
                        if nested.len() >= MAX_NESTED_INDEXES {
                            return Err(Status::invalid_argument(format!(
                                "{name}: more than {MAX_NESTED_INDEXES} nested indexes"
                            )));
                        }
                        let bytes = self.fetch_small(&d).await?;
                        let child = manifest::parse_index(&d, &bytes).map_err(image_status)?;
                        let labels = child
                            .manifests
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                (
                                    format!("containerd.io/gc.ref.content.m.{i}"),
                                    c.digest.to_string(),
                                )
                            })
                            .collect();
                        self.save(&d, bytes, labels).await?;
                        nested.push(d);
                        pending.push(child);
                    }
                }
            }
            let mut chosen: Vec<Descriptor> = candidates.into_iter().filter(wanted).collect();
            matcher.sort_descriptors(&mut chosen);
            if !req.all_platforms {
                chosen.truncate(1);
            }
            if chosen.is_empty() {
                return Err(Status::not_found(format!(
                    "{name}: no manifest for the wanted platform ({}); try --platform or --all-platforms",
                    if req.platforms.is_empty() {
                        Platform::host().to_string()
                    } else {
                        req.platforms
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
            let labels = chosen
                .iter()
                .chain(&nested)
                .enumerate()
                .map(|(i, d)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        d.digest.to_string(),
                    )
                })
                .collect();
            self.save(root, root_bytes, labels).await?;
            for d in chosen {
                let bytes = self.fetch_small(&d).await?;
                let m = manifest::parse_manifest(&d, &bytes).map_err(image_status)?;
                self.save_manifest(&d, &m, bytes).await?;
                manifests.push((d, m));
            }
        } else if media::is_manifest(&root.media_type) {
            let m = manifest::parse_manifest(root, &root_bytes).map_err(image_status)?;
            self.save_manifest(root, &m, root_bytes).await?;
            manifests.push((root.clone(), m));
        } else {
            media::check_supported(&root.media_type).map_err(image_status)?;
            return Err(Status::invalid_argument(format!(
                "{name}: {} is neither an image manifest nor an index",
                root.media_type
            )));
        }

        // Configs are small and say what the layers unpack to.
        let mut configs = Vec::new();
        for (_, m) in &manifests {
            let bytes = self.fetch_small(&m.config).await?;
            let config = manifest::parse_config(&m.config, &bytes).map_err(image_status)?;
            self.save(&m.config, bytes, BTreeMap::new()).await?;
            configs.push(config);
        }

        // Every layer of every chosen manifest downloads at once (the
        // registry client limits concurrency per host), layer 0 first.
        let mut states: HashMap<Digest, watch::Receiver<BlobState>> = HashMap::new();
        let mut downloads = Vec::new();
        for ((_, m), config) in manifests.iter().zip(&configs) {
            for (i, layer) in m.layers.iter().enumerate() {
                if states.contains_key(&layer.digest) {
                    continue;
                }
                let (tx, rx) = watch::channel(BlobState::Pending);
                states.insert(layer.digest.clone(), rx);
                let mut labels: BTreeMap<String, String> =
                    self.source_label.clone().into_iter().collect();
                if let Some(diff_id) = config.rootfs.diff_ids.get(i) {
                    labels.insert(LABEL_UNCOMPRESSED.to_string(), diff_id.to_string());
                }
                let job = self.clone_for_task();
                let layer = layer.clone();
                downloads.push(AbortOnDrop(tokio::spawn(async move {
                    let r = job.download(&layer, labels, &tx).await;
                    if let Err(e) = &r {
                        tx.send_replace(BlobState::Failed(Arc::new(e.message().to_string())));
                    }
                    r
                })));
            }
        }

        let unpacked = match (&req.unpack, manifests.first(), configs.first()) {
            (Some(snapshotter), Some((_, m)), Some(config)) => {
                self.unpack(snapshotter, m, config, &states).await.map(Some)
            }
            _ => Ok(None),
        };
        let mut downloaded = 0;
        let mut failure = unpacked.as_ref().err().cloned();
        for d in downloads {
            match d.await {
                Ok(Ok(n)) => downloaded += n,
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => {
                    failure = failure.or(Some(Status::internal(format!("download task: {e}"))))
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let (Ok(Some(chain)), Some(snapshotter), Some((_, m))) =
            (unpacked, &req.unpack, manifests.first())
        {
            // The config names the unpacked snapshot, so GC keeps both.
            let labels = BTreeMap::from([(
                format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
                chain.to_string(),
            )]);
            self.label(&m.config.digest, labels).await?;
        }
        Ok(downloaded)
    }

    fn clone_for_task(&self) -> Job {
        Job {
            p: self.p.clone(),
            ns: self.ns.clone(),
            lease: self.lease.clone(),
            fetcher: self.fetcher.clone(),
            progress: self.progress.clone(),
            source_label: self.source_label.clone(),
        }
    }

    /// Fetches a manifest, index or config (size-checked first) into memory.
    async fn fetch_small(&self, desc: &Descriptor) -> Result<Vec<u8>, Status> {
        manifest::check_size(desc).map_err(image_status)?;
        if let Ok(reader) = self.p.store.reader_at(&desc.digest) {
            let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
            if reader.read_exact_at(&mut data, 0).is_ok() {
                return Ok(data);
            }
        }
        let stall = self.p.stall_timeout;
        let what = || format!("fetching {}", desc.digest);
        let mut stream = within(stall, what, async {
            self.fetcher
                .fetch(&remote_desc(desc))
                .await
                .map_err(remote_status)
        })
        .await?;
        let mut data = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        while let Some(chunk) = within(stall, what, async { Ok(stream.next().await) }).await? {
            data.extend_from_slice(&chunk.map_err(remote_status)?);
            if data.len() as u64 > desc.size {
                return Err(Status::data_loss(format!(
                    "{}: the registry sent more than {} bytes",
                    desc.digest, desc.size
                )));
            }
        }
        let actual = desc.digest.algorithm().digest(&data);
        if actual != desc.digest {
            return Err(Status::data_loss(format!(
                "{}: the registry sent content with digest {actual}; nothing was stored",
                desc.digest
            )));
        }
        Ok(data)
    }

    async fn save_manifest(
        &self,
        desc: &Descriptor,
        m: &Manifest,
        bytes: Vec<u8>,
    ) -> Result<(), Status> {
        let mut labels = BTreeMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            m.config.digest.to_string(),
        )]);
        for (i, l) in m.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.to_string(),
            );
        }
        self.save(desc, bytes, labels).await
    }

    /// Stores a verified small blob and records it in the namespace.
    async fn save(
        &self,
        desc: &Descriptor,
        bytes: Vec<u8>,
        mut labels: BTreeMap<String, String>,
    ) -> Result<(), Status> {
        if let Some((k, v)) = &self.source_label {
            labels.insert(k.clone(), v.clone());
        }
        let (store, digest) = (self.p.store.clone(), desc.digest.clone());
        let ref_ = ingest_ref(&self.ns, &desc.media_type, &desc.digest);
        blocking(move || {
            berth_content::write_blob(&*store, &ref_, &bytes, &digest, Default::default())
                .map_err(content_status)
        })
        .await?;
        self.record(&desc.digest, desc.size, labels).await
    }

    /// Records blob `digest` in the namespace (held by the lease), adding
    /// `labels` if the namespace has it already.
    async fn record(
        &self,
        digest: &Digest,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<(), Status> {
        let (db, ns, lease, digest) = (
            self.p.db.clone(),
            self.ns.clone(),
            self.lease.clone(),
            digest.to_string(),
        );
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        blocking(move || {
            let content = db.content();
            match content.add(&ns, &digest, size, labels.clone(), Some(&lease)) {
                Ok(_) => Ok(()),
                Err(berth_metadata::Error::AlreadyExists(_)) => {
                    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                    content
                        .update(&ns, &digest, labels, &paths)
                        .map_err(meta_status)?;
                    db.leases()
                        .add_resource(
                            &ns,
                            &lease,
                            Resource {
                                id: digest,
                                kind: berth_metadata::leases::CONTENT.to_string(),
                            },
                        )
                        .map_err(meta_status)
                }
                Err(e) => Err(meta_status(e)),
            }
        })
        .await
    }

    async fn label(&self, digest: &Digest, labels: BTreeMap<String, String>) -> Result<(), Status> {
        let (db, ns, digest) = (self.p.db.clone(), self.ns.clone(), digest.to_string());
        blocking(move || {
            let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
            db.content()
                .update(&ns, &digest, labels, &paths)
                .map(drop)
                .map_err(meta_status)
        })
        .await
    }

    /// Downloads a layer into the content store, resuming an earlier
    /// ingest, publishing how far it got; returns the bytes fetched.
    async fn download(
        &self,
        layer: &Descriptor,
        labels: BTreeMap<String, String>,
        state: &watch::Sender<BlobState>,
    ) -> Result<u64, Status> {
        let name = format!("layer-{}", layer.digest);
        let ref_ = ingest_ref(&self.ns, &layer.media_type, &layer.digest);
        let store = self.p.store.clone();
        let opened = {
            let (store, ref_, digest, size) = (
                store.clone(),
                ref_.clone(),
                layer.digest.clone(),
                layer.size,
            );
            blocking(
                move || match store.open_writer(&ref_, Some(size), Some(&digest)) {
                    Ok(w) => {
                        let file = std::fs::File::open(store.ingest_dir(&ref_).join("data"))
                            .map_err(|e| {
                                Status::internal(format!("opening the ingest of {digest}: {e}"))
                            })?;
                        Ok(Some((w, file)))
                    }
                    Err(berth_content::Error::AlreadyExists(_)) => Ok(None),
                    Err(e) => Err(content_status(e)),
                },
            )
            .await?
        };
        let Some((mut writer, file)) = opened else {
            self.layer_stored(layer, labels, state, "exists", &name)
                .await?;
            return Ok(0);
        };
        let file = Arc::new(file);
        let start = writer.status().map_err(content_status)?.offset;
        let mut written = start;
        state.send_replace(BlobState::Writing {
            file: file.clone(),
            written,
        });
        let mut fetched = 0;
        if written < layer.size {
            self.progress.event(
                "downloading",
                &name,
                written,
                layer.size,
                Some(api_desc(layer)),
            );
            let stall = self.p.stall_timeout;
            let what = || format!("downloading {}", layer.digest);
            let mut stream = within(stall, what, async {
                self.fetcher
                    .fetch_from(&remote_desc(layer), written)
                    .await
                    .map_err(remote_status)
            })
            .await?;
            while let Some(chunk) = within(stall, what, async { Ok(stream.next().await) }).await? {
                let chunk = chunk.map_err(remote_status)?;
                if written + chunk.len() as u64 > layer.size {
                    return Err(Status::data_loss(format!(
                        "{}: the registry sent more than {} bytes",
                        layer.digest, layer.size
                    )));
                }
                // Page-cache writes of one chunk: short enough for a worker.
                writer.write(&chunk).map_err(content_status)?;
                written += chunk.len() as u64;
                fetched += chunk.len() as u64;
                state.send_replace(BlobState::Writing {
                    file: file.clone(),
                    written,
                });
                self.progress.event(
                    "downloading",
                    &name,
                    written,
                    layer.size,
                    Some(api_desc(layer)),
                );
            }
        }
        let (digest, size) = (layer.digest.clone(), layer.size);
        blocking(move || {
            Box::new(writer)
                .commit(size, Some(&digest), Default::default())
                .or_else(|e| match e {
                    berth_content::Error::AlreadyExists(_) => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| Status::data_loss(format!("layer {digest}: {e}; nothing was stored")))
        })
        .await?;
        self.layer_stored(layer, labels, state, "complete", &name)
            .await?;
        Ok(fetched)
    }

    /// A layer's blob is in the store: says so to the appliers and in the
    /// progress (`event`), and records it in the namespace.
    async fn layer_stored(
        &self,
        layer: &Descriptor,
        labels: BTreeMap<String, String>,
        state: &watch::Sender<BlobState>,
        event: &str,
        name: &str,
    ) -> Result<(), Status> {
        state.send_replace(BlobState::Done);
        self.progress
            .event(event, name, layer.size, layer.size, Some(api_desc(layer)));
        self.record(&layer.digest, layer.size, labels).await
    }

    /// Unpacks `m`'s layers in order into snapshots named by chain ID, each
    /// reading its layer as it downloads; returns the top chain ID.
    async fn unpack(
        &self,
        snapshotter: &str,
        m: &Manifest,
        config: &manifest::ImageConfig,
        states: &HashMap<Digest, watch::Receiver<BlobState>>,
    ) -> Result<Digest, Status> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != m.layers.len() {
            return Err(Status::invalid_argument(format!(
                "the image config lists {} diff IDs for {} layers",
                diff_ids.len(),
                m.layers.len()
            )));
        }
        let chains = manifest::chain_ids(diff_ids);
        let snapshots = &self.p.snapshotters;
        let mut missing = Vec::with_capacity(chains.len());
        for chain in &chains {
            missing.push(
                snapshots
                    .stat(&self.ns, snapshotter, chain.as_str())
                    .await
                    .is_err(),
            );
        }
        // Layers above the first start applying at once, each into its own
        // staging directory, as their bytes arrive; below, they are moved
        // into their snapshots in order.
        let mut staged = Staged::default();
        if let Some(root) = self.p.staging.get(snapshotter) {
            for (i, layer) in m.layers.iter().enumerate() {
                if i == 0 || !missing[i] {
                    staged.tasks.push(None);
                    continue;
                }
                let dir = root.join(uuid::Uuid::new_v4().simple().to_string());
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    staged.abort().await;
                    return Err(Status::internal(format!("{}: {e}", dir.display())));
                }
                let job = self.clone_for_task();
                let (layer, diff_id, states) = (layer.clone(), diff_ids[i].clone(), states.clone());
                staged.dirs.push(dir.clone());
                staged.tasks.push(Some(tokio::spawn(async move {
                    let compression = compression(&layer.media_type)?;
                    job.apply(
                        ApplyTarget::Staged(dir),
                        &layer,
                        compression,
                        &diff_id,
                        &states,
                    )
                    .await
                })));
            }
        }
        let result = self
            .unpack_in_order(
                snapshotter,
                m,
                &chains,
                &missing,
                &mut staged,
                diff_ids,
                states,
            )
            .await;
        staged.abort().await;
        result
    }

    /// The sequential part of [`Job::unpack`]: snapshots created and
    /// committed in order, each layer applied into it or moved in from its
    /// staging directory.
    #[allow(clippy::too_many_arguments)]
    async fn unpack_in_order(
        &self,
        snapshotter: &str,
        m: &Manifest,
        chains: &[Digest],
        missing: &[bool],
        staged: &mut Staged,
        diff_ids: &[Digest],
        states: &HashMap<Digest, watch::Receiver<BlobState>>,
    ) -> Result<Digest, Status> {
        let snapshots = &self.p.snapshotters;
        let mut parent: Option<&Digest> = None;
        for (i, layer) in m.layers.iter().enumerate() {
            let chain = &chains[i];
            let name = format!("layer-{}", layer.digest);
            if !missing[i] {
                parent = Some(chain);
                continue;
            }
            let compression = compression(&layer.media_type)?;
            let key = format!("extract-{} {chain}", uuid::Uuid::new_v4().simple());
            let mounts = snapshots
                .create(
                    &self.ns,
                    snapshotter,
                    &key,
                    parent.map(Digest::as_str),
                    Default::default(),
                    Some(&self.lease),
                    false,
                )
                .await
                .map_err(crate::services::snapshots::to_status)?;
            self.progress
                .event("unpacking", &name, 0, layer.size, Some(api_desc(layer)));
            let applied = match staged.tasks.get_mut(i).and_then(Option::take) {
                Some(task) => match task.await {
                    Ok(Ok(dir)) => move_into(&dir, &mounts),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Status::internal(format!("layer apply task: {e}"))),
                },
                None => self
                    .apply(
                        ApplyTarget::Mounts(mounts.clone()),
                        layer,
                        compression,
                        &diff_ids[i],
                        states,
                    )
                    .await
                    .map(drop),
            };
            let applied = match applied {
                Ok(()) => self.wait_downloaded(layer, states).await,
                Err(e) => Err(e),
            };
            if let Err(e) = applied {
                let _ = snapshots.remove(&self.ns, snapshotter, &key).await;
                return Err(e);
            }
            let labels =
                BTreeMap::from([("containerd.io/snapshot.ref".to_string(), chain.to_string())]);
            match snapshots
                .commit(
                    &self.ns,
                    snapshotter,
                    chain.as_str(),
                    &key,
                    labels,
                    Some(&self.lease),
                )
                .await
            {
                Ok(()) => {}
                Err(crate::snapshotters::Error::Metadata(
                    berth_metadata::Error::AlreadyExists(_),
                )) => {
                    // Another pull unpacked the same layer first.
                    let _ = snapshots.remove(&self.ns, snapshotter, &key).await;
                }
                Err(e) => {
                    let _ = snapshots.remove(&self.ns, snapshotter, &key).await;
                    return Err(crate::services::snapshots::to_status(e));
                }
            }
            self.progress.event(
                "unpacked",
                &name,
                layer.size,
                layer.size,
                Some(api_desc(layer)),
            );
            parent = Some(chain);
        }
        chains
            .last()
            .cloned()
            .ok_or_else(|| Status::invalid_argument("the image has no layers"))
    }

    async fn wait_downloaded(
        &self,
        layer: &Descriptor,
        states: &HashMap<Digest, watch::Receiver<BlobState>>,
    ) -> Result<(), Status> {
        let Some(rx) = states.get(&layer.digest) else {
            return Ok(());
        };
        let mut rx = rx.clone();
        let state = rx
            .wait_for(|s| matches!(s, BlobState::Done | BlobState::Failed(_)))
            .await
            .map_err(|_| Status::internal("layer download vanished"))?
            .clone();
        match state {
            BlobState::Failed(why) => Err(Status::unavailable(format!(
                "downloading {}: {why}",
                layer.digest
            ))),
            _ => Ok(()),
        }
    }

    /// Applies `layer` (as it downloads, or from the store) at `target`;
    /// returns the staging directory for [`ApplyTarget::Staged`].
    async fn apply(
        &self,
        target: ApplyTarget,
        layer: &Descriptor,
        compression: archive::Compression,
        diff_id: &Digest,
        states: &HashMap<Digest, watch::Receiver<BlobState>>,
    ) -> Result<PathBuf, Status> {
        let mut rx = states
            .get(&layer.digest)
            .cloned()
            .ok_or_else(|| Status::internal(format!("no download for layer {}", layer.digest)))?;
        let state = rx
            .wait_for(|s| !matches!(s, BlobState::Pending))
            .await
            .map_err(|_| Status::internal("layer download vanished"))?
            .clone();
        let store = self.p.store.clone();
        let (digest, size, expected) = (layer.digest.clone(), layer.size, diff_id.to_string());
        let scratch = self
            .p
            .tmp_mounts
            .join(uuid::Uuid::new_v4().simple().to_string());
        let runtime = tokio::runtime::Handle::current();
        blocking(move || {
            let fail = |e: archive::ApplyError| {
                Status::invalid_argument(format!("applying layer {digest}: {e}"))
            };
            let run = |target: &Path, whiteouts: Whiteouts| -> Result<(), Status> {
                match &state {
                    BlobState::Writing { file, .. } => {
                        let reader = TailReader::new(file.clone(), size, rx, runtime);
                        archive::apply(target, reader, compression, whiteouts, Some(&expected))
                            .map(drop)
                            .map_err(fail)
                    }
                    BlobState::Done => {
                        let reader = store.reader_at(&digest).map_err(content_status)?;
                        let cursor = ReadCursor::new(&*reader);
                        archive::apply(target, cursor, compression, whiteouts, Some(&expected))
                            .map(drop)
                            .map_err(fail)
                    }
                    BlobState::Failed(why) => {
                        Err(Status::unavailable(format!("downloading {digest}: {why}")))
                    }
                    BlobState::Pending => Err(Status::internal("layer download not started")),
                }
            };
            let mounts = match target {
                ApplyTarget::Staged(dir) => return run(&dir, Whiteouts::Overlay).map(|()| dir),
                ApplyTarget::Mounts(mounts) => mounts,
            };
            if let Some((target, whiteouts)) = direct_target(&mounts) {
                return run(&target, whiteouts).map(|()| target);
            }
            std::fs::create_dir_all(&scratch)
                .map_err(|e| Status::internal(format!("{}: {e}", scratch.display())))?;
            let guard = MountGuard::mount(&mounts, &scratch)
                .map_err(|e| Status::failed_precondition(format!("mounting the snapshot: {e}")))?;
            let result = run(guard.target(), Whiteouts::Remove);
            let unmounted = guard.unmount();
            let _ = std::fs::remove_dir(&scratch);
            unmounted.map_err(|e| Status::internal(format!("unmounting the snapshot: {e}")))?;
            result.map(|()| scratch)
        })
        .await
    }
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

/// The fetcher of an import: everything is in the content store already,
/// so a blob that is not is missing from the archive.
#[derive(Debug)]
pub(crate) struct ArchiveOnly;

#[async_trait::async_trait]
impl Fetcher for ArchiveOnly {
    async fn fetch_from(
        &self,
        desc: &berth_remotes::Descriptor,
        _offset: u64,
    ) -> berth_remotes::Result<berth_remotes::ByteStream> {
        Err(berth_remotes::Error::NotFound {
            what: format!(
                "{} (not in the archive: an archive must hold every blob of the platforms it is imported for; export with --all-platforms, or import for the archive's platform)",
                desc.digest
            ),
            errors: Default::default(),
        })
    }
}
