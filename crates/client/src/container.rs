//! Containers: a builder in the style of containerd's `NewContainer(ctx,
//! id, WithImage(img), WithNewSnapshot(..), WithNewSpec(..))`, and the
//! container handle.

use std::collections::HashMap;

use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::types::Mount;

use crate::client::Client;
use crate::error::{Error, Result, StatusContext};
use crate::image::Image;
use crate::spec::{self, SpecOpt};
use crate::transfer::DEFAULT_SNAPSHOTTER;

/// The runtime containers get unless told otherwise (containerd's default).
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// One step of the spec: an option, or the user to resolve in its place.
enum Step {
    Opt(SpecOpt),
    /// A user (`uid`, `name`, `uid:gid`, `name:group`) looked up in the
    /// container's root filesystem, as containerd's `WithUser`.
    User(String),
}

/// Builds a container record; see [`Client::new_container`].
pub struct ContainerBuilder {
    client: Client,
    id: String,
    image: Option<Image>,
    snapshotter: String,
    runtime: String,
    runtime_options: Option<prost_types::Any>,
    labels: HashMap<String, String>,
    steps: Vec<Step>,
    explicit_user: bool,
}

impl std::fmt::Debug for ContainerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerBuilder")
            .field("id", &self.id)
            .field("image", &self.image.as_ref().map(Image::name))
            .field("snapshotter", &self.snapshotter)
            .field("runtime", &self.runtime)
            .field("labels", &self.labels)
            .field("spec_steps", &self.steps.len())
            .finish()
    }
}

impl Client {
    /// Starts building container `id` (containerd's `NewContainer`):
    /// chain the options, then [`ContainerBuilder::create`].
    pub fn new_container(&self, id: impl Into<String>) -> ContainerBuilder {
        ContainerBuilder {
            client: self.clone(),
            id: id.into(),
            image: None,
            snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
            runtime: DEFAULT_RUNTIME.to_string(),
            runtime_options: None,
            labels: HashMap::new(),
            steps: Vec::new(),
            explicit_user: false,
        }
    }

    /// The existing container `id`.
    pub async fn load_container(&self, id: &str) -> Result<Container> {
        let record = self
            .containers()
            .get(cpb::GetContainerRequest { id: id.to_string() })
            .await
            .ctx(|| format!("getting container {id:?}"))?
            .container
            .unwrap_or_default();
        Ok(Container {
            client: self.clone(),
            record,
        })
    }

    /// Ids of the containers matching `filters` (containerd filter
    /// syntax, OR'd; none lists all).
    pub async fn list_containers(&self, filters: &[&str]) -> Result<Vec<String>> {
        let reply = self
            .containers()
            .list(cpb::ListContainersRequest {
                filters: filters.iter().map(|f| f.to_string()).collect(),
            })
            .await
            .ctx(|| "listing containers".to_string())?;
        Ok(reply.containers.into_iter().map(|c| c.id).collect())
    }
}

impl ContainerBuilder {
    /// The root filesystem is a new snapshot of `image` (containerd's
    /// `WithImage` + `WithNewSnapshot(id, image)`).
    pub fn image(mut self, image: &Image) -> ContainerBuilder {
        self.image = Some(image.clone());
        self
    }

    /// The process defaults of `image`'s config: entrypoint and cmd, env,
    /// working directory, and its user (looked up in the image's
    /// `/etc/passwd` and `/etc/group` when named) unless
    /// [`ContainerBuilder::user`] sets one (containerd's `WithImageConfig`).
    pub fn image_config(mut self, image: &Image) -> ContainerBuilder {
        self.steps
            .push(Step::Opt(spec::with_image_config(&image.config)));
        if !self.explicit_user && !image.config.user.is_empty() {
            self.steps.push(Step::User(image.config.user.clone()));
        }
        self
    }

    /// Any spec option ([`crate::spec`]), applied in order.
    pub fn spec(mut self, opt: SpecOpt) -> ContainerBuilder {
        self.steps.push(Step::Opt(opt));
        self
    }

    /// The process arguments.
    pub fn args<I, S>(self, args: I) -> ContainerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec(spec::with_process_args(args))
    }

    /// Environment variables `KEY=value` (replacing same-named ones).
    pub fn env<I, S>(self, vars: I) -> ContainerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec(spec::with_env(vars))
    }

    /// The user the process runs as: `uid`, `name`, `uid:gid` or
    /// `name:group`, names looked up in the container's root filesystem.
    pub fn user(mut self, user: impl Into<String>) -> ContainerBuilder {
        self.steps.retain(|s| !matches!(s, Step::User(_)));
        self.steps.push(Step::User(user.into()));
        self.explicit_user = true;
        self
    }

    /// Extra mounts.
    pub fn mounts(self, mounts: Vec<spec::Mount>) -> ContainerBuilder {
        self.spec(spec::with_mounts(mounts))
    }

    /// A terminal for the process (give the task [`crate::Stdio::terminal`] too).
    pub fn tty(self, tty: bool) -> ContainerBuilder {
        self.spec(spec::with_tty(tty))
    }

    /// Shares the host's network namespace.
    pub fn host_network(self) -> ContainerBuilder {
        self.spec(spec::with_host_network())
    }

    /// Shares the host's PID namespace.
    pub fn host_pid(self) -> ContainerBuilder {
        self.spec(spec::with_host_pid())
    }

    /// Limits memory to `bytes`.
    pub fn memory_limit(self, bytes: i64) -> ContainerBuilder {
        self.spec(spec::with_memory_limit(bytes))
    }

    /// Limits CPU time to `cpus` CPUs' worth (`1.5`).
    pub fn cpus(self, cpus: f64) -> ContainerBuilder {
        self.spec(spec::with_cpus(cpus))
    }

    /// Every capability, no masked paths, all devices.
    pub fn privileged(self) -> ContainerBuilder {
        self.spec(spec::with_privileged())
    }

    /// A read-only root filesystem.
    pub fn readonly_rootfs(self) -> ContainerBuilder {
        self.spec(spec::with_readonly_rootfs())
    }

    /// A label on the container record.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> ContainerBuilder {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The snapshotter of the root filesystem (default `overlayfs`).
    pub fn snapshotter(mut self, snapshotter: impl Into<String>) -> ContainerBuilder {
        self.snapshotter = snapshotter.into();
        self
    }

    /// The runtime (default `io.containerd.runc.v2`) and its options.
    pub fn runtime(
        mut self,
        name: impl Into<String>,
        options: Option<prost_types::Any>,
    ) -> ContainerBuilder {
        self.runtime = name.into();
        self.runtime_options = options;
        self
    }

    /// Prepares the root filesystem, builds the spec and creates the
    /// record. What it creates is held by the client's lease, or a
    /// temporary one until the record refers to it (containerd's
    /// `WithLease`).
    pub async fn create(self) -> Result<Container> {
        let client = self.client.clone();
        client.leased(|leased| self.create_leased(leased)).await
    }

    async fn create_leased(mut self, client: Client) -> Result<Container> {
        let id = self.id.clone();
        let mut rootfs: Vec<Mount> = Vec::new();
        let mut snapshot_key = String::new();
        if let Some(image) = &self.image {
            let prepared = client
                .snapshots()
                .prepare(spb::PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.clone(),
                    parent: image.chain_id.clone(),
                    labels: HashMap::new(),
                })
                .await
                .ctx(|| {
                    format!(
                        "preparing the root filesystem of {id:?} on {} (is {} unpacked for {}?)",
                        image.chain_id,
                        image.name(),
                        self.snapshotter
                    )
                })?;
            rootfs = prepared.mounts;
            snapshot_key = id.clone();
        }
        let built = self.build_spec(&client, &rootfs);
        let record = match built {
            Ok(spec) => self.record(spec, &snapshot_key),
            Err(e) => Err(e),
        };
        let created = match record {
            Ok(record) => client
                .containers()
                .create(cpb::CreateContainerRequest {
                    container: Some(record),
                })
                .await
                .ctx(|| format!("creating container {id:?}")),
            Err(e) => Err(e),
        };
        match created {
            Ok(reply) => Ok(Container {
                client: self.client.clone(),
                record: reply.container.unwrap_or_default(),
            }),
            Err(e) => {
                if !snapshot_key.is_empty() {
                    remove_snapshot(&client, &self.snapshotter, &snapshot_key).await;
                }
                Err(e)
            }
        }
    }

    fn build_spec(&mut self, client: &Client, rootfs: &[Mount]) -> Result<spec::Spec> {
        let mut opts: Vec<SpecOpt> = Vec::new();
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Opt(o) => opts.push(o),
                Step::User(user) => {
                    if rootfs.is_empty() {
                        return Err(Error::InvalidArgument(format!(
                            "container {:?}: user {user:?} needs an image to look it up in",
                            self.id
                        )));
                    }
                    let resolved = crate::user::resolve_in_mounts(&user, rootfs)?;
                    opts.push(berth_spec::with_resolved_user(resolved));
                }
            }
        }
        spec::generate(&self.id, client.namespace(), opts).map_err(|source| Error::Spec {
            id: self.id.clone(),
            source,
        })
    }

    fn record(&self, spec: spec::Spec, snapshot_key: &str) -> Result<cpb::Container> {
        let spec = serde_json::to_vec(&spec).map_err(|e| Error::Decode {
            what: format!("the spec of {:?}", self.id),
            reason: e.to_string(),
        })?;
        Ok(cpb::Container {
            id: self.id.clone(),
            labels: self.labels.clone(),
            image: self
                .image
                .as_ref()
                .map(|i| i.name().to_string())
                .unwrap_or_default(),
            runtime: Some(cpb::container::Runtime {
                name: self.runtime.clone(),
                options: self.runtime_options.clone(),
            }),
            spec: Some(prost_types::Any {
                type_url: spec::SPEC_TYPE_URL.to_string(),
                value: spec,
            }),
            snapshotter: if snapshot_key.is_empty() {
                String::new()
            } else {
                self.snapshotter.clone()
            },
            snapshot_key: snapshot_key.to_string(),
            ..Default::default()
        })
    }
}

/// Removes snapshot `key`; a failure leaves it to garbage collection.
async fn remove_snapshot(client: &Client, snapshotter: &str, key: &str) {
    let removed = client
        .snapshots()
        .remove(spb::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
        .await;
    if let Err(s) = removed {
        tracing::warn!(%key, "removing snapshot: {}", s.message());
    }
}

/// A container record and the client that reaches it.
#[derive(Debug, Clone)]
pub struct Container {
    pub(crate) client: Client,
    record: cpb::Container,
}

impl Container {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The image it was made from (empty if none).
    pub fn image_name(&self) -> &str {
        &self.record.image
    }

    /// Its labels.
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.record.labels
    }

    /// Its runtime's name.
    pub fn runtime(&self) -> &str {
        self.record.runtime.as_ref().map_or("", |r| r.name.as_str())
    }

    /// The snapshotter and key of its root filesystem (empty if none).
    pub fn snapshot(&self) -> (&str, &str) {
        (&self.record.snapshotter, &self.record.snapshot_key)
    }

    /// Its OCI runtime spec.
    pub fn spec(&self) -> Result<spec::Spec> {
        let bytes = self
            .record
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            what: format!("the spec of container {:?}", self.id()),
            reason: e.to_string(),
        })
    }

    /// The mounts of its root filesystem (none without a snapshot).
    pub(crate) async fn rootfs(&self) -> Result<Vec<Mount>> {
        if self.record.snapshot_key.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self
            .client
            .snapshots()
            .mounts(spb::MountsRequest {
                snapshotter: self.record.snapshotter.clone(),
                key: self.record.snapshot_key.clone(),
            })
            .await
            .ctx(|| format!("mounts of the root filesystem of {:?}", self.id()))?;
        Ok(reply.mounts)
    }

    /// Deletes the record and its root filesystem snapshot (containerd's
    /// `Delete(ctx, WithSnapshotCleanup)`). Its task must be deleted first.
    ///
    /// The snapshot goes first, as containerd's client does it: once the
    /// record is gone nothing holds the snapshot, and the daemon's
    /// collector may remove it before the client does (a snapshot already
    /// gone is not an error).
    pub async fn delete(self) -> Result<()> {
        let id = self.id().to_string();
        if !self.record.snapshot_key.is_empty() {
            let removed = self
                .client
                .snapshots()
                .remove(spb::RemoveSnapshotRequest {
                    snapshotter: self.record.snapshotter.clone(),
                    key: self.record.snapshot_key.clone(),
                })
                .await;
            match removed {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => {
                    return Err(crate::error::Error::status(
                        format!("removing the root filesystem of {id:?}"),
                        s,
                    ));
                }
            }
        }
        self.client
            .containers()
            .delete(cpb::DeleteContainerRequest { id: id.clone() })
            .await
            .ctx(|| format!("deleting container {id:?}"))?;
        Ok(())
    }
}
