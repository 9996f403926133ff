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
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::task::v2 as shim;
use tokio::sync::Mutex;

use crate::spawn::{HelperCommand, ProcessExit};
use crate::task::{NewTask, Stdio};

/// How long a shim may take to start, or to answer a connect.
const SHIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime berth's own shim serves, besides `io.containerd.runc.v2`.
pub const BERTH_RUNTIME: &str = "io.containerd.berth.v2";
/// The runtime `ctr` asks for by default.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Legacy runtime names berth's shim serves too: containerd 1.x's runc
/// shim v1 and its built-in v1 Linux runtime (shim v1 protocol there; the
/// same runc underneath).
pub const LEGACY_RUNTIMES: [&str; 2] = ["io.containerd.runc.v1", "io.containerd.runtime.v1.linux"];
/// The bundle file recording the shim binary a task runs with, read after
/// a restart (containerd's name for it).
const SHIM_BINARY_FILE: &str = "shim-binary-path";
/// berth's shim binary.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// Why a shim operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No binary for the runtime (containerd's words, so clients matching
    /// on them keep working).
    #[error(
        "failed to start shim: failed to resolve runtime path: runtime {runtime:?} binary not installed {binary:?}: file does not exist"
    )]
    NoShim {
        /// The runtime name.
        runtime: String,
        /// The binary looked for.
        binary: String,
    },
    /// The runtime is neither a runtime name nor an absolute path to a shim.
    #[error("failed to start shim: failed to resolve runtime path: {0}")]
    BadRuntime(String),
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
    /// The shim answered a call with an error: its status's category and
    /// words, as the daemon passes them on.
    #[error("{message}")]
    Call {
        /// The category of the shim's status code.
        category: berth_api::Category,
        /// The shim's message.
        message: String,
    },
    /// The connection to the shim broke during a call.
    #[error("shim connection: {0}")]
    Disconnected(String),
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

impl berth_api::ErrorCategory for Error {
    fn category(&self) -> berth_api::Category {
        use berth_api::Category;
        match self {
            Error::NotFound(_) => Category::NotFound,
            Error::AlreadyExists(_) => Category::AlreadyExists,
            Error::Call { category, .. } => *category,
            Error::Disconnected(_) => Category::Unavailable,
            // containerd returns these as plain errors: code Unknown.
            Error::NoShim { .. } | Error::BadRuntime(_) => Category::Unknown,
            Error::Start { .. } | Error::Connect { .. } | Error::Io { .. } => Category::Unavailable,
        }
    }
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

/// One running shim and its task: the task's handle, whose calls
/// (`start`, `kill`, `state`, ...; the [`task`](crate::task) module) go to
/// the shim's task API.
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
    /// The runtime name the task was created with (from the bundle's
    /// `runtime` file), if known.
    pub runtime: Option<String>,
    /// The ttrpc task client (behind the handle's calls).
    pub(crate) client: shim::TaskClient,
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

/// Read buffer of the copy of one shim's log FIFO.
const LOG_BUFFER: usize = 256;

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
        // Shims log a few short lines; a small buffer (lines longer than
        // it are still read whole) keeps the daemon's memory per running
        // task low: the default 8 KiB would be resident for every task.
        let mut lines = tokio::io::BufReader::with_capacity(LOG_BUFFER, receiver).lines();
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

/// Creates a task bundle as containerd does: the namespace directory
/// traversable (0711), the bundle itself private (0700: its `config.json`
/// holds the container's environment), `rootfs` 0711.
fn create_bundle(bundle: &Path) -> std::io::Result<()> {
    if let Some(ns) = bundle.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(ns)?;
    }
    let exists_ok = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    };
    exists_ok(std::fs::DirBuilder::new().mode(0o700).create(bundle))?;
    // A bundle left behind by a dead task keeps whatever mode it had.
    std::fs::set_permissions(bundle, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    exists_ok(
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(bundle.join("rootfs")),
    )
}

/// Gives existing namespace directories 0711 and bundles 0700 (an older
/// berth created them 0755).
fn restrict_bundles(state: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %p.display(), error = %e, "cannot restrict bundle permissions");
        }
    };
    let Ok(namespaces) = std::fs::read_dir(state) else {
        return;
    };
    for ns in namespaces.flatten() {
        if !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        set(&ns.path(), 0o711);
        let Ok(bundles) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for b in bundles.flatten() {
            if b.file_type().is_ok_and(|t| t.is_dir()) {
                set(&b.path(), 0o700);
            }
        }
    }
}

/// An I/O error as Go's `os` package words it (`no such file or directory`).
fn go_errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How long a shim may take to answer `Connect` before `Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a shim may take to exit after `Shutdown`: it may be syncing
/// the filesystem of its task's rootfs (see the shim's `unmount`).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pidfd of `s`'s process (asked with `Connect`), readable once it has
/// exited; `None` if the shim does not say or is gone already.
async fn shim_exit(s: &Shim) -> Option<ProcessExit> {
    let req = shim::ConnectRequest { id: s.id.clone() };
    let resp = s
        .client
        .connect(context_for(&s.namespace, Some(SHUTDOWN_TIMEOUT)), &req)
        .await
        .ok()?;
    ProcessExit::watch(resp.shim_pid)
}

/// Keeps the shims of every namespace.
#[derive(Debug)]
pub struct ShimManager {
    config: ManagerConfig,
    shims: Mutex<HashMap<(String, String), Arc<Shim>>>,
    /// The log copy of each task's shim, by (namespace, id).
    logs: Mutex<HashMap<(String, String), LogFollower>>,
    /// Shims of deleted tasks whose process has not exited yet.
    exiting: Mutex<HashMap<(String, String), Arc<ProcessExit>>>,
    /// Where the watchers report shims that died under a live task.
    dead_tx: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    /// Taken once by the daemon ([`ShimManager::take_dead_shims`]).
    dead_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>>,
}

impl ShimManager {
    /// A manager with `config`; creates its state directory.
    pub fn new(config: ManagerConfig) -> Result<ShimManager, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&config.state)
            .map_err(io(&config.state))?;
        restrict_bundles(&config.state);
        let (dead_tx, dead_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(ShimManager {
            config,
            shims: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            exiting: Mutex::new(HashMap::new()),
            dead_tx,
            dead_rx: std::sync::Mutex::new(Some(dead_rx)),
        })
    }

    /// The `(namespace, id)` of every task whose shim died while berthd
    /// ran, reported once the manager cleaned up after it (runc state,
    /// rootfs mount, bundle): the daemon publishes their `/tasks/exit` and
    /// `/tasks/delete`, as containerd's `cleanupAfterDeadShim` does. `None`
    /// after the first call.
    pub fn take_dead_shims(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>> {
        self.dead_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Watches `shim` through a connection of its own that carries no
    /// calls: it ends only when the shim process is gone. If the shim is
    /// then still registered (no delete or abort removed it), its task died
    /// with it: clean up and report it.
    fn watch(self: &Arc<Self>, shim: Arc<Shim>) {
        let Some(path) = shim.address.strip_prefix("unix://").map(str::to_owned) else {
            return;
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            if let Ok(mut conn) = tokio::net::UnixStream::connect(&path).await {
                let mut buf = [0_u8; 64];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            }
            let Some(me) = me.upgrade() else {
                return;
            };
            let key = (shim.namespace.clone(), shim.id.clone());
            // The map stays locked until the bundle is gone: a task started
            // again under this id must not get a bundle this cleanup removes.
            let mut shims = me.shims.lock().await;
            match shims.get(&key) {
                Some(s) if Arc::ptr_eq(s, &shim) => {
                    shims.remove(&key);
                }
                _ => return,
            }
            tracing::warn!(namespace = %key.0, id = %key.1, "shim died; cleaning up its task");
            me.cleanup_dead(&key.0, &key.1, &shim.bundle, &shim.binary)
                .await;
            drop(shims);
            let _ = me.dead_tx.send(key);
        });
    }

    /// The shim binary for `runtime` (`runtime_path` overrides when given),
    /// resolved as containerd does: an absolute path is the shim itself, a
    /// name such as `io.containerd.runc.v2` maps to its binary
    /// (`containerd-shim-runc-v2`), looked for next to berthd, then on
    /// `PATH`. Configured shims come first; runc's runtime names (and the
    /// legacy ones) run berth's own shim.
    pub fn resolve(&self, runtime: &str, runtime_path: &str) -> Result<PathBuf, Error> {
        let runtime = if runtime_path.is_empty() {
            runtime
        } else {
            runtime_path
        };
        if runtime.is_empty() {
            return Err(Error::BadRuntime("no runtime name".into()));
        }
        let path = Path::new(runtime);
        if path.is_absolute() {
            return match std::fs::metadata(path) {
                Ok(_) => Ok(path.to_path_buf()),
                Err(e) => Err(Error::BadRuntime(format!(
                    "invalid custom binary path: stat {runtime}: {}",
                    go_errno_text(&e)
                ))),
            };
        }
        let invalid = || {
            Error::BadRuntime(format!(
                "invalid runtime name {runtime}, correct runtime name should be either format like `io.containerd.runc.v2` or a full path to the binary"
            ))
        };
        if runtime.contains('/') {
            return Err(invalid());
        }
        if let Some(p) = self.config.shims.get(runtime) {
            return Ok(p.clone());
        }
        let berth = runtime == RUNC_RUNTIME
            || runtime == BERTH_RUNTIME
            || LEGACY_RUNTIMES.contains(&runtime);
        let wanted = if berth {
            BERTH_SHIM.to_string()
        } else {
            shim_binary_name(runtime).ok_or_else(invalid)?
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
        if wanted == BERTH_SHIM
            && let Some(p) = shim_binary_name(runtime).and_then(|n| find_on_path(&n))
        {
            tracing::warn!(runtime, shim = %p.display(), "berth's shim not found; using containerd's");
            return Ok(p);
        }
        Err(Error::NoShim {
            runtime: runtime.to_string(),
            binary: shim_binary_name(runtime).unwrap_or(wanted),
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

    /// Starts a shim for task `id` ([`ShimManager::start`]) and creates
    /// the task in it, with `rootfs` mounted and `options` (runc's get
    /// `task.runc_root` unless they name a root); the task's handle and its
    /// init's pid. A shim whose task could not be created is stopped and
    /// cleaned up.
    pub async fn create_task(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        task: NewTask<'_>,
        rootfs: Vec<berth_api::containerd::types::Mount>,
        stdio: Stdio,
        options: Option<prost_types::Any>,
    ) -> Result<(Arc<Shim>, u32), Error> {
        let options = match task.runc_root {
            Some(root) => crate::task::with_runc_root(options, root),
            None => options,
        };
        let encoded = options.as_ref().map(prost::Message::encode_to_vec);
        // Where Tasks.Create's time goes, in the debug log (docs/perf-cri.md).
        let started_at = std::time::Instant::now();
        let shim = self
            .start(
                namespace,
                id,
                task.runtime,
                task.runtime_path,
                task.spec,
                encoded.as_deref().unwrap_or_default(),
            )
            .await?;
        let shim_start = started_at.elapsed();
        match shim.create(rootfs, stdio, options).await {
            Ok(pid) => {
                tracing::debug!(
                    shim = %shim.address,
                    pid,
                    shim_start = ?shim_start,
                    shim_create = ?(started_at.elapsed() - shim_start),
                    "task created"
                );
                Ok((shim, pid))
            }
            Err(e) => {
                tracing::debug!(error = %e, "task creation failed; aborting its shim");
                self.abort(namespace, id).await;
                Err(e)
            }
        }
    }

    /// Creates the bundle (config.json = `spec`, empty `rootfs`) and starts
    /// a shim for it; returns the connected shim. `options` is the task's
    /// options as a protobuf-encoded `Any` (empty for none): the shim's
    /// `start` reads them on stdin, as containerd hands them over (runc's
    /// shim takes `shim_cgroup` from them).
    #[tracing::instrument(name = "shim.start", skip(self, spec, runtime_path, options))]
    pub async fn start(
        self: &Arc<Self>,
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
        let t0 = std::time::Instant::now();
        self.wait_exited(namespace, id).await;
        let t_wait = t0.elapsed();
        let bundle = self.bundle(namespace, id);
        if bundle.exists() {
            // Left by a task whose shim died: clean it up first.
            self.cleanup_dead(namespace, id, &bundle, &binary).await;
        }
        create_bundle(&bundle).map_err(io(&bundle))?;
        let config = bundle.join("config.json");
        tokio::fs::write(&config, spec).await.map_err(io(&config))?;
        tokio::fs::write(bundle.join("runtime"), runtime)
            .await
            .map_err(io(&bundle))?;
        self.follow_log(namespace, id, &bundle).await;
        let t_bundle = t0.elapsed();
        let started = self
            .exec_start(namespace, id, &bundle, &binary, options)
            .await;
        let address = match started {
            Ok(a) => a,
            Err(e) => {
                self.stop_stray(namespace, id, &bundle, &binary).await;
                self.stop_log(namespace, id).await;
                let _ = tokio::fs::remove_dir_all(&bundle).await;
                return Err(e);
            }
        };
        let t_exec = t0.elapsed();
        // Mode 0600, as containerd writes it.
        let recorded = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(bundle.join(SHIM_BINARY_FILE))
            .await;
        if let Ok(mut f) = recorded {
            use tokio::io::AsyncWriteExt;
            let _ = f.write_all(binary.as_os_str().as_encoded_bytes()).await;
        }
        let shim = Arc::new(
            self.connect(namespace, id, &bundle, &binary, &address)
                .await?,
        );
        self.shims.lock().await.insert(key, shim.clone());
        self.watch(shim.clone());
        tracing::debug!(
            namespace,
            id,
            wait_exited = ?t_wait,
            bundle = ?(t_bundle - t_wait),
            shim_start = ?(t_exec - t_bundle),
            connect = ?(t0.elapsed() - t_exec),
            "shim started"
        );
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
        let runtime = tokio::fs::read_to_string(bundle.join("runtime"))
            .await
            .ok()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        Ok(Shim {
            namespace: namespace.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            address: address.to_string(),
            binary: binary.to_path_buf(),
            runtime,
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
    pub async fn remove(self: &Arc<Self>, namespace: &str, id: &str) {
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
            shim.shutdown(false).await;
            // Its socket goes now, not when the shim gets to it: a task
            // started again under this id at once (the restart monitor,
            // `run --rm` twice) must start a new shim, not find this one.
            if let Some(path) = shim.address.strip_prefix("unix://") {
                let _ = tokio::fs::remove_file(path).await;
            }
            // As containerd does, the task is deleted once the shim has
            // answered Shutdown, not once its process is gone: berth's shim
            // has closed its event connection by then, so the daemon holds
            // nothing of the task, and it may still be releasing (syncing)
            // the unmounted rootfs. A new task under this id waits for it.
            if let Some(exited) = exited {
                self.exiting(namespace, id, exited).await;
            }
            self.stop_log(namespace, id).await;
            let rootfs = shim.bundle.join("rootfs");
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
            if let Err(e) = tokio::fs::remove_dir_all(&shim.bundle).await {
                tracing::warn!(bundle = %shim.bundle.display(), error = %e, "cannot remove bundle");
            }
        }
    }

    /// Remembers the shim of deleted task `id` until its process is gone.
    async fn exiting(self: &Arc<Self>, namespace: &str, id: &str, exited: ProcessExit) {
        let exited = Arc::new(exited);
        let key = (namespace.to_string(), id.to_string());
        self.exiting
            .lock()
            .await
            .insert(key.clone(), exited.clone());
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            if tokio::time::timeout(EXIT_TIMEOUT, exited.wait())
                .await
                .is_err()
            {
                tracing::warn!(namespace = %key.0, id = %key.1, "the shim did not exit after Shutdown");
            }
            if let Some(me) = me.upgrade() {
                let mut exiting = me.exiting.lock().await;
                if exiting.get(&key).is_some_and(|e| Arc::ptr_eq(e, &exited)) {
                    exiting.remove(&key);
                }
            }
        });
    }

    /// Waits (bounded) for the shim of an earlier task `id` to be gone, so
    /// a new task never shares its root filesystem with one still being
    /// released.
    async fn wait_exited(&self, namespace: &str, id: &str) {
        let key = (namespace.to_string(), id.to_string());
        let exiting = self.exiting.lock().await.get(&key).cloned();
        if let Some(exited) = exiting
            && tokio::time::timeout(EXIT_TIMEOUT, exited.wait())
                .await
                .is_err()
        {
            tracing::warn!(
                namespace,
                id,
                "the previous shim of this task has not exited"
            );
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
            shim.shutdown(true).await;
            self.cleanup_dead(namespace, id, &shim.bundle, &shim.binary)
                .await;
        }
    }

    /// After a failed `start` (killed, timed out): the long-lived shim may
    /// already serve without the daemon knowing its address. berth's shim
    /// listens on an address derived from the daemon, namespace and id, so
    /// one found there is told to exit; one not listening yet exits by
    /// itself when it finds `start` gone.
    async fn stop_stray(&self, namespace: &str, id: &str, bundle: &Path, binary: &Path) {
        if binary.file_name() != Some(BERTH_SHIM.as_ref()) {
            return;
        }
        let address = crate::address::socket_address(
            &self.config.grpc_address.display().to_string(),
            namespace,
            id,
        );
        if let Ok(shim) = self.connect(namespace, id, bundle, binary, &address).await {
            tracing::debug!(id, address, "stopping the shim a failed start left");
            shim.shutdown(true).await;
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

    async fn reconnect(self: &Arc<Self>, namespace: &str, id: &str, bundle: &Path) -> bool {
        self.follow_log(namespace, id, bundle).await;
        let address = tokio::fs::read_to_string(bundle.join("address"))
            .await
            .unwrap_or_default()
            .trim()
            .to_string();
        // `shim-binary` is what berth wrote before it used containerd's name.
        let recorded = match tokio::fs::read(bundle.join(SHIM_BINARY_FILE)).await {
            Ok(b) => Ok(b),
            Err(_) => tokio::fs::read(bundle.join("shim-binary")).await,
        };
        let binary = match recorded {
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
        // A berthd killed between starting berth's shim and the shim's
        // `start` writing the address file leaves a live shim without one;
        // its address is derived from the daemon, namespace and id.
        let address = if address.is_empty() && binary.file_name() == Some(BERTH_SHIM.as_ref()) {
            crate::address::socket_address(
                &self.config.grpc_address.display().to_string(),
                namespace,
                id,
            )
        } else {
            address
        };
        if !address.is_empty()
            && let Ok(shim) = self.connect(namespace, id, bundle, &binary, &address).await
        {
            match shim.connect(SHIM_TIMEOUT).await {
                Ok(c) if c.task_pid != 0 && !task_deleted(&shim).await => {
                    let shim = Arc::new(shim);
                    self.shims
                        .lock()
                        .await
                        .insert((namespace.to_string(), id.to_string()), shim.clone());
                    self.watch(shim);
                    return true;
                }
                Ok(_) => {
                    // The shim lives but its task was never created (the
                    // daemon died mid-Create; the shim may still wait for
                    // stdio FIFOs whose client died with it), or was
                    // already deleted (the daemon died mid-Delete, before
                    // shutting the shim down). Nobody can start, kill or
                    // delete such a task: stop the shim and clean up.
                    tracing::info!(namespace, id, "shim has no created task; stopping it");
                    shim.shutdown(true).await;
                }
                Err(e) => {
                    tracing::info!(namespace, id, error = %e, "shim does not answer Connect")
                }
            }
        }
        tracing::info!(namespace, id, "shim is gone; cleaning up its task");
        self.cleanup_dead(namespace, id, bundle, &binary).await;
        false
    }
}

/// Whether the shim says its task `id` no longer exists (deleted, the
/// shim only waiting for the Shutdown the daemon did not live to send).
async fn task_deleted(shim: &Shim) -> bool {
    matches!(
        shim.state_within("", SHIM_TIMEOUT).await,
        Err(Error::Call {
            category: berth_api::Category::NotFound,
            ..
        })
    )
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
