//! `containerd.services.namespaces.v1.Namespaces`, backed by the metadata DB.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use berth_api::containerd::services::namespaces::v1::namespaces_server::Namespaces;
use berth_api::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest, GetNamespaceRequest,
    GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse, Namespace,
    UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use berth_events::Exchange;
use berth_metadata::Db;
use prost::Name;
use tonic::{Request, Response, Status};

/// Maps a metadata error to the status containerd would send.
pub fn to_status(e: berth_metadata::Error) -> Status {
    use berth_metadata::Error as E;
    // The message is the error's full text, which names the category the
    // way containerd's wrapped errors do (`namespace "x": not found`).
    let message = e.to_string();
    match e {
        E::NotFound(_) => Status::not_found(message),
        E::AlreadyExists(_) => Status::already_exists(message),
        E::InvalidArgument(_) => Status::invalid_argument(message),
        E::FailedPrecondition(_) | E::SchemaVersion { .. } => Status::failed_precondition(message),
        E::NotImplemented(_) => Status::unimplemented(message),
        E::DataLoss(_) => Status::data_loss(message),
        _ => Status::internal(message),
    }
}

/// Packs an event payload as containerd does: the type URL is the bare
/// protobuf message name (containerd's typeurl), not `type.googleapis.com/...`.
pub fn pack<M: prost::Message + Name>(event: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: event.encode_to_vec(),
    }
}

/// Manages namespaces and publishes `/namespaces/*` events.
#[derive(Debug, Clone)]
pub struct NamespacesService {
    db: Db,
    exchange: Arc<Exchange>,
}

impl NamespacesService {
    /// A service over `db`, publishing on `exchange`.
    pub fn new(db: Db, exchange: Arc<Exchange>) -> NamespacesService {
        NamespacesService { db, exchange }
    }

    fn publish<M: prost::Message + Name>(&self, namespace: &str, topic: &str, event: &M) {
        if let Err(e) = self.exchange.publish(namespace, topic, pack(event)) {
            tracing::warn!(%topic, error = %e, "cannot publish event");
        }
    }

    /// Runs a blocking DB call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> berth_metadata::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        super::with_db(&self.db, f).await
    }
}

fn wire(name: String, labels: BTreeMap<String, String>) -> Namespace {
    Namespace {
        name,
        labels: labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = request.into_inner().name;
        let n = name.clone();
        // containerd reads a namespace's labels whether or not it exists
        // (empty until set), and its Go client relies on that: New() with a
        // default namespace reads that namespace's runtime label before the
        // namespace is created by first use.
        let labels = self
            .blocking(move |db| match db.namespaces().labels(&n) {
                Err(berth_metadata::Error::NotFound(_)) => Ok(BTreeMap::new()),
                other => other,
            })
            .await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(wire(name, labels)),
        }))
    }

    async fn list(
        &self,
        _request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let all = self
            .blocking(|db| db.namespaces().list_with_labels())
            .await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: all.into_iter().map(|n| wire(n.name, n.labels)).collect(),
        }))
    }

    async fn create(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let ns = request
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("create request has no namespace"))?;
        let labels: BTreeMap<String, String> = ns.labels.into_iter().collect();
        let name = ns.name.clone();
        let created = self
            .blocking(move |db| db.namespaces().create(&name, labels))
            .await?;
        let labels = created.labels;
        self.publish(
            &ns.name,
            "/namespaces/create",
            &NamespaceCreate {
                name: ns.name.clone(),
                labels: labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(wire(ns.name, labels)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = request.into_inner();
        let ns = req
            .namespace
            .ok_or_else(|| Status::invalid_argument("update request has no namespace"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        // Validate the mask before touching anything.
        for p in &paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(Status::invalid_argument(format!(
                    "cannot update {p:?} field on namespace {:?}: only labels can be updated",
                    ns.name
                )));
            }
        }
        let name = ns.name.clone();
        let given: BTreeMap<String, String> = ns.labels.into_iter().collect();
        let labels = self
            .blocking(move |db| {
                let store = db.namespaces();
                let updated = if paths.is_empty() || paths.iter().any(|p| p == "labels") {
                    store.set_labels(&name, given)?
                } else {
                    // `labels.<key>`: set the key to the given value, or
                    // delete it when the request carries none.
                    let changes: Vec<(String, String)> = paths
                        .iter()
                        .map(|p| {
                            let key = p["labels.".len()..].to_string();
                            let value = given.get(&key).cloned().unwrap_or_default();
                            (key, value)
                        })
                        .collect();
                    store.update_labels(&name, changes)?
                };
                Ok(updated.labels)
            })
            .await?;
        self.publish(
            &ns.name,
            "/namespaces/update",
            &NamespaceUpdate {
                name: ns.name.clone(),
                labels: labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(wire(ns.name, labels)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = request.into_inner().name;
        let n = name.clone();
        self.blocking(move |db| db.namespaces().delete(&n)).await?;
        self.publish(
            &name,
            "/namespaces/delete",
            &NamespaceDelete { name: name.clone() },
        );
        Ok(Response::new(()))
    }
}
