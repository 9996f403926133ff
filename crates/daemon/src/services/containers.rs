//! The Containers gRPC service: containerd's `containers.v1.Containers`
//! over the metadata container store, publishing `/containers/*` events.

use std::sync::Arc;

use berth_api::containerd::events as ev;
use berth_api::containerd::services::containers::v1 as pb;
use berth_api::containerd::services::containers::v1::containers_server::Containers;
use berth_events::Exchange;
use berth_metadata::{ContainerRecord, Db, Runtime};
use tonic::{Request, Response, Status};

use super::{namespace_of, with_db};
use crate::wire::{any_from_record, any_to_record, pack};

/// Serves the containers API.
#[derive(Debug, Clone)]
pub(crate) struct ContainersService {
    db: Db,
    exchange: Arc<Exchange>,
}

impl ContainersService {
    /// A service over `db`, publishing on `exchange`.
    pub(crate) fn new(db: Db, exchange: Arc<Exchange>) -> ContainersService {
        ContainersService { db, exchange }
    }

    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        if let Err(e) = self.exchange.publish(ns, topic, event) {
            tracing::warn!(error = %e, topic, "cannot publish container event");
        }
    }
}

/// A record from the wire form (timestamps are the store's).
pub(crate) fn record_of(c: pb::Container) -> ContainerRecord {
    let runtime = c.runtime.unwrap_or_default();
    let mut r = ContainerRecord::default();
    r.id = c.id;
    r.labels = c.labels.into_iter().collect();
    r.image = c.image;
    r.runtime = Runtime {
        name: runtime.name,
        options: runtime.options.map(any_to_record),
    };
    r.spec = c.spec.map(any_to_record);
    r.snapshotter = c.snapshotter;
    r.snapshot_key = c.snapshot_key;
    r.extensions = c
        .extensions
        .into_iter()
        .map(|(k, v)| (k, any_to_record(v)))
        .collect();
    r.sandbox = c.sandbox;
    r
}

/// The wire form of a record.
pub(crate) fn container_to_proto(r: ContainerRecord) -> pb::Container {
    let (created, updated) = (r.created_at(), r.updated_at());
    pb::Container {
        id: r.id,
        labels: r.labels.into_iter().collect(),
        image: r.image,
        runtime: Some(pb::container::Runtime {
            name: r.runtime.name,
            options: r.runtime.options.map(any_from_record),
        }),
        spec: r.spec.map(any_from_record),
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        created_at: Some(created.into()),
        updated_at: Some(updated.into()),
        extensions: r
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_from_record(v)))
            .collect(),
        sandbox: r.sandbox,
    }
}

fn matches(filter: &berth_filters::Filter, r: &ContainerRecord) -> bool {
    let fields = berth_filters::Fields::new()
        .with("id", &r.id)
        .with("image", &r.image)
        .with("runtime.name", &r.runtime.name)
        .with("snapshotter", &r.snapshotter)
        .with("snapshotkey", &r.snapshot_key)
        .with_labels(&r.labels);
    filter.matches(&fields)
}

impl ContainersService {
    async fn filtered(&self, ns: String, filters: &[String]) -> Result<Vec<pb::Container>, Status> {
        let filter = berth_filters::parse_all(filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let all = with_db(&self.db, move |db| db.containers().list(&ns)).await?;
        Ok(all
            .into_iter()
            .filter(|c| matches(&filter, c))
            .map(container_to_proto)
            .collect())
    }
}

type ListStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListContainerMessage, Status>>>;

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        r: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().id;
        let c = super::read_db(&self.db, |db| db.containers().get(&ns, &id))?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(container_to_proto(c)),
        }))
    }

    async fn list(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let ns = namespace_of(&r)?;
        let containers = self.filtered(ns, &r.get_ref().filters).await?;
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace_of(&r)?;
        let containers = self.filtered(ns, &r.get_ref().filters).await?;
        let items: Vec<_> = containers
            .into_iter()
            .map(|c| Ok(pb::ListContainerMessage { container: Some(c) }))
            .collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn create(
        &self,
        r: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ns = namespace_of(&r)?;
        let c = r
            .into_inner()
            .container
            .ok_or_else(|| Status::invalid_argument("create needs a container"))?;
        let record = record_of(c);
        let ns2 = ns.clone();
        let created = with_db(&self.db, move |db| db.containers().create(&ns2, record)).await?;
        self.publish(
            &ns,
            "/containers/create",
            pack(&ev::ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(ev::container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created.runtime.options.clone().map(any_from_record),
                }),
            }),
        );
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(container_to_proto(created)),
        }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let c = r
            .container
            .ok_or_else(|| Status::invalid_argument("update needs a container"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let record = record_of(c);
        let ns2 = ns.clone();
        let updated = with_db(&self.db, move |db| {
            db.containers().update(&ns2, record, &paths)
        })
        .await?;
        self.publish(
            &ns,
            "/containers/update",
            pack(&ev::ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone().into_iter().collect(),
                snapshot_key: updated.snapshot_key.clone(),
            }),
        );
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(container_to_proto(updated)),
        }))
    }

    async fn delete(&self, r: Request<pb::DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().id;
        let (ns2, id2) = (ns.clone(), id.clone());
        with_db(&self.db, move |db| db.containers().delete(&ns2, &id2)).await?;
        self.publish(&ns, "/containers/delete", pack(&ev::ContainerDelete { id }));
        Ok(Response::new(()))
    }
}
