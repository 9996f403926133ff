//! The Tasks gRPC service: containerd's `tasks.v1.Tasks`, driving one shim
//! per task through the shim manager.
//!
//! Task events (`/tasks/create`, `/tasks/exit`, ...) come from the shims
//! themselves, forwarded over ttrpc; this service only adds what the daemon
//! knows about (a shim that died).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::runc::v1::Options as RuncOptions;
use berth_api::containerd::services::tasks::v1 as pb;
use berth_api::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_api::containerd::task::v2 as shim;
use berth_api::containerd::types::Metric;
use berth_api::containerd::v1::types::Process;
use berth_metadata::Db;
use berth_runtime::manager::{Shim, ShimManager, context_for};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{namespace_of, with_db};
use crate::wire::{manager_status, shim_status};

/// Shim State calls in flight at once for one Tasks.List.
const LIST_STATE_CALLS: usize = 64;

/// Timeout of ordinary shim calls (not Wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Type URL of runc's shim options.
const RUNC_OPTIONS_URL: &str = "containerd.runc.v1.Options";

/// Serves the tasks API.
#[derive(Debug, Clone)]
pub(crate) struct TasksService {
    db: Db,
    shims: Arc<ShimManager>,
    runc_root: PathBuf,
}

impl TasksService {
    /// A service over `db` (containers) and `shims`; runc keeps its state
    /// under `runc_root` unless a client says otherwise.
    pub(crate) fn new(db: Db, shims: Arc<ShimManager>, runc_root: PathBuf) -> TasksService {
        TasksService {
            db,
            shims,
            runc_root,
        }
    }
}

fn ctx(ns: &str) -> ttrpc::context::Context {
    context_for(ns, Some(CALL_TIMEOUT))
}

/// Gives runc a root under berth's state unless the options name one, so
/// berth never sees another daemon's containers.
fn with_runc_root(
    options: Option<prost_types::Any>,
    root: &std::path::Path,
) -> Option<prost_types::Any> {
    let mut opts = match &options {
        None => RuncOptions::default(),
        Some(a) if a.type_url.ends_with(RUNC_OPTIONS_URL) => {
            match RuncOptions::decode(a.value.as_slice()) {
                Ok(o) => o,
                Err(_) => return options,
            }
        }
        Some(_) => return options,
    };
    if opts.root.is_empty() {
        opts.root = root.display().to_string();
    }
    Some(prost_types::Any {
        type_url: options
            .map(|a| a.type_url)
            .unwrap_or_else(|| RUNC_OPTIONS_URL.to_string()),
        value: opts.encode_to_vec(),
    })
}

/// Timeout of the calls a scrape or a debug dump makes to each shim
/// (containerd gives shim stats two seconds too).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The statistics of `s`'s task as its shim reports them (the shim v2
/// `Stats` call; an `Any` of `io.containerd.cgroups.v1.Metrics` or `.v2`).
pub(crate) async fn shim_stats(
    s: &Shim,
    timeout: Duration,
) -> Result<Option<prost_types::Any>, Status> {
    let req = shim::StatsRequest { id: s.id.clone() };
    let resp = s
        .client
        .stats(context_for(&s.namespace, Some(timeout)), &req)
        .await
        .map_err(shim_status)?;
    Ok(resp.stats)
}

/// What a scrape or a debug dump learns about one task from its shim.
#[derive(Debug, Clone)]
pub(crate) struct TaskProbe {
    /// The task's namespace.
    pub namespace: String,
    /// The task (container) id.
    pub id: String,
    /// The runtime it was created with, if known.
    pub runtime: Option<String>,
    /// Its init process id (0 if unknown).
    pub pid: u32,
    /// Its status as containerd names it (`RUNNING`, `STOPPED`, ...).
    pub status: String,
    /// Its statistics, when asked for and the task is running or paused.
    pub stats: Option<prost_types::Any>,
    /// Why the shim could not answer, if it could not.
    pub error: Option<String>,
}

/// Asks `s` for its task's state and, if `with_stats` and the task is live,
/// its statistics; every call is bounded by [`PROBE_TIMEOUT`].
#[tracing::instrument(level = "debug", skip_all, fields(namespace = %s.namespace, id = %s.id))]
pub(crate) async fn probe(s: &Shim, with_stats: bool) -> TaskProbe {
    use berth_api::containerd::v1::types::Status as TaskStatus;
    let mut p = TaskProbe {
        namespace: s.namespace.clone(),
        id: s.id.clone(),
        runtime: s.runtime.clone(),
        pid: 0,
        status: TaskStatus::Unknown.as_str_name().to_string(),
        stats: None,
        error: None,
    };
    let req = shim::StateRequest {
        id: s.id.clone(),
        exec_id: String::new(),
    };
    let state = match s
        .client
        .state(context_for(&s.namespace, Some(PROBE_TIMEOUT)), &req)
        .await
    {
        Ok(st) => st,
        Err(e) => {
            p.error = Some(format!("state: {e}"));
            return p;
        }
    };
    p.pid = state.pid;
    let status = TaskStatus::try_from(state.status).unwrap_or(TaskStatus::Unknown);
    p.status = status.as_str_name().to_string();
    if with_stats && matches!(status, TaskStatus::Running | TaskStatus::Paused) {
        match shim_stats(s, PROBE_TIMEOUT).await {
            Ok(stats) => p.stats = stats,
            Err(e) => p.error = Some(format!("stats: {}", e.message())),
        }
    }
    p
}

fn process_of(id: &str, s: shim::StateResponse) -> Process {
    Process {
        container_id: id.to_string(),
        id: if s.exec_id.is_empty() {
            s.id
        } else {
            s.exec_id
        },
        pid: s.pid,
        status: s.status,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

impl TasksService {
    async fn shim(&self, ns: &str, id: &str) -> Result<Arc<Shim>, Status> {
        self.shims.get(ns, id).await.map_err(manager_status)
    }

    async fn state(&self, s: &Shim, exec_id: &str) -> Result<Process, Status> {
        let req = shim::StateRequest {
            id: s.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let st = s
            .client
            .state(ctx(&s.namespace), &req)
            .await
            .map_err(shim_status)?;
        Ok(process_of(&s.id, st))
    }
}

/// Whether CRIU is installed and works on this kernel.
async fn criu_usable() -> Result<(), String> {
    match tokio::process::Command::new("criu")
        .arg("check")
        .output()
        .await
    {
        Err(e) => Err(format!("criu is not installed ({e})")),
        Ok(out) if !out.status.success() => Err(format!(
            "`criu check` failed on this kernel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    #[tracing::instrument(
        name = "tasks.create",
        skip_all,
        fields(namespace = tracing::field::Empty, id = %r.get_ref().container_id, pid = tracing::field::Empty)
    )]
    async fn create(
        &self,
        r: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let ns = namespace_of(&r)?;
        tracing::Span::current().record("namespace", ns.as_str());
        let r = r.into_inner();
        let id = r.container_id.clone();
        let (ns2, id2) = (ns.clone(), id.clone());
        let container = with_db(&self.db, move |db| db.containers().get(&ns2, &id2)).await?;
        let spec = container
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .ok_or_else(|| Status::failed_precondition(format!("container {id:?} has no spec")))?;
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring from a checkpoint is not supported",
            ));
        }
        let runtime_options = container.runtime.options.clone().map(|o| prost_types::Any {
            type_url: o.type_url,
            value: o.value,
        });
        let options = super::legacy_options::task_options(r.options.clone(), runtime_options)
            .map_err(|e| Status::invalid_argument(format!("runtime options: {e}")))?;
        let options = with_runc_root(options, &self.runc_root);
        let encoded = options.as_ref().map(Message::encode_to_vec);
        // Where Tasks.Create's time goes, in the debug log (docs/perf-cri.md).
        let t_shim = std::time::Instant::now();
        let s = self
            .shims
            .start(
                &ns,
                &id,
                &container.runtime.name,
                &r.runtime_path,
                &spec,
                encoded.as_deref().unwrap_or_default(),
            )
            .await
            .map_err(manager_status)?;
        let req = shim::CreateTaskRequest {
            id: id.clone(),
            bundle: s.bundle.display().to_string(),
            rootfs: r.rootfs,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options,
        };
        let shim_started = t_shim.elapsed();
        match s.client.create(ctx(&ns), &req).await {
            Ok(resp) => {
                tracing::Span::current().record("pid", resp.pid);
                tracing::debug!(
                    shim = %s.address,
                    shim_start = ?shim_started,
                    shim_create = ?(t_shim.elapsed() - shim_started),
                    "task created"
                );
                Ok(Response::new(pb::CreateTaskResponse {
                    container_id: id,
                    pid: resp.pid,
                }))
            }
            Err(e) => {
                tracing::debug!(error = %e, "task creation failed; aborting its shim");
                self.shims.abort(&ns, &id).await;
                Err(shim_status(e))
            }
        }
    }

    #[tracing::instrument(
        name = "tasks.start",
        skip_all,
        fields(
            namespace = tracing::field::Empty,
            id = %r.get_ref().container_id,
            exec_id = %r.get_ref().exec_id,
            pid = tracing::field::Empty
        )
    )]
    async fn start(
        &self,
        r: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let ns = namespace_of(&r)?;
        tracing::Span::current().record("namespace", ns.as_str());
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::StartRequest {
            id: r.container_id,
            exec_id: r.exec_id,
        };
        let resp = s.client.start(ctx(&ns), &req).await.map_err(shim_status)?;
        tracing::Span::current().record("pid", resp.pid);
        tracing::debug!("task started");
        Ok(Response::new(pb::StartResponse { pid: resp.pid }))
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        let req = shim::DeleteRequest {
            id: id.clone(),
            exec_id: String::new(),
        };
        let resp = s.client.delete(ctx(&ns), &req).await.map_err(shim_status)?;
        self.shims.remove(&ns, &id).await;
        Ok(Response::new(pb::DeleteResponse {
            id,
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
        }))
    }

    async fn delete_process(
        &self,
        r: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::DeleteRequest {
            id: r.container_id,
            exec_id: r.exec_id.clone(),
        };
        let resp = s.client.delete(ctx(&ns), &req).await.map_err(shim_status)?;
        Ok(Response::new(pb::DeleteResponse {
            id: r.exec_id,
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
        }))
    }

    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let process = self.state(&s, &r.exec_id).await?;
        Ok(Response::new(pb::GetResponse {
            process: Some(process),
        }))
    }

    async fn list(
        &self,
        r: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        use futures::StreamExt as _;
        let ns = namespace_of(&r)?;
        // Every shim is asked at once (up to LIST_STATE_CALLS in flight, in
        // id order): the list costs about one round trip plus the
        // daemon's own work per task, not a round trip per task.
        let tasks = futures::stream::iter(self.shims.list(&ns).await)
            .map(|s| async move {
                match self.state(&s, "").await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(id = %s.id, error = %e, "cannot get task state");
                        None
                    }
                }
            })
            .buffered(LIST_STATE_CALLS)
            .filter_map(std::future::ready)
            .collect()
            .await;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn kill(&self, r: Request<pb::KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::KillRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            signal: r.signal,
            all: r.all,
        };
        s.client.kill(ctx(&ns), &req).await.map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, r: Request<pb::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec needs an exec id (--exec-id)",
            ));
        }
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::ExecProcessRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            spec: r.spec,
        };
        s.client.exec(ctx(&ns), &req).await.map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, r: Request<pb::ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::ResizePtyRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            width: r.width,
            height: r.height,
        };
        s.client
            .resize_pty(ctx(&ns), &req)
            .await
            .map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, r: Request<pb::CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::CloseIoRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            stdin: r.stdin,
        };
        s.client
            .close_io(ctx(&ns), &req)
            .await
            .map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn pause(&self, r: Request<pb::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        s.client
            .pause(ctx(&ns), &shim::PauseRequest { id })
            .await
            .map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, r: Request<pb::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        s.client
            .resume(ctx(&ns), &shim::ResumeRequest { id })
            .await
            .map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        r: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        let resp = s
            .client
            .pids(ctx(&ns), &shim::PidsRequest { id })
            .await
            .map_err(shim_status)?;
        Ok(Response::new(pb::ListPidsResponse {
            processes: resp.processes,
        }))
    }

    async fn checkpoint(
        &self,
        r: Request<pb::CheckpointTaskRequest>,
    ) -> Result<Response<pb::CheckpointTaskResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        self.shim(&ns, &id).await?;
        if let Err(why) = criu_usable().await {
            return Err(Status::failed_precondition(format!(
                "cannot checkpoint task {id:?}: checkpointing needs CRIU, and {why}"
            )));
        }
        Err(Status::unimplemented(
            "checkpoint images are not stored in content yet",
        ))
    }

    async fn update(&self, r: Request<pb::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::UpdateTaskRequest {
            id: r.container_id,
            resources: r.resources,
            annotations: r.annotations,
        };
        s.client.update(ctx(&ns), &req).await.map_err(shim_status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        r: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let ns = namespace_of(&r)?;
        let filter = berth_filters::parse_all(&r.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let mut metrics = Vec::new();
        for s in self.shims.list(&ns).await {
            if !filter.matches(&berth_filters::Fields::new().with("id", &s.id)) {
                continue;
            }
            match shim_stats(&s, CALL_TIMEOUT).await {
                Ok(stats) => metrics.push(Metric {
                    timestamp: Some(std::time::SystemTime::now().into()),
                    id: s.id.clone(),
                    data: stats,
                }),
                Err(e) => tracing::warn!(id = %s.id, error = %e, "cannot get task metrics"),
            }
        }
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        r: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let req = shim::WaitRequest {
            id: r.container_id,
            exec_id: r.exec_id,
        };
        // No deadline: a wait lasts as long as the process.
        let resp = s
            .client
            .wait(context_for(&ns, None), &req)
            .await
            .map_err(shim_status)?;
        Ok(Response::new(pb::WaitResponse {
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
        }))
    }
}
