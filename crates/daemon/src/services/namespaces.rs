//! `containerd.services.namespaces.v1.Namespaces`, backed by the metadata DB.
//!
//! Follows containerd 1.6's `services/namespaces` on the wire, quirks
//! included, since its Go client depends on them (Docker Engine reads and
//! labels `moby` before anything has created it):
//! - `Get` of a namespace that does not exist answers its name with no
//!   labels; `Update` of one creates it (see `berth_metadata::Namespaces`);
//! - `Create` answers the request's namespace as given; `Update` answers an
//!   empty namespace;
//! - `/namespaces/create` and `/namespaces/update` are published in the
//!   caller's namespace (its `containerd-namespace` header), carrying the
//!   request's labels; `/namespaces/delete` in the deleted namespace;
//! - a create or update without a namespace header is committed, then fails
//!   with `Unknown` because its event cannot be published;
//! - an update mask may name only `labels.<key>` paths; no mask replaces all
//!   labels.

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

use super::namespace_of;
use crate::wire::pack;

/// Manages namespaces and publishes `/namespaces/*` events.
#[derive(Debug, Clone)]
pub(crate) struct NamespacesService {
    db: Db,
    exchange: Arc<Exchange>,
}

impl NamespacesService {
    /// A service over `db`, publishing on `exchange`.
    pub(crate) fn new(db: Db, exchange: Arc<Exchange>) -> NamespacesService {
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

/// The error containerd answers when a committed change's event cannot be
/// published because the call named no namespace.
fn unpublishable(header: Status) -> Status {
    Status::unknown(format!("failed publishing event: {}", header.message()))
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
        let header = namespace_of(&request);
        let ns = request
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("create request has no namespace"))?;
        let labels: BTreeMap<String, String> = ns.labels.clone().into_iter().collect();
        let name = ns.name.clone();
        self.blocking(move |db| db.namespaces().create(&name, labels))
            .await?;
        let caller = header.map_err(unpublishable)?;
        self.publish(
            &caller,
            "/namespaces/create",
            &NamespaceCreate {
                name: ns.name.clone(),
                labels: ns.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(ns),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let header = namespace_of(&request);
        let req = request.into_inner();
        let ns = req
            .namespace
            .ok_or_else(|| Status::invalid_argument("update request has no namespace"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        // Validate the mask before touching anything (containerd rolls the
        // whole transaction back instead: the same outcome).
        let mut changes = Vec::with_capacity(paths.len());
        for p in &paths {
            let Some(key) = p.strip_prefix("labels.") else {
                return Err(Status::invalid_argument(format!(
                    "cannot update {p:?} field: only labels.<key> paths can be updated"
                )));
            };
            // A key the request carries no value for is deleted.
            let value = ns.labels.get(key).cloned().unwrap_or_default();
            changes.push((key.to_owned(), value));
        }
        let name = ns.name.clone();
        let given: BTreeMap<String, String> = ns.labels.clone().into_iter().collect();
        self.blocking(move |db| {
            let store = db.namespaces();
            if changes.is_empty() {
                store.set_labels(&name, given)
            } else {
                store.update_labels(&name, changes)
            }
        })
        .await?;
        let caller = header.map_err(unpublishable)?;
        self.publish(
            &caller,
            "/namespaces/update",
            &NamespaceUpdate {
                name: ns.name,
                labels: ns.labels,
            },
        );
        // containerd answers an empty namespace here, not the result.
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(Namespace::default()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (tempfile::TempDir, NamespacesService, Arc<Exchange>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.redb")).unwrap();
        let exchange = Arc::new(Exchange::new());
        (dir, NamespacesService::new(db, exchange.clone()), exchange)
    }

    fn request<T>(caller: Option<&str>, message: T) -> Request<T> {
        let mut r = Request::new(message);
        if let Some(c) = caller {
            r.metadata_mut()
                .insert(berth_api::NAMESPACE_HEADER, c.parse().unwrap());
        }
        r
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn get_of_a_missing_namespace_answers_no_labels() {
        let (_dir, svc, _) = service();
        let got = svc
            .get(request(
                Some("default"),
                GetNamespaceRequest {
                    name: "moby".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.namespace, Some(namespace("moby", &[])));
        // Reading created nothing.
        let all = svc
            .list(request(Some("default"), ListNamespacesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(all.namespaces.is_empty());
    }

    #[tokio::test]
    async fn update_creates_and_publishes_in_the_callers_namespace() {
        let (_dir, svc, exchange) = service();
        let mut events = exchange.subscribe(&[]).unwrap();
        let answer = svc
            .update(request(
                Some("caller"),
                UpdateNamespaceRequest {
                    namespace: Some(namespace("moby", &[("k", "v")])),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["labels.k".into()],
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        // containerd answers an empty namespace.
        assert_eq!(answer.namespace, Some(Namespace::default()));
        let got = svc
            .get(request(
                Some("default"),
                GetNamespaceRequest {
                    name: "moby".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.namespace, Some(namespace("moby", &[("k", "v")])));
        let envelope = events.recv().await.unwrap().unwrap();
        assert_eq!(envelope.namespace, "caller");
        assert_eq!(envelope.topic, "/namespaces/update");
    }

    #[tokio::test]
    async fn update_without_header_commits_then_fails_unknown() {
        let (_dir, svc, _) = service();
        let err = svc
            .update(request(
                None,
                UpdateNamespaceRequest {
                    namespace: Some(namespace("moby", &[("k", "v")])),
                    update_mask: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unknown);
        assert!(
            err.message().starts_with("failed publishing event"),
            "{err}"
        );
        let all = svc
            .list(request(Some("default"), ListNamespacesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.namespaces, [namespace("moby", &[("k", "v")])]);
    }

    #[tokio::test]
    async fn update_refuses_the_bare_labels_path() {
        let (_dir, svc, _) = service();
        let err = svc
            .update(request(
                Some("default"),
                UpdateNamespaceRequest {
                    namespace: Some(namespace("moby", &[("k", "v")])),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["labels".into()],
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with(r#"cannot update "labels" field"#),
            "{err}"
        );
    }
}
