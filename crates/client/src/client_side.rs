//! Pull, unpack, push, import and export done by the client, as
//! containerd's Go client does them on a daemon without a Transfer service
//! (containerd 1.x): berth-transfer runs in the client over the daemon's
//! Content service ([`RemoteContent`]); layers are unpacked by the daemon
//! through its Snapshots and Diff services (prepare, `Diff.Apply` on the
//! snapshot's mounts, commit), and images are recorded through its Images
//! service. Everything runs under one lease (containerd's `WithLease`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_api::containerd::services::diff::v1 as diff_pb;
use berth_api::containerd::services::images::v1 as images_pb;
use berth_api::containerd::services::snapshots::v1 as snap_pb;
use berth_images::{Matcher, Platform};
use berth_remotes::registry::RegistryOptions;
use berth_transfer::{ContentStore, PullOptions, Puller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{Error, Result, StatusContext};
use crate::remote_content::RemoteContent;
use crate::transfer::{
    ConvertOpts, ExportOpts, FetchOpts, ImportOpts, ObjectOpts, Progress, ProgressHandler,
    PullOpts, PushOpts,
};

/// The label a committed layer snapshot carries: its chain ID.
const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// The label naming an uncompressed layer's digest.
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// A berth-transfer error as the client's, with what was being done.
pub(crate) fn transfer_error(context: &str, e: berth_transfer::Error) -> Error {
    let category = e.category();
    Error::ClientSide {
        context: context.to_string(),
        category,
        message: e.to_string(),
    }
}

/// Progress of berth-transfer handed to the client's handler.
fn progress_of(handler: Option<&ProgressHandler>) -> berth_transfer::Progress {
    match handler {
        Some(h) => {
            let h = h.clone();
            berth_transfer::Progress::to(move |e| {
                (h.0)(Progress {
                    event: e.event,
                    name: e.name,
                    progress: i64::try_from(e.progress).unwrap_or(i64::MAX),
                    total: i64::try_from(e.total).unwrap_or(i64::MAX),
                })
            })
        }
        None => berth_transfer::Progress::none(),
    }
}

fn parse_platform(p: &str) -> Result<Platform> {
    Platform::parse(p).map_err(|e| Error::InvalidArgument(format!("platform {p:?}: {e}")))
}

fn matcher(platform: Option<&str>) -> Result<Matcher> {
    Ok(match platform {
        Some(p) => Matcher::only(&parse_platform(p)?),
        None => Matcher::host(),
    })
}

/// Registry options of a client-side pull or push.
fn registry_options(
    plain_http: bool,
    hosts_dir: Option<&str>,
    credentials: Option<&(String, String)>,
) -> RegistryOptions {
    let mut o = RegistryOptions::default().with_plain_http(plain_http);
    if let Some(dir) = hosts_dir {
        o = o.with_hosts_dir(dir);
    }
    if let Some((user, secret)) = credentials {
        o = o.with_credentials(berth_remotes::auth::StaticCredentials::new().with_any_host(
            berth_remotes::auth::Credential::new(
                user.clone(),
                berth_remotes::auth::Secret::new(secret.clone()),
            ),
        ));
    }
    o
}

/// Gives each client-side option type that names a registry a
/// `registry()` method building its [`RegistryOptions`].
macro_rules! registry_of {
    ($($t:ty),*) => {$(
        impl $t {
            /// The registry options these options name (plain HTTP, hosts
            /// directory, credentials).
            pub(crate) fn registry(&self) -> RegistryOptions {
                registry_options(
                    self.plain_http,
                    self.hosts_dir.as_deref(),
                    self.credentials.as_ref(),
                )
            }
        }
    )*};
}
registry_of!(PullOpts, PushOpts, FetchOpts, ObjectOpts);

/// Reads blobs for berth-images' graph walks through the Content service.
pub(crate) struct Blobs(pub(crate) Client);

#[async_trait::async_trait]
impl berth_images::handlers::ReadBlob for Blobs {
    async fn read_blob(&self, desc: &berth_images::Descriptor) -> berth_images::Result<Vec<u8>> {
        self.0
            .read_blob(desc.digest.as_str())
            .await
            .map_err(|e| berth_images::Error::Read {
                digest: desc.digest.clone(),
                category: e.category(),
                source: Box::new(e),
            })
    }
}

impl Client {
    /// Creates image record `name` → `root`, or points an existing one
    /// there (containerd's `createNewImage`).
    async fn record_image(
        &self,
        name: &str,
        root: &berth_images::Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut paths = vec!["target".to_string()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        let image = images_pb::Image {
            name: name.to_string(),
            target: Some(crate::image::descriptor_to_wire(root)),
            labels,
            ..Default::default()
        };
        match self
            .images()
            .create(images_pb::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.images()
                    .update(images_pb::UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask { paths }),
                        source_date_epoch: None,
                    })
                    .await
                    .ctx(|| format!("updating image {name:?}"))?;
                Ok(())
            }
            Err(s) => Err(Error::status(format!("creating image {name:?}"), s)),
        }
    }

    /// Unpacks the image at `root` into `snapshotter` on the daemon: each
    /// missing layer's snapshot prepared on its parent, the layer applied
    /// by the Diff service into its mounts, committed under its chain ID
    /// (containerd's `rootfs.ApplyLayers`); then the config labelled so the
    /// collector keeps the snapshots. Returns the top chain ID.
    pub(crate) async fn unpack_on_daemon(
        &self,
        root: &berth_images::Descriptor,
        platform: Option<&str>,
        snapshotter: &str,
        progress: &berth_transfer::Progress,
    ) -> Result<String> {
        let matcher = matcher(platform)?;
        let image =
            berth_images::handlers::image_layers_and_config(&Blobs(self.clone()), root, &matcher)
                .await
                .map_err(|e| Error::Image {
                    name: root.digest.to_string(),
                    reason: e.to_string(),
                })?;
        let chains = berth_images::manifest::chain_ids(image.diff_ids());
        let mut parent = String::new();
        for ((layer, diff_id), chain) in image.layers.iter().zip(image.diff_ids()).zip(&chains) {
            let chain = chain.to_string();
            let exists = self
                .snapshots()
                .stat(snap_pb::StatSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: chain.clone(),
                })
                .await;
            match exists {
                Ok(_) => {
                    parent = chain;
                    continue;
                }
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(Error::status(format!("looking up snapshot {chain}"), s)),
            }
            let name = format!("layer-{}", layer.digest);
            progress.event("unpacking", &name, 0, layer.size, None);
            let labels: HashMap<String, String> =
                [(LABEL_SNAPSHOT_REF.to_string(), chain.clone())].into();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let key = format!("extract-{nanos}-{} {chain}", std::process::id());
            let mounts = self
                .snapshots()
                .prepare(snap_pb::PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.clone(),
                    parent: parent.clone(),
                    labels: labels.clone(),
                })
                .await
                .ctx(|| format!("preparing snapshot {key:?}"))?
                .mounts;
            let applied = self
                .apply_layer(layer, diff_id, mounts)
                .await
                .map(|()| labels.clone());
            let committed = match applied {
                Ok(labels) => self
                    .snapshots()
                    .commit(snap_pb::CommitSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels,
                        parent: String::new(),
                    })
                    .await
                    .map(drop)
                    .or_else(|s| {
                        // Another unpack committed the same layer first.
                        if s.code() == tonic::Code::AlreadyExists {
                            Ok(())
                        } else {
                            Err(Error::status(format!("committing snapshot {chain}"), s))
                        }
                    }),
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let _ = self
                    .snapshots()
                    .remove(snap_pb::RemoveSnapshotRequest {
                        snapshotter: snapshotter.to_string(),
                        key: key.clone(),
                    })
                    .await;
                return Err(e);
            }
            progress.event("unpacked", &name, layer.size, layer.size, None);
            parent = chain;
        }
        if parent.is_empty() {
            return Err(Error::Image {
                name: root.digest.to_string(),
                reason: "the image has no layers".into(),
            });
        }
        // The config names the snapshot, so the collector keeps both.
        let store = RemoteContent::new(self);
        let (config, labels) = (
            image.config.clone(),
            BTreeMap::from([(
                format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
                parent.clone(),
            )]),
        );
        tokio::task::spawn_blocking(move || store.add_labels(&config.digest, config.size, labels))
            .await
            .map_err(|e| Error::io("labelling the image config", std::io::Error::other(e)))?
            .map_err(|e| Error::ClientSide {
                context: "labelling the image config".into(),
                category: berth_api::Category::Unknown,
                message: e.to_string(),
            })?;
        Ok(parent)
    }

    /// Applies `layer` into the snapshot `mounts` through the Diff service,
    /// checks what it unpacked to, and labels the blob with it.
    async fn apply_layer(
        &self,
        layer: &berth_images::Descriptor,
        diff_id: &berth_content::Digest,
        mounts: Vec<berth_api::containerd::types::Mount>,
    ) -> Result<()> {
        let applied = self
            .diff()
            .apply(diff_pb::ApplyRequest {
                diff: Some(crate::image::descriptor_to_wire(layer)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            })
            .await
            .ctx(|| format!("applying layer {}", layer.digest))?
            .applied
            .unwrap_or_default();
        if applied.digest != diff_id.as_str() {
            return Err(Error::Image {
                name: layer.digest.to_string(),
                reason: format!(
                    "the layer unpacked to {}, the image config says {diff_id}",
                    applied.digest
                ),
            });
        }
        self.content()
            .update(
                berth_api::containerd::services::content::v1::UpdateRequest {
                    info: Some(berth_api::containerd::services::content::v1::Info {
                        digest: layer.digest.to_string(),
                        labels: [(LABEL_UNCOMPRESSED.to_string(), diff_id.to_string())].into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{LABEL_UNCOMPRESSED}")],
                    }),
                },
            )
            .await
            .ctx(|| format!("labelling layer {}", layer.digest))?;
        Ok(())
    }

    /// Pull done by the client (see the module docs).
    pub(crate) async fn pull_client_side(&self, name: &str, opts: &PullOpts) -> Result<()> {
        let operation = format!("pulling {name}");
        self.leased(|c| async move {
            let progress = progress_of(opts.progress.as_ref());
            let options = PullOptions {
                platforms: opts
                    .platform
                    .as_deref()
                    .map(parse_platform)
                    .transpose()?
                    .into_iter()
                    .collect(),
                registry: opts.registry(),
                progress: progress.clone(),
                ..PullOptions::default()
            };
            let pulled = c.fetch_into_store(name, &options, &operation).await?;
            if opts.unpack {
                c.unpack_on_daemon(
                    &pulled.root,
                    opts.platform.as_deref(),
                    &opts.snapshotter,
                    &progress,
                )
                .await?;
            }
            c.record_image(name, &pulled.root, HashMap::new()).await?;
            progress.event("saved", name, 0, 0, None);
            Ok(())
        })
        .await
    }

    /// Resolves `name` and fetches what `options` asks for into the
    /// daemon's content store, through its Content service: the one
    /// client-side fetch that pull and `fetch` share.
    async fn fetch_into_store(
        &self,
        name: &str,
        options: &PullOptions,
        operation: &str,
    ) -> Result<berth_transfer::Pulled> {
        let store: Arc<dyn ContentStore> = Arc::new(RemoteContent::new(self));
        Puller::new(store)
            .pull(name, options)
            .await
            .map_err(|e| transfer_error(operation, e))
    }

    /// Fetch (containerd's `client.Fetch`, ctr's `content fetch`): the
    /// image's content for the platforms asked for into the daemon's
    /// content store, by the client, without unpacking; then the image
    /// record, with `opts.labels`. Returns the normalised name.
    pub async fn fetch(&self, reference: &str, opts: FetchOpts) -> Result<String> {
        let name = crate::image::normalize(reference)?;
        let operation = format!("fetching {name}");
        let opts = &opts;
        let name_ref = &name;
        self.leased(|c| async move {
            let progress = progress_of(opts.progress.as_ref());
            let options = PullOptions {
                platforms: opts
                    .platforms
                    .iter()
                    .map(|p| parse_platform(p))
                    .collect::<Result<Vec<_>>>()?,
                all_platforms: opts.all_platforms,
                registry: opts.registry(),
                progress: progress.clone(),
                ..PullOptions::default()
            };
            let pulled = c.fetch_into_store(name_ref, &options, &operation).await?;
            c.record_image(name_ref, &pulled.root, opts.labels.clone())
                .await?;
            progress.event("saved", name_ref, 0, 0, None);
            Ok(())
        })
        .await?;
        Ok(name)
    }

    /// Fetches one object from a registry (ctr's `content fetch-object`):
    /// `reference` resolved, or given `digest`, that manifest or blob in
    /// the reference's repository; its bytes written to `out`. Nothing is
    /// stored. Returns what was fetched.
    pub async fn fetch_object<W>(
        &self,
        reference: &str,
        digest: Option<&str>,
        mut out: W,
        opts: &ObjectOpts,
    ) -> Result<crate::Descriptor>
    where
        W: AsyncWrite + Unpin,
    {
        use tokio_stream::StreamExt;
        let operation = format!("fetching {reference}");
        let registry = opts.registry();
        let (desc, mut stream) = berth_transfer::fetch_object(reference, digest, registry)
            .await
            .map_err(|e| transfer_error(&operation, e))?;
        let write = |e| Error::io(format!("writing {}", desc.digest), e);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| transfer_error(&operation, berth_transfer::Error::from(e)))?;
            out.write_all(&chunk).await.map_err(write)?;
        }
        out.flush().await.map_err(write)?;
        Ok(desc)
    }

    /// Pushes one object of the daemon's content store to the repository
    /// of `reference` as `media_type` (ctr's `content push-object`; a
    /// manifest goes under the reference's tag). Returns whether it was
    /// uploaded (`false`: the registry had it).
    pub async fn push_object(
        &self,
        reference: &str,
        digest: &str,
        media_type: &str,
        opts: &ObjectOpts,
    ) -> Result<bool> {
        let operation = format!("pushing {digest} to {reference}");
        let info = self
            .content()
            .info(berth_api::containerd::services::content::v1::InfoRequest {
                digest: digest.to_string(),
            })
            .await
            .ctx(|| format!("content {digest}"))?
            .info
            .unwrap_or_default();
        let parsed = berth_content::Digest::parse(digest)
            .map_err(|e| Error::InvalidArgument(format!("object {digest:?}: {e}")))?;
        let desc = berth_images::Descriptor::new(
            media_type.to_string(),
            parsed,
            u64::try_from(info.size).unwrap_or(0),
        );
        let store: Arc<dyn ContentStore> = Arc::new(RemoteContent::new(self));
        let pushed = berth_transfer::push_object(
            store,
            &desc,
            reference,
            opts.registry(),
            &progress_of(opts.progress.as_ref()),
        )
        .await
        .map_err(|e| transfer_error(&operation, e))?;
        Ok(pushed == berth_remotes::Pushed::Uploaded)
    }

    /// Converts image `source` into image `target` (containerd's
    /// `converter.Convert`, ctr's `images convert`), done by the client
    /// over the Content service: Docker media types to OCI
    /// ([`ConvertOpts::oci`]), layers uncompressed
    /// ([`ConvertOpts::uncompress`]), an index cut to the platforms asked
    /// (the host's alone unless told otherwise). New blobs go to the
    /// content store; `target` is created (or pointed at the result) with
    /// `source`'s labels. Returns the target's root descriptor.
    pub async fn convert(
        &self,
        source: &str,
        target: &str,
        opts: ConvertOpts,
    ) -> Result<crate::Descriptor> {
        let operation = format!("converting {source} to {target}");
        let record = self.get_image_record(source).await?;
        let root = record.target.clone();
        let platforms = if opts.all_platforms {
            Matcher::all()
        } else if opts.platforms.is_empty() {
            Matcher::strict(&Platform::host())
        } else {
            Matcher::ordered(
                opts.platforms
                    .iter()
                    .map(|p| parse_platform(p))
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        let options = berth_transfer::convert::ConvertOptions {
            oci: opts.oci,
            uncompress: opts.uncompress,
            platforms,
        };
        let (operation, labels) = (&operation, record.labels.clone());
        self.leased(|c| async move {
            let store = RemoteContent::new(&c);
            let converted = tokio::task::spawn_blocking(move || {
                berth_transfer::convert::convert(&store, &root, &options)
            })
            .await
            .map_err(|e| Error::io(operation.clone(), std::io::Error::other(e)))?
            .map_err(|e| transfer_error(operation, e))?;
            c.record_image(target, &converted, labels).await?;
            Ok(converted)
        })
        .await
    }

    /// Import done by the client (see the module docs).
    pub(crate) async fn import_client_side<R>(
        &self,
        archive: R,
        opts: &ImportOpts,
    ) -> Result<Vec<String>>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let operation = "importing an archive";
        self.leased(|c| async move {
            let store = Arc::new(RemoteContent::new(&c));
            let naming = berth_transfer::archive::Naming {
                index_name: opts.index_name.clone(),
                references: opts
                    .base_name
                    .iter()
                    .map(|b| berth_transfer::archive::ImageReference {
                        name: b.clone(),
                        is_prefix: true,
                        allow_overwrite: opts.allow_overwrite,
                        ..Default::default()
                    })
                    .collect(),
            };
            // The archive's bytes go from the async reader to the blocking
            // importer through a channel.
            let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
            let feeder = tokio::spawn(feed(archive, tx));
            let prefix = format!(
                "import-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            let imported = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    berth_transfer::archive::import(
                        &*store,
                        ChannelReader::new(rx),
                        &prefix,
                        &naming,
                    )
                })
                .await
                .map_err(|e| Error::io(operation, std::io::Error::other(e)))?
                .map_err(|e| transfer_error(operation, e))?
            };
            feeder.abort();
            let progress = berth_transfer::Progress::none();
            let mut names = Vec::new();
            for (name, root) in imported.images {
                // What a pull labels (GC references, platforms chosen) is
                // labelled the same way; the archive must hold it all.
                let options = PullOptions {
                    platforms: opts
                        .platform
                        .as_deref()
                        .map(parse_platform)
                        .transpose()?
                        .into_iter()
                        .collect(),
                    ..PullOptions::default()
                };
                let dyn_store: Arc<dyn ContentStore> = store.clone();
                Puller::new(dyn_store)
                    .fetch(
                        &name,
                        &root,
                        Arc::new(berth_transfer::archive::ArchiveOnly),
                        None,
                        &options,
                    )
                    .await
                    .map_err(|e| transfer_error(operation, e))?;
                if opts.unpack {
                    c.unpack_on_daemon(
                        &root,
                        opts.platform.as_deref(),
                        &opts.snapshotter,
                        &progress,
                    )
                    .await?;
                }
                c.record_image(&name, &root, HashMap::new()).await?;
                names.push(name);
            }
            Ok(names)
        })
        .await
    }

    /// Export done by the client (see the module docs).
    pub(crate) async fn export_client_side<W>(
        &self,
        names: &[String],
        mut out: W,
        opts: &ExportOpts,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let operation = format!("exporting {}", names.join(", "));
        let mut images = Vec::new();
        for name in names {
            let record = self.get_image_record(name).await?;
            images.push((name.clone(), record.target.clone()));
        }
        let matcher = if opts.platforms.is_empty() {
            Matcher::host()
        } else {
            Matcher::ordered(
                opts.platforms
                    .iter()
                    .map(|p| parse_platform(p))
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        let store = RemoteContent::new(self);
        let all = opts.all_platforms;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            berth_transfer::archive::export(&store, &images, &matcher, all, ChannelWriter(tx))
        });
        let mut written = 0_u64;
        let write = |e| Error::io("writing the archive", e);
        while let Some(chunk) = rx.recv().await {
            out.write_all(&chunk).await.map_err(write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(write)?;
        writer
            .await
            .map_err(|e| Error::io(operation.clone(), std::io::Error::other(e)))?
            .map_err(|e| transfer_error(&operation, e))?;
        Ok(written)
    }

    /// Push done by the client: the image's blobs read through the
    /// Content service and sent to the registry.
    pub(crate) async fn push_client_side(
        &self,
        local: &str,
        remote: &str,
        opts: &PushOpts,
    ) -> Result<()> {
        let operation = format!("pushing {local} to {remote}");
        let record = self.get_image_record(local).await?;
        let root = record.target.clone();
        let store: Arc<dyn ContentStore> = Arc::new(RemoteContent::new(self));
        berth_transfer::push(
            store,
            &root,
            remote,
            opts.registry(),
            &progress_of(opts.progress.as_ref()),
        )
        .await
        .map_err(|e| transfer_error(&operation, e))
    }
}

/// Sends what `input` reads, in chunks, until its end or an error.
async fn feed<R: AsyncRead + Unpin>(mut input: R, tx: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut buf = vec![0_u8; 1 << 20];
    loop {
        match input.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Ok(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// `std::io::Read` over chunks from a channel (on a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `std::io::Write` into a channel (on a blocking thread).
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::other("the archive's writer went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
