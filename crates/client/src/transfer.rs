//! Pull, push, import and export through the daemon's Transfer service
//! (berthd, containerd 2.x): the daemon does the work, the client names
//! source and destination and, for archives, streams the bytes over the
//! Streaming service with containerd's flow control (the receiving side
//! grants bytes with `WindowUpdate`, the sender stays within the grants).
//!
//! A daemon without a Transfer service (containerd 1.x) answers
//! Unimplemented: the client then does the work itself, as containerd's
//! Go client does there (see `client_side.rs`), and remembers the answer.

use std::collections::HashMap;

use berth_api::containerd::services::streaming::v1::StreamInit;
use berth_api::containerd::services::transfer::v1 as tpb;
use berth_api::containerd::types::transfer as tt;
use prost::{Message, Name};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::image::{Image, normalize};

/// Bytes the client lets the daemon have in flight on an export.
const EXPORT_WINDOW: i32 = 1 << 20;

/// The snapshotter images are unpacked into unless told otherwise.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// One progress report of a transfer (containerd's `transfer.Progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What happened (`resolving`, `downloading`, `unpacking`, `saved`, ...).
    pub event: String,
    /// What it is about (an image name, a layer).
    pub name: String,
    /// Bytes done.
    pub progress: i64,
    /// Bytes in all.
    pub total: i64,
}

/// Receives a transfer's progress reports, in order. The daemon may drop
/// intermediate ones a slow client does not take in time.
#[derive(Clone)]
pub struct ProgressHandler(pub std::sync::Arc<dyn Fn(Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHandler")
    }
}

impl ProgressHandler {
    /// A handler calling `f`.
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> ProgressHandler {
        ProgressHandler(std::sync::Arc::new(f))
    }
}

/// How to pull (containerd's `WithPullUnpack`, `WithPlatform`, ...).
#[derive(Debug, Clone)]
pub struct PullOpts {
    /// Unpack into [`PullOpts::snapshotter`] (default: yes).
    pub unpack: bool,
    /// The snapshotter to unpack into (default `overlayfs`).
    pub snapshotter: String,
    /// Pull (and unpack) this platform (`linux/arm64`) instead of the host's.
    pub platform: Option<String>,
    /// Talk plain HTTP to the registry (loopback registries get it anyway).
    pub plain_http: bool,
    /// Directory of containerd-style `hosts.toml` registry configuration,
    /// read by the daemon.
    pub hosts_dir: Option<String>,
    /// Receives progress reports (containerd's `WithProgress`).
    pub progress: Option<ProgressHandler>,
    /// User name and password for the registry. Used only when the client
    /// pulls itself (a daemon without a Transfer service); through the
    /// Transfer service the daemon's own configuration applies.
    pub credentials: Option<(String, String)>,
}

/// How to push (containerd's `Push` options).
#[derive(Debug, Clone, Default)]
pub struct PushOpts {
    /// Talk plain HTTP to the registry (loopback registries get it anyway).
    pub plain_http: bool,
    /// Directory of containerd-style `hosts.toml` registry configuration.
    pub hosts_dir: Option<String>,
    /// Receives progress reports.
    pub progress: Option<ProgressHandler>,
    /// User name and password for the registry (see
    /// [`PullOpts::credentials`]).
    pub credentials: Option<(String, String)>,
}

/// How to fetch an image without unpacking it (containerd's `Fetch`
/// options, ctr's `content fetch`). Always done by the client.
#[derive(Debug, Clone, Default)]
pub struct FetchOpts {
    /// Platforms to fetch (`linux/arm64`); empty means the host's.
    pub platforms: Vec<String>,
    /// Fetch every platform's content.
    pub all_platforms: bool,
    /// Labels set on the image record.
    pub labels: HashMap<String, String>,
    /// Talk plain HTTP to the registry (loopback registries get it anyway).
    pub plain_http: bool,
    /// Directory of containerd-style `hosts.toml` registry configuration.
    pub hosts_dir: Option<String>,
    /// Receives progress reports.
    pub progress: Option<ProgressHandler>,
    /// User name and password for the registry.
    pub credentials: Option<(String, String)>,
}

/// How to convert an image ([`Client::convert`], ctr's `images convert`).
#[derive(Debug, Clone, Default)]
pub struct ConvertOpts {
    /// Docker media types become OCI ones (`--oci`).
    pub oci: bool,
    /// Compressed layers become plain tars (`--uncompress`).
    pub uncompress: bool,
    /// Keep these platforms of an index (`linux/arm64`); empty means the
    /// host's alone (containerd's `DefaultStrict`).
    pub platforms: Vec<String>,
    /// Keep every platform (`--all-platforms`).
    pub all_platforms: bool,
}

/// Registry access of one object moved by the client
/// ([`Client::fetch_object`], [`Client::push_object`]).
#[derive(Debug, Clone, Default)]
pub struct ObjectOpts {
    /// Talk plain HTTP to the registry (loopback registries get it anyway).
    pub plain_http: bool,
    /// Directory of containerd-style `hosts.toml` registry configuration.
    pub hosts_dir: Option<String>,
    /// User name and password for the registry.
    pub credentials: Option<(String, String)>,
    /// Receives progress reports (pushes).
    pub progress: Option<ProgressHandler>,
}

impl Default for PullOpts {
    fn default() -> PullOpts {
        PullOpts {
            unpack: true,
            snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
            platform: None,
            plain_http: false,
            hosts_dir: None,
            progress: None,
            credentials: None,
        }
    }
}

/// How to import an archive (an OCI layout or `docker save` tar, optionally
/// gzipped).
#[derive(Debug, Clone)]
pub struct ImportOpts {
    /// Name the archive's index (or its only image) this.
    pub index_name: Option<String>,
    /// Name entries whose annotation is a bare tag `<base_name>:<tag>`.
    pub base_name: Option<String>,
    /// Entries with a complete name of their own keep it even outside
    /// [`ImportOpts::base_name`] (ctr's default `import-<date>` prefix).
    pub allow_overwrite: bool,
    /// Unpack into [`ImportOpts::snapshotter`] (default: yes).
    pub unpack: bool,
    /// The snapshotter to unpack into (default `overlayfs`).
    pub snapshotter: String,
    /// Unpack this platform (`linux/arm64`) instead of the host's.
    pub platform: Option<String>,
}

impl Default for ImportOpts {
    fn default() -> ImportOpts {
        ImportOpts {
            index_name: None,
            base_name: None,
            allow_overwrite: false,
            unpack: true,
            snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
            platform: None,
        }
    }
}

/// How to export images.
#[derive(Debug, Clone, Default)]
pub struct ExportOpts {
    /// Only these platforms' manifests (`linux/amd64`).
    pub platforms: Vec<String>,
    /// Every platform's manifests (all must be in the content store).
    pub all_platforms: bool,
}

fn any<M: Message + Name>(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

fn platform(p: &str) -> Result<berth_api::containerd::types::Platform> {
    let p = berth_images::Platform::parse(p)
        .map_err(|e| Error::InvalidArgument(format!("platform {p:?}: {e}")))?;
    Ok(berth_api::containerd::types::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
        os_version: String::new(),
        os_features: Vec::new(),
    })
}

/// A daemon status, or [`Error::TransferUnavailable`] when the service
/// itself is missing.
fn transfer_error(operation: &str, s: tonic::Status) -> Error {
    if s.code() == tonic::Code::Unimplemented {
        return Error::TransferUnavailable {
            operation: operation.to_string(),
        };
    }
    Error::status(operation, s)
}

/// A Streaming-service stream the daemon and client exchange `Any`s on.
struct OpenStream {
    id: String,
    to_daemon: mpsc::Sender<prost_types::Any>,
    from_daemon: tonic::Streaming<prost_types::Any>,
}

impl Client {
    /// Opens a stream (`StreamInit`) and waits for the daemon's
    /// acknowledgement, after which transfers may name it.
    async fn open_stream(&self, operation: &str) -> Result<OpenStream> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("berth-client-{}-{nanos}", std::process::id());
        let (tx, rx) = mpsc::channel(16);
        // The receiver is alive: this cannot fail.
        let _ = tx.send(any(&StreamInit { id: id.clone() })).await;
        let mut from_daemon = self
            .streaming()
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| transfer_error(operation, s))?
            .into_inner();
        from_daemon
            .message()
            .await
            .map_err(|s| transfer_error(operation, s))?;
        Ok(OpenStream {
            id,
            to_daemon: tx,
            from_daemon,
        })
    }

    /// One Transfer call, its progress (if wanted) reported to `progress`.
    async fn transfer(
        &self,
        operation: &str,
        source: prost_types::Any,
        destination: prost_types::Any,
        progress: Option<ProgressHandler>,
    ) -> Result<()> {
        let mut options = tpb::TransferOptions::default();
        let reader = match progress {
            Some(handler) => {
                let stream = self.open_stream(operation).await?;
                options.progress_stream = stream.id.clone();
                Some(tokio::spawn(report_progress(stream, handler)))
            }
            None => None,
        };
        let result = self
            .transfer_service()
            .transfer(tpb::TransferRequest {
                source: Some(source),
                destination: Some(destination),
                options: Some(options),
            })
            .await;
        if let Some(reader) = reader {
            if result.is_ok() {
                // The daemon closes the progress stream as the transfer
                // ends: every report it sent is handled before returning.
                let _ = reader.await;
            } else {
                reader.abort();
            }
        }
        result.map_err(|s| transfer_error(operation, s))?;
        Ok(())
    }

    /// Pulls `reference` and unpacks it for the host platform (containerd's
    /// `Pull(ctx, ref, WithPullUnpack)`), then returns the image.
    ///
    /// The daemon pulls through its Transfer service; on a daemon without
    /// one (containerd 1.x) the client pulls into the daemon's content
    /// store and has it unpack through its Diff and Snapshots services, as
    /// containerd's Go client does.
    pub async fn pull(&self, reference: &str) -> Result<Image> {
        self.pull_with(reference, PullOpts::default()).await
    }

    /// [`Client::pull`] with options.
    pub async fn pull_with(&self, reference: &str, opts: PullOpts) -> Result<Image> {
        let name = normalize(reference)?;
        let operation = format!("pulling {name}");
        let platforms = opts
            .platform
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect::<Vec<_>>();
        let source = tt::OciRegistry {
            reference: name.clone(),
            resolver: Some(tt::RegistryResolver {
                host_dir: opts.hosts_dir.clone().unwrap_or_default(),
                default_scheme: if opts.plain_http {
                    "http".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
        };
        let dest = tt::ImageStore {
            name: name.clone(),
            unpacks: if opts.unpack {
                vec![tt::UnpackConfiguration {
                    platform: platforms.first().cloned(),
                    snapshotter: opts.snapshotter.clone(),
                }]
            } else {
                Vec::new()
            },
            platforms,
            ..Default::default()
        };
        if !self.transfer_known_absent() {
            tracing::debug!(%name, "pulling through the Transfer service");
            match self
                .transfer(&operation, any(&source), any(&dest), opts.progress.clone())
                .await
            {
                Ok(()) => return self.get_image(&name).await,
                Err(Error::TransferUnavailable { .. }) => self.mark_transfer_absent(),
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(%name, "pulling in the client (no Transfer service)");
        self.pull_client_side(&name, &opts).await?;
        self.get_image(&name).await
    }

    /// Pushes image `local` to registry reference `remote` (containerd's
    /// `Push`): through the Transfer service, or by the client on a daemon
    /// without one.
    pub async fn push(&self, local: &str, remote: &str, opts: PushOpts) -> Result<()> {
        let (local, remote) = (normalize(local)?, normalize(remote)?);
        let operation = format!("pushing {local} to {remote}");
        if !self.transfer_known_absent() {
            let source = tt::ImageStore {
                name: local.clone(),
                ..Default::default()
            };
            let dest = tt::OciRegistry {
                reference: remote.clone(),
                resolver: Some(tt::RegistryResolver {
                    host_dir: opts.hosts_dir.clone().unwrap_or_default(),
                    default_scheme: if opts.plain_http {
                        "http".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                }),
            };
            match self
                .transfer(&operation, any(&source), any(&dest), opts.progress.clone())
                .await
            {
                Err(Error::TransferUnavailable { .. }) => self.mark_transfer_absent(),
                other => return other,
            }
        }
        self.push_client_side(&local, &remote, &opts).await
    }

    /// Imports an image archive read from `archive` (containerd's
    /// `Transfer(ctx, ImportStream, ImageStore)`), unpacking the host's
    /// platform unless told not to.
    pub async fn import<R>(&self, archive: R, opts: ImportOpts) -> Result<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let operation = "importing an archive";
        if self.transfer_known_absent() {
            return self.import_client_side(archive, &opts).await.map(drop);
        }
        let data = match self.open_stream(operation).await {
            Ok(d) => d,
            Err(Error::TransferUnavailable { .. }) => {
                self.mark_transfer_absent();
                return self.import_client_side(archive, &opts).await.map(drop);
            }
            Err(e) => return Err(e),
        };
        let platforms = opts
            .platform
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect::<Vec<_>>();
        let source = tt::ImageImportStream {
            stream: data.id.clone(),
            ..Default::default()
        };
        let dest = tt::ImageStore {
            name: opts.index_name.clone().unwrap_or_default(),
            extra_references: opts
                .base_name
                .iter()
                .map(|b| tt::ImageReference {
                    name: b.clone(),
                    is_prefix: true,
                    allow_overwrite: opts.allow_overwrite,
                    ..Default::default()
                })
                .collect(),
            unpacks: if opts.unpack {
                vec![tt::UnpackConfiguration {
                    platform: platforms.first().cloned(),
                    snapshotter: opts.snapshotter.clone(),
                }]
            } else {
                Vec::new()
            },
            platforms,
            ..Default::default()
        };
        let sender = tokio::spawn(send_archive(archive, data.to_daemon, data.from_daemon));
        let result = self
            .transfer(operation, any(&source), any(&dest), None)
            .await;
        // The daemon stops reading at the archive's end marker; whatever the
        // sender still waits for is not needed.
        sender.abort();
        result
    }

    /// Exports `names` as an OCI layout archive (also loadable by `docker
    /// load`) written to `out`; returns the bytes written.
    pub async fn export<W>(&self, names: &[&str], out: W, opts: ExportOpts) -> Result<u64>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let names = names
            .iter()
            .map(|n| normalize(n))
            .collect::<Result<Vec<_>>>()?;
        let Some((first, rest)) = names.split_first() else {
            return Err(Error::InvalidArgument(
                "export: name at least one image".into(),
            ));
        };
        let operation = format!("exporting {}", names.join(", "));
        if self.transfer_known_absent() {
            return self.export_client_side(&names, out, &opts).await;
        }
        let data = match self.open_stream(&operation).await {
            Ok(d) => d,
            Err(Error::TransferUnavailable { .. }) => {
                self.mark_transfer_absent();
                return self.export_client_side(&names, out, &opts).await;
            }
            Err(e) => return Err(e),
        };
        let source = tt::ImageStore {
            name: first.clone(),
            extra_references: rest
                .iter()
                .map(|n| tt::ImageReference {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let dest = tt::ImageExportStream {
            stream: data.id.clone(),
            platforms: opts
                .platforms
                .iter()
                .map(|p| platform(p))
                .collect::<Result<Vec<_>>>()?,
            all_platforms: opts.all_platforms,
            ..Default::default()
        };
        let receiver = tokio::spawn(receive_archive(out, data.to_daemon, data.from_daemon));
        if let Err(e) = self
            .transfer(&operation, any(&source), any(&dest), None)
            .await
        {
            receiver.abort();
            return Err(e);
        }
        receiver.await.map_err(|e| Error::Io {
            context: "the export writer".into(),
            source: std::io::Error::other(e),
        })?
    }
}

/// Hands each progress report the daemon sends to `handler` until it
/// closes the stream.
async fn report_progress(mut stream: OpenStream, handler: ProgressHandler) {
    while let Ok(Some(m)) = stream.from_daemon.message().await {
        if let Ok(p) = tt::Progress::decode(m.value.as_slice()) {
            (handler.0)(Progress {
                event: p.event,
                name: p.name,
                progress: p.progress,
                total: p.total,
            });
        }
    }
}

/// Sends `input` as `Data` within the daemon's grants, then ends the stream.
async fn send_archive<R: AsyncRead + Unpin>(
    mut input: R,
    to_daemon: mpsc::Sender<prost_types::Any>,
    mut from_daemon: tonic::Streaming<prost_types::Any>,
) -> Result<u64> {
    let status = |s| Error::status("the import stream", s);
    let mut window: i64 = 0;
    let mut sent = 0_u64;
    let mut buf = vec![0_u8; 256 << 10];
    loop {
        while window <= 0 {
            match from_daemon.message().await.map_err(status)? {
                Some(m) if m.type_url.ends_with("WindowUpdate") => {
                    let update = tt::WindowUpdate::decode(m.value.as_slice()).map_err(|e| {
                        Error::Decode {
                            what: "a WindowUpdate".into(),
                            reason: e.to_string(),
                        }
                    })?;
                    window += i64::from(update.update);
                }
                Some(_) => {}
                None => return Ok(sent),
            }
        }
        let want = buf.len().min(usize::try_from(window).unwrap_or(buf.len()));
        let n = input
            .read(&mut buf[..want])
            .await
            .map_err(|e| Error::io("reading the archive", e))?;
        if n == 0 {
            // End our side, then wait for the daemon to end its: dropping
            // the response early would reset the stream and lose data.
            drop(to_daemon);
            while from_daemon.message().await.map_err(status)?.is_some() {}
            return Ok(sent);
        }
        if to_daemon
            .send(any(&tt::Data {
                data: buf[..n].to_vec(),
            }))
            .await
            .is_err()
        {
            return Ok(sent);
        }
        window -= n as i64;
        sent += n as u64;
    }
}

/// Writes what the daemon streams to `out`, granting it room as it goes.
async fn receive_archive<W: AsyncWrite + Unpin>(
    mut out: W,
    to_daemon: mpsc::Sender<prost_types::Any>,
    mut from_daemon: tonic::Streaming<prost_types::Any>,
) -> Result<u64> {
    let write = |e| Error::io("writing the archive", e);
    // A closed stream shows up as the end of the messages below.
    let _ = to_daemon
        .send(any(&tt::WindowUpdate {
            update: EXPORT_WINDOW,
        }))
        .await;
    let (mut received, mut consumed) = (0_u64, 0_i64);
    while let Some(m) = from_daemon
        .message()
        .await
        .map_err(|s| Error::status("the export stream", s))?
    {
        if !m.type_url.ends_with("Data") {
            continue;
        }
        let d = tt::Data::decode(m.value.as_slice()).map_err(|e| Error::Decode {
            what: "export Data".into(),
            reason: e.to_string(),
        })?;
        out.write_all(&d.data).await.map_err(write)?;
        received += d.data.len() as u64;
        consumed += d.data.len() as i64;
        if consumed >= i64::from(EXPORT_WINDOW / 2) {
            let update = i32::try_from(consumed).unwrap_or(EXPORT_WINDOW);
            consumed = 0;
            // The daemon may have finished and closed its side.
            let _ = to_daemon.send(any(&tt::WindowUpdate { update })).await;
        }
    }
    out.flush().await.map_err(write)?;
    Ok(received)
}
