//! The restart monitor: containerd's `io.containerd.internal.v1.restart`
//! plugin. Every `interval` (config `interval = "10s"`, the default) it
//! looks at the containers labelled `containerd.io/restart.status` in every
//! namespace and brings each task to that status:
//!
//! - `running`: a task that is missing or not running (and not paused) is
//!   killed and deleted if present, then created and started again, its
//!   output going to `containerd.io/restart.loguri` (or the older
//!   `.logpath`, as a `file://` URI), nowhere if neither is set. The
//!   policy label `containerd.io/restart.policy` (`always`, the default;
//!   `no`; `on-failure[:max]` by `containerd.io/restart.count`;
//!   `unless-stopped` unless `containerd.io/restart.explicitly-stopped`)
//!   decides whether it restarts; each restart counts in
//!   `containerd.io/restart.count`.
//! - `stopped`: a live task is killed (its whole process tree), waited for
//!   and deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::services::tasks::v1 as pb;
use berth_api::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_api::containerd::v1::types::Status as TaskStatus;
use berth_metadata::Db;
use berth_metadata::containers::ContainerRecord;
use tonic::Request;

use crate::services::tasks::TasksService;
use crate::snapshotters::Snapshotters;

/// The status a container's task should have.
pub(crate) const STATUS_LABEL: &str = "containerd.io/restart.status";
/// Where a restarted task's output goes (a log URI).
pub(crate) const LOG_URI_LABEL: &str = "containerd.io/restart.loguri";
/// Where a restarted task's output goes (a file path; containerd 1.x).
pub(crate) const LOG_PATH_LABEL: &str = "containerd.io/restart.logpath";
/// When to restart: `always`, `no`, `on-failure[:max]`, `unless-stopped`.
pub(crate) const POLICY_LABEL: &str = "containerd.io/restart.policy";
/// How many times the monitor restarted the task.
pub(crate) const COUNT_LABEL: &str = "containerd.io/restart.count";
/// Set by clients when the user stopped the task (for `unless-stopped`).
pub(crate) const EXPLICITLY_STOPPED_LABEL: &str = "containerd.io/restart.explicitly-stopped";
/// containerd's default reconcile interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What the monitor drives.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    db: Db,
    tasks: TasksService,
    snapshotters: Arc<Snapshotters>,
}

/// The task's status and exit code, if it has a task.
#[derive(Debug, Clone, Copy)]
struct Observed {
    status: TaskStatus,
    exit_status: u32,
}

fn request<T>(ns: &str, body: T) -> Request<T> {
    let mut r = Request::new(body);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert(berth_api::NAMESPACE_HEADER, v);
    }
    r
}

/// containerd's status words (`running`, `stopped`, ...).
fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Created => "created",
        TaskStatus::Running => "running",
        TaskStatus::Stopped => "stopped",
        TaskStatus::Paused => "paused",
        TaskStatus::Pausing => "pausing",
        TaskStatus::Unknown => "unknown",
    }
}

/// containerd's restart policy decision for a task not in its desired
/// `running` status.
pub(crate) fn policy_allows(labels: &BTreeMap<String, String>, exit_status: u32) -> bool {
    let policy = labels.get(POLICY_LABEL).map_or("", String::as_str);
    let (name, max) = match policy.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (policy, None),
    };
    match (name, max) {
        ("" | "always", None) => true,
        ("unless-stopped", None) => !labels
            .get(EXPLICITLY_STOPPED_LABEL)
            .is_some_and(|v| parse_bool(v)),
        ("on-failure", max) => {
            let max: u64 = match max.map(str::parse).transpose() {
                Ok(m) => m.unwrap_or(0),
                Err(_) => {
                    tracing::error!(policy, "invalid max retry count");
                    return false;
                }
            };
            let count = match labels.get(COUNT_LABEL).filter(|c| !c.is_empty()) {
                None => 0,
                Some(c) => match c.parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => return false,
                },
            };
            exit_status != 0 && (max == 0 || count < max)
        }
        ("no", None) => false,
        _ => {
            tracing::error!(policy, "restart policy not supported");
            false
        }
    }
}

/// A Go duration (`10s`, `500ms`, `1m30s`, `1.5h`); `None` if malformed.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl Monitor {
    /// A monitor over the containers in `db`, driving tasks through `tasks`.
    pub(crate) fn new(db: Db, tasks: TasksService, snapshotters: Arc<Snapshotters>) -> Monitor {
        Monitor {
            db,
            tasks,
            snapshotters,
        }
    }

    /// Reconciles now, then every `interval`, forever.
    pub(crate) async fn run(self, interval: Duration) {
        let interval = if interval.is_zero() {
            DEFAULT_INTERVAL
        } else {
            interval
        };
        loop {
            self.reconcile().await;
            tokio::time::sleep(interval).await;
        }
    }

    /// One pass over every namespace.
    pub(crate) async fn reconcile(&self) {
        let db = self.db.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for ns in db.namespaces().list()? {
                for c in db.containers().list(&ns)? {
                    if c.labels.contains_key(STATUS_LABEL) {
                        out.push((ns.clone(), c));
                    }
                }
            }
            Ok::<_, berth_metadata::Error>(out)
        })
        .await;
        let containers = match listed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "restart monitor: listing containers");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "restart monitor: listing task failed");
                return;
            }
        };
        let changes = containers
            .into_iter()
            .map(|(ns, c)| {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.reconcile_one(&ns, c).await {
                        tracing::error!(namespace = %ns, error = %e, "restart monitor: apply change");
                    }
                })
            })
            .collect::<Vec<_>>();
        for c in changes {
            let _ = c.await;
        }
    }

    async fn observe(&self, ns: &str, id: &str) -> Option<Observed> {
        let req = pb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let p = self
            .tasks
            .get(request(ns, req))
            .await
            .ok()?
            .into_inner()
            .process?;
        Some(Observed {
            status: TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown),
            exit_status: p.exit_status,
        })
    }

    async fn reconcile_one(&self, ns: &str, c: ContainerRecord) -> Result<(), String> {
        let desired = c.labels.get(STATUS_LABEL).cloned().unwrap_or_default();
        let observed = self.observe(ns, &c.id).await;
        if observed.is_some_and(|o| status_word(o.status) == desired) {
            return Ok(());
        }
        match desired.as_str() {
            "running" => {
                if observed
                    .is_some_and(|o| matches!(o.status, TaskStatus::Paused | TaskStatus::Pausing))
                {
                    return Ok(());
                }
                if !policy_allows(&c.labels, observed.map_or(0, |o| o.exit_status)) {
                    return Ok(());
                }
                tracing::info!(namespace = ns, id = %c.id, "restart monitor: starting task");
                self.start(ns, c).await
            }
            "stopped" if observed.is_some() => {
                tracing::info!(namespace = ns, id = %c.id, "restart monitor: stopping task");
                self.kill(ns, &c.id).await
            }
            _ => Ok(()),
        }
    }

    /// Kills the task's processes, waits for it and deletes it.
    async fn kill(&self, ns: &str, id: &str) -> Result<(), String> {
        let delete = || async {
            self.tasks
                .delete(request(
                    ns,
                    pb::DeleteTaskRequest {
                        container_id: id.to_string(),
                    },
                ))
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        };
        let kill = pb::KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        };
        if let Err(e) = self.tasks.kill(request(ns, kill)).await {
            // Already exited: only the delete is left.
            return delete()
                .await
                .map_err(|d| format!("kill: {}; delete: {d}", e.message()));
        }
        let wait = pb::WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let _ = self.tasks.wait(request(ns, wait)).await;
        delete().await
    }

    /// containerd's start change: count the restart, clear the old task,
    /// create and start a new one with the log URI as its output.
    async fn start(&self, ns: &str, mut c: ContainerRecord) -> Result<(), String> {
        let count: u64 = c
            .labels
            .get(COUNT_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        c.labels
            .insert(COUNT_LABEL.to_string(), (count + 1).to_string());
        let (db, ns2, record) = (self.db.clone(), ns.to_string(), c.clone());
        tokio::task::spawn_blocking(move || {
            db.containers()
                .update(&ns2, record, &[format!("labels.{COUNT_LABEL}")])
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("counting the restart: {e}"))?;
        if self.observe(ns, &c.id).await.is_some() {
            // As containerd: a failure here shows again at the create.
            let _ = self.kill(ns, &c.id).await;
        }
        let log = match (c.labels.get(LOG_URI_LABEL), c.labels.get(LOG_PATH_LABEL)) {
            (Some(uri), _) if !uri.is_empty() => uri.clone(),
            (_, Some(path)) if !path.is_empty() => format!("file://{path}"),
            _ => String::new(),
        };
        let terminal = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
            .and_then(|s| s["process"]["terminal"].as_bool())
            .unwrap_or(false);
        let rootfs = if c.snapshot_key.is_empty() {
            Vec::new()
        } else {
            self.snapshotters
                .mounts(ns, &c.snapshotter, &c.snapshot_key)
                .await
                .map_err(|e| format!("rootfs mounts: {e}"))?
                .iter()
                .map(berth_snapshots::proxy::mount_to_proto)
                .collect()
        };
        let create = pb::CreateTaskRequest {
            container_id: c.id.clone(),
            rootfs,
            stdin: String::new(),
            stdout: log.clone(),
            stderr: if terminal { String::new() } else { log },
            terminal,
            ..Default::default()
        };
        self.tasks
            .create(request(ns, create))
            .await
            .map_err(|e| format!("create: {}", e.message()))?;
        let start = pb::StartRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        };
        self.tasks
            .start(request(ns, start))
            .await
            .map_err(|e| format!("start: {}", e.message()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1x"), None);
    }

    #[test]
    fn policies_decide_as_containerds() {
        assert!(policy_allows(&labels(&[]), 0));
        assert!(policy_allows(&labels(&[(POLICY_LABEL, "always")]), 0));
        assert!(!policy_allows(&labels(&[(POLICY_LABEL, "no")]), 1));
        assert!(!policy_allows(&labels(&[(POLICY_LABEL, "on-failure")]), 0));
        assert!(policy_allows(&labels(&[(POLICY_LABEL, "on-failure")]), 1));
        assert!(!policy_allows(
            &labels(&[(POLICY_LABEL, "on-failure:2"), (COUNT_LABEL, "2")]),
            1
        ));
        assert!(policy_allows(
            &labels(&[(POLICY_LABEL, "on-failure:2"), (COUNT_LABEL, "1")]),
            1
        ));
        assert!(policy_allows(
            &labels(&[(POLICY_LABEL, "unless-stopped")]),
            0
        ));
        assert!(!policy_allows(
            &labels(&[
                (POLICY_LABEL, "unless-stopped"),
                (EXPLICITLY_STOPPED_LABEL, "true")
            ]),
            0
        ));
        assert!(!policy_allows(&labels(&[(POLICY_LABEL, "sometimes")]), 1));
    }
}
