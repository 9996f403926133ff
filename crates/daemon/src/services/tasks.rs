//! The Tasks gRPC service: containerd's `tasks.v1.Tasks`, driving one shim
//! per task through the shim manager.
//!
//! Task events (`/tasks/create`, `/tasks/exit`, ...) come from the shims
//! themselves, forwarded over ttrpc; this service only adds what the daemon
//! knows about (a shim that died).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::services::tasks::v1 as pb;
use berth_api::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_api::containerd::types::Metric;
use berth_metadata::Db;
use berth_runtime::manager::{Shim, ShimManager};
use berth_runtime::task::{CALL_TIMEOUT, NewTask, Stdio};
use tonic::{Request, Response, Status};

use super::{namespace_of, with_db};
use crate::wire::manager_status;

/// Shim State calls in flight at once for one Tasks.List.
const LIST_STATE_CALLS: usize = 64;

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

/// Timeout of the calls a scrape or a debug dump makes to each shim
/// (containerd gives shim stats two seconds too).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The statistics of `s`'s task as its shim reports them (the shim v2
/// `Stats` call; an `Any` of `io.containerd.cgroups.v1.Metrics` or `.v2`).
pub(crate) async fn shim_stats(
    s: &Shim,
    timeout: Duration,
) -> Result<Option<prost_types::Any>, Status> {
    s.stats(timeout).await.map_err(manager_status)
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
    let state = match s.state_within("", PROBE_TIMEOUT).await {
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

impl TasksService {
    async fn shim(&self, ns: &str, id: &str) -> Result<Arc<Shim>, Status> {
        self.shims.get(ns, id).await.map_err(manager_status)
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
        let options = super::legacy_options::task_options(r.options, runtime_options)
            .map_err(|e| Status::invalid_argument(format!("runtime options: {e}")))?;
        let task = NewTask {
            runtime: &container.runtime.name,
            runtime_path: &r.runtime_path,
            spec: &spec,
            runc_root: Some(&self.runc_root),
        };
        let stdio = Stdio {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        let (_, pid) = self
            .shims
            .create_task(&ns, &id, task, r.rootfs, stdio, options)
            .await
            .map_err(manager_status)?;
        tracing::Span::current().record("pid", pid);
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: id,
            pid,
        }))
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
        let pid = s.start(&r.exec_id).await.map_err(manager_status)?;
        tracing::Span::current().record("pid", pid);
        tracing::debug!("task started");
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        let deleted = s.delete("").await.map_err(manager_status)?;
        self.shims.remove(&ns, &id).await;
        Ok(Response::new(pb::DeleteResponse {
            id,
            pid: deleted.pid,
            exit_status: deleted.exit.code,
            exited_at: deleted.exit.at,
        }))
    }

    async fn delete_process(
        &self,
        r: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let deleted = s.delete(&r.exec_id).await.map_err(manager_status)?;
        Ok(Response::new(pb::DeleteResponse {
            id: r.exec_id,
            pid: deleted.pid,
            exit_status: deleted.exit.code,
            exited_at: deleted.exit.at,
        }))
    }

    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        let process = s.state(&r.exec_id).await.map_err(manager_status)?;
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
                match s.state("").await {
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
        s.kill(&r.exec_id, r.signal, r.all)
            .await
            .map_err(manager_status)?;
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
        let stdio = Stdio {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        s.exec(&r.exec_id, stdio, r.spec)
            .await
            .map_err(manager_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, r: Request<pb::ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        s.resize_pty(&r.exec_id, r.width, r.height)
            .await
            .map_err(manager_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, r: Request<pb::CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let s = self.shim(&ns, &r.container_id).await?;
        s.close_io(&r.exec_id, r.stdin)
            .await
            .map_err(manager_status)?;
        Ok(Response::new(()))
    }

    async fn pause(&self, r: Request<pb::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        s.pause().await.map_err(manager_status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, r: Request<pb::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        s.resume().await.map_err(manager_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        r: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let ns = namespace_of(&r)?;
        let id = r.into_inner().container_id;
        let s = self.shim(&ns, &id).await?;
        let processes = s.pids().await.map_err(manager_status)?;
        Ok(Response::new(pb::ListPidsResponse { processes }))
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
        s.update(r.resources, r.annotations)
            .await
            .map_err(manager_status)?;
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
        // No deadline: a wait lasts as long as the process.
        let exit = s.wait(&r.exec_id).await.map_err(manager_status)?;
        Ok(Response::new(pb::WaitResponse {
            exit_status: exit.code,
            exited_at: exit.at,
        }))
    }
}
