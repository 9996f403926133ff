//! The Transfer and Streaming services: daemon-side pull and push, with
//! progress sent back over a client-opened stream (containerd's
//! `transfer.v1` and `streaming.v1`).
//!
//! A client opens a `Streaming.Stream`, sends `StreamInit{id}`, gets an
//! acknowledgement, then calls `Transfer` naming that id as its progress
//! stream (and optionally an auth stream for credentials). Supported pairs:
//! registry → image store (pull, unpacking when asked), image store →
//! registry (push), import stream → image store (import of an OCI layout or
//! `docker save` archive) and image store → export stream (export as an OCI
//! layout).

mod progress;
mod pull;
mod stream;
mod views;

pub(crate) use views::Backend;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use berth_api::containerd::services::streaming::v1 as spb;
use berth_api::containerd::services::streaming::v1::streaming_server::Streaming;
use berth_api::containerd::services::transfer::v1 as tpb;
use berth_api::containerd::services::transfer::v1::transfer_server::Transfer;
use berth_api::containerd::types::transfer as ttypes;
use berth_events::Exchange;
use berth_images::Platform;
use berth_metadata::Db;
use berth_remotes::auth::{Credential, StaticCredentials};
use berth_remotes::registry::RegistryOptions;
use berth_transfer::archive;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming as InStream};

use crate::services::namespace_of;
use crate::snapshotters::Snapshotters;
use crate::wire::unpack;
pub(crate) use progress::Progress;
pub(crate) use pull::{PullRequest, Puller};

/// The snapshotter images unpack into when the client names none.
const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// One open client stream: what the daemon sends, and what the client sent.
struct OpenStream {
    to_client: mpsc::Sender<Result<prost_types::Any, Status>>,
    from_client: Arc<tokio::sync::Mutex<InStream<prost_types::Any>>>,
}

/// Streams clients opened, by id.
#[derive(Default, Clone)]
pub(crate) struct Streams {
    open: Arc<Mutex<HashMap<String, OpenStream>>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

impl Streams {
    fn take(&self, id: &str) -> Option<OpenStream> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }
}

/// Serves `containerd.services.streaming.v1.Streaming`.
#[derive(Debug, Clone)]
pub(crate) struct StreamingService {
    streams: Streams,
}

impl StreamingService {
    /// A service registering into `streams`.
    pub(crate) fn new(streams: Streams) -> StreamingService {
        StreamingService { streams }
    }
}

type AnyStream = Pin<Box<dyn Stream<Item = Result<prost_types::Any, Status>> + Send>>;

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = AnyStream;

    async fn stream(
        &self,
        r: Request<InStream<prost_types::Any>>,
    ) -> Result<Response<AnyStream>, Status> {
        let mut incoming = r.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a stream starts with StreamInit"))?;
        if !first.type_url.ends_with("StreamInit") {
            return Err(Status::invalid_argument(format!(
                "a stream starts with StreamInit, not {}",
                first.type_url
            )));
        }
        let init = spb::StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("StreamInit: {e}")))?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("StreamInit needs an id"));
        }
        let (tx, rx) = mpsc::channel(256);
        // The acknowledgement containerd's clients wait for.
        let ack = prost_types::Any {
            type_url: "google.protobuf.Empty".to_string(),
            value: Vec::new(),
        };
        let _ = tx.send(Ok(ack)).await;
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if open.contains_key(&init.id) {
            return Err(Status::already_exists(format!(
                "stream {:?} is open already",
                init.id
            )));
        }
        open.insert(
            init.id,
            OpenStream {
                to_client: tx,
                from_client: Arc::new(tokio::sync::Mutex::new(incoming)),
            },
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves `containerd.services.transfer.v1.Transfer`.
#[derive(Debug, Clone)]
pub(crate) struct TransferService {
    puller: Puller,
    streams: Streams,
    pull_bytes: Option<prometheus_client::metrics::counter::Counter>,
}

impl TransferService {
    /// A service pulling into `store`/`db`/`snapshotters`.
    pub(crate) fn new(
        store: views::Backend,
        db: Db,
        snapshotters: Arc<Snapshotters>,
        exchange: Arc<Exchange>,
        state: &std::path::Path,
        streams: Streams,
    ) -> TransferService {
        let tmp_mounts = state
            .join("io.containerd.transfer.v1.local")
            .join("tmpmounts");
        crate::private::create_private_dir(&tmp_mounts);
        TransferService {
            puller: Puller {
                store,
                db,
                snapshotters,
                exchange,
                tmp_mounts,
                stall_timeout: berth_transfer::DEFAULT_STALL_TIMEOUT,
            },
            streams,
            pull_bytes: None,
        }
    }

    /// Gives up a pull whose registry sends nothing for `limit` (the
    /// ingest is kept: a retry resumes it).
    pub(crate) fn with_stall_timeout(mut self, limit: std::time::Duration) -> TransferService {
        self.puller.stall_timeout = limit;
        self
    }

    /// The pull engine this service drives (shared with the CRI plugin).
    pub(crate) fn puller(&self) -> Puller {
        self.puller.clone()
    }

    /// The counter of pulled bytes, if any.
    pub(crate) fn pull_bytes(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        self.pull_bytes.clone()
    }

    /// Counts the bytes every pull downloads into `counter` (`berth_pull_bytes`).
    pub(crate) fn with_pull_bytes(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> TransferService {
        self.pull_bytes = Some(counter);
        self
    }
}

fn kind(any: &Option<prost_types::Any>) -> &str {
    any.as_ref()
        .map(|a| a.type_url.rsplit(['/', '.']).next().unwrap_or_default())
        .unwrap_or_default()
}

fn platform_of(p: &berth_api::containerd::types::Platform) -> Platform {
    Platform::new(&p.os, &p.architecture, &p.variant)
}

/// Registry options from a request's resolver settings, asking the client
/// for credentials over its auth stream when it named one.
async fn registry_options(
    streams: &Streams,
    registry: &ttypes::OciRegistry,
    host: &str,
) -> Result<RegistryOptions, Status> {
    let mut options = RegistryOptions::default();
    let Some(resolver) = &registry.resolver else {
        return Ok(options);
    };
    if resolver.default_scheme == "http" {
        options = options.with_plain_http(true);
    }
    if !resolver.host_dir.is_empty() {
        options = options.with_hosts_dir(&resolver.host_dir);
    }
    if resolver.auth_stream.is_empty() {
        return Ok(options);
    }
    let stream = streams.take(&resolver.auth_stream).ok_or_else(|| {
        Status::failed_precondition(format!(
            "auth stream {:?} is not open",
            resolver.auth_stream
        ))
    })?;
    let ask = ttypes::AuthRequest {
        host: host.to_string(),
        reference: registry.reference.clone(),
        wwwauthenticate: Vec::new(),
    };
    stream
        .to_client
        .send(Ok(crate::wire::pack(&ask)))
        .await
        .map_err(|_| Status::cancelled("the client closed its auth stream"))?;
    let answer = stream
        .from_client
        .lock()
        .await
        .message()
        .await?
        .ok_or_else(|| Status::cancelled("the client closed its auth stream"))?;
    let auth: ttypes::AuthResponse = unpack(&answer, "AuthResponse")?;
    if auth.auth_type == ttypes::AuthType::Credentials as i32 {
        let credential = Credential::new(auth.username, auth.secret);
        options = options.with_credentials(StaticCredentials::new().with_host(host, credential));
    }
    Ok(options)
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, r: Request<tpb::TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let progress = r
            .options
            .as_ref()
            .filter(|o| !o.progress_stream.is_empty())
            .and_then(|o| self.streams.take(&o.progress_stream))
            .map_or_else(Progress::default, |s| Progress::to(s.to_client));
        match (kind(&r.source), kind(&r.destination)) {
            ("OCIRegistry", "ImageStore") => {
                let source: ttypes::OciRegistry =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::ImageStore = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                let host = berth_types::Reference::parse_normalized(&source.reference)
                    .map_err(crate::wire::status)?
                    .domain()
                    .to_string();
                let registry = registry_options(&self.streams, &source, &host).await?;
                let (unpack, platforms) = (unpack_of(&dest), platforms_of(&dest));
                let req = PullRequest {
                    namespace: ns,
                    reference: source.reference,
                    platforms,
                    all_platforms: dest.all_metadata,
                    unpack,
                    registry,
                    labels: dest.labels.into_iter().collect(),
                };
                let started = std::time::Instant::now();
                let pulled = self.puller.pull(req, progress).await?;
                if let Some(counter) = &self.pull_bytes {
                    counter.inc_by(pulled.downloaded);
                }
                tracing::info!(
                    image = %pulled.image.name,
                    downloaded = pulled.downloaded,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "pulled"
                );
                Ok(Response::new(()))
            }
            ("ImageStore", "OCIRegistry") => {
                let source: ttypes::ImageStore =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::OciRegistry = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                let host = berth_types::Reference::parse_normalized(&dest.reference)
                    .map_err(crate::wire::status)?
                    .domain()
                    .to_string();
                let registry = registry_options(&self.streams, &dest, &host).await?;
                let root = self.image_root(&ns, &source.name).await?;
                berth_transfer::push(
                    Arc::new(self.content_of(&ns, None)),
                    &root,
                    &dest.reference,
                    registry,
                    &progress.library(),
                )
                .await
                .map_err(crate::wire::status)?;
                Ok(Response::new(()))
            }
            ("ImageImportStream", "ImageStore") => {
                let source: ttypes::ImageImportStream =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::ImageStore = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                self.import(ns, source, dest, progress).await?;
                Ok(Response::new(()))
            }
            ("ImageStore", "ImageExportStream") => {
                let source: ttypes::ImageStore =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::ImageExportStream = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                self.export(ns, source, dest).await?;
                Ok(Response::new(()))
            }
            ("ImageImportStream", "ImageExportStream") => {
                let source: ttypes::ImageImportStream =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::ImageExportStream = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                self.echo(source, dest).await?;
                Ok(Response::new(()))
            }
            ("ImageStore", "ImageStore") => {
                let source: ttypes::ImageStore =
                    unpack(r.source.as_ref().unwrap_or(&Default::default()), "source")?;
                let dest: ttypes::ImageStore = unpack(
                    r.destination.as_ref().unwrap_or(&Default::default()),
                    "destination",
                )?;
                self.tag(ns, source, dest).await?;
                Ok(Response::new(()))
            }
            (s, d) => Err(Status::unimplemented(format!(
                "transfer from {s:?} to {d:?} is not supported (berthd does registry → image store, image store → registry, image store → image store, import stream → image store, image store → export stream and import stream → export stream)"
            ))),
        }
    }
}

/// The snapshotter an image store asks to unpack into, if any.
fn unpack_of(dest: &ttypes::ImageStore) -> Option<String> {
    dest.unpacks.first().map(|u| {
        if u.snapshotter.is_empty() {
            DEFAULT_SNAPSHOTTER.to_string()
        } else {
            u.snapshotter.clone()
        }
    })
}

/// The platforms an image store wants (its own, else its unpacks').
fn platforms_of(dest: &ttypes::ImageStore) -> Vec<Platform> {
    let mut platforms: Vec<Platform> = dest.platforms.iter().map(platform_of).collect();
    if platforms.is_empty() {
        platforms = dest
            .unpacks
            .iter()
            .filter_map(|u| u.platform.as_ref())
            .map(platform_of)
            .collect();
    }
    platforms
}

impl TransferService {
    fn open_stream(&self, id: &str, what: &str) -> Result<OpenStream, Status> {
        self.streams.take(id).ok_or_else(|| {
            Status::not_found(format!(
                "{what} stream {id:?} is not open: open it with Streaming.Stream (StreamInit) before the transfer"
            ))
        })
    }

    /// Reads an archive from the client's stream into `dest`'s images.
    #[tracing::instrument(name = "import", skip_all, fields(namespace = %ns))]
    async fn import(
        &self,
        ns: String,
        source: ttypes::ImageImportStream,
        dest: ttypes::ImageStore,
        progress: Progress,
    ) -> Result<(), Status> {
        let reader = stream::receive(self.open_stream(&source.stream, "import")?);
        // The archive's blobs go into the namespace under a lease of the
        // import's own, which holds them until the images are recorded.
        let (lease, guard) = self.puller.temp_lease(&ns, "berth-import").await?;
        let store = self.content_of(&ns, Some(lease));
        let prefix = format!("import-{}", uuid::Uuid::new_v4().simple());
        let naming = archive::Naming {
            index_name: (!dest.name.is_empty()).then(|| dest.name.clone()),
            references: dest
                .extra_references
                .iter()
                .map(|r| archive::ImageReference {
                    name: r.name.clone(),
                    is_prefix: r.is_prefix,
                    allow_overwrite: r.allow_overwrite,
                    add_digest: r.add_digest,
                    skip_named_digest: r.skip_named_digest,
                })
                .collect(),
        };
        progress.event("importing", "archive", 0, 0, None);
        let imported =
            tokio::task::spawn_blocking(move || archive::import(&store, reader, &prefix, &naming))
                .await
                .map_err(|e| Status::internal(format!("import task: {e}")))?
                .map_err(crate::wire::status)?;
        tracing::info!(
            images = imported.images.len(),
            blobs = imported.blobs_written,
            "archive read"
        );
        let (unpack, platforms) = (unpack_of(&dest), platforms_of(&dest));
        for (name, root) in imported.images {
            let req = PullRequest {
                namespace: ns.clone(),
                reference: name.clone(),
                platforms: platforms.clone(),
                all_platforms: dest.all_metadata,
                unpack: unpack.clone(),
                registry: RegistryOptions::default(),
                labels: dest.labels.clone().into_iter().collect(),
            };
            self.puller
                .fetch_and_record(
                    &req,
                    &name,
                    &root,
                    Arc::new(archive::ArchiveOnly),
                    progress.clone(),
                )
                .await?;
        }
        // Each image's own lease held it until its record did.
        drop(guard);
        Ok(())
    }

    /// containerd's echo: the import stream's bytes copied to the export
    /// stream unchanged (what clients use to test a transfer's streams).
    async fn echo(
        &self,
        source: ttypes::ImageImportStream,
        dest: ttypes::ImageExportStream,
    ) -> Result<(), Status> {
        let mut reader = stream::receive(self.open_stream(&source.stream, "import")?);
        let mut sender = stream::StreamSender::new(self.open_stream(&dest.stream, "export")?);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let copier = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0_u8; 1 << 16];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return Ok::<(), std::io::Error>(());
                }
            }
        });
        let sent = sender.send_all(rx).await;
        copier
            .await
            .map_err(|e| Status::internal(format!("echo task: {e}")))?
            .map_err(|e| Status::aborted(format!("reading the import stream: {e}")))?;
        sent?;
        sender.finish().await;
        Ok(())
    }

    /// The target descriptor of image `name` in namespace `ns`.
    /// Namespace `ns`'s view of the content store, writing into `lease`.
    fn content_of(&self, ns: &str, lease: Option<String>) -> views::TransferContent {
        views::TransferContent::new(self.puller.store.clone(), self.puller.db.clone(), ns, lease)
    }

    async fn image_root(&self, ns: &str, name: &str) -> Result<berth_images::Descriptor, Status> {
        let db = self.puller.db.clone();
        let (ns, name) = (ns.to_string(), name.to_string());
        let image = tokio::task::spawn_blocking(move || db.images().get(&ns, &name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(crate::wire::status)?;
        Ok(berth_images::Descriptor::new(
            image.target.media_type.clone(),
            berth_content::Digest::parse(&image.target.digest)
                .map_err(|e| Status::internal(format!("image target: {e}")))?,
            u64::try_from(image.target.size).unwrap_or(0),
        ))
    }

    /// containerd's tag: the source image's target stored under the
    /// destination's names (its name and complete references), created or
    /// updated.
    async fn tag(
        &self,
        ns: String,
        source: ttypes::ImageStore,
        dest: ttypes::ImageStore,
    ) -> Result<(), Status> {
        let root = self.image_root(&ns, &source.name).await?;
        let mut names: Vec<String> = Vec::new();
        if !dest.name.is_empty() {
            names.push(dest.name.clone());
        }
        for r in dest.extra_references.iter().filter(|r| !r.is_prefix) {
            names.push(if r.add_digest {
                format!("{}@{}", r.name, root.digest)
            } else {
                r.name.clone()
            });
        }
        if names.is_empty() {
            return Err(Status::not_found("no image name found: not found"));
        }
        let req = PullRequest {
            namespace: ns,
            labels: dest.labels.into_iter().collect(),
            ..Default::default()
        };
        for name in names {
            self.puller.record_image(&req, &name, &root).await?;
        }
        Ok(())
    }

    /// Writes `source`'s images to the client's stream as an OCI layout.
    #[tracing::instrument(name = "export", skip_all, fields(namespace = %ns))]
    async fn export(
        &self,
        ns: String,
        source: ttypes::ImageStore,
        dest: ttypes::ImageExportStream,
    ) -> Result<(), Status> {
        let stream = self.open_stream(&dest.stream, "export")?;
        let names: Vec<String> = std::iter::once(source.name.clone())
            .chain(source.extra_references.iter().map(|r| r.name.clone()))
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(Status::invalid_argument(
                "export needs at least one image name",
            ));
        }
        let db = self.puller.db.clone();
        let (ns2, names2) = (ns.clone(), names.clone());
        let records = tokio::task::spawn_blocking(move || {
            names2
                .iter()
                .map(|n| db.images().get(&ns2, n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(crate::wire::status)?;
        let mut images = Vec::new();
        for (name, image) in names.into_iter().zip(records) {
            let digest = berth_content::Digest::parse(&image.target.digest)
                .map_err(|e| Status::internal(format!("image {name}: target: {e}")))?;
            let root = berth_images::Descriptor::new(
                image.target.media_type.clone(),
                digest,
                u64::try_from(image.target.size).unwrap_or(0),
            );
            images.push((name, root));
        }
        let platforms: Vec<Platform> = dest.platforms.iter().map(platform_of).collect();
        let matcher = if platforms.is_empty() {
            berth_images::Matcher::host()
        } else {
            berth_images::Matcher::ordered(platforms)
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let store = self.content_of(&ns, None);
        let all = dest.all_platforms;
        let writer = tokio::task::spawn_blocking(move || {
            archive::export(
                &store,
                &images,
                &matcher,
                all,
                stream::ChannelWriter::new(tx),
            )
        });
        let mut sender = stream::StreamSender::new(stream);
        // The writer fails once nobody receives; its error says why first.
        let sent = sender.send_all(rx).await;
        writer
            .await
            .map_err(|e| Status::internal(format!("export task: {e}")))?
            .map_err(crate::wire::status)?;
        sent?;
        sender.finish().await;
        Ok(())
    }
}
