//! Serving: directories, plugins, the gRPC and ttrpc sockets, shutdown.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Instant;

use futures::TryStreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::plugins::{self, GrpcService, TtrpcService, types};
use crate::{Error, Result};

/// How long open calls may run on after a shutdown request.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the daemon described by `config` until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    // Install the handlers before any socket exists: a SIGTERM that arrives
    // as soon as clients can connect must still mean a clean shutdown.
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(term), Ok(int)) = signals else {
        return Err(Error::Serve {
            server: "signals",
            message: "cannot install SIGTERM/SIGINT handlers".to_string(),
        });
    };
    run_until(config, shutdown_signal(term, int)).await
}

/// Runs the daemon with the built-in plugins until `shutdown` completes;
/// sockets are removed on exit.
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    run_with(config, plugins::builtins::registrations(), shutdown).await
}

/// Runs the daemon with `registrations` (a custom build adds its own plugins
/// to [`plugins::builtins::registrations`]) until `shutdown` completes.
pub async fn run_with(
    config: Config,
    registrations: Vec<plugins::Registration>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    // As containerd: root is private (0700); state is only traversable
    // (0711) so each plugin can decide what lies beneath it. Both are reset
    // when they already exist, in case an older berth left them wider.
    make_private_dir(&config.root, 0o700)?;
    make_private_dir(&config.state, 0o711)?;
    // Before any plugin opens a database or looks for shims.
    let _locks = (
        crate::lock::lock(&config.root)?,
        crate::lock::lock(&config.state)?,
    );
    join_cgroup(&config)?;
    // Plugin init is synchronous and may block briefly (opening the DB).
    let mut registrations = registrations;
    registrations.extend(plugins::builtins::proxy_registrations(&config));
    let plugins::Initialised { plugins, startup } =
        tokio::task::block_in_place(|| plugins::init_all_staged(&registrations, &config))?;
    // Plugin directories (metadata DB, blobs, bundles) hold secrets under
    // well-known names: none may be listable or readable by other users.
    crate::private::restrict_children(&config.root);
    crate::private::restrict_children(&config.state);
    // Recovery (interrupted snapshot commits, shims that outlived the last
    // berthd) finishes before the sockets exist: a client that connects
    // right after a restart sees the recovered state, as with containerd.
    futures::future::join_all(startup).await;
    tracing::debug!(elapsed = ?started.elapsed(), "recovery finished");

    let mut routes = tonic::service::RoutesBuilder::default();
    let mut ttrpc_methods = std::collections::HashMap::new();
    for p in &plugins {
        let Ok(instance) = &p.instance else { continue };
        if p.plugin_type == types::GRPC {
            if let Some(svc) = instance.downcast_ref::<GrpcService>() {
                svc.register(&mut routes);
            }
        } else if p.plugin_type == types::TTRPC
            && let Some(svc) = instance.downcast_ref::<TtrpcService>()
        {
            ttrpc_methods.extend(svc.take());
        }
    }

    // containerd's startup collection, done before anyone can connect.
    if let Some(gc) = find::<crate::gc::Collector>(&plugins, types::GC) {
        gc.startup().await;
    }
    let metrics = find::<crate::metrics::Metrics>(&plugins, types::INTERNAL);
    let sources = crate::http::Sources {
        metrics: metrics.clone(),
        shims: find::<berth_runtime::manager::ShimManager>(&plugins, types::RUNTIME),
        content: find::<berth_content::local::LocalStore>(&plugins, types::CONTENT),
        plugins: std::sync::Arc::new(plugins),
        started: started_at,
        address: config.grpc.address.clone(),
    };

    // The HTTP endpoints are up before the gRPC socket exists: whoever
    // waits for the socket finds them serving.
    let endpoints = start_endpoints(&config, &sources).await?;

    let grpc_path = config.grpc.address.clone();
    let ttrpc_path = crate::socket::ttrpc_address(&grpc_path);
    // The ttrpc socket first: once the gRPC socket appears, clients (and
    // shims) find both.
    let ttrpc_listener =
        match crate::socket::listen(&ttrpc_path, config.ttrpc.uid, config.ttrpc.gid) {
            Ok(l) => l,
            Err(e) => {
                stop_endpoints(endpoints).await;
                return Err(e.into());
            }
        };
    let grpc_listener = match crate::socket::listen(&grpc_path, config.grpc.uid, config.grpc.gid) {
        Ok(l) => l,
        Err(e) => {
            stop_endpoints(endpoints).await;
            let _ = std::fs::remove_file(&ttrpc_path);
            return Err(e.into());
        }
    };

    let mut ttrpc_server = ttrpc::asynchronous::Server::new()
        .add_listener(ttrpc_listener.into())
        .register_service(ttrpc_methods);
    if let Err(e) = ttrpc_server.start().await {
        stop_endpoints(endpoints).await;
        remove_sockets(&grpc_path, &ttrpc_path);
        return Err(Error::Serve {
            server: "ttrpc",
            message: e.to_string(),
        });
    }

    tracing::info!(
        address = %grpc_path.display(),
        ttrpc = %ttrpc_path.display(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "berthd successfully booted"
    );
    crate::notify::tell(crate::notify::READY);
    // Loading plugins (opening databases, reading config) leaves free
    // heap behind that the daemon would otherwise keep while idle.
    crate::heap::trim();

    // Graceful shutdown waits for open calls; long-lived ones (an `events`
    // subscription) would hold it forever, so they get a short grace period.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let layer = crate::metrics::grpc::MetricsLayer::new(metrics.map(|m| m.grpc.clone()));
    let trimmer = crate::heap::HeapTrimmer::new();
    let trimming = trimmer.spawn();
    let grpc = tonic::transport::Server::builder()
        .layer(trimmer.layer())
        .layer(layer)
        .layer(crate::size_errors::layer())
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            // gRPC's C core sends an `:authority` h2 rejects: see `authority`.
            UnixListenerStream::new(grpc_listener).map_ok(crate::authority::AuthorityFilter::new),
            async move {
                shutdown.await;
                let _ = stopping_tx.send(());
            },
        );
    let grace = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = grpc => r.map_err(|e| Error::Serve {
            server: "grpc",
            message: e.to_string(),
        }),
        () = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected after the grace period; closing them");
            Ok(())
        }
    };
    tracing::info!("shutting down");
    crate::notify::tell(crate::notify::STOPPING);
    trimming.abort();
    stop_endpoints(endpoints).await;
    if let Err(e) = ttrpc_server.shutdown().await {
        tracing::warn!(error = %e, "ttrpc server shutdown");
    }
    remove_sockets(&grpc_path, &ttrpc_path);
    result
}

/// The instance of the first loaded plugin of `plugin_type` that is a `T`.
fn find<T: std::any::Any + Send + Sync>(
    plugins: &[plugins::Plugin],
    plugin_type: &str,
) -> Option<std::sync::Arc<T>> {
    plugins
        .iter()
        .filter(|p| p.plugin_type == plugin_type)
        .find_map(|p| p.instance.as_ref().ok()?.clone().downcast::<T>().ok())
}

/// A running HTTP endpoint: its task and, for a UNIX socket, its path.
type Endpoint = (tokio::task::JoinHandle<()>, Option<std::path::PathBuf>);

/// Starts the `[metrics]` and `[debug]` HTTP endpoints that are configured
/// (one listener when both name the same address).
async fn start_endpoints(config: &Config, sources: &crate::http::Sources) -> Result<Vec<Endpoint>> {
    use crate::http::{Listener, Routes};
    let metrics = config.metrics.address.trim();
    let debug = config.debug.address.trim();
    let mut wanted: Vec<(&'static str, &str, Routes)> = Vec::new();
    if !metrics.is_empty() {
        wanted.push((
            "metrics",
            metrics,
            Routes {
                metrics: true,
                debug: metrics == debug,
            },
        ));
    }
    if !debug.is_empty() && debug != metrics {
        wanted.push((
            "debug",
            debug,
            Routes {
                metrics: false,
                debug: true,
            },
        ));
    }
    let mut started = Vec::new();
    for (what, address, routes) in wanted {
        let listener = match Listener::bind(what, address).await {
            Ok(l) => l,
            Err(e) => {
                stop_endpoints(started).await;
                return Err(Error::Serve {
                    server: "http",
                    message: e.to_string(),
                });
            }
        };
        tracing::info!(endpoint = what, address = %listener.describe(), "serving http endpoint");
        let socket = match &listener {
            Listener::Unix(_, p) => Some(p.clone()),
            Listener::Tcp(_) => None,
        };
        started.push((
            crate::http::spawn(listener, routes, sources.clone()),
            socket,
        ));
    }
    Ok(started)
}

/// Stops the endpoints and waits until their tasks are gone, so their
/// listeners are closed when this returns (an aborted task is dropped only
/// when the runtime next polls it).
async fn stop_endpoints(endpoints: Vec<Endpoint>) {
    for (task, socket) in endpoints {
        task.abort();
        let _ = task.await;
        if let Some(p) = socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn remove_sockets(grpc: &Path, ttrpc: &Path) {
    for p in [grpc, ttrpc] {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %p.display(), error = %e, "cannot remove socket");
        }
    }
}

/// Creates `dir` (and parents) with `mode`, and sets `mode` on it if it
/// already existed.
fn make_private_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)
}

async fn shutdown_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

/// containerd's `[cgroup] path`: the daemon moves itself into that cgroup
/// before anything else starts (shims then start from there too).
fn join_cgroup(config: &Config) -> Result<()> {
    let path = config
        .cgroup
        .as_ref()
        .and_then(|t| t.get("path"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if path.is_empty() {
        return Ok(());
    }
    let dirs = berth_runtime::cgroups::place::place(std::process::id(), path).map_err(|e| {
        Error::Serve {
            server: "cgroup",
            message: e.to_string(),
        }
    })?;
    tracing::info!(
        path,
        hierarchies = dirs.len(),
        "berthd moved into its cgroup"
    );
    Ok(())
}
