//! The two gRPC services: thin adapters from the wire to [`Cri`]'s methods.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use berth_api::runtime::v1 as cri;
use berth_api::runtime::v1::image_service_server::ImageService;
use berth_api::runtime::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Cri;
use crate::error::CriError;

type Reply<T> = Result<Response<T>, Status>;

/// containerd's CRI API version string.
const CRI_VERSION: &str = "v1";
/// The `version` field containerd's CRI plugin answers (its kubeAPIVersion).
const KUBE_API_VERSION: &str = "0.1.0";

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBE_API_VERSION.to_string(),
            runtime_name: "containerd".to_string(),
            runtime_version: self.inner.version.clone(),
            runtime_api_version: CRI_VERSION.to_string(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        self.restore().await;
        let id = self.run_pod_sandbox(r.into_inner()).await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        self.restore().await;
        self.stop_pod_sandbox(&r.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        self.restore().await;
        self.remove_pod_sandbox(&r.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        self.restore().await;
        let r = r.into_inner();
        Ok(Response::new(
            self.sandbox_status(&r.pod_sandbox_id, r.verbose).await?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        self.restore().await;
        let items = self.list_pod_sandbox(r.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        self.restore().await;
        let id = self.create_container(r.into_inner()).await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        self.restore().await;
        self.start_container(&r.into_inner().container_id).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        self.restore().await;
        let r = r.into_inner();
        self.stop_container(&r.container_id, r.timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        self.restore().await;
        self.remove_container(&r.into_inner().container_id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        self.restore().await;
        let containers = self.list_containers(r.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        self.restore().await;
        let r = r.into_inner();
        let cur = self.container(&r.container_id).await?;
        let mut info = HashMap::new();
        if r.verbose {
            let pid = self.task_state(&cur.meta.id).await?.map_or(0, |t| t.pid);
            let spec: serde_json::Value = cur
                .record
                .spec
                .as_ref()
                .and_then(|s| serde_json::from_slice(&s.value).ok())
                .unwrap_or_default();
            let doc = serde_json::json!({
                "sandboxID": cur.meta.sandbox_id,
                "pid": pid,
                "snapshotKey": cur.record.snapshot_key,
                "snapshotter": cur.record.snapshotter,
                "runtimeType": cur.record.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(self.to_status(&cur)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        self.restore().await;
        let r = r.into_inner();
        self.update_resources(&r.container_id, r.linux).await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        self.restore().await;
        self.reopen_log(&r.into_inner().container_id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        self.restore().await;
        let r = r.into_inner();
        let timeout = Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0));
        let out = self.exec_sync(&r.container_id, r.cmd, timeout).await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        self.restore().await;
        let url = self.exec_url(r.into_inner()).await?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        self.restore().await;
        let url = self.attach_url(r.into_inner()).await?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        self.restore().await;
        let url = self.port_forward_url(r.into_inner()).await?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        self.restore().await;
        let cur = self.container(&r.into_inner().container_id).await?;
        let attributes = attributes(&cur);
        let stats = self.stats_of(&[(cur.meta.id.clone(), attributes)]).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: stats.into_iter().next(),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        self.restore().await;
        let filter = r.into_inner().filter.unwrap_or_default();
        let mut ids = Vec::new();
        for c in self.list_containers(None).await? {
            if c.state != cri::ContainerState::ContainerRunning as i32 {
                continue;
            }
            if (!filter.id.is_empty() && !c.id.starts_with(&filter.id))
                || (!filter.pod_sandbox_id.is_empty()
                    && !c.pod_sandbox_id.starts_with(&filter.pod_sandbox_id))
                || !filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
            {
                continue;
            }
            ids.push((
                c.id.clone(),
                cri::ContainerAttributes {
                    id: c.id.clone(),
                    metadata: c.metadata.clone(),
                    labels: c.labels.clone(),
                    annotations: c.annotations.clone(),
                },
            ));
        }
        let stats = self.stats_of(&ids).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        Err(CriError::Unimplemented(
            "PodSandboxStats is not implemented by berth's CRI plugin yet (use ListContainerStats)"
                .into(),
        )
        .into())
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        Err(CriError::Unimplemented("ListPodSandboxStats is not implemented by berth's CRI plugin yet (use ListContainerStats)".into()).into())
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        // containerd writes the pod CIDR into a conf_template; without one
        // there is nothing to do.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        let network_ready = self.inner.cni.ready();
        let mut conditions = vec![cri::RuntimeCondition {
            r#type: "RuntimeReady".to_string(),
            status: true,
            ..Default::default()
        }];
        conditions.push(if network_ready {
            cri::RuntimeCondition {
                r#type: "NetworkReady".to_string(),
                status: true,
                ..Default::default()
            }
        } else {
            cri::RuntimeCondition {
                r#type: "NetworkReady".to_string(),
                status: false,
                reason: "NetworkPluginNotReady".to_string(),
                message: "Network plugin returns error: cni plugin not initialized".to_string(),
            }
        });
        let mut info = HashMap::new();
        if r.into_inner().verbose {
            let c = &self.inner.config;
            let config = serde_json::json!({
                "sandboxImage": c.sandbox_image,
                "restrictOOMScoreAdj": c.restrict_oom_score_adj,
                "maxContainerLogSize": c.max_container_log_line_size,
                "enableUnprivilegedPorts": c.enable_unprivileged_ports,
                "enableUnprivilegedICMP": c.enable_unprivileged_icmp,
                "streamServerAddress": c.stream_server_address,
                "streamServerPort": c.stream_server_port,
                "cni": { "binDir": c.cni.bin_dir, "confDir": c.cni.conf_dir, "maxConfNum": c.cni.max_conf_num },
                "containerd": {
                    "snapshotter": c.containerd.snapshotter,
                    "defaultRuntimeName": c.containerd.default_runtime_name,
                    "runtimes": c.containerd.runtimes.iter().map(|(k, v)| (k.clone(), serde_json::json!({"runtimeType": v.runtime_type}))).collect::<serde_json::Map<_, _>>(),
                },
                "registry": { "configPath": c.registry.config_path },
                "rootDir": self.inner.paths.root,
                "stateDir": self.inner.paths.state,
            });
            info.insert("config".to_string(), config.to_string());
            let networks: Vec<String> = self
                .inner
                .cni
                .networks()
                .unwrap_or_default()
                .into_iter()
                .map(|n| n.name)
                .collect();
            let load = match self.inner.cni.networks() {
                Ok(n) if !n.is_empty() => "OK".to_string(),
                Ok(_) => "cni config load failed: no network config found in conf_dir: cni plugin not initialized".to_string(),
                Err(e) => format!("cni config load failed: {e}"),
            };
            info.insert("lastCNILoadStatus".to_string(), load);
            info.insert(
                "cniconfig".to_string(),
                serde_json::json!({ "Networks": networks }).to_string(),
            );
        }
        let runtime_handlers = self
            .inner
            .config
            .containerd
            .runtimes
            .keys()
            .map(|name| cri::RuntimeHandler {
                name: name.clone(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            })
            .collect();
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers,
            features: None,
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "method CheckpointContainer not implemented",
        ))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let mut rx = self.subscribe_events();
        let (tx, out) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        if tx.send(Ok(e)).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a CRI event subscriber lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        Err(Status::unimplemented(
            "method ListMetricDescriptors not implemented",
        ))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        Err(Status::unimplemented(
            "method ListPodSandboxMetrics not implemented",
        ))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        let systemd = self
            .inner
            .config
            .handler("")
            .and_then(|(_, h)| {
                h.options
                    .get("SystemdCgroup")
                    .and_then(toml::Value::as_bool)
            })
            .unwrap_or(false);
        let driver = if systemd {
            cri::CgroupDriver::Systemd
        } else {
            cri::CgroupDriver::Cgroupfs
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}

fn attributes(cur: &crate::container::Current) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: cur.meta.id.clone(),
        metadata: cur.config.metadata.clone(),
        labels: cur.config.labels.clone(),
        annotations: cur.config.annotations.clone(),
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        let wanted = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let images = if wanted.is_empty() {
            self.list_images().await?
        } else {
            self.find_image(&wanted).await?.into_iter().collect()
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(crate::images::to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        let r = r.into_inner();
        let reference = r.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("image reference is required"));
        }
        // An absent image is an empty answer, not an error (the kubelet
        // asks before each pull).
        let Some(image) = self.find_image(&reference).await? else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if r.verbose {
            let doc = serde_json::json!({
                "chainID": image.facts.chain_id,
                "imageSpec": image.facts.blob,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(crate::images::to_cri(&image)),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> Reply<cri::PullImageResponse> {
        let r = r.into_inner();
        let reference = r.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("image reference is required"));
        }
        let id = self.pull(&reference, r.auth.as_ref()).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        let reference = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        self.remove_image(&reference).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let dir = self.inner.paths.image_fs.clone();
        let usage = tokio::task::spawn_blocking(move || {
            nix::sys::statvfs::statvfs(&dir).map(|s| {
                let frsize = s.fragment_size();
                let used = (s.blocks() - s.blocks_free()).saturating_mul(frsize);
                let inodes = s.files() - s.files_free();
                (dir, used, inodes)
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("statfs of the image filesystem: {e}")))?;
        let fs = cri::FilesystemUsage {
            timestamp: crate::meta::now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.0.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: usage.1 }),
            inodes_used: Some(cri::UInt64Value { value: usage.2 }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}
