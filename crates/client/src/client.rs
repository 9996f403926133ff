//! The connection: namespace and lease as context, version and plugins.

use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_api::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::introspection::v1 as introspection;
use berth_api::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_api::containerd::services::leases::v1 as leases;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_api::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_api::containerd::services::version::v1::version_client::VersionClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::{Result, StatusContext};

/// A channel whose calls carry the namespace and lease headers.
pub(crate) type Chan = InterceptedService<Channel, berth_api::client::ContextInterceptor>;

/// The namespace calls use unless [`Client::with_namespace`] says otherwise,
/// as containerd's clients default to.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Label that makes the daemon's garbage collector remove a lease after a time.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// A connection to berthd (or containerd) plus the namespace and lease
/// every call carries.
///
/// Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: berth_api::client::Client,
    namespace: String,
    lease: Option<String>,
}

/// The daemon's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Release (`v0.1.0`, `1.6.20~ds1`).
    pub version: String,
    /// Source revision.
    pub revision: String,
}

/// A plugin the daemon reports through the Introspection service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// Type (`io.containerd.snapshotter.v1`).
    pub kind: String,
    /// Id (`overlayfs`).
    pub id: String,
    /// Plugin types it needs.
    pub requires: Vec<String>,
    /// Capabilities it declares.
    pub capabilities: Vec<String>,
    /// Why it failed to start, if it did.
    pub init_error: Option<String>,
}

impl Client {
    /// Connects to the daemon's gRPC socket at `path`, in namespace
    /// [`DEFAULT_NAMESPACE`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let inner = berth_api::client::Client::connect(path).await?;
        Ok(Client {
            inner,
            namespace: DEFAULT_NAMESPACE.to_string(),
            lease: None,
        })
    }

    /// Wraps a connection made with berth-api's low-level client, which
    /// keeps any lease it was given. Calls go to `namespace`; empty keeps
    /// the one the connection carries (then [`Client::namespace`] is
    /// empty, and containers built need it: give it).
    pub fn from_raw(raw: berth_api::client::Client, namespace: impl Into<String>) -> Client {
        Client {
            inner: raw,
            namespace: namespace.into(),
            lease: None,
        }
    }

    /// The same connection, with calls in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Client {
        self.namespace = namespace.into();
        self
    }

    /// The same connection, with what calls create held by lease `id`.
    pub fn with_lease(mut self, id: impl Into<String>) -> Client {
        self.lease = Some(id.into());
        self
    }

    /// The namespace calls use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The lease calls carry, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// The low-level connection (berth-api's), to call any generated
    /// service client with the same namespace and lease.
    pub fn raw(&self) -> berth_api::client::Client {
        let c = if self.namespace.is_empty() {
            self.inner.clone()
        } else {
            self.inner.clone().with_namespace(self.namespace.clone())
        };
        match &self.lease {
            Some(l) => c.with_lease(l.clone()),
            None => c,
        }
    }

    fn chan(&self) -> (Channel, berth_api::client::ContextInterceptor) {
        let raw = self.raw();
        (raw.channel(), raw.interceptor())
    }

    pub(crate) fn containers(&self) -> ContainersClient<Chan> {
        let (c, i) = self.chan();
        ContainersClient::with_interceptor(c, i)
    }

    pub(crate) fn content(&self) -> ContentClient<Chan> {
        let (c, i) = self.chan();
        ContentClient::with_interceptor(c, i)
    }

    pub(crate) fn events_service(&self) -> EventsClient<Chan> {
        let (c, i) = self.chan();
        EventsClient::with_interceptor(c, i)
    }

    pub(crate) fn images(&self) -> ImagesClient<Chan> {
        let (c, i) = self.chan();
        ImagesClient::with_interceptor(c, i)
    }

    pub(crate) fn leases(&self) -> LeasesClient<Chan> {
        let (c, i) = self.chan();
        LeasesClient::with_interceptor(c, i)
    }

    pub(crate) fn snapshots(&self) -> SnapshotsClient<Chan> {
        let (c, i) = self.chan();
        SnapshotsClient::with_interceptor(c, i)
    }

    pub(crate) fn streaming(&self) -> StreamingClient<Chan> {
        let (c, i) = self.chan();
        StreamingClient::with_interceptor(c, i)
    }

    pub(crate) fn tasks(&self) -> TasksClient<Chan> {
        let (c, i) = self.chan();
        TasksClient::with_interceptor(c, i)
    }

    pub(crate) fn transfer_service(&self) -> TransferClient<Chan> {
        let (c, i) = self.chan();
        TransferClient::with_interceptor(c, i)
    }

    /// The daemon's version.
    pub async fn version(&self) -> Result<Version> {
        let (c, i) = self.chan();
        let v = VersionClient::with_interceptor(c, i)
            .version(())
            .await
            .ctx(|| "asking the daemon's version".to_string())?;
        Ok(Version {
            version: v.version,
            revision: v.revision,
        })
    }

    /// The daemon's plugins matching `filters` (containerd filter syntax,
    /// OR'd; none lists all).
    pub async fn plugins(&self, filters: &[&str]) -> Result<Vec<Plugin>> {
        let (c, i) = self.chan();
        let reply = IntrospectionClient::with_interceptor(c, i)
            .plugins(introspection::PluginsRequest {
                filters: filters.iter().map(|f| f.to_string()).collect(),
            })
            .await
            .ctx(|| "listing the daemon's plugins".to_string())?;
        Ok(reply
            .plugins
            .into_iter()
            .map(|p| Plugin {
                kind: p.r#type,
                id: p.id,
                requires: p.requires,
                capabilities: p.capabilities,
                init_error: p.init_err.map(|s| s.message),
            })
            .collect())
    }

    /// Whether the daemon serves containerd's Transfer service (berthd
    /// and containerd 2.x do; containerd 1.x does not).
    pub async fn has_transfer_service(&self) -> Result<bool> {
        Ok(!self
            .plugins(&["type==io.containerd.grpc.v1,id==transfer"])
            .await?
            .is_empty())
    }

    /// Creates a lease that expires after `expires` (the garbage collector
    /// removes it then) and returns its id.
    pub async fn create_lease(&self, expires: Duration) -> Result<String> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let id = format!("berth-client-{nanos}-{}", std::process::id());
        let labels = [(
            EXPIRE_LABEL.to_string(),
            humantime::format_rfc3339_seconds(SystemTime::now() + expires).to_string(),
        )]
        .into();
        self.leases()
            .create(leases::CreateRequest {
                id: id.clone(),
                labels,
            })
            .await
            .ctx(|| format!("creating lease {id:?}"))?;
        Ok(id)
    }

    /// Deletes lease `id`; what only it held becomes garbage.
    pub async fn delete_lease(&self, id: &str) -> Result<()> {
        self.leases()
            .delete(leases::DeleteRequest {
                id: id.to_string(),
                sync: false,
            })
            .await
            .ctx(|| format!("deleting lease {id:?}"))?;
        Ok(())
    }

    /// Runs `f` with a client holding a lease, as containerd's
    /// `WithLease`: the client's own lease if it has one, else a
    /// temporary one (a day) deleted afterwards.
    pub(crate) async fn leased<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if self.lease.is_some() {
            return f(self.clone()).await;
        }
        let lease = self.create_lease(Duration::from_secs(24 * 3600)).await?;
        let result = f(self.clone().with_lease(lease.clone())).await;
        if let Err(e) = self.delete_lease(&lease).await {
            tracing::warn!("releasing temporary lease {lease}: {e}");
        }
        result
    }
}
