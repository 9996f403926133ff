//! The small HTTP server of the metrics and debug endpoints.
//!
//! - `[metrics] address = "127.0.0.1:1338"`: `GET /v1/metrics`, Prometheus
//!   metrics in the OpenMetrics text format (daemon, gRPC and per-container
//!   cgroup metrics, collected from the shims when scraped).
//! - `[debug] address = "127.0.0.1:PORT"` (or a UNIX socket path):
//!   `GET /debug/state`, the daemon's state as JSON for troubleshooting
//!   (plugins and their init errors, tasks, shims, open ingests), and
//!   `GET /debug/pprof/profile?seconds=N`, the daemon's CPU profile over N
//!   seconds (default 30) as a gzipped pprof protobuf, where containerd
//!   serves Go's (what `ctr pprof profile` and `go tool pprof` read).
//!
//! Both are off by default; one address may serve both. Every connection is
//! served on its own task, so a slow scrape never holds up the daemon.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_content::local::LocalStore;
use berth_runtime::manager::ShimManager;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::task::JoinSet;

use crate::metrics::{self, Handle, cgroups::TaskStats};
use crate::plugins::{Plugin, PluginError};
use crate::services::tasks::{TaskProbe, probe};

/// The path of the metrics endpoint.
pub(crate) const METRICS_PATH: &str = "/v1/metrics";
/// The path of the debug state endpoint.
pub(crate) const DEBUG_STATE_PATH: &str = "/debug/state";
/// The path of the CPU profile endpoint (Go's `net/http/pprof` path).
pub(crate) const PPROF_PROFILE_PATH: &str = "/debug/pprof/profile";
/// Go's default profile length.
const PPROF_DEFAULT_SECONDS: u64 = 30;
/// The longest profile served (a debug aid, not a recorder).
const PPROF_MAX_SECONDS: u64 = 600;
/// Samples per second, as Go's CPU profiler.
const PPROF_FREQUENCY: i32 = 100;

/// Errors setting up the endpoints.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The address is neither `host:port` nor an absolute socket path.
    #[error(
        "invalid {what} address {address:?}: use host:port (e.g. 127.0.0.1:1338) or an absolute UNIX socket path"
    )]
    Address {
        /// `metrics` or `debug`.
        what: &'static str,
        /// The address given.
        address: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// `metrics` or `debug`.
        what: &'static str,
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoints read from: the daemon's parts, found among its plugins.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The metrics registry, if the metrics plugin is loaded.
    pub metrics: Option<Handle>,
    /// The shim manager, if the task runtime plugin is loaded.
    pub shims: Option<Arc<ShimManager>>,
    /// The local content store, if loaded.
    pub content: Option<Arc<LocalStore>>,
    /// Every plugin, with how its initialisation went.
    pub plugins: Arc<Vec<Plugin>>,
    /// When the daemon started.
    pub started: SystemTime,
    /// The gRPC socket.
    pub address: std::path::PathBuf,
}

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routes {
    /// `GET /v1/metrics`.
    pub metrics: bool,
    /// `GET /debug/state`.
    pub debug: bool,
}

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A UNIX socket (removed when the daemon stops).
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// Binds `address` (`host:port`, or an absolute path for a UNIX socket).
    pub(crate) async fn bind(what: &'static str, address: &str) -> Result<Listener, HttpError> {
        let bind_err = |source| HttpError::Bind {
            what,
            address: address.to_string(),
            source,
        };
        if address.starts_with('/') {
            let path = std::path::PathBuf::from(address);
            let l = crate::socket::listen(&path, 0, 0).map_err(|e| HttpError::Bind {
                what,
                address: address.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            return Ok(Listener::Unix(l, path));
        }
        let addr: std::net::SocketAddr = address.parse().map_err(|_| HttpError::Address {
            what,
            address: address.to_string(),
        })?;
        tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener::Tcp)
            .map_err(bind_err)
    }

    /// The bound address, for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string()),
            Listener::Unix(_, p) => p.display().to_string(),
        }
    }
}

/// Serves `routes` on `listener` until the returned task is aborted (which
/// also ends its open connections).
pub(crate) fn spawn(
    listener: Listener,
    routes: Routes,
    sources: Sources,
) -> tokio::task::JoinHandle<()> {
    let sources = Arc::new(sources);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            // Reap finished connections as we go.
            while conns.try_join_next().is_some() {}
            let sources = sources.clone();
            let service = hyper::service::service_fn(move |req| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(handle(req, routes, &sources).await) }
            });
            match &listener {
                Listener::Tcp(l) => match l.accept().await {
                    Ok((io, _)) => {
                        conns.spawn(serve_conn(hyper_util::rt::TokioIo::new(io), service));
                    }
                    Err(e) => accept_failed(&e).await,
                },
                Listener::Unix(l, _) => match l.accept().await {
                    Ok((io, _)) => {
                        conns.spawn(serve_conn(hyper_util::rt::TokioIo::new(io), service));
                    }
                    Err(e) => accept_failed(&e).await,
                },
            }
        }
    })
}

async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "http endpoint: accept failed");
    // Out of file descriptors and the like: do not spin.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_conn<I, S>(io: I, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<Full<Bytes>>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(error = %e, "http endpoint: connection ended with an error");
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle<B>(req: Request<B>, routes: Routes, sources: &Sources) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = (routes.metrics && path == METRICS_PATH)
        || (routes.debug && (path == DEBUG_STATE_PATH || path == PPROF_PROFILE_PATH));
    if !known {
        let mut paths = Vec::new();
        if routes.metrics {
            paths.push(METRICS_PATH);
        }
        if routes.debug {
            paths.push(DEBUG_STATE_PATH);
            paths.push(PPROF_PROFILE_PATH);
        }
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("not found; this endpoint serves {}\n", paths.join(", ")),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n",
        );
    }
    if path == METRICS_PATH {
        match scrape(sources).await {
            Ok(text) => respond(StatusCode::OK, metrics::CONTENT_TYPE, text),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        }
    } else if path == PPROF_PROFILE_PATH {
        cpu_profile(req.uri().query()).await
    } else {
        let state = debug_state(sources).await;
        let text = serde_json::to_string_pretty(&state)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        respond(StatusCode::OK, "application/json", text + "\n")
    }
}

/// Why a CPU profile could not be taken.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    /// Starting the sampler (another profile runs, say).
    #[error("could not enable CPU profiling: {0}")]
    Start(pprof::Error),
    /// Building the report.
    #[error("could not build the profile: {0}")]
    Report(pprof::Error),
    /// Compressing it.
    #[error("could not compress the profile: {0}")]
    Compress(std::io::Error),
    /// The blocking task died.
    #[error("the profiling task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// The `seconds` query parameter (Go's), or why it is refused.
fn profile_seconds(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("seconds="));
    match value {
        None | Some("") => Ok(PPROF_DEFAULT_SECONDS),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=PPROF_MAX_SECONDS).contains(&n) => Ok(n),
            _ => Err(format!(
                "invalid value for seconds: {v:?} (1 to {PPROF_MAX_SECONDS})"
            )),
        },
    }
}

/// Samples the whole daemon's CPU use (SIGPROF at 100 Hz, every thread)
/// for `seconds` and returns the gzipped pprof protobuf, as Go's profile
/// handler does. Runs on a blocking thread: the sampler is process-wide
/// and not `Send`.
///
/// Differences from Go's profiler: samples whose interrupted instruction
/// is inside libc, libgcc, pthread or the vDSO are dropped (unwinding from
/// a signal handler there can deadlock), so time in system calls is not
/// counted; the first profile sets up pprof-rs's sample tables (seconds in
/// a debug build) before sampling starts, and those tables (about 200 MiB)
/// stay allocated afterwards.
fn take_profile(seconds: u64) -> Result<Vec<u8>, ProfileError> {
    use prost::Message;
    use std::io::Write;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(PPROF_FREQUENCY)
        // Unwinding inside these from a signal handler can deadlock.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(ProfileError::Start)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let report = guard.report().build().map_err(ProfileError::Report)?;
    drop(guard);
    let profile = crate::profile_proto::from_report(&report);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .map_err(ProfileError::Compress)?;
    gz.finish().map_err(ProfileError::Compress)
}

/// `GET /debug/pprof/profile?seconds=N`.
async fn cpu_profile(query: Option<&str>) -> Response<Full<Bytes>> {
    let seconds = match profile_seconds(query) {
        Ok(s) => s,
        Err(message) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                message + "\n",
            );
        }
    };
    let taken = tokio::task::spawn_blocking(move || take_profile(seconds))
        .await
        .map_err(ProfileError::Task)
        .and_then(|r| r);
    match taken {
        Ok(body) => {
            let mut resp = respond(StatusCode::OK, "application/octet-stream", body);
            resp.headers_mut().insert(
                hyper::header::CONTENT_DISPOSITION,
                hyper::header::HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            resp
        }
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

/// Asks every shim for its task's state (and statistics), all at once.
async fn probe_all(shims: &ShimManager, with_stats: bool) -> Vec<TaskProbe> {
    let all = shims.all().await;
    let mut probes = futures::future::join_all(all.iter().map(|s| probe(s, with_stats))).await;
    probes.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    probes
}

/// One scrape: the daemon's metrics plus every live task's cgroup metrics.
#[tracing::instrument(level = "debug", skip_all)]
async fn scrape(sources: &Sources) -> Result<String, String> {
    let Some(m) = &sources.metrics else {
        return Err("the metrics plugin is not loaded".to_string());
    };
    let mut tasks = Vec::new();
    if let Some(shims) = &sources.shims {
        let probes = probe_all(shims, true).await;
        m.shims.set(i64::try_from(probes.len()).unwrap_or(i64::MAX));
        let running = probes.iter().filter(|p| p.status == "RUNNING").count();
        m.tasks_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        for p in probes {
            if let Some(e) = &p.error {
                m.stats_errors.inc();
                tracing::debug!(namespace = %p.namespace, id = %p.id, error = %e, "no task metrics");
            }
            let Some(any) = &p.stats else { continue };
            match berth_runtime::cgroups::Stats::from_any(any) {
                Ok(stats) => tasks.push(TaskStats {
                    namespace: p.namespace,
                    id: p.id,
                    runtime: p.runtime,
                    stats,
                }),
                Err(e) => {
                    m.stats_errors.inc();
                    tracing::debug!(namespace = %p.namespace, id = %p.id, error = %e, "task metrics not understood");
                }
            }
        }
    }
    m.encode(&tasks)
        .map_err(|e| format!("cannot encode metrics: {e}"))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The daemon's state as JSON.
async fn debug_state(sources: &Sources) -> serde_json::Value {
    use serde_json::json;
    let plugins: Vec<_> = sources
        .plugins
        .iter()
        .map(|p| {
            let (status, error) = match &p.instance {
                Ok(_) => ("ok", None),
                Err(PluginError::Skipped(why)) => ("skipped", Some(why.clone())),
                Err(PluginError::Failed(why)) => ("error", Some(why.clone())),
            };
            json!({
                "type": p.plugin_type,
                "id": p.id,
                "requires": p.requires,
                "exports": p.exports,
                "capabilities": p.capabilities,
                "status": status,
                "error": error,
            })
        })
        .collect();
    let (mut shims, mut tasks) = (Vec::new(), Vec::new());
    if let Some(manager) = &sources.shims {
        let mut all = manager.all().await;
        all.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        for s in &all {
            shims.push(json!({
                "namespace": s.namespace,
                "id": s.id,
                "address": s.address,
                "binary": s.binary.display().to_string(),
                "bundle": s.bundle.display().to_string(),
            }));
        }
        for p in probe_all(manager, false).await {
            tasks.push(json!({
                "namespace": p.namespace,
                "id": p.id,
                "pid": p.pid,
                "status": p.status,
                "error": p.error,
            }));
        }
    }
    let ingests = match &sources.content {
        Some(store) => {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || {
                use berth_content::IngestManager;
                store.list_statuses()
            })
            .await
            {
                Ok(Ok(list)) => list
                    .into_iter()
                    .map(|s| {
                        json!({
                            "ref": s.ref_,
                            "offset": s.offset,
                            "total": s.total,
                            "expected": s.expected.map(|d| d.to_string()),
                            "started_at": unix_seconds(s.started_at),
                            "updated_at": unix_seconds(s.updated_at),
                        })
                    })
                    .collect(),
                Ok(Err(e)) => vec![json!({ "error": e.to_string() })],
                Err(e) => vec![json!({ "error": e.to_string() })],
            }
        }
        None => Vec::new(),
    };
    json!({
        "version": crate::VERSION,
        "pid": std::process::id(),
        "address": sources.address.display().to_string(),
        "started_at": unix_seconds(sources.started),
        "uptime_seconds": sources.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        "plugins": plugins,
        "shims": shims,
        "tasks": tasks,
        "ingests": ingests,
    })
}

#[cfg(test)]
mod tests {
    use super::{PPROF_DEFAULT_SECONDS, profile_seconds, take_profile};

    #[test]
    fn a_busy_thread_shows_in_the_profile() {
        use prost::Message;
        use std::io::Read;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0_u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                x
            })
        };
        let gz = take_profile(1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = busy.join();
        let gz = gz.expect("profile");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gunzip");
        let profile = crate::profile_proto::Profile::decode(raw.as_slice()).expect("protobuf");
        let samples: i64 = profile.sample.iter().filter_map(|s| s.value.first()).sum();
        assert!(samples > 10, "{samples} samples in 1 s of a busy thread");
    }

    #[test]
    fn profile_seconds_as_go_reads_them() {
        assert_eq!(profile_seconds(None), Ok(PPROF_DEFAULT_SECONDS));
        assert_eq!(profile_seconds(Some("seconds=")), Ok(PPROF_DEFAULT_SECONDS));
        assert_eq!(profile_seconds(Some("debug=1&seconds=2")), Ok(2));
        assert!(profile_seconds(Some("seconds=0")).is_err());
        assert!(profile_seconds(Some("seconds=1.5")).is_err());
        assert!(profile_seconds(Some("seconds=100000")).is_err());
    }
}
