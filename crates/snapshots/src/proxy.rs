//! Snapshotters in another process, over containerd's snapshots gRPC API.
//!
//! containerd's `proxy_plugins` let a snapshotter run as its own daemon and
//! serve `containerd.services.snapshots.v1.Snapshots` on a UNIX socket. Both
//! halves are here:
//!
//! - [`Service`] serves any [`Snapshotter`] on that API (what a third-party
//!   snapshotter crate runs; see the `berth-proxy-snapshotter` binary);
//! - [`RemoteSnapshotter`] is a [`Snapshotter`] whose every call goes to
//!   such a server (what berthd builds for each `[proxy_plugins.NAME]`).
//!
//! The `snapshotter` field of requests is ignored by the server and set to
//! the plugin name by the client, as in containerd. `List` filters are not
//! applied by [`Service`]: the daemon filters what it gets.

// tonic's service traits return `Result<_, tonic::Status>`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::containerd::services::snapshots::v1 as pb;
use berth_api::containerd::types as pbt;
use berth_api::{Category, CategoryCode, ErrorCategory};
use hyper_util::rt::TokioIo;
use pb::snapshots_client::SnapshotsClient;
use pb::snapshots_server::{Snapshots, SnapshotsServer};
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage};

// ---- conversions -----------------------------------------------------------

/// The wire form of a [`Kind`].
pub fn kind_to_proto(kind: Kind) -> pb::Kind {
    match kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

/// A [`Kind`] from its wire number; `UNKNOWN` and unknown numbers are errors.
pub fn kind_from_proto(kind: i32) -> Result<Kind> {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::View) => Ok(Kind::View),
        Ok(pb::Kind::Active) => Ok(Kind::Active),
        Ok(pb::Kind::Committed) => Ok(Kind::Committed),
        _ => Err(Error::InvalidArgument(format!(
            "unknown snapshot kind {kind}"
        ))),
    }
}

/// A protobuf timestamp for `t` (before the epoch counts as the epoch).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The time a protobuf timestamp stands for (missing or negative: the epoch).
pub fn time_of(t: Option<&prost_types::Timestamp>) -> SystemTime {
    let Some(t) = t else {
        return SystemTime::UNIX_EPOCH;
    };
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
}

/// The wire form of an [`Info`].
pub fn info_to_proto(info: &Info) -> pb::Info {
    pb::Info {
        name: info.name.clone(),
        parent: info.parent.clone().unwrap_or_default(),
        kind: kind_to_proto(info.kind) as i32,
        created_at: Some(timestamp(info.created)),
        updated_at: Some(timestamp(info.updated)),
        labels: info
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// An [`Info`] from the wire; an unknown kind reads as active (it is only
/// used by updates, which ignore the kind).
pub fn info_from_proto(info: pb::Info) -> Info {
    Info {
        kind: kind_from_proto(info.kind).unwrap_or(Kind::Active),
        parent: Some(info.parent).filter(|p| !p.is_empty()),
        labels: info.labels.into_iter().collect(),
        created: time_of(info.created_at.as_ref()),
        updated: time_of(info.updated_at.as_ref()),
        name: info.name,
    }
}

/// The wire form of a [`Mount`].
pub fn mount_to_proto(m: &Mount) -> pbt::Mount {
    pbt::Mount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

/// A [`Mount`] from the wire.
pub fn mount_from_proto(m: pbt::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

/// containerd's error category of `e` (its [`ErrorCategory`]).
pub fn category(e: &Error) -> Category {
    e.category()
}

/// The gRPC status for `e`, with containerd's code for its category.
pub fn status(e: &Error) -> Status {
    berth_api::errdefs::status(e)
}

/// An [`Error`] of the category a status code stands for.
///
/// The message is the remote's, minus the `: <category>` suffix the remote
/// added, so it does not end up printed twice.
pub fn error_from_status(s: &Status) -> Error {
    let category = Category::from_code(s.code() as i32);
    let text = s.message();
    let msg = text
        .strip_suffix(&format!(": {category}"))
        .unwrap_or(text)
        .to_owned();
    match category {
        Category::NotFound => Error::NotFound(msg),
        Category::AlreadyExists => Error::AlreadyExists(msg),
        Category::InvalidArgument => Error::InvalidArgument(msg),
        Category::FailedPrecondition => Error::FailedPrecondition(msg),
        _ => Error::Unavailable(format!("remote snapshotter: {text} ({category})")),
    }
}

// ---- server ----------------------------------------------------------------

/// Serves a [`Snapshotter`] as containerd's snapshots gRPC service.
#[derive(Clone)]
pub struct Service {
    sn: Arc<dyn Snapshotter>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("proxy::Service")
    }
}

impl Service {
    /// A service around `sn`.
    pub fn new(sn: Arc<dyn Snapshotter>) -> Service {
        Service { sn }
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> SnapshotsServer<Service> {
        SnapshotsServer::new(self)
    }

    /// Runs `f` on the snapshotter on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Snapshotter) -> Result<T> + Send + 'static,
    ) -> std::result::Result<T, Status> {
        let sn = self.sn.clone();
        tokio::task::spawn_blocking(move || f(&*sn))
            .await
            .map_err(|e| Status::internal(format!("snapshotter task failed: {e}")))?
            .map_err(|e| status(&e))
    }
}

impl Service {
    /// Prepare (or, with `view`, View) and the new snapshot's mounts.
    async fn create(
        &self,
        r: pb::PrepareSnapshotRequest,
        view: bool,
    ) -> std::result::Result<Vec<pbt::Mount>, Status> {
        let labels: Labels = r.labels.into_iter().collect();
        let mounts = self
            .call(move |sn| {
                let parent = parent_of(&r.parent);
                if view {
                    sn.view(&r.key, parent.as_deref(), labels)
                } else {
                    sn.prepare(&r.key, parent.as_deref(), labels)
                }
            })
            .await?;
        Ok(mounts.iter().map(mount_to_proto).collect())
    }
}

fn parent_of(p: &str) -> Option<String> {
    Some(p.to_owned()).filter(|p| !p.is_empty())
}

type InfoStream =
    tokio_stream::Iter<std::vec::IntoIter<std::result::Result<pb::ListSnapshotsResponse, Status>>>;

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        r: Request<pb::PrepareSnapshotRequest>,
    ) -> std::result::Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let mounts = self.create(r.into_inner(), false).await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        r: Request<pb::ViewSnapshotRequest>,
    ) -> std::result::Result<Response<pb::ViewSnapshotResponse>, Status> {
        let v = r.into_inner();
        let r = pb::PrepareSnapshotRequest {
            snapshotter: v.snapshotter,
            key: v.key,
            parent: v.parent,
            labels: v.labels,
        };
        let mounts = self.create(r, true).await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        r: Request<pb::MountsRequest>,
    ) -> std::result::Result<Response<pb::MountsResponse>, Status> {
        let key = r.into_inner().key;
        let mounts = self.call(move |sn| sn.mounts(&key)).await?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts.iter().map(mount_to_proto).collect(),
        }))
    }

    async fn commit(
        &self,
        r: Request<pb::CommitSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let r = r.into_inner();
        let labels: Labels = r.labels.into_iter().collect();
        self.call(move |sn| sn.commit(&r.name, &r.key, labels))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        r: Request<pb::RemoveSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let key = r.into_inner().key;
        self.call(move |sn| sn.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        r: Request<pb::StatSnapshotRequest>,
    ) -> std::result::Result<Response<pb::StatSnapshotResponse>, Status> {
        let key = r.into_inner().key;
        let info = self.call(move |sn| sn.stat(&key)).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_proto(&info)),
        }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateSnapshotRequest>,
    ) -> std::result::Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = r.into_inner();
        let info = r
            .info
            .map(info_from_proto)
            .ok_or_else(|| Status::invalid_argument("update needs an info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self
            .call(move |sn| {
                let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                sn.update(info, &paths)
            })
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_proto(&info)),
        }))
    }

    type ListStream = InfoStream;

    async fn list(
        &self,
        _r: Request<pb::ListSnapshotsRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let infos = self
            .call(|sn| {
                let mut all = Vec::new();
                sn.walk(&mut |i| {
                    all.push(info_to_proto(i));
                    Ok(())
                })?;
                Ok(all)
            })
            .await?;
        // containerd sends batches of 100 infos per message.
        let batches: Vec<_> = infos
            .chunks(100)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        r: Request<pb::UsageRequest>,
    ) -> std::result::Result<Response<pb::UsageResponse>, Status> {
        let key = r.into_inner().key;
        let u = self.call(move |sn| sn.usage(&key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: i64::try_from(u.size).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(
        &self,
        _r: Request<pb::CleanupRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        self.call(|sn| sn.cleanup()).await?;
        Ok(Response::new(()))
    }
}

/// Serves `sn` on the UNIX socket `path` until `shutdown` completes.
///
/// A stale socket file is replaced; the socket is made mode 0660.
pub async fn serve(
    sn: Arc<dyn Snapshotter>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(Service::new(sn).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(std::io::Error::other);
    let _ = std::fs::remove_file(path);
    result
}

// ---- client ----------------------------------------------------------------

/// A [`Snapshotter`] served by another process on a UNIX socket.
///
/// The trait is synchronous, so each call blocks on the tokio runtime
/// given at construction: call it from a blocking thread
/// (`spawn_blocking`), never from inside an async task.
#[derive(Debug, Clone)]
pub struct RemoteSnapshotter {
    name: String,
    address: PathBuf,
    client: SnapshotsClient<Channel>,
    handle: Handle,
}

impl RemoteSnapshotter {
    /// A client for the snapshotter `name` served on socket `address`.
    ///
    /// Connects lazily: a server that is not up yet is dialled on first use,
    /// and a failed call is retried on a new connection next time.
    pub fn connect_lazy(name: &str, address: &Path, handle: Handle) -> RemoteSnapshotter {
        let dial = address.to_path_buf();
        // The URI is a placeholder: every connection dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let dial = dial.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(dial).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }),
        );
        RemoteSnapshotter {
            name: name.to_owned(),
            address: address.to_path_buf(),
            client: SnapshotsClient::new(channel),
            handle,
        }
    }

    /// The socket this client dials.
    pub fn address(&self) -> &Path {
        &self.address
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<Response<T>, Status>>,
    ) -> Result<T> {
        self.handle
            .block_on(f)
            .map(Response::into_inner)
            .map_err(|s| self.error(&s))
    }

    fn error(&self, s: &Status) -> Error {
        if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            let text = s.message();
            if text.contains("transport") || text.contains("connect") || text.is_empty() {
                return Error::Unavailable(format!(
                    "proxy snapshotter {:?} at {}: {text}; is it running?",
                    self.name,
                    self.address.display()
                ));
            }
        }
        error_from_status(s)
    }

    fn parent(parent: Option<&str>) -> String {
        parent.unwrap_or_default().to_owned()
    }
}

impl Snapshotter for RemoteSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.block(c.stat(pb::StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        r.info
            .map(info_from_proto)
            .ok_or_else(|| Error::Unavailable(format!("proxy {:?}: stat without info", self.name)))
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info> {
        let mut c = self.client.clone();
        let r = self.block(c.update(pb::UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            info: Some(info_to_proto(&info)),
            update_mask: Some(prost_types::FieldMask {
                paths: fieldpaths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        }))?;
        r.info.map(info_from_proto).ok_or_else(|| {
            Error::Unavailable(format!("proxy {:?}: update without info", self.name))
        })
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let mut c = self.client.clone();
        let r = self.block(c.usage(pb::UsageRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        Ok(Usage {
            size: u64::try_from(r.size).unwrap_or(0),
            inodes: u64::try_from(r.inodes).unwrap_or(0),
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.block(c.mounts(pb::MountsRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        Ok(r.mounts.into_iter().map(mount_from_proto).collect())
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.block(c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: Self::parent(parent),
            labels: labels.into_iter().collect(),
        }))?;
        Ok(r.mounts.into_iter().map(mount_from_proto).collect())
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        let mut c = self.client.clone();
        let r = self.block(c.view(pb::ViewSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
            parent: Self::parent(parent),
            labels: labels.into_iter().collect(),
        }))?;
        Ok(r.mounts.into_iter().map(mount_from_proto).collect())
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let mut c = self.client.clone();
        self.block(c.commit(pb::CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: labels.into_iter().collect(),
            parent: String::new(),
        }))
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.block(c.remove(pb::RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        let mut c = self.client.clone();
        let infos = self.handle.block_on(async {
            let mut stream = c
                .list(pb::ListSnapshotsRequest {
                    snapshotter: self.name.clone(),
                    filters: Vec::new(),
                })
                .await?
                .into_inner();
            let mut all = Vec::new();
            while let Some(batch) = stream.message().await? {
                all.extend(batch.info.into_iter().map(info_from_proto));
            }
            Ok::<_, Status>(all)
        });
        infos.map_err(|s| self.error(&s))?.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<()> {
        let mut c = self.client.clone();
        self.block(c.cleanup(pb::CleanupRequest {
            snapshotter: self.name.clone(),
        }))
    }
}
