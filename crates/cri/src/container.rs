//! Application containers in a pod: created from the image config merged
//! with the request, started with their output copied into the CRI log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::runtime::v1 as cri;
use berth_spec::{self as spec, ImageProcess, SpecOpt};

use crate::Cri;
use crate::error::{CriError, Result};
use crate::meta::{self, ContainerMeta};
use crate::spec as cspec;

/// A container as the CRI sees it now.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) record: cpb::Container,
    pub(crate) meta: ContainerMeta,
    pub(crate) config: cri::ContainerConfig,
    pub(crate) state: cri::ContainerState,
}

impl Cri {
    pub(crate) fn io_dir(&self, id: &str) -> PathBuf {
        self.inner.paths.state.join("io").join(id)
    }

    /// Every container record of the CRI with its metadata.
    async fn container_records(&self) -> Result<Vec<(cpb::Container, ContainerMeta)>> {
        let mut out = Vec::new();
        for r in self.records(meta::KIND_CONTAINER).await? {
            match meta::from_record::<ContainerMeta>(&r, meta::CONTAINER_EXTENSION) {
                Ok(m) => out.push((r, m)),
                Err(e) => tracing::warn!(error = %e, "skipping a container record"),
            }
        }
        Ok(out)
    }

    /// The containers of sandbox `sandbox_id`.
    pub(crate) async fn containers_of(&self, sandbox_id: &str) -> Result<Vec<ContainerMeta>> {
        Ok(self
            .container_records()
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.sandbox_id == sandbox_id)
            .collect())
    }

    /// The container `id` names (an id or a unique prefix), its state read
    /// from its task; an exited task is reaped into the metadata.
    pub(crate) async fn container(&self, id: &str) -> Result<Current> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("container id is empty".into()));
        }
        let mut found: Vec<_> = self
            .container_records()
            .await?
            .into_iter()
            .filter(|(_, m)| m.id.starts_with(id))
            .collect();
        let pick = if let Some(i) = found.iter().position(|(_, m)| m.id == id) {
            found.swap_remove(i)
        } else {
            match found.len() {
                1 => found.remove(0),
                0 => {
                    return Err(CriError::NotFound(format!(
                        "an error occurred when try to find container {id:?}: not found"
                    )));
                }
                _ => {
                    return Err(CriError::InvalidArgument(format!(
                        "container id {id:?} is ambiguous"
                    )));
                }
            }
        };
        self.current(pick.0, pick.1).await
    }

    async fn current(&self, record: cpb::Container, mut m: ContainerMeta) -> Result<Current> {
        let config: cri::ContainerConfig = meta::decode(&m.config)?;
        let state = match self.task_state(&m.id).await? {
            Some(t) if t.running() => cri::ContainerState::ContainerRunning,
            Some(t) if t.status == berth_api::containerd::v1::types::Status::Created as i32 => {
                cri::ContainerState::ContainerCreated
            }
            Some(t) => {
                // Exited: as containerd, the exit is reported once all the
                // container wrote is in its log.
                self.wait_copiers(&m.id).await;
                // An OOM kill in its cgroup (read before the task's
                // deletion removes the cgroup) is the reason it ended, as
                // containerd's OOM event makes it.
                if m.reason.is_empty() && cspec::oom_killed(&record) {
                    m.reason = "OOMKilled".to_string();
                }
                // Keep the exit in the record, free the shim.
                m.finished_at = t.exited_at;
                m.exit_code = i32::try_from(t.exit_status).unwrap_or(i32::MAX);
                if let Ok(Some(d)) = self.delete_task(&m.id).await {
                    m.exit_code = i32::try_from(d.exit_status).unwrap_or(i32::MAX);
                    if let Some(at) = d.exited_at {
                        m.finished_at = at.seconds * 1_000_000_000 + i64::from(at.nanos);
                    }
                }
                if m.reason.is_empty() {
                    m.reason = if m.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .to_string();
                }
                self.save_container(&record, &m).await?;
                self.publish(cri::ContainerEventResponse {
                    container_id: m.id.clone(),
                    container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
                    created_at: meta::now_nanos(),
                    ..Default::default()
                });
                cri::ContainerState::ContainerExited
            }
            None if m.finished_at > 0 => cri::ContainerState::ContainerExited,
            None if m.started_at > 0 => {
                // Its task went without anyone seeing the exit (its shim
                // died): containerd reports such a container exited with
                // 255, reason Unknown.
                m.exit_code = 255;
                m.reason = "Unknown".to_string();
                m.finished_at = m.started_at;
                cri::ContainerState::ContainerExited
            }
            None => cri::ContainerState::ContainerCreated,
        };
        Ok(Current {
            record,
            meta: m,
            config,
            state,
        })
    }

    /// Waits for the log copiers of `id` to reach the end of its output.
    async fn wait_copiers(&self, id: &str) {
        let copiers = self
            .inner
            .copiers
            .lock()
            .await
            .remove(id)
            .unwrap_or_default();
        if copiers.is_empty() {
            return;
        }
        let joined = tokio::task::spawn_blocking(move || {
            for c in copiers {
                let _ = c.join();
            }
        });
        // A process that escaped the container with its stdout open would
        // hold the log open forever; do not hang the kubelet on it.
        if tokio::time::timeout(Duration::from_secs(30), joined)
            .await
            .is_err()
        {
            tracing::warn!(container = %id, "its output did not end 30s after it exited");
        }
    }

    async fn delete_task(&self, id: &str) -> Result<Option<tpb::DeleteResponse>> {
        match self
            .inner
            .backend
            .tasks()
            .delete(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            })
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(CriError::Service {
                what: format!("deleting task {id}"),
                status: Box::new(s),
            }),
        }
    }

    async fn save_container(&self, record: &cpb::Container, m: &ContainerMeta) -> Result<()> {
        let mut c = record.clone();
        c.extensions
            .insert(meta::CONTAINER_EXTENSION.to_string(), meta::to_any(m));
        self.inner
            .backend
            .containers()
            .update(cpb::UpdateContainerRequest {
                container: Some(c),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("extensions.{}", meta::CONTAINER_EXTENSION)],
                }),
            })
            .await
            .map(drop)
            .map_err(CriError::service(format!("updating container {}", m.id)))
    }

    pub(crate) async fn create_container(&self, r: cri::CreateContainerRequest) -> Result<String> {
        let config = r
            .config
            .ok_or_else(|| CriError::InvalidArgument("container config is required".into()))?;
        let cmd = config.metadata.clone().ok_or_else(|| {
            CriError::InvalidArgument("container config must include metadata".into())
        })?;
        let (_, sb) = self.sandbox(&r.pod_sandbox_id).await?;
        let sb_config: cri::PodSandboxConfig = meta::decode(&sb.config)?;
        let sbmd = sb_config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            cmd.name, sbmd.name, sbmd.namespace, sbmd.uid, cmd.attempt
        );
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self.find_image(&image_ref).await?.ok_or_else(|| {
            CriError::NotFound(format!(
                "failed to get image {image_ref:?}: not found (pull it first)"
            ))
        })?;
        let pause = self
            .task_state(&sb.id)
            .await?
            .filter(|t| t.running())
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!("sandbox {} is not running", sb.id))
            })?;
        let (_, handler) = self
            .inner
            .config
            .handler(&sb.runtime_handler)
            .ok_or_else(|| {
                CriError::NotFound(format!(
                    "no runtime for {:?} is configured",
                    sb.runtime_handler
                ))
            })?;
        let handler = handler.clone();
        let _guard = self.inner.lifecycle.lock().await;
        if let Some((_, other)) = self
            .container_records()
            .await?
            .into_iter()
            .find(|(_, m)| m.name == name)
        {
            return Err(CriError::AlreadyExists(format!(
                "failed to reserve container name {name:?}: name {name:?} is reserved for {:?}",
                other.id
            )));
        }
        let id = meta::new_id();
        let log_path = if config.log_path.is_empty() || sb_config.log_directory.is_empty() {
            String::new()
        } else {
            Path::new(&sb_config.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let lease = self.inner.backend.lease().await?;
        let result = self
            .create_container_leased(
                &lease, &id, name, log_path, &config, &sb, &sb_config, &image, &handler, pause.pid,
            )
            .await;
        lease.release().await;
        result?;
        self.publish(cri::ContainerEventResponse {
            container_id: id.clone(),
            container_event_type: cri::ContainerEventType::ContainerCreatedEvent as i32,
            created_at: meta::now_nanos(),
            ..Default::default()
        });
        Ok(id)
    }

    /// The snapshot, spec and record of a new container, in `lease`.
    #[allow(clippy::too_many_arguments)]
    async fn create_container_leased(
        &self,
        lease: &crate::backend::Lease,
        id: &str,
        name: String,
        log_path: String,
        config: &cri::ContainerConfig,
        sb: &crate::meta::SandboxMeta,
        sb_config: &cri::PodSandboxConfig,
        image: &crate::images::CriImage,
        handler: &crate::config::RuntimeHandler,
        pause_pid: u32,
    ) -> Result<()> {
        let id = id.to_string();
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let mounts = self
            .prepare_snapshot(&id, &image.facts.chain_id, lease)
            .await?;
        let oci = match self.resolve_user(&id, config, image, mounts).await {
            Ok(resolved) => {
                self.container_spec(&id, &sb.id, config, sb_config, image, pause_pid, resolved)
            }
            Err(e) => Err(e),
        };
        let oci = match oci {
            Ok(o) => o,
            Err(e) => {
                self.remove_snapshot(&id).await;
                return Err(e);
            }
        };
        let m = ContainerMeta {
            id: id.clone(),
            name,
            sandbox_id: sb.id.clone(),
            config: meta::encode(config),
            image_id: image.facts.id.clone(),
            image_ref: image_ref.clone(),
            log_path,
            created_at: meta::now_nanos(),
            ..Default::default()
        };
        let created = self
            .inner
            .backend
            .containers_in(lease)
            .create(cpb::CreateContainerRequest {
                container: Some(cpb::Container {
                    id: id.clone(),
                    labels: meta::record_labels(meta::KIND_CONTAINER, &config.labels),
                    image: image
                        .names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| image.facts.id.clone()),
                    runtime: Some(crate::sandbox::runtime_of(handler)),
                    spec: Some(prost_types::Any {
                        type_url: cspec::SPEC_TYPE_URL.to_string(),
                        value: serde_json::to_vec(&oci).unwrap_or_default(),
                    }),
                    snapshotter: self.inner.config.containerd.snapshotter.clone(),
                    snapshot_key: id.clone(),
                    extensions: HashMap::from([(
                        meta::CONTAINER_EXTENSION.to_string(),
                        meta::to_any(&m),
                    )]),
                    ..Default::default()
                }),
            })
            .await;
        if let Err(s) = created {
            self.remove_snapshot(&id).await;
            return Err(CriError::Service {
                what: format!("creating container {id}"),
                status: Box::new(s),
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn container_spec(
        &self,
        id: &str,
        sandbox_id: &str,
        config: &cri::ContainerConfig,
        sb_config: &cri::PodSandboxConfig,
        image: &crate::images::CriImage,
        pause_pid: u32,
        resolved: Option<berth_spec::user::ResolvedUser>,
    ) -> Result<oci_spec::runtime::Spec> {
        let c = &image.facts.config;
        let entrypoint = cspec::strings(&c["Entrypoint"]);
        let image_cmd = cspec::strings(&c["Cmd"]);
        // containerd's rule: command replaces the entrypoint (and drops
        // the image's cmd); args alone replace the cmd.
        let args: Vec<String> = if !config.command.is_empty() {
            config
                .command
                .iter()
                .chain(config.args.iter())
                .cloned()
                .collect()
        } else if !config.args.is_empty() {
            entrypoint
                .iter()
                .chain(config.args.iter())
                .cloned()
                .collect()
        } else {
            entrypoint.iter().chain(image_cmd.iter()).cloned().collect()
        };
        if args.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "no command specified for container {:?} (the image has no entrypoint or cmd)",
                config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default()
            )));
        }
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let image_user = c["User"].as_str().unwrap_or_default().to_string();
        let process = ImageProcess {
            env: cspec::strings(&c["Env"]),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: String::new(),
        };
        let mut opts: Vec<SpecOpt> = vec![
            spec::with_image_config(process),
            spec::with_process_args(args),
        ];
        if !config.envs.is_empty() {
            opts.push(spec::with_env(
                config
                    .envs
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, kv.value)),
            ));
        }
        if !config.working_dir.is_empty() {
            opts.push(spec::with_cwd(config.working_dir.clone()));
        }
        if config.tty {
            opts.push(spec::with_tty(true));
        }
        // containerd's rule: a group needs a user named with it.
        if let Some(g) = &sc.run_as_group
            && sc.run_as_user.is_none()
            && sc.run_as_username.is_empty()
        {
            return Err(CriError::InvalidArgument(format!(
                "user group \"{}\" is specified without user",
                g.value
            )));
        }
        // User: the request's uid (and gid), else the image's numeric user.
        let uid_gid = match &sc.run_as_user {
            Some(u) => Some((u.value, sc.run_as_group.as_ref().map_or(0, |g| g.value))),
            None if resolved.is_some() => {
                let mut r = resolved.unwrap_or_default();
                if let Some(g) = &sc.run_as_group {
                    r.gid = u32::try_from(g.value).map_err(|_| {
                        CriError::InvalidArgument(format!("runAsGroup {} out of range", g.value))
                    })?;
                }
                opts.push(spec::with_resolved_user(r));
                None
            }
            None if !image_user.is_empty() => {
                let mut parts = image_user.split(':');
                let uid = parts
                    .next()
                    .and_then(|u| u.parse::<i64>().ok())
                    .unwrap_or(0);
                let gid = parts
                    .next()
                    .and_then(|g| g.parse::<i64>().ok())
                    .unwrap_or(0);
                Some((uid, sc.run_as_group.as_ref().map_or(gid, |g| g.value)))
            }
            None => sc.run_as_group.as_ref().map(|g| (0, g.value)),
        };
        if let Some((uid, gid)) = uid_gid {
            opts.push(spec::with_user(
                u32::try_from(uid).map_err(|_| {
                    CriError::InvalidArgument(format!("runAsUser {uid} out of range"))
                })?,
                u32::try_from(gid).map_err(|_| {
                    CriError::InvalidArgument(format!("runAsGroup {gid} out of range"))
                })?,
            ));
        }
        if !sc.supplemental_groups.is_empty() {
            let groups: Vec<u32> = sc
                .supplemental_groups
                .iter()
                .filter_map(|g| u32::try_from(*g).ok())
                .collect();
            opts.push(Box::new(move |s: &mut oci_spec::runtime::Spec| {
                let p = s.process_mut().get_or_insert_with(Default::default);
                let mut user = p.user().clone();
                user.set_additional_gids(Some(groups));
                p.set_user(user);
                Ok(())
            }));
        }
        // Namespaces of the pod.
        let sb_modes = cspec::namespace_modes(sb_config);
        let c_modes = sc.namespace_options.clone().unwrap_or_default();
        opts.extend(cspec::with_pod_namespaces(&sb_modes, &c_modes, pause_pid));
        if cspec::host_network(sb_config) {
            opts.push(cspec::without_hostname());
        } else if !sb_config.hostname.is_empty() {
            opts.push(spec::with_hostname(sb_config.hostname.clone()));
        }
        // The pod's files, then the request's mounts (which win).
        let dir = self.sandbox_dir_of(sandbox_id);
        let mut mounts = Vec::new();
        for (file, dest) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let src = dir.join(file);
            if src.exists() && !config.mounts.iter().any(|m| m.container_path == dest) {
                mounts.push(
                    cspec::bind(
                        &src.display().to_string(),
                        dest,
                        sc.readonly_rootfs,
                        "rprivate",
                    )
                    .map_err(spec_err)?,
                );
            }
        }
        let mut rootfs_propagation = "";
        for m in &config.mounts {
            if m.host_path.is_empty() || m.container_path.is_empty() {
                continue;
            }
            if !Path::new(&m.host_path).exists() {
                // containerd creates a missing host directory.
                std::fs::create_dir_all(&m.host_path).map_err(|e| {
                    CriError::InvalidArgument(format!("failed to mkdir {:?}: {e}", m.host_path))
                })?;
            }
            // Propagation needs the host mount to propagate, and the
            // container's root to pass it on (containerd's rules).
            let propagation = match cri::MountPropagation::try_from(m.propagation) {
                Ok(cri::MountPropagation::PropagationHostToContainer) => {
                    cspec::ensure_propagates(&m.host_path, false)?;
                    if rootfs_propagation != "rshared" {
                        rootfs_propagation = "rslave";
                    }
                    "rslave"
                }
                Ok(cri::MountPropagation::PropagationBidirectional) => {
                    cspec::ensure_propagates(&m.host_path, true)?;
                    rootfs_propagation = "rshared";
                    "rshared"
                }
                _ => "rprivate",
            };
            mounts.push(
                cspec::bind(&m.host_path, &m.container_path, m.readonly, propagation)
                    .map_err(spec_err)?,
            );
        }
        opts.push(spec::with_mounts(mounts));
        if !rootfs_propagation.is_empty() {
            opts.push(cspec::with_rootfs_propagation(rootfs_propagation));
        }
        // Security.
        if sc.privileged {
            let sb_privileged = sb_config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .is_some_and(|s| s.privileged);
            if !sb_privileged {
                return Err(CriError::InvalidArgument(
                    "no privileged container allowed in sandbox (the pod must be privileged too)"
                        .into(),
                ));
            }
            opts.push(spec::with_privileged());
        } else if let Some(caps) = &sc.capabilities {
            opts.push(spec::with_capabilities(
                caps.add_capabilities.clone(),
                caps.drop_capabilities.clone(),
            ));
        }
        // The request's masked and read-only paths replace the defaults
        // (containerd applies them after privileged, which clears both).
        if !sc.masked_paths.is_empty() {
            opts.push(cspec::with_masked_paths(sc.masked_paths.clone()));
        }
        if !sc.readonly_paths.is_empty() {
            opts.push(cspec::with_readonly_paths(sc.readonly_paths.clone()));
        }
        // The deprecated path still counts (critest and older kubelets).
        #[allow(deprecated)]
        let path = &sc.seccomp_profile_path;
        let profile = crate::seccomp::profile_of(path, sc.seccomp.as_ref())?;
        if let Some(opt) = crate::seccomp::with_profile(&profile, sc.privileged)? {
            opts.push(opt);
        }
        if sc.readonly_rootfs {
            opts.push(spec::with_readonly_rootfs());
        }
        opts.push(cspec::with_no_new_privs(sc.no_new_privs));
        // Resources.
        let resources = config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .unwrap_or_default();
        let oom = cspec::clamp_oom(
            resources.oom_score_adj,
            self.inner.config.restrict_oom_score_adj,
        );
        opts.push(cspec::with_oom_score_adj(oom));
        opts.push(cspec::with_resources(resources));
        let parent = sb_config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        opts.push(spec::with_cgroups_path(cspec::cgroup_path(&parent, id)));
        let sbmd = sb_config.metadata.clone().unwrap_or_default();
        let mut annotations = config.annotations.clone();
        annotations.extend([
            (
                "io.kubernetes.cri.container-type".to_string(),
                "container".to_string(),
            ),
            (
                "io.kubernetes.cri.container-name".to_string(),
                config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            ),
            (
                "io.kubernetes.cri.sandbox-id".to_string(),
                sandbox_id.to_string(),
            ),
            ("io.kubernetes.cri.sandbox-name".to_string(), sbmd.name),
            (
                "io.kubernetes.cri.sandbox-namespace".to_string(),
                sbmd.namespace,
            ),
            ("io.kubernetes.cri.sandbox-uid".to_string(), sbmd.uid),
            (
                "io.kubernetes.cri.image-name".to_string(),
                config
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
            ),
        ]);
        opts.push(cspec::with_annotations(annotations));
        spec::generate(id, crate::backend::K8S_NAMESPACE, opts).map_err(spec_err)
    }

    /// The user a container names (`runAsUsername`, else an image's named
    /// `USER`), resolved in its root filesystem; `None` for numeric users.
    async fn resolve_user(
        &self,
        id: &str,
        config: &cri::ContainerConfig,
        image: &crate::images::CriImage,
        mounts: Vec<berth_api::containerd::types::Mount>,
    ) -> Result<Option<berth_spec::user::ResolvedUser>> {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let image_user = image.facts.config["User"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let named = if sc.run_as_user.is_some() {
            None
        } else if !sc.run_as_username.is_empty() {
            Some(sc.run_as_username.clone())
        } else if crate::user::is_named(&image_user) {
            Some(image_user)
        } else {
            None
        };
        let Some(user) = named else { return Ok(None) };
        let scratch = self.inner.paths.state.join("usermounts").join(id);
        tokio::task::spawn_blocking(move || crate::user::resolve(&user, &mounts, &scratch))
            .await
            .map_err(|e| CriError::Internal(format!("user lookup: {e}")))?
            .map(Some)
    }

    fn sandbox_dir_of(&self, id: &str) -> PathBuf {
        self.inner.paths.root.join("sandboxes").join(id)
    }

    pub(crate) async fn start_container(&self, id: &str) -> Result<()> {
        let mut steps = crate::steps::Steps::start();
        let cur = self.container(id).await?;
        if cur.state != cri::ContainerState::ContainerCreated {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is in {:?} state, not CREATED",
                cur.meta.id,
                cur.state.as_str_name()
            )));
        }
        let id = cur.meta.id.clone();
        let sandbox_running = self
            .task_state(&cur.meta.sandbox_id)
            .await?
            .is_some_and(|t| t.running());
        if !sandbox_running {
            return Err(CriError::FailedPrecondition(format!(
                "sandbox container {:?} is not running",
                cur.meta.sandbox_id
            )));
        }
        steps.mark("lookup");
        let io = self.io_dir(&id);
        std::fs::create_dir_all(&io)
            .map_err(|e| CriError::Internal(format!("creating {}: {e}", io.display())))?;
        let stdout = io.join("stdout");
        let stderr = io.join("stderr");
        for f in [&stdout, &stderr] {
            match nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => {
                    return Err(CriError::Internal(format!(
                        "creating FIFO {}: {e}",
                        f.display()
                    )));
                }
            }
        }
        let tty = cur.config.tty;
        // A container asking for stdin gets a FIFO clients attach to (the
        // shim holds it open until CloseIO).
        let stdin = cur.config.stdin.then(|| io.join("stdin"));
        if let Some(f) = &stdin {
            match nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => {
                    return Err(CriError::Internal(format!(
                        "creating FIFO {}: {e}",
                        f.display()
                    )));
                }
            }
        }
        self.attach_log(&cur.meta, &stdout, (!tty).then_some(stderr.as_path()))
            .await?;
        steps.mark("io");
        let rootfs = self.snapshot_mounts(&id).await?;
        steps.mark("mounts");
        let mut tasks = self.inner.backend.tasks();
        let created = tasks
            .create(tpb::CreateTaskRequest {
                container_id: id.clone(),
                rootfs,
                stdin: stdin
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                stdout: stdout.display().to_string(),
                stderr: if tty {
                    String::new()
                } else {
                    stderr.display().to_string()
                },
                terminal: tty,
                ..Default::default()
            })
            .await;
        steps.mark("task_create");
        if let Err(s) = created {
            self.detach_log(&id, &stdout, &stderr).await;
            return Err(CriError::Service {
                what: format!("failed to create containerd task for {id}"),
                status: Box::new(s),
            });
        }
        if let Err(s) = tasks
            .start(tpb::StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            })
            .await
        {
            let _ = self.kill_and_delete_task(&id).await;
            return Err(CriError::Service {
                what: format!("failed to start containerd task {id}"),
                status: Box::new(s),
            });
        }
        steps.mark("task_start");
        let mut m = cur.meta.clone();
        m.started_at = meta::now_nanos();
        m.stdout = stdout.display().to_string();
        m.stderr = if tty {
            String::new()
        } else {
            stderr.display().to_string()
        };
        self.save_container(&cur.record, &m).await?;
        steps.mark("save");
        tracing::debug!(id = %id, total = ?steps.total(), "container started {steps}");
        self.publish(cri::ContainerEventResponse {
            container_id: id,
            container_event_type: cri::ContainerEventType::ContainerStartedEvent as i32,
            created_at: m.started_at,
            ..Default::default()
        });
        Ok(())
    }

    /// Starts copying a container's FIFOs into its log (to nowhere when it
    /// has no log path: the FIFOs must still be drained).
    async fn attach_log(
        &self,
        m: &ContainerMeta,
        stdout: &Path,
        stderr: Option<&Path>,
    ) -> Result<()> {
        let max = self.inner.config.max_container_log_line_size;
        let path = if m.log_path.is_empty() {
            PathBuf::from("/dev/null")
        } else {
            PathBuf::from(&m.log_path)
        };
        let log = crate::logs::LogFile::open(&path)
            .map_err(|e| CriError::Internal(format!("opening log {}: {e}", path.display())))?;
        let mut copiers = vec![crate::logs::copy(
            stdout.to_path_buf(),
            "stdout",
            log.clone(),
            max,
        )];
        if let Some(stderr) = stderr {
            copiers.push(crate::logs::copy(
                stderr.to_path_buf(),
                "stderr",
                log.clone(),
                max,
            ));
        }
        self.inner.logs.lock().await.insert(m.id.clone(), log);
        self.inner
            .copiers
            .lock()
            .await
            .insert(m.id.clone(), copiers);
        Ok(())
    }

    /// Ends copiers waiting on FIFOs no task will open (a failed start).
    async fn detach_log(&self, id: &str, stdout: &Path, stderr: &Path) {
        self.inner.logs.lock().await.remove(id);
        self.inner.copiers.lock().await.remove(id);
        for f in [stdout, stderr] {
            // Opening the write side once lets a waiting reader see EOF.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_nonblock()
                .open(f);
        }
    }

    /// Reopens the log copiers of running containers (after a restart).
    pub(crate) async fn reattach_logs(&self) -> Result<()> {
        for (record, m) in self.container_records().await? {
            if m.stdout.is_empty() || self.inner.logs.lock().await.contains_key(&m.id) {
                continue;
            }
            let cur = self.current(record, m).await?;
            if cur.state == cri::ContainerState::ContainerRunning {
                let stderr = (!cur.meta.stderr.is_empty()).then(|| PathBuf::from(&cur.meta.stderr));
                self.attach_log(&cur.meta, Path::new(&cur.meta.stdout), stderr.as_deref())
                    .await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn reopen_log(&self, id: &str) -> Result<()> {
        let cur = self.container(id).await?;
        if cur.state != cri::ContainerState::ContainerRunning {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                cur.meta.id
            )));
        }
        let logs = self.inner.logs.lock().await;
        let log = logs.get(&cur.meta.id).ok_or_else(|| {
            CriError::FailedPrecondition(format!("container {} has no log", cur.meta.id))
        })?;
        log.reopen()
            .map_err(|e| CriError::Internal(format!("reopening the log of {}: {e}", cur.meta.id)))
    }

    /// Stops container `id`: its stop signal (image `StopSignal`, else
    /// SIGTERM), then SIGKILL after `timeout` seconds.
    pub(crate) async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let cur = match self.container(id).await {
            Ok(c) => c,
            // The CRI: stopping a container that is gone is no error.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if cur.state != cri::ContainerState::ContainerRunning {
            return Ok(());
        }
        let id = cur.meta.id.clone();
        let mut tasks = self.inner.backend.tasks();
        let wait = {
            let mut t = self.inner.backend.tasks();
            let id = id.clone();
            tokio::spawn(async move {
                t.wait(tpb::WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                })
                .await
            })
        };
        let mut wait = wait;
        if timeout > 0 {
            let signal = self.stop_signal(&cur).await;
            let _ = tasks
                .kill(tpb::KillRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                    signal,
                    all: false,
                })
                .await;
            let limit = Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
            match tokio::time::timeout(limit, &mut wait).await {
                Ok(_) => return self.container(&id).await.map(drop),
                Err(_) => tracing::debug!(container = %id, "stop timeout passed; killing"),
            }
        }
        self.inner
            .backend
            .kill_all(&id, &format!("container {id}"))
            .await?;
        let _ = wait.await;
        // Reading it now records the exit and deletes the task.
        self.container(&id).await.map(drop)
    }

    async fn stop_signal(&self, cur: &Current) -> u32 {
        let facts = self.find_image(&cur.meta.image_id).await.ok().flatten();
        let name = facts
            .as_ref()
            .and_then(|i| i.facts.config["StopSignal"].as_str().map(str::to_string))
            .unwrap_or_default();
        signal_number(&name).unwrap_or(15)
    }

    pub(crate) async fn remove_container(&self, id: &str) -> Result<()> {
        let cur = match self.container(id).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = cur.meta.id.clone();
        if cur.state == cri::ContainerState::ContainerRunning {
            self.stop_container(&id, 0).await?;
        }
        self.kill_and_delete_task(&id).await?;
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
                    what: format!("removing container {id}"),
                    status: Box::new(s),
                });
            }
        }
        self.remove_snapshot(&id).await;
        self.inner.logs.lock().await.remove(&id);
        self.inner.copiers.lock().await.remove(&id);
        let _ = std::fs::remove_dir_all(self.io_dir(&id));
        self.publish(cri::ContainerEventResponse {
            container_id: id,
            container_event_type: cri::ContainerEventType::ContainerDeletedEvent as i32,
            created_at: meta::now_nanos(),
            ..Default::default()
        });
        Ok(())
    }

    pub(crate) fn to_status(&self, cur: &Current) -> cri::ContainerStatus {
        let m = &cur.meta;
        let mounts = cur.config.mounts.clone();
        cri::ContainerStatus {
            id: m.id.clone(),
            metadata: cur.config.metadata.clone(),
            state: cur.state as i32,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: if cur.state == cri::ContainerState::ContainerExited {
                m.finished_at
            } else {
                0
            },
            exit_code: if cur.state == cri::ContainerState::ContainerExited {
                m.exit_code
            } else {
                0
            },
            image: Some(cri::ImageSpec {
                image: m.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: m.image_id.clone(),
            image_id: m.image_id.clone(),
            reason: if cur.state == cri::ContainerState::ContainerExited {
                m.reason.clone()
            } else {
                String::new()
            },
            labels: cur.config.labels.clone(),
            annotations: cur.config.annotations.clone(),
            mounts,
            log_path: m.log_path.clone(),
            ..Default::default()
        }
    }

    pub(crate) async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let mut out = Vec::new();
        for (record, m) in self.container_records().await? {
            if let Some(f) = &filter {
                if !f.id.is_empty() && !m.id.starts_with(&f.id) {
                    continue;
                }
                if !f.pod_sandbox_id.is_empty() && !m.sandbox_id.starts_with(&f.pod_sandbox_id) {
                    continue;
                }
            }
            let cur = self.current(record, m).await?;
            if let Some(f) = &filter {
                if f.state
                    .as_ref()
                    .is_some_and(|s| s.state != cur.state as i32)
                {
                    continue;
                }
                if !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| cur.config.labels.get(k) == Some(v))
                {
                    continue;
                }
            }
            out.push(cri::Container {
                id: cur.meta.id.clone(),
                pod_sandbox_id: cur.meta.sandbox_id.clone(),
                metadata: cur.config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: cur.meta.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: cur.meta.image_id.clone(),
                image_id: cur.meta.image_id.clone(),
                state: cur.state as i32,
                created_at: cur.meta.created_at,
                labels: cur.config.labels.clone(),
                annotations: cur.config.annotations.clone(),
            });
        }
        Ok(out)
    }

    pub(crate) async fn update_resources(
        &self,
        id: &str,
        r: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let cur = self.container(id).await?;
        let Some(r) = r else { return Ok(()) };
        let mut s = oci_spec::runtime::Spec::default();
        cspec::with_resources(r)(&mut s).map_err(spec_err)?;
        let resources = s
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        if cur.state != cri::ContainerState::ContainerRunning {
            return Ok(());
        }
        self.inner
            .backend
            .tasks()
            .update(tpb::UpdateTaskRequest {
                container_id: cur.meta.id.clone(),
                resources: Some(prost_types::Any {
                    type_url: cspec::RESOURCES_TYPE_URL.to_string(),
                    value: serde_json::to_vec(&resources).unwrap_or_default(),
                }),
                annotations: HashMap::new(),
            })
            .await
            .map(drop)
            .map_err(CriError::service(format!(
                "updating the resources of {}",
                cur.meta.id
            )))
    }
}

fn spec_err(e: berth_spec::SpecError) -> CriError {
    CriError::InvalidArgument(format!("container spec: {e}"))
}

/// Signal number of `SIGTERM`, `TERM`, `15`.
fn signal_number(name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as u32)
}

/// Opening a FIFO's write side without blocking.
trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(nix::libc::O_NONBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_by_name_or_number() {
        assert_eq!(signal_number(""), None);
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("2"), Some(2));
    }
}
