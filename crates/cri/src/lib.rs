//! berth's Kubernetes CRI plugin (`io.containerd.grpc.v1.cri`).
//!
//! Serves k8s.io/cri-api's `runtime.v1` RuntimeService and ImageService
//! on berthd's socket, as containerd's CRI plugin does, built from the
//! same parts: pods and containers are containerd containers and tasks in
//! the `k8s.io` namespace (reached through the daemon's own services, see
//! [`backend`]), images are pulled by the daemon's pull engine (through
//! [`ImagePuller`]), pod networks are made with CNI plugins ([`cni`]).
//!
//! All state is in the daemon's metadata and its shims: records carry the
//! CRI's metadata in extensions ([`meta`]), and each state the kubelet sees
//! is read from the task at the time of the call. So pods and containers
//! survive a restart of berthd with nothing to reload but the log copiers.
//!
//! Exec, Attach and PortForward answer with URLs on the streaming server
//! (berth-cri-streaming), started by [`Cri::start_streaming`] on
//! `stream_server_address`/`stream_server_port`; [`streaming`] runs those
//! streams against containers and pods.
//!
//! Differences from containerd, deliberate for now: no TLS on the streaming
//! server; pod and container stats are per container only.
//!
//! See the README for an example.

#![doc = include_str!("../README.md")]
pub mod backend;
pub mod cni;
pub mod config;
mod container;
pub mod error;
mod images;
pub mod logs;
pub mod meta;
pub mod netns;
pub mod puller;
mod sandbox;
mod seccomp;
mod service;
mod spec;
mod stats;
mod steps;
pub mod streaming;
mod user;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_api::runtime::v1 as cri;
use berth_api::runtime::v1::image_service_server::ImageServiceServer;
use berth_api::runtime::v1::runtime_service_server::RuntimeServiceServer;
use tokio::sync::{Mutex, OnceCell, broadcast};

pub use config::CriConfig;
pub use error::CriError;
pub use images::IMAGE_LABEL;
pub use puller::{ImagePuller, PullSpec, PulledImage};

/// The plugin id, as containerd's.
pub const PLUGIN_ID: &str = "cri";

/// Where the plugin keeps things and whom it talks to.
#[derive(Debug, Clone)]
pub struct CriPaths {
    /// Persistent directory (`<root>/io.containerd.grpc.v1.cri`): pod files.
    pub root: PathBuf,
    /// State directory (`<state>/io.containerd.grpc.v1.cri`): FIFOs, network namespaces.
    pub state: PathBuf,
    /// The daemon's gRPC socket.
    pub socket: PathBuf,
    /// Directory of the image filesystem (the snapshotter's root), for ImageFsInfo.
    pub image_fs: PathBuf,
}

/// The CRI plugin: both services share it.
#[derive(Debug, Clone)]
pub struct Cri {
    inner: Arc<Inner>,
}

struct Inner {
    config: CriConfig,
    paths: CriPaths,
    version: String,
    backend: backend::Backend,
    puller: Arc<dyn ImagePuller>,
    cni: cni::Cni,
    hosts_dir: Option<PathBuf>,
    image_cache: Mutex<HashMap<String, images::ImageFacts>>,
    logs: Mutex<HashMap<String, logs::LogFile>>,
    /// Log copiers of running containers, joined when they exit.
    copiers: Mutex<HashMap<String, Vec<std::thread::JoinHandle<()>>>>,
    /// GetContainerEvents' channel, made by its first subscriber (its 256
    /// slots take ~120 KB; with no subscriber an event goes nowhere anyway).
    events: std::sync::OnceLock<broadcast::Sender<cri::ContainerEventResponse>>,
    restored: OnceCell<()>,
    /// Serialises creating and removing (name reservations, pod networks).
    lifecycle: Mutex<()>,
    /// Names of sandboxes whose RunPodSandbox is under way (name → id), as
    /// containerd's name registrar: the start itself runs without
    /// `lifecycle`, so pods start side by side.
    starting: sandbox::Reservations,
    /// The streaming server (exec, attach, port-forward), once started.
    stream_server: std::sync::OnceLock<berth_cri_streaming::Server>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cri")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Cri {
    /// The plugin with `config`; `version` is what Version reports as the
    /// runtime version (the daemon's).
    pub fn new(
        config: CriConfig,
        paths: CriPaths,
        version: &str,
        puller: Arc<dyn ImagePuller>,
    ) -> Result<Cri, CriError> {
        if !config.registry.config_path.is_empty() && !config.registry.mirrors.is_empty() {
            return Err(CriError::InvalidArgument(
                "registry.mirrors cannot be set when registry.config_path is provided (move the mirrors into hosts.toml files)".into(),
            ));
        }
        for dir in [&paths.root, &paths.state] {
            std::fs::create_dir_all(dir)
                .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
        }
        let hosts_dir = if !config.registry.config_path.is_empty() {
            Some(PathBuf::from(&config.registry.config_path))
        } else if !config.registry.mirrors.is_empty() {
            Some(write_mirror_hosts(&paths.state.join("hosts"), &config)?)
        } else {
            None
        };
        let backend = backend::Backend::lazy(&paths.socket)?;
        let cni = cni::Cni {
            bin_dir: config.cni.bin_dir.clone(),
            conf_dir: config.cni.conf_dir.clone(),
            max_conf_num: config.cni.max_conf_num,
        };
        Ok(Cri {
            inner: Arc::new(Inner {
                config,
                paths,
                version: version.to_string(),
                backend,
                puller,
                cni,
                hosts_dir,
                image_cache: Mutex::default(),
                logs: Mutex::default(),
                copiers: Mutex::default(),
                events: std::sync::OnceLock::new(),
                restored: OnceCell::new(),
                lifecycle: Mutex::new(()),
                starting: sandbox::Reservations::default(),
                stream_server: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The RuntimeService server.
    pub fn runtime_server(&self) -> RuntimeServiceServer<Cri> {
        RuntimeServiceServer::new(self.clone())
    }

    /// The ImageService server.
    pub fn image_server(&self) -> ImageServiceServer<Cri> {
        ImageServiceServer::new(self.clone())
    }

    /// The plugin's configuration.
    pub fn config(&self) -> &CriConfig {
        &self.inner.config
    }

    /// Work left over from before a restart, done once before the first
    /// call is answered: log copiers of running containers.
    async fn restore(&self) {
        self.inner
            .restored
            .get_or_init(|| async {
                if let Err(e) = self.reattach_logs().await {
                    tracing::warn!(error = %e, "CRI: reattaching container logs");
                }
            })
            .await;
    }

    /// A receiver of the events published from now on.
    fn subscribe_events(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.inner
            .events
            .get_or_init(|| broadcast::channel(256).0)
            .subscribe()
    }

    fn publish(&self, event: cri::ContainerEventResponse) {
        if let Some(events) = self.inner.events.get() {
            let _ = events.send(event);
        }
    }
}

/// containerd's conversion of `registry.mirrors` into hosts: one
/// `<host>/hosts.toml` per registry listing its mirror endpoints.
fn write_mirror_hosts(dir: &std::path::Path, config: &CriConfig) -> Result<PathBuf, CriError> {
    let _ = std::fs::remove_dir_all(dir);
    for (host, mirror) in &config.registry.mirrors {
        let host_dir = if host == "*" {
            "_default".to_string()
        } else {
            host.clone()
        };
        let mut text = String::new();
        for endpoint in &mirror.endpoint {
            text.push_str(&format!(
                "[host.{:?}]\n  capabilities = [\"pull\", \"resolve\"]\n\n",
                endpoint.trim_end_matches('/')
            ));
        }
        let d = dir.join(&host_dir);
        std::fs::create_dir_all(&d)
            .and_then(|()| std::fs::write(d.join("hosts.toml"), text))
            .map_err(|e| {
                CriError::Internal(format!("writing mirrors into {}: {e}", d.display()))
            })?;
    }
    Ok(dir.to_path_buf())
}
