//! The shim manager: starts shims with containerd's shim v2 protocol, keeps
//! their ttrpc connections, and finds them again after a daemon restart.
//!
//! Each task has a bundle directory `<state>/<namespace>/<id>` holding the
//! OCI `config.json`, the `rootfs` mount point and the shim's `address`.
//! Starting a shim runs `<shim> -namespace NS -address GRPC -publish-binary
//! BIN -id ID start` in the bundle; the shim daemonises, prints its ttrpc
//! address and exits. `<shim> ... delete` cleans up after a shim that died.
//! Shims outlive the daemon: on restart [`ShimManager::reconnect_all`]
//! connects to every live one again (in parallel, with a timeout each) and
//! cleans up after the dead.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::task::v2 as shim;
use tokio::sync::Mutex;

use crate::spawn::HelperCommand;

/// How long a shim may take to start, or to answer a connect.
const SHIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime berth's own shim serves, besides `io.containerd.runc.v2`.
pub const BERTH_RUNTIME: &str = "io.containerd.berth.v2";
/// The runtime `ctr` asks for by default.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// berth's shim binary.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// Why a shim operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No binary for the runtime.
    #[error(
        "runtime {runtime:?}: no shim binary {binary:?} found (next to berthd or on PATH); configure one under [plugins.\"io.containerd.runtime.v2.task\".shims]"
    )]
    NoShim {
        /// The runtime name.
        runtime: String,
        /// The binary looked for.
        binary: String,
    },
    /// The shim did not start.
    #[error("starting shim {binary} for {id:?}: {message}")]
    Start {
        /// The shim binary.
        binary: String,
        /// Task id.
        id: String,
        /// What went wrong (with the shim's stderr).
        message: String,
    },
    /// The ttrpc connection failed.
    #[error("connecting to shim of {id:?} at {address}: {message}")]
    Connect {
        /// Task id.
        id: String,
        /// The shim's address.
        address: String,
        /// What went wrong.
        message: String,
    },
    /// No task by that id.
    #[error("task {0:?}: not found")]
    NotFound(String),
    /// The task exists already.
    #[error("task {0:?}: already exists")]
    AlreadyExists(String),
    /// A file operation on the bundle failed.
    #[error("bundle {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the manager keeps bundles and how shims reach the daemon.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Bundle root: `<state>/io.containerd.runtime.v2.task`.
    pub state: PathBuf,
    /// The daemon's gRPC socket (`-address`).
    pub grpc_address: PathBuf,
    /// The daemon's ttrpc socket (`TTRPC_ADDRESS`, where shims publish events).
    pub ttrpc_address: PathBuf,
    /// The binary shims may exec to publish events (`-publish-binary`).
    pub publish_binary: PathBuf,
    /// Directory of berthd's own binaries (where berth's shim is looked for first).
    pub bin_dir: PathBuf,
    /// Runtime name → shim binary overrides (from config).
    pub shims: BTreeMap<String, PathBuf>,
}

/// One running shim and its task.
#[derive(Clone)]
pub struct Shim {
    /// Namespace.
    pub namespace: String,
    /// Task (container) id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The shim's ttrpc address.
    pub address: String,
    /// The shim binary.
    pub binary: PathBuf,
    /// The ttrpc task client.
    pub client: shim::TaskClient,
}

impl std::fmt::Debug for Shim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shim")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .field("address", &self.address)
            .finish()
    }
}

/// A ttrpc context with a deadline.
pub fn context(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX))
}

/// A ttrpc context without deadline, carrying the namespace (for Wait).
pub fn context_for(namespace: &str, timeout: Option<Duration>) -> ttrpc::context::Context {
    let mut ctx = match timeout {
        Some(t) => context(t),
        None => ttrpc::context::Context::default(),
    };
    ctx.add(
        berth_api::TTRPC_NAMESPACE_HEADER.to_string(),
        namespace.to_string(),
    );
    ctx
}

/// containerd's mapping of a runtime name to its shim binary:
/// `io.containerd.runc.v2` → `containerd-shim-runc-v2`.
pub fn shim_binary_name(runtime: &str) -> Option<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2 {
        return None;
    }
    let name = parts[parts.len() - 2];
    let version = parts[parts.len() - 1];
    Some(format!("containerd-shim-{name}-{version}"))
}

/// The copy of one shim's log into berthd's log; [`LogFollower::stop`]
/// ends it and closes the FIFO.
#[derive(Debug)]
struct LogFollower {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl LogFollower {
    /// Ends the copy; returns once the FIFO is closed, so a deleted task
    /// leaves no descriptor open in the daemon.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Creates (if needed) the bundle's `log` FIFO, which shims write their
/// logs to, and copies what arrives into berthd's log until stopped.
fn follow_log(namespace: &str, id: &str, bundle: &Path) -> Option<LogFollower> {
    let path = bundle.join("log");
    if let Err(e) = std::fs::create_dir_all(bundle) {
        tracing::warn!(bundle = %bundle.display(), error = %e, "cannot create bundle");
        return None;
    }
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot create the shim log FIFO");
            return None;
        }
    }
    // Read-write, so the FIFO never reports end-of-file between writers.
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path);
    let receiver = match receiver {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the shim log FIFO");
            return None;
        }
    };
    let (namespace, id) = (namespace.to_string(), id.to_string());
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let done = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(receiver).lines();
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        tracing::debug!(target: "shim", namespace = %namespace, id = %id, "{line}");
                    }
                    _ => break,
                },
                _ = &mut stopped => {
                    // Pass on what the shim wrote last, without waiting.
                    while let Ok(Ok(Some(line))) =
                        tokio::time::timeout(Duration::ZERO, lines.next_line()).await
                    {
                        tracing::debug!(target: "shim", namespace = %namespace, id = %id, "{line}");
                    }
                    break;
                }
            }
        }
    });
    Some(LogFollower { stop, done })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How long a shim may take to exit after `Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A pidfd of `s`'s process (asked with `Connect`), readable once it has
/// exited; `None` if the shim does not say or is gone already.
async fn shim_exit(s: &Shim) -> Option<crate::spawn::ProcessExit> {
    let req = shim::ConnectRequest { id: s.id.clone() };
    let resp = s
        .client
        .connect(context_for(&s.namespace, Some(SHUTDOWN_TIMEOUT)), &req)
        .await
        .ok()?;
    crate::spawn::ProcessExit::watch(resp.shim_pid)
}

/// Keeps the shims of every namespace.
#[derive(Debug)]
pub struct ShimManager {
    config: ManagerConfig,
    shims: Mutex<HashMap<(String, String), Arc<Shim>>>,
    /// The log copy of each task's shim, by (namespace, id).
    logs: Mutex<HashMap<(String, String), LogFollower>>,
}

impl ShimManager {
    /// A manager with `config`; creates its state directory.
    pub fn new(config: ManagerConfig) -> Result<ShimManager, Error> {
        std::fs::create_dir_all(&config.state).map_err(io(&config.state))?;
        Ok(ShimManager {
            config,
            shims: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
        })
    }

    /// The shim binary for `runtime` (`runtime_path` overrides when given).
    pub fn resolve(&self, runtime: &str, runtime_path: &str) -> Result<PathBuf, Error> {
        if !runtime_path.is_empty() {
            return Ok(PathBuf::from(runtime_path));
        }
        if let Some(p) = self.config.shims.get(runtime) {
            return Ok(p.clone());
        }
        let wanted = if runtime == RUNC_RUNTIME || runtime == BERTH_RUNTIME {
            BERTH_SHIM.to_string()
        } else {
            shim_binary_name(runtime).ok_or_else(|| Error::NoShim {
                runtime: runtime.to_string(),
                binary: String::new(),
            })?
        };
        let local = self.config.bin_dir.join(&wanted);
        if local.is_file() {
            return Ok(local);
        }
        if let Some(p) = find_on_path(&wanted) {
            return Ok(p);
        }
        // berth's shim missing (a partial install): containerd's own binary
        // for the runtime still speaks the same protocol.
        if wanted == BERTH_SHIM {
            if let Some(p) = shim_binary_name(runtime).and_then(|n| find_on_path(&n)) {
                tracing::warn!(runtime, shim = %p.display(), "berth's shim not found; using containerd's");
                return Ok(p);
            }
        }
        Err(Error::NoShim {
            runtime: runtime.to_string(),
            binary: wanted,
        })
    }

    /// Starts copying the log of task `id`'s shim (stopping an older copy).
    async fn follow_log(&self, namespace: &str, id: &str, bundle: &Path) {
        let key = (namespace.to_string(), id.to_string());
        let old = self.logs.lock().await.remove(&key);
        if let Some(old) = old {
            old.stop().await;
        }
        if let Some(follower) = follow_log(namespace, id, bundle) {
            self.logs.lock().await.insert(key, follower);
        }
    }

    /// Stops copying the log of task `id`'s shim and closes its FIFO.
    async fn stop_log(&self, namespace: &str, id: &str) {
        let follower = self
            .logs
            .lock()
            .await
            .remove(&(namespace.to_string(), id.to_string()));
        if let Some(follower) = follower {
            follower.stop().await;
        }
    }

    /// The bundle directory of task `id` in `namespace`.
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.config.state.join(namespace).join(id)
    }

    /// Creates the bundle (config.json = `spec`, empty `rootfs`) and starts
    /// a shim for it; returns the connected shim. `options` is the task's
    /// options as a protobuf-encoded `Any` (empty for none): the shim's
    /// `start` reads them on stdin, as containerd hands them over (runc's
    /// shim takes `shim_cgroup` from them).
    #[tracing::instrument(name = "shim.start", skip(self, spec, runtime_path, options))]
    pub async fn start(
        &self,
        namespace: &str,
        id: &str,
        runtime: &str,
        runtime_path: &str,
        spec: &[u8],
        options: &[u8],
    ) -> Result<Arc<Shim>, Error> {
        let key = (namespace.to_string(), id.to_string());
        if self.shims.lock().await.contains_key(&key) {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let binary = self.resolve(runtime, runtime_path)?;
        let bundle = self.bundle(namespace, id);
        if bundle.exists() {
            // Left by a task whose shim died: clean it up first.
            self.cleanup_dead(namespace, id, &bundle, &binary).await;
        }
        tokio::fs::create_dir_all(bundle.join("rootfs"))
            .await
            .map_err(io(&bundle))?;
        let config = bundle.join("config.json");
        tokio::fs::write(&config, spec).await.map_err(io(&config))?;
        tokio::fs::write(bundle.join("runtime"), runtime)
            .await
            .map_err(io(&bundle))?;
        self.follow_log(namespace, id, &bundle).await;
        let started = self
            .exec_start(namespace, id, &bundle, &binary, options)
            .await;
        let address = match started {
            Ok(a) => a,
            Err(e) => {
                self.stop_log(namespace, id).await;
                let _ = tokio::fs::remove_dir_all(&bundle).await;
                return Err(e);
            }
        };
        let _ = tokio::fs::write(
            bundle.join("shim-binary"),
            binary.as_os_str().as_encoded_bytes(),
        )
        .await;
        let shim = Arc::new(
            self.connect(namespace, id, &bundle, &binary, &address)
                .await?,
        );
        self.shims.lock().await.insert(key, shim.clone());
        Ok(shim)
    }

    fn shim_command(
        &self,
        binary: &Path,
        namespace: &str,
        id: &str,
        bundle: &Path,
    ) -> HelperCommand {
        // Not std's Command: from a static berthd it would fork (spawn.rs).
        let mut cmd = HelperCommand::new(binary);
        cmd.arg("-namespace")
            .arg(namespace)
            .arg("-address")
            .arg(&self.config.grpc_address)
            .arg("-publish-binary")
            .arg(&self.config.publish_binary)
            .arg("-id")
            .arg(id)
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.config.ttrpc_address)
            .env("GRPC_ADDRESS", &self.config.grpc_address)
            .env("NAMESPACE", namespace)
            .env("MAX_SHIM_VERSION", "2");
        cmd
    }

    async fn exec_start(
        &self,
        namespace: &str,
        id: &str,
        bundle: &Path,
        binary: &Path,
        options: &[u8],
    ) -> Result<String, Error> {
        let fail = |message: String| Error::Start {
            binary: binary.display().to_string(),
            id: id.to_string(),
            message,
        };
        let mut cmd = self.shim_command(binary, namespace, id, bundle);
        cmd.arg("start");
        if !options.is_empty() {
            cmd.stdin_data(options.to_vec());
        }
        let out = tokio::time::timeout(SHIM_TIMEOUT, cmd.output())
            .await
            .map_err(|_| fail(format!("no answer within {SHIM_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // containerd 1.7+ shims may print JSON bootstrap parameters.
        let address = if text.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["address"].as_str().map(str::to_string))
                .unwrap_or_default()
        } else {
            text
        };
        if address.is_empty() {
            return Err(fail("the shim printed no address".into()));
        }
        Ok(address)
    }

    async fn connect(
        &self,
        namespace: &str,
        id: &str,
        bundle: &Path,
        binary: &Path,
        address: &str,
    ) -> Result<Shim, Error> {
        let fail = |message: String| Error::Connect {
            id: id.to_string(),
            address: address.to_string(),
            message,
        };
        let client =
            tokio::time::timeout(SHIM_TIMEOUT, ttrpc::asynchronous::Client::connect(address))
                .await
                .map_err(|_| fail("timed out".into()))?
                .map_err(|e| fail(e.to_string()))?;
        Ok(Shim {
            namespace: namespace.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            address: address.to_string(),
            binary: binary.to_path_buf(),
            client: shim::TaskClient::new(client),
        })
    }

    /// The shim of task `id` in `namespace`.
    pub async fn get(&self, namespace: &str, id: &str) -> Result<Arc<Shim>, Error> {
        self.shims
            .lock()
            .await
            .get(&(namespace.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The shims of `namespace`.
    pub async fn list(&self, namespace: &str) -> Vec<Arc<Shim>> {
        let mut all: Vec<Arc<Shim>> = self
            .shims
            .lock()
            .await
            .values()
            .filter(|s| s.namespace == namespace)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Every shim.
    pub async fn all(&self) -> Vec<Arc<Shim>> {
        self.shims.lock().await.values().cloned().collect()
    }

    /// Forgets task `id`'s shim after its task was deleted: asks it to shut
    /// down and removes the bundle.
    pub async fn remove(&self, namespace: &str, id: &str) {
        let shim = self
            .shims
            .lock()
            .await
            .remove(&(namespace.to_string(), id.to_string()));
        if let Some(shim) = shim {
            // Held before Shutdown, so the pid cannot be reused meanwhile.
            // Only berth's shim surely exits now: containerd's runc shim may
            // serve other containers of the same pod and stay.
            let exited = if shim.binary.file_name() == Some(std::ffi::OsStr::new(BERTH_SHIM)) {
                shim_exit(&shim).await
            } else {
                None
            };
            let req = shim::ShutdownRequest {
                id: id.to_string(),
                now: false,
            };
            // The shim exits as it answers; a broken connection is success.
            let _ = shim
                .client
                .shutdown(context(Duration::from_secs(2)), &req)
                .await;
            // As containerd does, the task is deleted once its shim is gone,
            // with the connections it had to the daemon.
            if let Some(exited) = exited {
                if tokio::time::timeout(SHUTDOWN_TIMEOUT, exited.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(namespace, id, "the shim did not exit after Shutdown");
                }
            }
            self.stop_log(namespace, id).await;
            let rootfs = shim.bundle.join("rootfs");
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
            if let Err(e) = tokio::fs::remove_dir_all(&shim.bundle).await {
                tracing::warn!(bundle = %shim.bundle.display(), error = %e, "cannot remove bundle");
            }
        }
    }

    /// Undoes a task whose creation failed: stops its shim, then lets the
    /// shim binary's `delete` remove whatever runc state was left.
    pub async fn abort(&self, namespace: &str, id: &str) {
        let shim = self
            .shims
            .lock()
            .await
            .remove(&(namespace.to_string(), id.to_string()));
        if let Some(shim) = shim {
            let req = shim::ShutdownRequest {
                id: id.to_string(),
                now: true,
            };
            let _ = shim
                .client
                .shutdown(context(Duration::from_secs(2)), &req)
                .await;
            self.cleanup_dead(namespace, id, &shim.bundle, &shim.binary)
                .await;
        }
    }

    /// Runs `<shim> delete` for a task whose shim is gone, then removes its bundle.
    async fn cleanup_dead(&self, namespace: &str, id: &str, bundle: &Path, binary: &Path) {
        let mut cmd = self.shim_command(binary, namespace, id, bundle);
        cmd.arg("delete");
        match tokio::time::timeout(SHIM_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => {
                tracing::warn!(id, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "shim delete failed")
            }
            Ok(Err(e)) => tracing::warn!(id, error = %e, "cannot run shim delete"),
            Err(_) => tracing::warn!(id, "shim delete timed out"),
        }
        self.stop_log(namespace, id).await;
        let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        if let Err(e) = tokio::fs::remove_dir_all(bundle).await {
            tracing::warn!(bundle = %bundle.display(), error = %e, "cannot remove bundle");
        }
    }

    /// After a restart: connects to every live shim found in the bundles
    /// (in parallel, each with a timeout) and cleans up after dead ones.
    /// Returns how many were reconnected, and the `(namespace, id)` of the
    /// tasks whose shims were gone (the caller reports their exit).
    pub async fn reconnect_all(self: &Arc<Self>) -> (usize, Vec<(String, String)>) {
        let mut bundles = Vec::new();
        let Ok(mut namespaces) = tokio::fs::read_dir(&self.config.state).await else {
            return (0, Vec::new());
        };
        while let Ok(Some(ns)) = namespaces.next_entry().await {
            let Ok(mut ids) = tokio::fs::read_dir(ns.path()).await else {
                continue;
            };
            while let Ok(Some(id)) = ids.next_entry().await {
                bundles.push((
                    ns.file_name().to_string_lossy().into_owned(),
                    id.file_name().to_string_lossy().into_owned(),
                    id.path(),
                ));
            }
        }
        let tasks: Vec<_> = bundles
            .into_iter()
            .map(|(ns, id, bundle)| {
                let me = self.clone();
                tokio::spawn(async move {
                    let alive = me.reconnect(&ns, &id, &bundle).await;
                    (ns, id, alive)
                })
            })
            .collect();
        let (mut live, mut dead) = (0, Vec::new());
        for t in tasks {
            match t.await {
                Ok((_, _, true)) => live += 1,
                Ok((ns, id, false)) => dead.push((ns, id)),
                Err(e) => tracing::warn!(error = %e, "reconnect task failed"),
            }
        }
        if live + dead.len() > 0 {
            tracing::info!(
                live,
                dead = dead.len(),
                "reconnected to shims after restart"
            );
        }
        (live, dead)
    }

    async fn reconnect(&self, namespace: &str, id: &str, bundle: &Path) -> bool {
        self.follow_log(namespace, id, bundle).await;
        let address = tokio::fs::read_to_string(bundle.join("address"))
            .await
            .unwrap_or_default()
            .trim()
            .to_string();
        let binary = match tokio::fs::read(bundle.join("shim-binary")).await {
            Ok(b) => PathBuf::from(String::from_utf8_lossy(&b).into_owned()),
            Err(_) => {
                let runtime = tokio::fs::read_to_string(bundle.join("runtime"))
                    .await
                    .unwrap_or_default();
                match self.resolve(runtime.trim(), "") {
                    Ok(b) => b,
                    Err(_) => PathBuf::from(BERTH_SHIM),
                }
            }
        };
        if !address.is_empty() {
            if let Ok(shim) = self.connect(namespace, id, bundle, &binary, &address).await {
                let req = shim::ConnectRequest { id: id.to_string() };
                let alive = shim
                    .client
                    .connect(context_for(namespace, Some(SHIM_TIMEOUT)), &req)
                    .await
                    .is_ok();
                if alive {
                    self.shims
                        .lock()
                        .await
                        .insert((namespace.to_string(), id.to_string()), Arc::new(shim));
                    return true;
                }
            }
        }
        tracing::info!(namespace, id, "shim is gone; cleaning up its task");
        self.cleanup_dead(namespace, id, bundle, &binary).await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries_like_containerd() {
        assert_eq!(
            shim_binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(
            shim_binary_name("io.containerd.berth.v2").as_deref(),
            Some("containerd-shim-berth-v2")
        );
        assert_eq!(shim_binary_name("runc"), None);
    }
}
