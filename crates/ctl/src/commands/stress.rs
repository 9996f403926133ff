//! `berthctl stress`: containerd-stress's workload through the gRPC API.
//!
//! N workers loop for a fixed time. Each iteration of the default variant
//! is one whole container life: prepare a snapshot on the image's top chain
//! ID (as `berthctl run` does) → create the container → create the task →
//! start → wait → delete the task → delete the container → remove the
//! snapshot. The `--exec` variant gives each worker one long-running
//! container and loops exec `true` → start → wait → delete the process.
//!
//! Everything is made through the API, so the same binary measures berthd
//! and containerd alike. Whatever it created is removed at the end, also
//! after Ctrl-C (workers finish their current iteration first; a second
//! Ctrl-C stops them at once, and the sweep removes what they left).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::leases::v1 as lpb;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_spec::{self as spec, ImageProcess};

use crate::commands::run::{SPEC_TYPE_URL, image_parts, mounts_to_proto};
use crate::context::{Global, clients};

/// Longest one iteration may take before it counts as failed.
const ITERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long workers get to finish their iteration after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of workers running iterations in parallel.
    #[arg(short = 'c', long, default_value_t = 1)]
    concurrency: usize,
    /// How long to run (`10s`, `1m`).
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Exec variant: one long-running container per worker, loop exec `true`.
    #[arg(long)]
    exec: bool,
    /// Image to run (must be pulled and unpacked for the snapshotter).
    #[arg(long, default_value = "docker.io/library/busybox:latest")]
    image: String,
    /// Snapshotter for the root filesystems.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// Runtime name.
    #[arg(long, default_value = "io.containerd.runc.v2")]
    runtime: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What every worker shares.
#[derive(Debug)]
struct Shared {
    client: Client,
    ns: String,
    image: String,
    process: ImageProcess,
    chain: String,
    snapshotter: String,
    runtime: String,
    /// Prefix of every container id this run makes.
    prefix: String,
    /// Ids whose container or snapshot may exist right now.
    live: Mutex<HashSet<String>>,
    stop: AtomicBool,
    deadline: Instant,
}

/// One worker's results.
#[derive(Debug, Default)]
struct Outcome {
    latencies: Vec<Duration>,
    failures: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn fail(&mut self, e: &anyhow::Error) {
        self.failures += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted `v`, in milliseconds.
fn percentile_ms(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
}

impl Shared {
    fn track(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(id.to_string());
        }
    }

    fn untrack(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    /// The spec of container `id` running `args`.
    fn spec(&self, id: &str, args: &[&str]) -> anyhow::Result<prost_types::Any> {
        let spec = spec::generate(
            id,
            &self.ns,
            vec![
                spec::with_image_config(self.process.clone()),
                spec::with_process_args(args.iter().map(|a| (*a).to_string())),
            ],
        )?;
        Ok(prost_types::Any {
            type_url: SPEC_TYPE_URL.to_string(),
            value: serde_json::to_vec(&spec)?,
        })
    }

    /// Prepares the snapshot and creates container `id` running `args`;
    /// returns the task's root filesystem mounts.
    ///
    /// Both happen under a short-lived lease, as containerd's client does:
    /// until the container record refers to it, nothing else keeps the new
    /// snapshot from a garbage collection that another worker's deletion
    /// may trigger at any moment.
    async fn create_container(
        &self,
        id: &str,
        args: &[&str],
    ) -> anyhow::Result<Vec<berth_api::containerd::types::Mount>> {
        let lease_id = format!("{id}-lease");
        let mut leases =
            LeasesClient::with_interceptor(self.client.channel(), self.client.interceptor());
        let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
        leases
            .create(lpb::CreateRequest {
                id: lease_id.clone(),
                labels: [(
                    "containerd.io/gc.expire".to_string(),
                    humantime::format_rfc3339_seconds(expires).to_string(),
                )]
                .into(),
            })
            .await
            .with_context(|| format!("creating lease {lease_id}"))?;
        let leased = self.client.clone().with_lease(lease_id.clone());
        let created = async {
            let prepared =
                SnapshotsClient::with_interceptor(leased.channel(), leased.interceptor())
                    .prepare(spb::PrepareSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: id.to_string(),
                        parent: self.chain.clone(),
                        labels: Default::default(),
                    })
                    .await
                    .with_context(|| format!("preparing snapshot {id}"))?
                    .into_inner();
            clients::containers(&leased)
                .create(cpb::CreateContainerRequest {
                    container: Some(cpb::Container {
                        id: id.to_string(),
                        image: self.image.clone(),
                        runtime: Some(cpb::container::Runtime {
                            name: self.runtime.clone(),
                            options: None,
                        }),
                        spec: Some(self.spec(id, args)?),
                        snapshotter: self.snapshotter.clone(),
                        snapshot_key: id.to_string(),
                        ..Default::default()
                    }),
                })
                .await
                .with_context(|| format!("creating container {id}"))?;
            anyhow::Ok(mounts_to_proto(vec![prepared]))
        }
        .await;
        let released = leases
            .delete(lpb::DeleteRequest {
                id: lease_id.clone(),
                sync: false,
            })
            .await
            .with_context(|| format!("deleting lease {lease_id}"));
        let mounts = created?;
        released?;
        Ok(mounts)
    }

    /// Creates and starts the task of `id`; with `wait`, waits for its exit
    /// and returns the exit status.
    async fn run_task(
        &self,
        id: &str,
        rootfs: Vec<berth_api::containerd::types::Mount>,
        wait: bool,
    ) -> anyhow::Result<u32> {
        let mut tasks = clients::tasks(&self.client);
        tasks
            .create(tpb::CreateTaskRequest {
                container_id: id.to_string(),
                rootfs,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating task {id}"))?;
        // Waiting before the start, so a fast exit is not missed.
        let waiter = wait.then(|| {
            let mut t = tasks.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                t.wait(tpb::WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                })
                .await
            })
        });
        tasks
            .start(tpb::StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
            .with_context(|| format!("starting task {id}"))?;
        let Some(waiter) = waiter else {
            return Ok(0);
        };
        let status = waiter
            .await?
            .with_context(|| format!("waiting for task {id}"))?
            .into_inner()
            .exit_status;
        Ok(status)
    }

    /// Deletes container `id` and its snapshot (its task must be gone).
    async fn delete_container(&self, id: &str) -> anyhow::Result<()> {
        clients::containers(&self.client)
            .delete(cpb::DeleteContainerRequest { id: id.to_string() })
            .await
            .with_context(|| format!("deleting container {id}"))?;
        // A collection triggered by another deletion may have taken the
        // now unreferenced snapshot already (containerd's client ignores
        // that too).
        let removed =
            SnapshotsClient::with_interceptor(self.client.channel(), self.client.interceptor())
                .remove(spb::RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.to_string(),
                })
                .await;
        match removed {
            Ok(_) => Ok(()),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("removing snapshot {id}"))),
        }
    }

    /// One container life; the default variant's iteration.
    async fn container_iteration(&self, id: &str) -> anyhow::Result<()> {
        self.track(id);
        let rootfs = self.create_container(id, &["true"]).await?;
        let status = self.run_task(id, rootfs, true).await?;
        clients::tasks(&self.client)
            .delete(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            })
            .await
            .with_context(|| format!("deleting task {id}"))?;
        self.delete_container(id).await?;
        self.untrack(id);
        if status != 0 {
            bail!("task {id} exited with status {status}");
        }
        Ok(())
    }

    /// One exec of `true` in the running task `id`.
    async fn exec_iteration(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut tasks = clients::tasks(&self.client);
        tasks
            .exec(tpb::ExecProcessRequest {
                container_id: id.to_string(),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: serde_json::to_vec(process)?,
                }),
                exec_id: exec_id.to_string(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("exec {exec_id} in {id}"))?;
        let waiter = {
            let mut t = tasks.clone();
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                t.wait(tpb::WaitRequest {
                    container_id: id,
                    exec_id,
                })
                .await
            })
        };
        tasks
            .start(tpb::StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
            .await
            .with_context(|| format!("starting exec {exec_id}"))?;
        let status = waiter
            .await?
            .with_context(|| format!("waiting for exec {exec_id}"))?
            .into_inner()
            .exit_status;
        tasks
            .delete_process(tpb::DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
            .await
            .with_context(|| format!("deleting exec {exec_id}"))?;
        if status != 0 {
            bail!("exec {exec_id} exited with status {status}");
        }
        Ok(())
    }

    /// Best-effort removal of everything of `id`: task (killed), container, snapshot, lease.
    async fn teardown(&self, id: &str) {
        let mut tasks = clients::tasks(&self.client);
        let killed = tasks
            .kill(tpb::KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            })
            .await
            .is_ok();
        if killed {
            let wait = tasks.wait(tpb::WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            });
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
        let _ = tasks
            .delete(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            })
            .await;
        let _ = clients::containers(&self.client)
            .delete(cpb::DeleteContainerRequest { id: id.to_string() })
            .await;
        let _ = SnapshotsClient::with_interceptor(self.client.channel(), self.client.interceptor())
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_string(),
            })
            .await;
        let _ = LeasesClient::with_interceptor(self.client.channel(), self.client.interceptor())
            .delete(lpb::DeleteRequest {
                id: format!("{id}-lease"),
                sync: false,
            })
            .await;
        self.untrack(id);
    }

    /// The default variant's worker loop.
    async fn container_worker(self: Arc<Self>, worker: usize) -> Outcome {
        let mut out = Outcome::default();
        let mut i = 0_u64;
        while !self.stopping() {
            let id = format!("{}{worker}-{i}", self.prefix);
            i += 1;
            let started = Instant::now();
            match tokio::time::timeout(ITERATION_TIMEOUT, self.container_iteration(&id)).await {
                Ok(Ok(())) => out.latencies.push(started.elapsed()),
                Ok(Err(e)) => {
                    out.fail(&e);
                    self.teardown(&id).await;
                }
                Err(_) => {
                    out.fail(&anyhow::anyhow!(
                        "iteration {id} took longer than {ITERATION_TIMEOUT:?}"
                    ));
                    self.teardown(&id).await;
                }
            }
        }
        out
    }

    /// The exec variant's worker loop.
    async fn exec_worker(self: Arc<Self>, worker: usize) -> Outcome {
        let mut out = Outcome::default();
        let id = format!("{}exec-{worker}", self.prefix);
        self.track(&id);
        let setup = async {
            let args = ["sleep", "1000000"];
            let rootfs = self.create_container(&id, &args).await?;
            self.run_task(&id, rootfs, false).await?;
            // Exec processes start from the container's process.
            let spec: serde_json::Value = serde_json::from_slice(&self.spec(&id, &args)?.value)?;
            let mut process = spec["process"].clone();
            process["args"] = serde_json::json!(["true"]);
            anyhow::Ok(process)
        };
        let process = match setup.await {
            Ok(p) => p,
            Err(e) => {
                out.fail(&e);
                self.teardown(&id).await;
                return out;
            }
        };
        let mut i = 0_u64;
        while !self.stopping() {
            let exec_id = format!("exec-{worker}-{i}");
            i += 1;
            let started = Instant::now();
            let it = self.exec_iteration(&id, &exec_id, &process);
            match tokio::time::timeout(ITERATION_TIMEOUT, it).await {
                Ok(Ok(())) => out.latencies.push(started.elapsed()),
                Ok(Err(e)) => out.fail(&e),
                Err(_) => out.fail(&anyhow::anyhow!(
                    "exec {exec_id} took longer than {ITERATION_TIMEOUT:?}"
                )),
            }
        }
        self.teardown(&id).await;
        out
    }

    /// Removes whatever this run still has: tracked ids and any container
    /// with this run's prefix.
    async fn sweep(&self) {
        let mut ids: Vec<String> = self
            .live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        if let Ok(list) = clients::containers(&self.client)
            .list(cpb::ListContainersRequest::default())
            .await
        {
            ids.extend(
                list.into_inner()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|id| id.starts_with(&self.prefix)),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            self.teardown(&id).await;
        }
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = global.connect().await?;
    let (process, chain) = image_parts(&client, &args.image).await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        client,
        ns: global.namespace(),
        image: args.image.clone(),
        process,
        chain,
        snapshotter: args.snapshotter.clone(),
        runtime: args.runtime.clone(),
        prefix: format!("stress-{}-{nanos:x}-", std::process::id()),
        live: Mutex::new(HashSet::new()),
        stop: AtomicBool::new(false),
        deadline: Instant::now() + args.duration,
    });
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let s = shared.clone();
        if args.exec {
            workers.spawn(s.exec_worker(w));
        } else {
            workers.spawn(s.container_worker(w));
        }
    }
    let mut total = Outcome::default();
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(o)) => total.merge(o),
                Some(Err(e)) => total.fail(&anyhow::anyhow!("worker failed: {e}")),
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                shared.stop.store(true, Ordering::Relaxed);
                eprintln!("berthctl stress: interrupted; finishing current iterations and cleaning up (Ctrl-C again to stop at once)");
                let grace = async {
                    while let Some(j) = workers.join_next().await {
                        if let Ok(o) = j {
                            total.merge(o);
                        }
                    }
                };
                tokio::select! {
                    _ = grace => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = tokio::time::sleep(STOP_GRACE) => {}
                }
                workers.abort_all();
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    shared.sweep().await;
    report(&args, &mut total, elapsed);
    if interrupted {
        bail!("interrupted");
    }
    if total.failures > 0 {
        bail!("{} iteration(s) failed", total.failures);
    }
    Ok(())
}

/// Prints the result, as text or JSON.
fn report(args: &Args, total: &mut Outcome, elapsed: Duration) {
    total.latencies.sort();
    let n = total.latencies.len();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed.as_secs_f64().max(1e-9);
    let (p50, p95) = (
        percentile_ms(&total.latencies, 50.0),
        percentile_ms(&total.latencies, 95.0),
    );
    let what = if args.exec { "execs" } else { "containers" };
    if args.json {
        let v = serde_json::json!({
            "mode": if args.exec { "exec" } else { "containers" },
            "concurrency": args.concurrency,
            "duration_s": elapsed.as_secs_f64(),
            "iterations": n,
            "failures": total.failures,
            "first_error": total.first_error,
            "per_second": rate,
            "p50_ms": p50,
            "p95_ms": p95,
        });
        println!("{v}");
        return;
    }
    println!(
        "{} workers, {:.1}s, image {}",
        args.concurrency,
        elapsed.as_secs_f64(),
        args.image
    );
    println!("iterations:  {n}");
    println!("failures:    {}", total.failures);
    if let Some(e) = &total.first_error {
        println!("first error: {e}");
    }
    println!("{what}/s: {rate:.2}");
    println!("latency:     p50 {p50:.1} ms, p95 {p95:.1} ms");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((super::percentile_ms(&v, 50.0) - 50.0).abs() < 1e-9);
        assert!((super::percentile_ms(&v, 95.0) - 95.0).abs() < 1e-9);
        assert!((super::percentile_ms(&v[..1], 95.0) - 1.0).abs() < 1e-9);
        assert!(super::percentile_ms(&[], 50.0).abs() < 1e-9);
    }
}
