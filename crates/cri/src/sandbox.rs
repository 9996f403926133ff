//! Pod sandboxes: a pause container with the pod's namespaces, its
//! network made by CNI in a namespace berth creates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::containerd::v1::types::Status as TaskStatus;
use berth_api::runtime::v1 as cri;
use berth_spec::{self as spec, ImageProcess, SpecOpt};
use oci_spec::runtime::LinuxNamespaceType;
use serde_json::json;

use crate::Cri;
use crate::cni::PodRef;
use crate::error::{CriError, Result};
use crate::meta::{self, SandboxMeta};
use crate::spec as cspec;
use crate::steps::Steps;

/// What a task looks like now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskState {
    pub(crate) status: i32,
    pub(crate) pid: u32,
    pub(crate) exit_status: u32,
    pub(crate) exited_at: i64,
}

impl TaskState {
    pub(crate) fn running(&self) -> bool {
        self.status == TaskStatus::Running as i32 || self.status == TaskStatus::Paused as i32
    }
}

fn nanos(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

impl Cri {
    /// The state of task `id`, `None` when it has none.
    pub(crate) async fn task_state(&self, id: &str) -> Result<Option<TaskState>> {
        match self
            .inner
            .backend
            .tasks()
            .get(tpb::GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
        {
            Ok(r) => {
                let p = r.into_inner().process.unwrap_or_default();
                Ok(Some(TaskState {
                    status: p.status,
                    pid: p.pid,
                    exit_status: p.exit_status,
                    exited_at: nanos(p.exited_at.as_ref()),
                }))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(CriError::Service {
                what: format!("reading task {id}"),
                status: Box::new(s),
            }),
        }
    }

    /// Records of `kind` in `k8s.io`.
    pub(crate) async fn records(&self, kind: &str) -> Result<Vec<cpb::Container>> {
        Ok(self
            .inner
            .backend
            .containers()
            .list(cpb::ListContainersRequest {
                filters: vec![format!("labels.\"{}\"=={kind}", meta::KIND_LABEL)],
            })
            .await
            .map_err(CriError::service("listing containers"))?
            .into_inner()
            .containers)
    }

    /// Every sandbox with its metadata.
    pub(crate) async fn sandboxes(&self) -> Result<Vec<(cpb::Container, SandboxMeta)>> {
        let mut out = Vec::new();
        for r in self.records(meta::KIND_SANDBOX).await? {
            match meta::from_record::<SandboxMeta>(&r, meta::SANDBOX_EXTENSION) {
                Ok(m) => out.push((r, m)),
                Err(e) => tracing::warn!(error = %e, "skipping a sandbox record"),
            }
        }
        Ok(out)
    }

    /// The sandbox `id` names (an id or a unique prefix of one).
    pub(crate) async fn sandbox(&self, id: &str) -> Result<(cpb::Container, SandboxMeta)> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("sandbox id is empty".into()));
        }
        let mut found: Vec<_> = self
            .sandboxes()
            .await?
            .into_iter()
            .filter(|(_, m)| m.id.starts_with(id))
            .collect();
        if let Some(i) = found.iter().position(|(_, m)| m.id == id) {
            return Ok(found.swap_remove(i));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(CriError::NotFound(format!(
                "an error occurred when try to find sandbox {id:?}: not found"
            ))),
            _ => Err(CriError::InvalidArgument(format!(
                "sandbox id {id:?} is ambiguous"
            ))),
        }
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.paths.root.join("sandboxes").join(id)
    }

    /// Writes the sandbox's meta back into its record.
    pub(crate) async fn save_sandbox(
        &self,
        record: &cpb::Container,
        m: &SandboxMeta,
    ) -> Result<()> {
        let mut c = record.clone();
        c.extensions
            .insert(meta::SANDBOX_EXTENSION.to_string(), meta::to_any(m));
        self.inner
            .backend
            .containers()
            .update(cpb::UpdateContainerRequest {
                container: Some(c),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("extensions.{}", meta::SANDBOX_EXTENSION)],
                }),
            })
            .await
            .map(drop)
            .map_err(CriError::service(format!("updating sandbox {}", m.id)))
    }

    /// The image named `reference`, pulled if absent (the sandbox image).
    pub(crate) async fn ensure_image(&self, reference: &str) -> Result<crate::images::CriImage> {
        if let Some(i) = self.find_image(reference).await? {
            return Ok(i);
        }
        self.pull(reference, None).await?;
        self.find_image(reference).await?.ok_or_else(|| {
            CriError::NotFound(format!("image {reference:?} not found after its pull"))
        })
    }

    pub(crate) async fn run_pod_sandbox(&self, r: cri::RunPodSandboxRequest) -> Result<String> {
        let mut steps = Steps::start();
        let config = r
            .config
            .ok_or_else(|| CriError::InvalidArgument("sandbox config is required".into()))?;
        let md = config.metadata.clone().ok_or_else(|| {
            CriError::InvalidArgument("sandbox config must include metadata".into())
        })?;
        if md.name.is_empty() {
            return Err(CriError::InvalidArgument(
                "sandbox metadata must include a name".into(),
            ));
        }
        let name = format!("{}_{}_{}_{}", md.name, md.namespace, md.uid, md.attempt);
        let (_, handler) = self.inner.config.handler(&r.runtime_handler).ok_or_else(|| {
            CriError::NotFound(format!(
                "no runtime for {:?} is configured (add [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}])",
                r.runtime_handler, r.runtime_handler
            ))
        })?;
        let handler = handler.clone();
        let image = self
            .ensure_image(&self.inner.config.sandbox_image.clone())
            .await?;
        steps.mark("image");
        let id = meta::new_id();
        // The name is the pod's from here until its record is there (or
        // the failed start is cleaned up).
        let _reserved = {
            let _guard = self.inner.lifecycle.lock().await;
            let taken = self
                .sandboxes()
                .await?
                .into_iter()
                .find(|(_, m)| m.name == name)
                .map(|(_, m)| m.id);
            if let Some(other) = taken {
                return Err(name_reserved(&name, &other));
            }
            self.inner.starting.reserve(&name, &id)?
        };
        steps.mark("reserve");
        let mut m = SandboxMeta {
            id: id.clone(),
            name,
            config: meta::encode(&config),
            runtime_handler: r.runtime_handler.clone(),
            created_at: meta::now_nanos(),
            ..Default::default()
        };
        if let Err(e) = self
            .start_sandbox(&id, &config, &image, &handler, &mut m, &mut steps)
            .await
        {
            tracing::warn!(sandbox = %id, error = %e, "RunPodSandbox failed; cleaning up");
            self.cleanup_sandbox(&id, &m, &config).await;
            return Err(e);
        }
        tracing::debug!(id = %id, total = ?steps.total(), "sandbox started {steps}");
        Ok(id)
    }

    async fn start_sandbox(
        &self,
        id: &str,
        config: &cri::PodSandboxConfig,
        image: &crate::images::CriImage,
        handler: &crate::config::RuntimeHandler,
        m: &mut SandboxMeta,
        steps: &mut Steps,
    ) -> Result<()> {
        let dir = self.sandbox_dir(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
        let host_net = cspec::host_network(config);
        // Files the pod's containers mount: hostname, hosts, resolv.conf.
        let hostname = if config.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| {
                CriError::Internal(format!("writing {}: {e}", dir.join(name).display()))
            })
        };
        write("hostname", &format!("{hostname}\n"))?;
        if host_net {
            write(
                "hosts",
                &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            )?;
        } else {
            write(
                "hosts",
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            )?;
        }
        let resolv = match &config.dns_config {
            Some(dns)
                if !(dns.servers.is_empty()
                    && dns.searches.is_empty()
                    && dns.options.is_empty()) =>
            {
                cspec::resolv_conf(dns)
            }
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        write("resolv.conf", &resolv)?;
        steps.mark("files");

        // The pause container's spec names the namespace by path; the
        // namespace and then its network (CNI ADD) are made while the
        // pause container's snapshot and record are, and the network while
        // its task is created and started: the pause process does not look
        // at the network, and RunPodSandbox answers only once both are
        // done.
        let netns_dir = self.inner.paths.state.join("netns");
        let netns_name = format!("cni-{}", uuid::Uuid::new_v4());
        if !host_net {
            m.netns = netns_dir.join(&netns_name).display().to_string();
        }

        // The pause container.
        let facts = &image.facts;
        let c = &facts.config;
        let process = ImageProcess {
            env: cspec::strings(&c["Env"]),
            entrypoint: cspec::strings(&c["Entrypoint"]),
            cmd: cspec::strings(&c["Cmd"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: String::new(),
        };
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let modes = cspec::namespace_modes(config);
        let mut opts: Vec<SpecOpt> = vec![spec::with_image_config(process)];
        // As containerd: a pod on the host's network has the host's UTS
        // namespace, hence its hostname.
        if host_net {
            opts.push(cspec::without_hostname());
        } else {
            opts.push(spec::with_hostname(hostname));
        }
        if host_net {
            opts.push(spec::with_host_namespace(LinuxNamespaceType::Network));
            opts.push(spec::with_host_namespace(LinuxNamespaceType::Uts));
        } else {
            opts.push(spec::with_namespace_path(
                LinuxNamespaceType::Network,
                m.netns.clone(),
            ));
        }
        if modes.pid == cri::NamespaceMode::Node as i32 {
            opts.push(spec::with_host_namespace(LinuxNamespaceType::Pid));
        }
        if modes.ipc == cri::NamespaceMode::Node as i32 {
            opts.push(spec::with_host_namespace(LinuxNamespaceType::Ipc));
        }
        if let Some(u) = &sc.run_as_user {
            let gid = sc.run_as_group.as_ref().map_or(0, |g| g.value);
            opts.push(spec::with_user(
                u32::try_from(u.value).unwrap_or(0),
                u32::try_from(gid).unwrap_or(0),
            ));
        }
        if sc.privileged {
            opts.push(spec::with_privileged());
        }
        // The pod's seccomp profile confines the pause process (containerd's
        // rule; unconfined when none is given).
        #[allow(deprecated)]
        let path = &sc.seccomp_profile_path;
        let profile = crate::seccomp::profile_of(path, sc.seccomp.as_ref())?;
        if let Some(opt) = crate::seccomp::with_profile(&profile, sc.privileged)? {
            opts.push(opt);
        }
        if sc.readonly_rootfs {
            opts.push(spec::with_readonly_rootfs());
        }
        let mut sysctls: HashMap<String, String> = HashMap::new();
        if !host_net {
            if self.inner.config.enable_unprivileged_ports {
                sysctls.insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
            }
            if self.inner.config.enable_unprivileged_icmp {
                sysctls.insert("net.ipv4.ping_group_range".into(), "0 2147483647".into());
            }
        }
        sysctls.extend(linux.sysctls.clone());
        opts.push(cspec::with_sysctls(sysctls));
        opts.push(spec::with_cgroups_path(cspec::cgroup_path(
            &linux.cgroup_parent,
            id,
        )));
        opts.push(cspec::with_oom_score_adj(cspec::clamp_oom(
            cspec::SANDBOX_OOM_SCORE_ADJ,
            self.inner.config.restrict_oom_score_adj,
        )));
        let md = config.metadata.clone().unwrap_or_default();
        let mut annotations = config.annotations.clone();
        annotations.extend([
            (
                "io.kubernetes.cri.container-type".to_string(),
                "sandbox".to_string(),
            ),
            ("io.kubernetes.cri.sandbox-id".to_string(), id.to_string()),
            (
                "io.kubernetes.cri.sandbox-name".to_string(),
                md.name.clone(),
            ),
            (
                "io.kubernetes.cri.sandbox-namespace".to_string(),
                md.namespace.clone(),
            ),
            ("io.kubernetes.cri.sandbox-uid".to_string(), md.uid.clone()),
            (
                "io.kubernetes.cri.sandbox-log-directory".to_string(),
                config.log_directory.clone(),
            ),
        ]);
        opts.push(cspec::with_annotations(annotations));
        let oci = spec::generate(id, crate::backend::K8S_NAMESPACE, opts)
            .map_err(|e| CriError::InvalidArgument(format!("sandbox spec: {e}")))?;
        steps.mark("spec");
        let pod = (!host_net).then(|| self.pod_ref(id, m, config));
        let (netns_made, netns_ready) = tokio::sync::oneshot::channel::<()>();
        let (recorded, record) = tokio::sync::oneshot::channel::<cpb::Container>();
        let unsaved = m.clone();
        // The network branch: the namespace, CNI ADD, then the pod's IPs
        // into its record (once there), while the pause task is made.
        let network = async {
            let mut s = Steps::start();
            let Some(pod) = &pod else {
                return (Ok(Vec::new()), s);
            };
            let made =
                tokio::task::spawn_blocking(move || crate::netns::create(&netns_dir, &netns_name))
                    .await
                    .map_err(|e| CriError::Internal(format!("making the network namespace: {e}")))
                    .and_then(|made| made);
            s.mark("netns");
            if let Err(e) = made {
                return (Err(e), s);
            }
            let _ = netns_made.send(());
            let results = self.inner.cni.setup(pod).await;
            s.mark("cni");
            let ips: Vec<String> = match results {
                Ok(results) => results.iter().flat_map(crate::cni::ips_of).collect(),
                Err(e) => return (Err(e), s),
            };
            if ips.is_empty() {
                return (Ok(ips), s);
            }
            // No record: the pause container's start failed, and so does
            // this RunPodSandbox.
            let Ok(record) = record.await else {
                return (Ok(ips), s);
            };
            s.mark("record_wait");
            let saved = self
                .save_sandbox(
                    &record,
                    &SandboxMeta {
                        ips: ips.clone(),
                        ..unsaved
                    },
                )
                .await;
            s.mark("save");
            (saved.map(|()| ips), s)
        };
        let mut container_steps = Steps::start();
        let image_name = image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| facts.id.clone());
        let container = self.create_and_start(
            id,
            &image_name,
            &facts.chain_id,
            handler,
            &oci,
            meta::record_labels(meta::KIND_SANDBOX, &config.labels),
            (meta::SANDBOX_EXTENSION, meta::to_any(m)),
            (!host_net).then_some(netns_ready),
            recorded,
            &mut container_steps,
        );
        // Both run to their end (no branch is dropped halfway, say with a
        // plugin still running): on an error the caller cleans up after
        // both.
        let ((ips, network_steps), created) = tokio::join!(network, container);
        steps.merge(&container_steps);
        steps.merge(&network_steps);
        // The network's error first: the one a serial start met first.
        m.ips = ips?;
        created
    }

    /// Prepares the snapshot, writes the record (sent to `recorded` too),
    /// creates and starts the task (no stdio): the pause container. The
    /// task is created once `netns` (when given) says the pod's network
    /// namespace is there; a dropped sender fails the start.
    #[allow(clippy::too_many_arguments)]
    async fn create_and_start(
        &self,
        id: &str,
        image: &str,
        chain_id: &str,
        handler: &crate::config::RuntimeHandler,
        oci: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
        extension: (&str, prost_types::Any),
        netns: Option<tokio::sync::oneshot::Receiver<()>>,
        recorded: tokio::sync::oneshot::Sender<cpb::Container>,
        steps: &mut Steps,
    ) -> Result<()> {
        let snapshotter = self.inner.config.containerd.snapshotter.clone();
        let lease = self.inner.backend.lease().await?;
        steps.mark("lease");
        let mounts = match self.prepare_snapshot(id, chain_id, &lease).await {
            Ok(m) => m,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        };
        steps.mark("snapshot");
        let created = self
            .inner
            .backend
            .containers_in(&lease)
            .create(cpb::CreateContainerRequest {
                container: Some(cpb::Container {
                    id: id.to_string(),
                    labels,
                    image: image.to_string(),
                    runtime: Some(runtime_of(handler)),
                    spec: Some(prost_types::Any {
                        type_url: cspec::SPEC_TYPE_URL.to_string(),
                        value: serde_json::to_vec(oci).unwrap_or_default(),
                    }),
                    snapshotter,
                    snapshot_key: id.to_string(),
                    extensions: HashMap::from([(extension.0.to_string(), extension.1)]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(CriError::service(format!("creating container {id}")));
        // The record holds the snapshot now: the lease can go without the
        // start waiting for it.
        tokio::spawn(lease.release());
        let mut record = created?.into_inner().container.unwrap_or_default();
        record.id = id.to_string();
        let _ = recorded.send(record);
        steps.mark("record");
        if let Some(netns) = netns {
            netns.await.map_err(|_| {
                CriError::Internal(format!("no network namespace was made for sandbox {id}"))
            })?;
            steps.mark("netns_wait");
        }
        let mut tasks = self.inner.backend.tasks();
        tasks
            .create(tpb::CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                ..Default::default()
            })
            .await
            .map_err(CriError::service(format!(
                "failed to create task for sandbox {id}"
            )))?;
        steps.mark("task_create");
        tasks
            .start(tpb::StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
            .map_err(CriError::service(format!(
                "failed to start sandbox task {id}"
            )))?;
        steps.mark("task_start");
        Ok(())
    }

    /// An active snapshot `key` on `chain_id` in `lease`, returning its mounts.
    pub(crate) async fn prepare_snapshot(
        &self,
        key: &str,
        chain_id: &str,
        lease: &crate::backend::Lease,
    ) -> Result<Vec<berth_api::containerd::types::Mount>> {
        let snapshotter = self.inner.config.containerd.snapshotter.clone();
        Ok(self
            .inner
            .backend
            .snapshots_in(lease)
            .prepare(spb::PrepareSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: key.to_string(),
                parent: chain_id.to_string(),
                labels: HashMap::new(),
            })
            .await
            .map_err(|s| CriError::Service {
                what: format!("preparing the root filesystem of {key} on {chain_id} (is the image unpacked for {snapshotter}?)"),
                status: Box::new(s),
            })?
            .into_inner()
            .mounts)
    }

    /// The mounts of the snapshot `key`.
    pub(crate) async fn snapshot_mounts(
        &self,
        key: &str,
    ) -> Result<Vec<berth_api::containerd::types::Mount>> {
        Ok(self
            .inner
            .backend
            .snapshots()
            .mounts(spb::MountsRequest {
                snapshotter: self.inner.config.containerd.snapshotter.clone(),
                key: key.to_string(),
            })
            .await
            .map_err(CriError::service(format!("reading the mounts of {key}")))?
            .into_inner()
            .mounts)
    }

    fn pod_ref(&self, id: &str, m: &SandboxMeta, config: &cri::PodSandboxConfig) -> PodRef {
        let md = config.metadata.clone().unwrap_or_default();
        let port_mappings = config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let protocol = match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": protocol,
                    "hostIP": p.host_ip,
                })
            })
            .collect();
        PodRef {
            id: id.to_string(),
            netns: m.netns.clone(),
            name: md.name,
            namespace: md.namespace,
            uid: md.uid,
            port_mappings,
        }
    }

    /// Stops the task of `id` (SIGKILL) and deletes it; none is fine.
    pub(crate) async fn kill_and_delete_task(
        &self,
        id: &str,
    ) -> Result<Option<tpb::DeleteResponse>> {
        self.kill_and_delete_task_timed(id, &mut Steps::start())
            .await
    }

    /// [`Cri::kill_and_delete_task`], timing its steps in `steps`.
    async fn kill_and_delete_task_timed(
        &self,
        id: &str,
        steps: &mut Steps,
    ) -> Result<Option<tpb::DeleteResponse>> {
        let state = self.task_state(id).await?;
        steps.mark("task_state");
        let Some(state) = state else {
            return Ok(None);
        };
        let mut tasks = self.inner.backend.tasks();
        if state.running() {
            let mut wait = self.inner.backend.tasks();
            let waiter = tokio::spawn({
                let id = id.to_string();
                async move {
                    wait.wait(tpb::WaitRequest {
                        container_id: id,
                        exec_id: String::new(),
                    })
                    .await
                }
            });
            self.inner.backend.kill_all(id, id).await?;
            let _ = waiter.await;
            steps.mark("task_kill");
        }
        let deleted = tasks
            .delete(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            })
            .await;
        steps.mark("task_delete");
        match deleted {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(CriError::Service {
                what: format!("deleting task {id}"),
                status: Box::new(s),
            }),
        }
    }

    /// Tears the pod network down once; removes the namespace.
    async fn teardown_network(
        &self,
        id: &str,
        m: &mut SandboxMeta,
        config: &cri::PodSandboxConfig,
        steps: &mut Steps,
    ) -> Result<()> {
        if m.netns.is_empty() || m.network_down {
            return Ok(());
        }
        let path = PathBuf::from(&m.netns);
        if path.exists() {
            self.inner
                .cni
                .teardown(&self.pod_ref(id, m, config))
                .await?;
        }
        steps.mark("cni");
        crate::netns::remove(&path)?;
        steps.mark("netns");
        m.network_down = true;
        Ok(())
    }

    /// Best-effort removal of what a failed RunPodSandbox made.
    async fn cleanup_sandbox(&self, id: &str, m: &SandboxMeta, config: &cri::PodSandboxConfig) {
        let _ = self.kill_and_delete_task(id).await;
        let _ = self
            .inner
            .backend
            .containers()
            .delete(cpb::DeleteContainerRequest { id: id.to_string() })
            .await;
        self.remove_snapshot(id).await;
        let mut m = m.clone();
        if let Err(e) = self
            .teardown_network(id, &mut m, config, &mut Steps::start())
            .await
        {
            tracing::warn!(sandbox = %id, error = %e, "tearing down a failed pod's network");
            // No pod will retry it: the namespace goes anyway (as
            // containerd's, which removes it apart from the teardown).
            if let Err(e) = crate::netns::remove(Path::new(&m.netns)) {
                tracing::warn!(sandbox = %id, error = %e, "removing a failed pod's namespace");
            }
        }
        let _ = std::fs::remove_dir_all(self.sandbox_dir(id));
    }

    /// Removes snapshot `key`; a missing one is fine.
    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let _ = self
            .inner
            .backend
            .snapshots()
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: self.inner.config.containerd.snapshotter.clone(),
                key: key.to_string(),
            })
            .await;
    }

    pub(crate) async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut steps = Steps::start();
        let (record, mut m) = match self.sandbox(id).await {
            Ok(found) => found,
            // The CRI: stopping a sandbox that is gone is no error.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = m.id.clone();
        let config: cri::PodSandboxConfig = meta::decode(&m.config)?;
        steps.mark("lookup");
        for c in self.containers_of(&id).await? {
            self.stop_container(&c.id, 0).await?;
        }
        steps.mark("containers");
        // The pause task and the pod's network go down at once: neither
        // needs the other (the pause process does not look at the network;
        // the namespace lives on with the process after its pin is gone),
        // and the call answers only once both are done, as containerd's
        // (which tears the network down after the pause task is stopped).
        let was_down = m.network_down;
        let mut task_steps = Steps::start();
        let mut network_steps = Steps::start();
        let task = self.kill_and_delete_task_timed(&id, &mut task_steps);
        let network = async {
            let _guard = self.inner.lifecycle.lock().await;
            network_steps.mark("lock");
            self.teardown_network(&id, &mut m, &config, &mut network_steps)
                .await
        };
        let (killed, torn_down) = tokio::join!(task, network);
        steps.merge(&task_steps);
        steps.merge(&network_steps);
        // A network that went down is recorded even when the task's end
        // failed: a retried stop must not tear it down twice.
        let saved = if m.network_down != was_down {
            let saved = self.save_sandbox(&record, &m).await;
            steps.mark("save");
            saved
        } else {
            Ok(())
        };
        killed?;
        torn_down?;
        saved?;
        tracing::debug!(id = %id, total = ?steps.total(), "sandbox stopped {steps}");
        Ok(())
    }

    pub(crate) async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let (_, m) = match self.sandbox(id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = m.id.clone();
        self.stop_pod_sandbox(&id).await?;
        for c in self.containers_of(&id).await? {
            self.remove_container(&c.id).await?;
        }
        let _guard = self.inner.lifecycle.lock().await;
        match self
            .inner
            .backend
            .containers()
            .delete(cpb::DeleteContainerRequest { id: id.clone() })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                return Err(CriError::Service {
                    what: format!("removing sandbox {id}"),
                    status: Box::new(s),
                });
            }
        }
        self.remove_snapshot(&id).await;
        let _ = std::fs::remove_dir_all(self.sandbox_dir(&id));
        Ok(())
    }

    pub(crate) async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse> {
        let (_, m) = self.sandbox(id).await?;
        let config: cri::PodSandboxConfig = meta::decode(&m.config)?;
        let task = self.task_state(&m.id).await?;
        let ready = task.is_some_and(|t| t.running());
        let status = self.to_sandbox_status(&m, &config, ready);
        let mut info = HashMap::new();
        if verbose {
            let doc = json!({
                "pid": task.map_or(0, |t| t.pid),
                "processStatus": if ready { "running" } else { "stopped" },
                "netNamespaceClosed": m.network_down || m.netns.is_empty(),
                "runtimeHandler": m.runtime_handler,
                "config": { "hostname": config.hostname, "log_directory": config.log_directory },
                "netns": m.netns,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        })
    }

    pub(crate) fn to_sandbox_status(
        &self,
        m: &SandboxMeta,
        config: &cri::PodSandboxConfig,
        ready: bool,
    ) -> cri::PodSandboxStatus {
        let state = if ready {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        };
        let modes = cspec::namespace_modes(config);
        let ip = if m.network_down {
            String::new()
        } else {
            m.ips.first().cloned().unwrap_or_default()
        };
        let additional_ips = if m.network_down {
            Vec::new()
        } else {
            m.ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect()
        };
        cri::PodSandboxStatus {
            id: m.id.clone(),
            metadata: config.metadata.clone(),
            state: state as i32,
            created_at: m.created_at,
            network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(modes),
                }),
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: m.runtime_handler.clone(),
        }
    }

    pub(crate) async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let mut out = Vec::new();
        for (_, m) in self.sandboxes().await? {
            let config: cri::PodSandboxConfig = match meta::decode(&m.config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(sandbox = %m.id, error = %e, "skipping a sandbox");
                    continue;
                }
            };
            let ready = self.task_state(&m.id).await?.is_some_and(|t| t.running());
            let state = if ready {
                cri::PodSandboxState::SandboxReady
            } else {
                cri::PodSandboxState::SandboxNotready
            } as i32;
            if let Some(f) = &filter {
                if !f.id.is_empty() && !m.id.starts_with(&f.id) {
                    continue;
                }
                if f.state.as_ref().is_some_and(|s| s.state != state) {
                    continue;
                }
                if !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| config.labels.get(k) == Some(v))
                {
                    continue;
                }
            }
            out.push(cri::PodSandbox {
                id: m.id.clone(),
                metadata: config.metadata.clone(),
                state,
                created_at: m.created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: m.runtime_handler.clone(),
            });
        }
        Ok(out)
    }
}

/// containerd's error for a sandbox name that pod `other` has (recorded,
/// or being started).
fn name_reserved(name: &str, other: &str) -> CriError {
    CriError::AlreadyExists(format!(
        "failed to reserve sandbox name {name:?}: name {name:?} is reserved for {other:?}"
    ))
}

/// Names reserved by the RunPodSandbox calls under way (name → id).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reservations(Arc<std::sync::Mutex<HashMap<String, String>>>);

/// A reserved name, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    names: Reservations,
    name: String,
}

impl Reservations {
    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `name` for `id`; fails as containerd's registrar if a start
    /// under way has it.
    pub(crate) fn reserve(&self, name: &str, id: &str) -> Result<Reservation> {
        let mut names = self.names();
        if let Some(other) = names.get(name) {
            return Err(name_reserved(name, other));
        }
        names.insert(name.to_string(), id.to_string());
        Ok(Reservation {
            names: self.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.names.names().remove(&self.name);
    }
}

/// The containerd runtime of a handler: its `runtime_type` and, for runc,
/// its options as `containerd.runc.v1.Options`.
pub(crate) fn runtime_of(handler: &crate::config::RuntimeHandler) -> cpb::container::Runtime {
    use prost::Message;
    let o = &handler.options;
    let s = |k: &str| {
        o.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let b = |k: &str| o.get(k).and_then(toml::Value::as_bool).unwrap_or(false);
    let options = (!o.is_empty()).then(|| {
        let runc = berth_api::containerd::runc::v1::Options {
            no_pivot_root: b("NoPivotRoot"),
            no_new_keyring: b("NoNewKeyring"),
            shim_cgroup: s("ShimCgroup"),
            binary_name: s("BinaryName"),
            root: s("Root"),
            systemd_cgroup: b("SystemdCgroup"),
            criu_path: s("CriuPath"),
            ..Default::default()
        };
        prost_types::Any {
            type_url: "containerd.runc.v1.Options".to_string(),
            value: runc.encode_to_vec(),
        }
    });
    cpb::container::Runtime {
        name: handler.runtime_type.clone(),
        options,
    }
}
