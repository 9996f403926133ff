//! `containerd.services.leases.v1.Leases`: leases keep what they hold alive.

use std::collections::BTreeMap;

use berth_api::containerd::services::leases::v1::leases_server::Leases;
use berth_api::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest,
    Lease as WireLease, ListRequest, ListResourcesRequest, ListResourcesResponse, ListResponse,
    Resource as WireResource,
};
use berth_metadata::Db;
use berth_metadata::leases::{Lease, Resource};
use tonic::{Request, Response, Status};

use super::events::to_timestamp;
use super::gc::Collector;

/// Manages leases; deleting one schedules (or with `sync`, runs) a collection.
#[derive(Debug, Clone)]
pub struct LeasesService {
    db: Db,
    gc: Collector,
}

impl LeasesService {
    /// A service over `db` that collects garbage through `gc`.
    pub fn new(db: Db, gc: Collector) -> LeasesService {
        LeasesService { db, gc }
    }

    /// Runs a blocking DB call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> berth_metadata::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        super::with_db(&self.db, f).await
    }
}

fn wire(l: Lease) -> WireLease {
    WireLease {
        id: l.id,
        created_at: Some(to_timestamp(l.created_at)),
        labels: l.labels.into_iter().collect(),
    }
}

fn resource(r: Option<WireResource>) -> Result<Resource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("request has no resource"))?;
    if r.id.is_empty() || r.r#type.is_empty() {
        return Err(Status::invalid_argument("resource needs an id and a type"));
    }
    Ok(Resource {
        id: r.id,
        kind: r.r#type,
    })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        if req.id.is_empty() {
            return Err(Status::invalid_argument("lease id must not be empty"));
        }
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let lease = self
            .blocking(move |db| db.leases().create(&ns, &req.id, labels))
            .await?;
        Ok(Response::new(CreateResponse {
            lease: Some(wire(lease)),
        }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        self.blocking(move |db| db.leases().delete(&ns, &req.id))
            .await?;
        // The DB told the scheduler of the deletion; `sync` waits for a
        // collection (containerd's ScheduleAndWait; its error is Unknown).
        if req.sync {
            self.gc
                .schedule_and_wait()
                .await
                .map_err(|e| Status::unknown(format!("garbage collection failed: {e}")))?;
        }
        Ok(Response::new(()))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let filter = berth_filters::parse_all(&request.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let leases = self.blocking(move |db| db.leases().list(&ns)).await?;
        let leases = leases
            .into_iter()
            .filter(|l| {
                filter.matches(
                    &berth_filters::Fields::new()
                        .with("id", &l.id)
                        .with_labels(&l.labels),
                )
            })
            .map(wire)
            .collect();
        Ok(Response::new(ListResponse { leases }))
    }

    async fn add_resource(
        &self,
        request: Request<AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        let r = resource(req.resource)?;
        self.blocking(move |db| db.leases().add_resource(&ns, &req.id, r))
            .await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        let r = resource(req.resource)?;
        self.blocking(move |db| db.leases().delete_resource(&ns, &req.id, r))
            .await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let id = request.into_inner().id;
        let resources = self
            .blocking(move |db| db.leases().list_resources(&ns, &id))
            .await?;
        Ok(Response::new(ListResourcesResponse {
            resources: resources
                .into_iter()
                .map(|r| WireResource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
