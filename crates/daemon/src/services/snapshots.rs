//! The Snapshots gRPC service: containerd's `snapshots.v1.Snapshots` over
//! berth's namespaced snapshotters.

use std::sync::Arc;

use berth_api::containerd::services::snapshots::v1 as pb;
use berth_api::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use berth_snapshots::proxy::{info_from_proto, info_to_proto, mount_to_proto};
use berth_snapshots::{Info, Labels};
use tonic::{Request, Response, Status};

use super::content::lease_of;
use super::namespace_of;
use crate::snapshotters::Snapshotters;

/// Serves the snapshots API.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotsService {
    snapshotters: Arc<Snapshotters>,
}

impl SnapshotsService {
    /// A service over `snapshotters`.
    pub(crate) fn new(snapshotters: Arc<Snapshotters>) -> SnapshotsService {
        SnapshotsService { snapshotters }
    }
}

fn snapshotter(name: &str) -> Result<&str, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "snapshotter argument missing (ctr --snapshotter NAME)",
        ));
    }
    Ok(name)
}

fn parent(p: &str) -> Option<&str> {
    Some(p).filter(|p| !p.is_empty())
}

/// Field values of a snapshot for containerd's filter language.
fn matches(filter: &berth_filters::Filter, info: &Info) -> bool {
    let fields = berth_filters::Fields::new()
        .with("kind", info.kind.as_str())
        .with("name", &info.name)
        .with("parent", info.parent.as_deref().unwrap_or_default())
        .with_labels(&info.labels);
    filter.matches(&fields)
}

impl SnapshotsService {
    /// Prepare (or, with `view`, View): a new snapshot and its mounts.
    async fn create(
        &self,
        r: Request<pb::PrepareSnapshotRequest>,
        view: bool,
    ) -> Result<Vec<berth_api::containerd::types::Mount>, Status> {
        let ns = namespace_of(&r)?;
        let lease = lease_of(&r);
        let r = r.into_inner();
        let labels: Labels = r.labels.into_iter().collect();
        let mounts = self
            .snapshotters
            .create(
                &ns,
                snapshotter(&r.snapshotter)?,
                &r.key,
                parent(&r.parent),
                labels,
                lease.as_deref(),
                view,
            )
            .await
            .map_err(crate::wire::status)?;
        Ok(mounts.iter().map(mount_to_proto).collect())
    }
}

type ListStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListSnapshotsResponse, Status>>>;

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        r: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let mounts = self.create(r, false).await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        r: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        // The same fields as a prepare; the headers (namespace, lease) are kept.
        let r = r.map(|v| pb::PrepareSnapshotRequest {
            snapshotter: v.snapshotter,
            key: v.key,
            parent: v.parent,
            labels: v.labels,
        });
        let mounts = self.create(r, true).await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        r: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let mounts = self
            .snapshotters
            .mounts(&ns, snapshotter(&r.snapshotter)?, &r.key)
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts.iter().map(mount_to_proto).collect(),
        }))
    }

    async fn commit(&self, r: Request<pb::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let lease = lease_of(&r);
        let r = r.into_inner();
        let labels: Labels = r.labels.into_iter().collect();
        self.snapshotters
            .commit(
                &ns,
                snapshotter(&r.snapshotter)?,
                &r.name,
                &r.key,
                labels,
                lease.as_deref(),
            )
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(()))
    }

    async fn remove(&self, r: Request<pb::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        self.snapshotters
            .remove(&ns, snapshotter(&r.snapshotter)?, &r.key)
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        r: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let info = self
            .snapshotters
            .stat(&ns, snapshotter(&r.snapshotter)?, &r.key)
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_proto(&info)),
        }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let info = r
            .info
            .map(info_from_proto)
            .ok_or_else(|| Status::invalid_argument("update needs the snapshot's info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self
            .snapshotters
            .update(
                &ns,
                snapshotter(&r.snapshotter)?,
                &info.name,
                info.labels,
                paths,
            )
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_proto(&info)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let filter = berth_filters::parse_all(&r.filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let infos = self
            .snapshotters
            .list(&ns, snapshotter(&r.snapshotter)?)
            .await
            .map_err(crate::wire::status)?;
        let infos: Vec<pb::Info> = infos
            .iter()
            .filter(|i| matches(&filter, i))
            .map(info_to_proto)
            .collect();
        // containerd sends at most 100 infos per message.
        let batches: Vec<_> = infos
            .chunks(100)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        r: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let u = self
            .snapshotters
            .usage(&ns, snapshotter(&r.snapshotter)?, &r.key)
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(pb::UsageResponse {
            size: i64::try_from(u.size).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, r: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.snapshotters
            .cleanup(snapshotter(&r.snapshotter)?)
            .await
            .map_err(crate::wire::status)?;
        Ok(Response::new(()))
    }
}
