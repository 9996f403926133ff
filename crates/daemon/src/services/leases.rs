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

use crate::gc::Collector;
use crate::wire::to_timestamp;

/// Manages leases; deleting one schedules (or with `sync`, runs) a collection.
#[derive(Debug, Clone)]
pub(crate) struct LeasesService {
    db: Db,
    gc: Collector,
}

impl LeasesService {
    /// A service over `db` that collects garbage through `gc`.
    pub(crate) fn new(db: Db, gc: Collector) -> LeasesService {
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

/// A lease id as containerd's `leases.WithRandomID` makes one: the
/// nanoseconds of the current second, a dash, and 3 random bytes in
/// URL-safe base64 (`417703021-Xw3d`).
fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let random = uuid::Uuid::new_v4();
    let b = random.as_bytes();
    let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    let text: String = [18, 12, 6, 0]
        .iter()
        .map(|shift| char::from(ALPHABET[((n >> shift) & 63) as usize]))
        .collect();
    format!("{nanos}-{text}")
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
        let mut req = request.into_inner();
        if req.id.is_empty() {
            // containerd's server picks one (ctr 2.x `leases create` sends none).
            req.id = random_id();
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
        let (ns2, id) = (ns.clone(), req.id.clone());
        let ingests = self
            .blocking(move |db| {
                let held = db.leases().list_resources(&ns2, &id)?;
                db.leases().delete(&ns2, &id)?;
                Ok(held)
            })
            .await?
            .into_iter()
            .filter(|r| r.kind == berth_metadata::leases::INGESTS)
            .map(|r| r.id)
            .collect::<Vec<_>>();
        // The ingests it held have no owner left: abort them, as
        // containerd's collector does with unreferenced leased ingests.
        self.gc.abort_ingests(&ns, ingests).await;
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

#[cfg(test)]
mod tests {
    use super::random_id;

    #[test]
    fn random_ids_have_containerds_shape() {
        let id = random_id();
        let (nanos, tail) = id.split_once('-').unwrap_or_default();
        assert!(
            nanos.parse::<u32>().is_ok_and(|n| n < 1_000_000_000),
            "{id}"
        );
        assert_eq!(tail.len(), 4, "{id}");
        assert!(
            tail.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{id}"
        );
        assert_ne!(random_id(), random_id());
    }
}
