//! The shim's `containerd.task.v2.Task` service: one container (its init
//! process and its execs) driven through runc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use berth_api::containerd::events as ev;
use berth_api::containerd::runc::v1::Options as RuncOptions;
use berth_api::containerd::task::v2 as api;
use berth_api::containerd::v1::types::{ProcessInfo, Status};
use berth_api::errdefs::{Category, RpcError};
use prost::Message;
use tokio::sync::{Notify, oneshot, watch};
use ttrpc::r#async::TtrpcContext;

use super::events::Publisher;
use super::reaper::{Exit, Reaper};
use super::runc::{ProcessStdio, Runc};
use super::stdio::{self, ConsoleSocket, StdioPaths};
use super::unmount::Releases;

/// Where runc keeps state when the client gives no root (containerd's default).
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";
/// How long `Shutdown` waits for the queued events to reach the daemon.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// The file in the bundle that remembers runc's root and binary for `delete`.
pub(crate) const OPTIONS_FILE: &str = "berth-runc.json";

type Reply<T> = ttrpc::Result<T>;

fn err(category: Category, message: impl Into<String>) -> ttrpc::Error {
    RpcError::new(category, message.into()).into()
}

fn not_found(what: &str) -> ttrpc::Error {
    err(Category::NotFound, format!("{what}: not found"))
}

/// An exit as the API reports it.
#[derive(Debug, Clone, Copy)]
struct ExitInfo {
    status: u32,
    at: SystemTime,
}

/// One process of the container: the init process or an exec.
#[derive(Debug)]
struct Process {
    pid: u32,
    status: Status,
    stdio: StdioPaths,
    exit: watch::Sender<Option<ExitInfo>>,
    /// Ends the stdin copy (CloseIO).
    stdin_close: Option<oneshot::Sender<()>>,
    /// The pty master, for resizing.
    console: Option<std::fs::File>,
    /// An exec's process spec (JSON), until it starts.
    spec: Option<Vec<u8>>,
}

impl Process {
    fn new(stdio: StdioPaths) -> Process {
        Process {
            pid: 0,
            status: Status::Created,
            stdio,
            exit: watch::channel(None).0,
            stdin_close: None,
            console: None,
            spec: None,
        }
    }

    fn exited(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    fn set_exited(&mut self, e: ExitInfo) {
        self.status = Status::Stopped;
        self.console = None;
        self.stdin_close = None;
        self.exit.send_replace(Some(e));
    }
}

#[derive(Debug)]
struct Container {
    id: String,
    bundle: PathBuf,
    init: Process,
    execs: HashMap<String, Process>,
    runc: Runc,
    rootfs_mounted: bool,
    /// Start and delete may skip runc (see [`super::direct`]).
    direct: bool,
    /// The container shares a PID namespace (the host's, or another's): when
    /// its init exits, the rest of its processes are killed, as the kernel
    /// does for a private PID namespace and containerd's shim does for
    /// shared ones.
    kill_all_on_exit: bool,
}

impl Container {
    fn process(&self, exec_id: &str) -> Reply<&Process> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            self.execs
                .get(exec_id)
                .ok_or_else(|| not_found(&format!("exec {exec_id:?}")))
        }
    }

    fn process_mut(&mut self, exec_id: &str) -> Reply<&mut Process> {
        if exec_id.is_empty() {
            Ok(&mut self.init)
        } else {
            self.execs
                .get_mut(exec_id)
                .ok_or_else(|| not_found(&format!("exec {exec_id:?}")))
        }
    }
}

#[derive(Debug, Default)]
struct State {
    container: Option<Container>,
    /// Exits of pids not yet known as a process (it exited before runc
    /// reported its pid); at most a few at a time.
    unclaimed: HashMap<u32, ExitInfo>,
}

/// An exit recorded in the state whose `/tasks/exit` is still to be sent.
#[derive(Debug)]
struct PendingExit {
    container_id: String,
    /// The container id for the init process, else the exec id.
    id: String,
    pid: u32,
    info: ExitInfo,
}

/// The task service of one shim.
#[derive(Debug)]
pub(crate) struct Service {
    namespace: String,
    reaper: Arc<Reaper>,
    publisher: Publisher,
    state: Mutex<State>,
    /// Orders events as containerd's runc shim does (its `eventSendMu`):
    /// create and start hold it from launching the process until their
    /// `/tasks/create`, `/tasks/start` or `/tasks/exec-started` is queued,
    /// and an exit is queued only while holding it. A process that exits at
    /// once must still be announced started first: Docker Engine handles an
    /// exit only once it has recorded the pid the start reported, and takes
    /// an exit that comes first for an unknown exec's and drops it (the
    /// container then never stops).
    event_order: tokio::sync::Mutex<()>,
    /// Signalled when the shim should exit.
    pub(crate) shutdown: Arc<Notify>,
    /// Unmounted root filesystems still being released (synced); the
    /// shim waits for them before it exits.
    pub(crate) releases: Releases,
}

fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(t.into())
}

impl Service {
    /// A service for `namespace` publishing through `publisher`.
    pub(crate) fn new(
        namespace: String,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        releases: Releases,
    ) -> Service {
        Service {
            namespace,
            reaper,
            publisher,
            state: Mutex::new(State::default()),
            event_order: tokio::sync::Mutex::new(()),
            shutdown: Arc::new(Notify::new()),
            releases,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_container<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Reply<T>) -> Reply<T> {
        let mut st = self.state();
        match st.container.as_mut() {
            Some(c) if c.id == id => f(c),
            _ => Err(not_found(&format!("container {id:?}"))),
        }
    }

    fn runc(&self, id: &str) -> Reply<(Runc, PathBuf)> {
        self.with_container(id, |c| Ok((c.runc.clone(), c.bundle.clone())))
    }

    /// Before an exit is recorded: if it is the init's and the container
    /// shares a PID namespace, kills every other process of the container
    /// (`runc kill --all`, which walks its cgroup), as containerd's shim
    /// does, so nothing of it outlives the task.
    pub(crate) async fn before_exit(&self, exit: &Exit) {
        let pid = exit.pid.unsigned_abs();
        let target = {
            let st = self.state();
            st.container
                .as_ref()
                .filter(|c| c.kill_all_on_exit && c.init.pid == pid)
                .filter(|c| c.init.status != Status::Stopped)
                .map(|c| (c.runc.clone(), c.id.clone()))
        };
        if let Some((runc, id)) = target {
            let sigkill = nix::sys::signal::Signal::SIGKILL as u32;
            if let Err(e) = runc.kill(&id, sigkill, true).await {
                tracing::warn!(id = %id, error = %e, "killing the processes left after init exited");
            }
        }
    }

    /// Records the exit of `exit.pid` and publishes it, after the start
    /// event of a start in progress (see [`Service::event_order`]).
    pub(crate) async fn on_exit(&self, exit: Exit) {
        // The state changes at once (Wait and State see the exit); only
        // the event waits its turn.
        if let Some(pending) = self.record_exit(exit) {
            let _order = self.event_order.lock().await;
            self.publish_exit(pending);
        }
    }

    /// Records the exit of `exit.pid`; the exit to publish if it was a
    /// known process.
    fn record_exit(&self, exit: Exit) -> Option<PendingExit> {
        let pid = exit.pid.unsigned_abs();
        let info = ExitInfo {
            status: exit.status,
            at: exit.at,
        };
        let mut st = self.state();
        let c = st.container.as_mut()?;
        let container_id = c.id.clone();
        let found = if c.init.pid == pid {
            c.init.set_exited(info);
            Some(container_id.clone())
        } else {
            c.execs
                .iter_mut()
                .find(|(_, p)| p.pid == pid && p.status != Status::Stopped)
                .map(|(id, p)| {
                    p.set_exited(info);
                    id.clone()
                })
        };
        match found {
            Some(id) => Some(PendingExit {
                container_id,
                id,
                pid,
                info,
            }),
            None => {
                if st.unclaimed.len() > 1024 {
                    st.unclaimed.clear();
                }
                st.unclaimed.insert(pid, info);
                None
            }
        }
    }

    fn publish_exit(&self, e: PendingExit) {
        self.publisher.publish(
            "/tasks/exit",
            &ev::TaskExit {
                container_id: e.container_id,
                id: e.id,
                pid: e.pid,
                exit_status: e.info.status,
                exited_at: ts(e.info.at),
            },
        );
    }

    /// Sets the pid of a process runc started, applying an exit that
    /// arrived before the pid was known; returns that exit, which the
    /// caller publishes after its own create or start event.
    fn set_pid(&self, id: &str, exec_id: &str, pid: u32) -> Option<PendingExit> {
        let mut st = self.state();
        let early = st.unclaimed.remove(&pid);
        let c = st.container.as_mut().filter(|c| c.id == id)?;
        let p = c.process_mut(exec_id).ok()?;
        p.pid = pid;
        if p.status == Status::Created {
            p.status = Status::Running;
        }
        let info = early?;
        p.set_exited(info);
        Some(PendingExit {
            container_id: id.to_owned(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_owned(),
            pid,
            info,
        })
    }

    async fn do_create(&self, r: api::CreateTaskRequest) -> Reply<api::CreateTaskResponse> {
        if !r.checkpoint.is_empty() {
            return Err(err(
                Category::FailedPrecondition,
                "restoring from a checkpoint needs CRIU, which berth's shim does not drive",
            ));
        }
        if self.state().container.is_some() {
            return Err(err(
                Category::AlreadyExists,
                format!("container {:?}: this shim already runs a container", r.id),
            ));
        }
        let bundle = PathBuf::from(&r.bundle);
        let options = r
            .options
            .as_ref()
            .filter(|a| a.type_url.ends_with("containerd.runc.v1.Options"))
            .and_then(|a| RuncOptions::decode(a.value.as_slice()).ok())
            .unwrap_or_default();
        let root = if options.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            &options.root
        };
        let runc = Runc {
            binary: PathBuf::from(if options.binary_name.is_empty() {
                "runc"
            } else {
                &options.binary_name
            }),
            root: Path::new(root).join(&self.namespace),
            log: bundle.join("log.json"),
            systemd_cgroup: options.systemd_cgroup,
            reaper: self.reaper.clone(),
        };
        let remembered = serde_json::json!({
            "root": runc.root, "binary": runc.binary, "systemd_cgroup": runc.systemd_cgroup,
        });
        std::fs::write(bundle.join(OPTIONS_FILE), remembered.to_string()).map_err(|e| {
            err(
                Category::Internal,
                format!("writing {}: {e}", bundle.display()),
            )
        })?;

        let rootfs = bundle.join("rootfs");
        let mounts: Vec<berth_snapshots::Mount> = r
            .rootfs
            .iter()
            .map(|m| berth_snapshots::Mount {
                kind: m.r#type.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options: m.options.clone(),
            })
            .collect();
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| err(Category::Internal, format!("{}: {e}", rootfs.display())))?;
            berth_snapshots::mount::mount_all(&mounts, &rootfs)
                .map_err(|e| err(Category::Internal, format!("mounting the rootfs: {e}")))?;
        }
        let stdio_paths = StdioPaths {
            stdin: r.stdin.clone(),
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            terminal: r.terminal,
        };
        {
            let mut st = self.state();
            st.container = Some(Container {
                id: r.id.clone(),
                bundle: bundle.clone(),
                init: Process::new(stdio_paths.clone()),
                execs: HashMap::new(),
                runc: runc.clone(),
                rootfs_mounted: !mounts.is_empty(),
                direct: !runc.systemd_cgroup && !super::direct::has_hooks(&bundle),
                kill_all_on_exit: !has_private_pid_namespace(&bundle),
            });
        }
        let pid_file = bundle.join("init.pid");
        let order = self.event_order.lock().await;
        let started = self
            .start_process(&r.id, "", &stdio_paths, |console, stdio| {
                let runc = runc.clone();
                let (id, bundle, pid_file) = (r.id.clone(), bundle.clone(), pid_file.clone());
                async move {
                    runc.create(&id, &bundle, &pid_file, console.as_deref(), stdio)
                        .await
                }
            })
            .await;
        if let Err(e) = started {
            let mut st = self.state();
            st.container = None;
            drop(st);
            if !mounts.is_empty() {
                let _ = berth_snapshots::mount::unmount_all(&rootfs);
            }
            return Err(e);
        }
        let pid = read_pid(&pid_file)?;
        // The init process is "created" until Start, even though it exists.
        let early_exit = self.set_pid(&r.id, "", pid);
        self.with_container(&r.id, |c| {
            if c.init.status == Status::Running {
                c.init.status = Status::Created;
            }
            Ok(())
        })?;
        if let Err(e) = super::oom::watch(r.id.clone(), pid, self.publisher.clone()) {
            tracing::warn!(id = %r.id, error = %e, "no OOM notifications for this task");
        }
        self.publisher.publish(
            "/tasks/create",
            &ev::TaskCreate {
                container_id: r.id.clone(),
                bundle: r.bundle.clone(),
                rootfs: r.rootfs.clone(),
                io: Some(ev::TaskIo {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                }),
                checkpoint: String::new(),
                pid,
            },
        );
        if let Some(exit) = early_exit {
            self.publish_exit(exit);
        }
        drop(order);
        Ok(api::CreateTaskResponse { pid })
    }

    /// Sets up a process's stdio, runs `launch` (runc create or exec) with
    /// it, and wires the terminal if there is one.
    async fn start_process<F, Fut>(
        &self,
        id: &str,
        exec_id: &str,
        paths: &StdioPaths,
        launch: F,
    ) -> Reply<()>
    where
        F: FnOnce(Option<PathBuf>, ProcessStdio) -> Fut,
        Fut: std::future::Future<Output = Result<(), super::runc::RuncError>>,
    {
        let io_err =
            |e: std::io::Error| err(Category::FailedPrecondition, format!("process stdio: {e}"));
        if paths.terminal {
            let socket = ConsoleSocket::new().map_err(io_err)?;
            let path = socket.path.clone();
            let receiving = tokio::spawn(socket.receive());
            let launched = launch(Some(path.clone()), ProcessStdio::default()).await;
            if let Err(e) = launched {
                receiving.abort();
                stdio::remove_quietly(&path);
                return Err(err(Category::Unknown, e.to_string()));
            }
            let master = receiving
                .await
                .map_err(|e| err(Category::Internal, e.to_string()))?
                .map_err(io_err)?;
            let (console, close) = stdio::copy_console(master, paths).map_err(io_err)?;
            self.with_container(id, |c| {
                let p = c.process_mut(exec_id)?;
                p.console = Some(console);
                p.stdin_close = close;
                Ok(())
            })?;
            return Ok(());
        }
        let stdin = stdio::stdin_pipe(&paths.stdin).map_err(io_err)?;
        let (stdin_fd, close) = match stdin {
            Some(s) => (Some(s.reader), Some(s.close)),
            None => (None, None),
        };
        let process_stdio = ProcessStdio {
            stdin: stdin_fd,
            stdout: stdio::open_output(&paths.stdout).map_err(io_err)?,
            stderr: stdio::open_output(&paths.stderr).map_err(io_err)?,
        };
        launch(None, process_stdio)
            .await
            .map_err(|e| err(Category::Unknown, e.to_string()))?;
        self.with_container(id, |c| {
            c.process_mut(exec_id)?.stdin_close = close;
            Ok(())
        })
    }

    async fn do_start(&self, r: api::StartRequest) -> Reply<api::StartResponse> {
        let (runc, bundle) = self.runc(&r.id)?;
        // Held until the start event is queued: an exit of the process
        // meanwhile is announced after it (see `event_order`).
        let _order = self.event_order.lock().await;
        if r.exec_id.is_empty() {
            let (pid, direct) = self.with_container(&r.id, |c| match c.init.status {
                Status::Created => Ok((c.init.pid, c.direct)),
                s => Err(err(
                    Category::FailedPrecondition,
                    format!(
                        "container {:?} is {}, not created",
                        r.id,
                        s.as_str_name().to_lowercase()
                    ),
                )),
            })?;
            let started = if direct {
                super::direct::start(&runc.root, &r.id, pid)
                    .await
                    .map_err(|e| err(Category::Unknown, format!("starting {:?}: {e}", r.id)))?
            } else {
                false
            };
            if !started {
                runc.start(&r.id)
                    .await
                    .map_err(|e| err(Category::Unknown, e.to_string()))?;
            }
            self.with_container(&r.id, |c| {
                if c.init.status == Status::Created {
                    c.init.status = Status::Running;
                }
                Ok(())
            })?;
            self.publisher.publish(
                "/tasks/start",
                &ev::TaskStart {
                    container_id: r.id.clone(),
                    pid,
                },
            );
            return Ok(api::StartResponse { pid });
        }
        let (spec, paths) = self.with_container(&r.id, |c| {
            let p = c.process_mut(&r.exec_id)?;
            match p.spec.take() {
                Some(spec) => Ok((spec, p.stdio.clone())),
                None => Err(err(
                    Category::FailedPrecondition,
                    format!("exec {:?} was started already", r.exec_id),
                )),
            }
        })?;
        let process_json = bundle.join(format!("{}.process.json", r.exec_id));
        std::fs::write(&process_json, &spec).map_err(|e| {
            err(
                Category::Internal,
                format!("{}: {e}", process_json.display()),
            )
        })?;
        let pid_file = bundle.join(format!("{}.pid", r.exec_id));
        let launched = self
            .start_process(&r.id, &r.exec_id, &paths, |console, stdio| {
                let runc = runc.clone();
                let (id, process_json, pid_file) =
                    (r.id.clone(), process_json.clone(), pid_file.clone());
                async move {
                    runc.exec(&id, &process_json, &pid_file, console.as_deref(), stdio)
                        .await
                }
            })
            .await;
        stdio::remove_quietly(&process_json);
        launched?;
        let pid = read_pid(&pid_file)?;
        stdio::remove_quietly(&pid_file);
        let early_exit = self.set_pid(&r.id, &r.exec_id, pid);
        self.publisher.publish(
            "/tasks/exec-started",
            &ev::TaskExecStarted {
                container_id: r.id.clone(),
                exec_id: r.exec_id.clone(),
                pid,
            },
        );
        if let Some(exit) = early_exit {
            self.publish_exit(exit);
        }
        Ok(api::StartResponse { pid })
    }

    async fn do_delete(&self, r: api::DeleteRequest) -> Reply<api::DeleteResponse> {
        if !r.exec_id.is_empty() {
            return self.with_container(&r.id, |c| {
                let p = c.process(&r.exec_id)?;
                if p.status == Status::Running {
                    return Err(err(
                        Category::FailedPrecondition,
                        format!("exec {:?} is running; kill it first", r.exec_id),
                    ));
                }
                let exit = p.exited();
                let pid = p.pid;
                c.execs.remove(&r.exec_id);
                Ok(api::DeleteResponse {
                    pid,
                    exit_status: exit.map_or(0, |e| e.status),
                    exited_at: exit.and_then(|e| ts(e.at)),
                })
            });
        }
        let (runc, bundle, status, pid, mounted, direct) = self.with_container(&r.id, |c| {
            Ok((
                c.runc.clone(),
                c.bundle.clone(),
                c.init.status,
                c.init.pid,
                c.rootfs_mounted,
                c.direct,
            ))
        })?;
        if matches!(status, Status::Running | Status::Paused) {
            return Err(err(
                Category::FailedPrecondition,
                format!("task {:?} is running; kill it before deleting", r.id),
            ));
        }
        let deleted = if direct && status == Status::Stopped {
            match super::direct::delete(&runc.root, &r.id).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(id = %r.id, error = %e, "deleting without runc; asking runc");
                    false
                }
            }
        } else {
            false
        };
        if !deleted && let Err(e) = runc.delete(&r.id, status == Status::Created).await {
            // Gone already is fine: delete must be idempotent for cleanup.
            tracing::warn!(id = %r.id, error = %e, "runc delete");
        }
        if mounted {
            // The filesystem's sync on release is not waited for here (see
            // `unmount`): nothing is mounted on the bundle when this answers.
            if let Err(e) = super::unmount::unmount_all(&bundle.join("rootfs"), &self.releases) {
                return Err(err(
                    Category::Internal,
                    format!("unmounting the rootfs: {e}"),
                ));
            }
        }
        let exit = {
            let mut st = self.state();
            let exit = st.container.as_ref().and_then(|c| c.init.exited());
            st.container = None;
            exit
        };
        let exit = exit.unwrap_or(ExitInfo {
            status: 0,
            at: SystemTime::now(),
        });
        // After the exit, which may still wait for its turn (the lock is fair).
        let _order = self.event_order.lock().await;
        self.publisher.publish(
            "/tasks/delete",
            &ev::TaskDelete {
                container_id: r.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: ts(exit.at),
                // containerd's runc shim leaves the process id empty here.
                id: String::new(),
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: ts(exit.at),
        })
    }

    async fn do_kill(&self, r: api::KillRequest) -> Reply<()> {
        let (runc, _) = self.runc(&r.id)?;
        if r.exec_id.is_empty() {
            let (stopped, pid) = self.with_container(&r.id, |c| {
                Ok((c.init.status == Status::Stopped, c.init.pid))
            })?;
            if pid == 0 {
                // Still being created: there is nothing to signal, and an OK
                // here would promise an exit that never comes.
                return Err(err(
                    Category::FailedPrecondition,
                    format!("container {:?} is still being created", r.id),
                ));
            }
            if stopped && !r.all {
                return Err(not_found(&format!(
                    "process of {:?} (already finished)",
                    r.id
                )));
            }
            return runc
                .kill(&r.id, r.signal, r.all)
                .await
                .map_err(|e| err(Category::Unknown, e.to_string()));
        }
        let pid = self.with_container(&r.id, |c| {
            let p = c.process(&r.exec_id)?;
            match p.status {
                Status::Stopped => Err(not_found(&format!(
                    "exec {:?} (already finished)",
                    r.exec_id
                ))),
                Status::Created => Err(err(
                    Category::FailedPrecondition,
                    format!("exec {:?} is not started", r.exec_id),
                )),
                _ => Ok(p.pid),
            }
        })?;
        let signal = nix::sys::signal::Signal::try_from(i32::try_from(r.signal).unwrap_or(-1))
            .map_err(|_| {
                err(
                    Category::InvalidArgument,
                    format!("signal {}: not a signal", r.signal),
                )
            })?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            signal,
        )
        .map_err(|e| err(Category::Unknown, format!("kill {pid}: {e}")))
    }

    fn do_state(&self, r: &api::StateRequest) -> Reply<api::StateResponse> {
        self.with_container(&r.id, |c| {
            let p = c.process(&r.exec_id)?;
            let exit = p.exited();
            Ok(api::StateResponse {
                id: if r.exec_id.is_empty() {
                    c.id.clone()
                } else {
                    r.exec_id.clone()
                },
                bundle: c.bundle.display().to_string(),
                pid: p.pid,
                status: p.status as i32,
                stdin: p.stdio.stdin.clone(),
                stdout: p.stdio.stdout.clone(),
                stderr: p.stdio.stderr.clone(),
                terminal: p.stdio.terminal,
                exit_status: exit.map_or(0, |e| e.status),
                exited_at: exit.and_then(|e| ts(e.at)),
                exec_id: r.exec_id.clone(),
            })
        })
    }

    async fn do_wait(&self, r: api::WaitRequest) -> Reply<api::WaitResponse> {
        let mut rx = self.with_container(&r.id, |c| Ok(c.process(&r.exec_id)?.exit.subscribe()))?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| not_found(&format!("process {:?} (deleted while waiting)", r.exec_id)))?
            .unwrap_or(ExitInfo {
                status: 0,
                at: SystemTime::now(),
            });
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: ts(exit.at),
        })
    }
}

/// Whether the bundle's spec gives the container a PID namespace of its
/// own (a `pid` namespace without a path). Unreadable specs count as
/// shared, so their processes get killed (containerd does the same).
fn has_private_pid_namespace(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|ns| ns["type"] == "pid" && ns["path"].as_str().is_none_or(str::is_empty))
}

fn read_pid(path: &Path) -> Reply<u32> {
    std::fs::read_to_string(path)
        .map_err(|e| {
            err(
                Category::Internal,
                format!("reading runc's pid file {}: {e}", path.display()),
            )
        })?
        .trim()
        .parse()
        .map_err(|e| {
            err(
                Category::Internal,
                format!("runc's pid file {}: {e}", path.display()),
            )
        })
}

#[async_trait::async_trait]
impl api::Task for Service {
    async fn state(&self, _: &TtrpcContext, r: api::StateRequest) -> Reply<api::StateResponse> {
        self.do_state(&r)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        r: api::CreateTaskRequest,
    ) -> Reply<api::CreateTaskResponse> {
        self.do_create(r).await
    }

    async fn start(&self, _: &TtrpcContext, r: api::StartRequest) -> Reply<api::StartResponse> {
        self.do_start(r).await
    }

    async fn delete(&self, _: &TtrpcContext, r: api::DeleteRequest) -> Reply<api::DeleteResponse> {
        self.do_delete(r).await
    }

    async fn pids(&self, _: &TtrpcContext, r: api::PidsRequest) -> Reply<api::PidsResponse> {
        let (runc, _) = self.runc(&r.id)?;
        let pids = runc
            .ps(&r.id)
            .await
            .map_err(|e| err(Category::Unknown, e.to_string()))?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo { pid, info: None })
                .collect(),
        })
    }

    async fn pause(&self, _: &TtrpcContext, r: api::PauseRequest) -> Reply<()> {
        let (runc, _) = self.runc(&r.id)?;
        runc.pause(&r.id)
            .await
            .map_err(|e| err(Category::Unknown, e.to_string()))?;
        self.with_container(&r.id, |c| {
            c.init.status = Status::Paused;
            Ok(())
        })?;
        self.publisher
            .publish("/tasks/paused", &ev::TaskPaused { container_id: r.id });
        Ok(())
    }

    async fn resume(&self, _: &TtrpcContext, r: api::ResumeRequest) -> Reply<()> {
        let (runc, _) = self.runc(&r.id)?;
        runc.resume(&r.id)
            .await
            .map_err(|e| err(Category::Unknown, e.to_string()))?;
        self.with_container(&r.id, |c| {
            if c.init.status == Status::Paused {
                c.init.status = Status::Running;
            }
            Ok(())
        })?;
        self.publisher
            .publish("/tasks/resumed", &ev::TaskResumed { container_id: r.id });
        Ok(())
    }

    async fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> Reply<()> {
        Err(err(
            Category::NotImplemented,
            "checkpoint needs CRIU, which berth's shim does not drive; use containerd-shim-runc-v2 for checkpoints",
        ))
    }

    async fn kill(&self, _: &TtrpcContext, r: api::KillRequest) -> Reply<()> {
        self.do_kill(r).await
    }

    async fn exec(&self, _: &TtrpcContext, r: api::ExecProcessRequest) -> Reply<()> {
        let spec = r
            .spec
            .ok_or_else(|| err(Category::InvalidArgument, "exec without a process spec"))?;
        self.with_container(&r.id, |c| {
            if c.init.status == Status::Stopped {
                return Err(err(
                    Category::FailedPrecondition,
                    format!("container {:?} has stopped", r.id),
                ));
            }
            if c.execs.contains_key(&r.exec_id) {
                return Err(err(
                    Category::AlreadyExists,
                    format!("exec {:?}: already exists", r.exec_id),
                ));
            }
            let mut p = Process::new(StdioPaths {
                stdin: r.stdin.clone(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                terminal: r.terminal,
            });
            p.spec = Some(spec.value);
            c.execs.insert(r.exec_id.clone(), p);
            Ok(())
        })?;
        self.publisher.publish(
            "/tasks/exec-added",
            &ev::TaskExecAdded {
                container_id: r.id,
                exec_id: r.exec_id,
            },
        );
        Ok(())
    }

    async fn resize_pty(&self, _: &TtrpcContext, r: api::ResizePtyRequest) -> Reply<()> {
        self.with_container(&r.id, |c| {
            let p = c.process(&r.exec_id)?;
            // containerd's shim accepts a resize of a process without a
            // terminal and does nothing (Docker resizes every exec it attaches).
            let Some(console) = &p.console else {
                return Ok(());
            };
            stdio::resize(console, r.width, r.height)
                .map_err(|e| err(Category::Unknown, format!("resize: {e}")))
        })
    }

    async fn close_io(&self, _: &TtrpcContext, r: api::CloseIoRequest) -> Reply<()> {
        self.with_container(&r.id, |c| {
            let p = c.process_mut(&r.exec_id)?;
            if r.stdin
                && let Some(close) = p.stdin_close.take()
            {
                let _ = close.send(());
            }
            Ok(())
        })
    }

    async fn update(&self, _: &TtrpcContext, r: api::UpdateTaskRequest) -> Reply<()> {
        let (runc, bundle) = self.runc(&r.id)?;
        let resources = r
            .resources
            .ok_or_else(|| err(Category::InvalidArgument, "update without resources"))?;
        let path = bundle.join("update-resources.json");
        std::fs::write(&path, &resources.value)
            .map_err(|e| err(Category::Internal, format!("{}: {e}", path.display())))?;
        let done = runc.update(&r.id, &path).await;
        stdio::remove_quietly(&path);
        done.map_err(|e| err(Category::Unknown, e.to_string()))
    }

    async fn wait(&self, _: &TtrpcContext, r: api::WaitRequest) -> Reply<api::WaitResponse> {
        self.do_wait(r).await
    }

    async fn stats(&self, _: &TtrpcContext, r: api::StatsRequest) -> Reply<api::StatsResponse> {
        let pid = self.with_container(&r.id, |c| Ok(c.init.pid))?;
        super::stats(pid).map(|stats| api::StatsResponse { stats: Some(stats) })
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        r: api::ConnectRequest,
    ) -> Reply<api::ConnectResponse> {
        let task_pid = {
            let st = self.state();
            st.container
                .as_ref()
                .filter(|c| c.id == r.id)
                .map_or(0, |c| c.init.pid)
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, r: api::ShutdownRequest) -> Reply<()> {
        if !r.now && self.state().container.is_some() {
            // A container still lives here: containerd's shims ignore this too.
            return Ok(());
        }
        // The events queued so far (`/tasks/exit`, `/tasks/delete`) reach
        // the daemon, and the connection they went over is closed, before
        // this answers: the daemon need not wait for the process to exit
        // to know it holds nothing of this task any more.
        self.publisher.close(SHUTDOWN_FLUSH).await;
        self.shutdown.notify_one();
        Ok(())
    }
}
