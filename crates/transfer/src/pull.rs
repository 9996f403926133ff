//! Pull: resolve a reference, fetch its manifests, download every layer
//! concurrently into the content store, and (when asked) unpack the layers
//! while they download. A pull that stops halfway leaves its ingests
//! behind, and the next pull resumes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_content::Digest;
use berth_images::manifest::{self, Descriptor, Manifest};
use berth_images::{Matcher, Platform, Reference, media};
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Fetcher, Resolver};
use futures::StreamExt;
use tokio::sync::watch;

use crate::blob::BlobState;
use crate::content::ContentStore;
use crate::progress::Progress;
use crate::unpack::{States, Unpacker};
use crate::{Error, Result, blocking};

/// Label naming an uncompressed layer's digest (its diffID).
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// How many indexes below the root a pull follows.
const MAX_NESTED_INDEXES: usize = 16;

/// The default of [`Puller::with_stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platforms wanted, best first; empty means the host's.
    pub platforms: Vec<Platform>,
    /// Fetch every platform's content (unpack still only the best match).
    pub all_platforms: bool,
    /// Unpack into this snapshotter; `None` leaves the image packed.
    pub unpack: Option<Unpacker>,
    /// Registry options: TLS, mirrors (`hosts.toml`), credentials.
    pub registry: RegistryOptions,
    /// Where progress goes.
    pub progress: Progress,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The image's root: its manifest or index. Record it as the image.
    pub root: Descriptor,
    /// Bytes downloaded (not counting blobs already present).
    pub downloaded: u64,
    /// The top snapshot's chain ID, when the pull unpacked.
    pub chain_id: Option<Digest>,
}

/// Pulls images into one content store.
#[derive(Clone)]
pub struct Puller {
    content: Arc<dyn ContentStore>,
    stall_timeout: Duration,
    ingest_prefix: String,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("stall_timeout", &self.stall_timeout)
            .field("ingest_prefix", &self.ingest_prefix)
            .finish_non_exhaustive()
    }
}

/// A spawned task that is aborted when dropped: a pull whose caller went
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

/// `fut`, failing with DeadlineExceeded if the registry is silent for
/// `limit` (`what` names what was awaited).
async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::deadline_exceeded(format!(
            "{}: the registry sent nothing for {}s; what was downloaded is kept and a retry \
             resumes it (the limit is stall_timeout in [plugins.\"io.containerd.transfer.v1.local\"])",
            what(),
            limit.as_secs()
        ))),
    }
}

impl Puller {
    /// A puller storing blobs in `content`.
    pub fn new(content: Arc<dyn ContentStore>) -> Puller {
        Puller {
            content,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            ingest_prefix: String::new(),
        }
    }

    /// Gives up a pull whose registry sends nothing for `limit` (the
    /// ingest is kept: a retry resumes it). Default: 60 s.
    pub fn with_stall_timeout(mut self, limit: Duration) -> Puller {
        self.stall_timeout = limit;
        self
    }

    /// Names ingests `<prefix>/<kind>-<digest>` (containerd's
    /// `remotes.MakeRefKey` uses the namespace), so concurrent pulls of the
    /// same blob share one ingest. Default: no prefix (`<kind>-<digest>`).
    pub fn with_ingest_prefix(mut self, prefix: impl Into<String>) -> Puller {
        self.ingest_prefix = prefix.into();
        self
    }

    /// Pulls `reference` (`busybox`, `host:5000/x:tag`, `x@sha256:...`):
    /// resolves it, fetches what `options` asks for, unpacks if asked.
    ///
    /// Errors: InvalidArgument for a bad reference or image, NotFound when
    /// the registry has no such image or no manifest for the platform,
    /// Unauthenticated/PermissionDenied from the registry, Unavailable when
    /// it cannot be reached, DeadlineExceeded when it stalls.
    #[tracing::instrument(name = "pull", skip_all, fields(reference = %reference))]
    pub async fn pull(&self, reference: &str, options: &PullOptions) -> Result<Pulled> {
        let parsed = Reference::parse_normalized(reference)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let name = parsed.to_string();
        let registry = Registry::new(options.registry.clone())?;
        options.progress.event("resolving", &name, 0, 0, None);
        let (resolved, root) = within(self.stall_timeout, || format!("resolving {name}"), async {
            Ok(registry.resolve(&name).await?)
        })
        .await?;
        let root = Descriptor::new(root.media_type, root.digest, root.size);
        options.progress.event("resolved", &name, 0, 0, Some(&root));
        let fetcher: Arc<dyn Fetcher> = registry.fetcher(&resolved)?.into();
        let source = (
            format!("containerd.io/distribution.source.{}", parsed.domain()),
            parsed.path().to_string(),
        );
        self.fetch(&name, &root, fetcher, Some(source), options)
            .await
    }

    /// Fetches everything of `root` that `options` asks for from `fetcher`
    /// where the store lacks it, unpacking when asked (the second half of
    /// [`Puller::pull`]; an archive import calls it with a fetcher that has
    /// nothing, see [`crate::archive::ArchiveOnly`]). `source_label` is put
    /// on every blob (`containerd.io/distribution.source.<host>`).
    pub async fn fetch(
        &self,
        name: &str,
        root: &Descriptor,
        fetcher: Arc<dyn Fetcher>,
        source_label: Option<(String, String)>,
        options: &PullOptions,
    ) -> Result<Pulled> {
        let job = Job {
            content: self.content.clone(),
            stall: self.stall_timeout,
            prefix: self.ingest_prefix.clone(),
            fetcher,
            progress: options.progress.clone(),
            source_label,
        };
        let (downloaded, chain_id) = job.run(name, root, options).await?;
        Ok(Pulled {
            name: name.to_string(),
            root: root.clone(),
            downloaded,
            chain_id,
        })
    }
}

/// One pull in progress.
#[derive(Clone)]
struct Job {
    content: Arc<dyn ContentStore>,
    stall: Duration,
    prefix: String,
    fetcher: Arc<dyn Fetcher>,
    progress: Progress,
    /// `containerd.io/distribution.source.<host>` = repository, for pulls.
    source_label: Option<(String, String)>,
}

impl Job {
    /// The ingest ref of a pulled blob: containerd's (remotes.MakeRefKey).
    fn ingest_ref(&self, media_type: &str, digest: &Digest) -> String {
        let kind = if media_type.contains("manifest.list")
            || media_type.ends_with("image.index.v1+json")
        {
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
        if self.prefix.is_empty() {
            format!("{kind}-{digest}")
        } else {
            format!("{}/{kind}-{digest}", self.prefix)
        }
    }

    /// Fetches and unpacks; returns the bytes downloaded and the top chain.
    async fn run(
        &self,
        name: &str,
        root: &Descriptor,
        req: &PullOptions,
    ) -> Result<(u64, Option<Digest>)> {
        let matcher = if req.platforms.is_empty() {
            Matcher::host()
        } else {
            Matcher::ordered(req.platforms.clone())
        };
        let root_bytes = self.fetch_small(root).await?;
        let mut manifests: Vec<(Descriptor, Manifest)> = Vec::new();
        if media::is_index(&root.media_type) {
            let index = manifest::parse_index(root, &root_bytes)?;
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
                            return Err(Error::invalid_argument(format!(
                                "{name}: more than {MAX_NESTED_INDEXES} nested indexes"
                            )));
                        }
                        let bytes = self.fetch_small(&d).await?;
                        let child = manifest::parse_index(&d, &bytes)?;
                        self.save(&d, bytes, gc_refs(&child.manifests)).await?;
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
                return Err(Error::not_found(format!(
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
            let refs: Vec<Descriptor> = chosen.iter().chain(&nested).cloned().collect();
            self.save(root, root_bytes, gc_refs(&refs)).await?;
            for d in chosen {
                let bytes = self.fetch_small(&d).await?;
                let m = manifest::parse_manifest(&d, &bytes)?;
                self.save_manifest(&d, &m, bytes).await?;
                manifests.push((d, m));
            }
        } else if media::is_manifest(&root.media_type) {
            let m = manifest::parse_manifest(root, &root_bytes)?;
            self.save_manifest(root, &m, root_bytes).await?;
            manifests.push((root.clone(), m));
        } else {
            media::check_supported(&root.media_type)?;
            return Err(Error::invalid_argument(format!(
                "{name}: {} is neither an image manifest nor an index",
                root.media_type
            )));
        }

        // Configs are small and say what the layers unpack to.
        let mut configs = Vec::new();
        for (_, m) in &manifests {
            let bytes = self.fetch_small(&m.config).await?;
            let config = manifest::parse_config(&m.config, &bytes)?;
            self.save(&m.config, bytes, BTreeMap::new()).await?;
            configs.push(config);
        }

        // Every layer of every chosen manifest downloads at once (the
        // registry client limits concurrency per host), layer 0 first.
        let mut states: States = HashMap::new();
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
                let job = self.clone();
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
            (Some(unpacker), Some((_, m)), Some(config)) => unpacker
                .unpack_layers(
                    &self.content,
                    &m.layers,
                    &config.rootfs.diff_ids,
                    &states,
                    &self.progress,
                )
                .await
                .map(Some),
            _ => Ok(None),
        };
        let mut downloaded = 0;
        let mut failure = unpacked.as_ref().err().cloned();
        for d in downloads {
            match d.await {
                Ok(Ok(n)) => downloaded += n,
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => {
                    failure = failure.or(Some(Error::internal(format!("download task: {e}"))))
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let chain = unpacked?;
        if let (Some(chain), Some(unpacker), Some((_, m))) =
            (&chain, &req.unpack, manifests.first())
        {
            // The config names the unpacked snapshot, so GC keeps both.
            unpacker
                .label_config(&*self.content, &m.config, chain)
                .await?;
        }
        Ok((downloaded, chain))
    }

    /// Fetches a manifest, index or config (size-checked first) into memory.
    async fn fetch_small(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        manifest::check_size(desc)?;
        // Store calls block (a store may be a remote one): off the async
        // threads.
        let (content, digest) = (self.content.clone(), desc.digest.clone());
        let local = blocking(move || {
            Ok(content.reader_at(&digest).ok().and_then(|reader| {
                let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
                reader.read_exact_at(&mut data, 0).ok().map(|()| data)
            }))
        })
        .await?;
        if let Some(data) = local {
            return Ok(data);
        }
        let stall = self.stall;
        let what = || format!("fetching {}", desc.digest);
        let mut stream = within(stall, what, async { Ok(self.fetcher.fetch(desc).await?) }).await?;
        let mut data = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        while let Some(chunk) = within(stall, what, async { Ok(stream.next().await) }).await? {
            data.extend_from_slice(&chunk?);
            if data.len() as u64 > desc.size {
                return Err(Error::data_loss(format!(
                    "{}: the registry sent more than {} bytes",
                    desc.digest, desc.size
                )));
            }
        }
        let actual = desc.digest.algorithm().digest(&data);
        if actual != desc.digest {
            return Err(Error::data_loss(format!(
                "{}: the registry sent content with digest {actual}; nothing was stored",
                desc.digest
            )));
        }
        Ok(data)
    }

    async fn save_manifest(&self, desc: &Descriptor, m: &Manifest, bytes: Vec<u8>) -> Result<()> {
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

    /// Stores a verified small blob and labels it.
    async fn save(
        &self,
        desc: &Descriptor,
        bytes: Vec<u8>,
        mut labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if let Some((k, v)) = &self.source_label {
            labels.insert(k.clone(), v.clone());
        }
        let (content, digest, size) = (self.content.clone(), desc.digest.clone(), desc.size);
        let ref_ = self.ingest_ref(&desc.media_type, &desc.digest);
        blocking(move || {
            berth_content::write_blob(&*content, &ref_, &bytes, &digest, Default::default())?;
            content.add_labels(&digest, size, labels)?;
            Ok(())
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
    ) -> Result<u64> {
        let name = format!("layer-{}", layer.digest);
        let ref_ = self.ingest_ref(&layer.media_type, &layer.digest);
        let opened = {
            let (content, ref_, digest, size) = (
                self.content.clone(),
                ref_.clone(),
                layer.digest.clone(),
                layer.size,
            );
            blocking(
                move || match content.writer(&ref_, Some(size), Some(&digest)) {
                    Ok(w) => Ok(Some((w, content.ingest_file(&ref_).map(Arc::new)))),
                    Err(berth_content::Error::AlreadyExists(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                },
            )
            .await?
        };
        let Some((mut writer, file)) = opened else {
            self.layer_stored(layer, labels, state, "exists", &name)
                .await?;
            return Ok(0);
        };
        let start = writer.status()?.offset;
        let mut written = start;
        // Appliers follow the ingest file where the store offers one.
        let publish = |written: u64| {
            if let Some(file) = &file {
                state.send_replace(BlobState::Writing {
                    file: file.clone(),
                    written,
                });
            }
        };
        publish(written);
        let mut fetched = 0;
        if written < layer.size {
            self.progress
                .event("downloading", &name, written, layer.size, Some(layer));
            let stall = self.stall;
            let what = || format!("downloading {}", layer.digest);
            let mut stream = within(stall, what, async {
                Ok(self.fetcher.fetch_from(layer, written).await?)
            })
            .await?;
            while let Some(chunk) = within(stall, what, async { Ok(stream.next().await) }).await? {
                let chunk = chunk?;
                if written + chunk.len() as u64 > layer.size {
                    return Err(Error::data_loss(format!(
                        "{}: the registry sent more than {} bytes",
                        layer.digest, layer.size
                    )));
                }
                // Page-cache writes of one chunk: short enough for a worker.
                writer.write(&chunk)?;
                written += chunk.len() as u64;
                fetched += chunk.len() as u64;
                publish(written);
                self.progress
                    .event("downloading", &name, written, layer.size, Some(layer));
            }
        }
        let (digest, size) = (layer.digest.clone(), layer.size);
        blocking(move || {
            writer
                .commit(size, Some(&digest), Default::default())
                .or_else(|e| match e {
                    berth_content::Error::AlreadyExists(_) => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| Error::data_loss(format!("layer {digest}: {e}; nothing was stored")))
        })
        .await?;
        self.layer_stored(layer, labels, state, "complete", &name)
            .await?;
        Ok(fetched)
    }

    /// A layer's blob is in the store: says so to the appliers and in the
    /// progress (`event`), and labels it.
    async fn layer_stored(
        &self,
        layer: &Descriptor,
        labels: BTreeMap<String, String>,
        state: &watch::Sender<BlobState>,
        event: &str,
        name: &str,
    ) -> Result<()> {
        state.send_replace(BlobState::Done);
        self.progress
            .event(event, name, layer.size, layer.size, Some(layer));
        let (content, digest, size) = (self.content.clone(), layer.digest.clone(), layer.size);
        blocking(move || Ok(content.add_labels(&digest, size, labels)?)).await
    }
}

/// `containerd.io/gc.ref.content.m.<i>` labels for `children`.
fn gc_refs(children: &[Descriptor]) -> BTreeMap<String, String> {
    children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("containerd.io/gc.ref.content.m.{i}"),
                c.digest.to_string(),
            )
        })
        .collect()
}
