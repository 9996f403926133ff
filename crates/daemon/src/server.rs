//! Serving: directories, plugins, the gRPC and ttrpc sockets, shutdown.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Instant;

use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::plugins::{self, GrpcService, TtrpcService, types};
use crate::{Error, Result};

/// Runs the daemon described by `config` until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    run_until(config, shutdown_signal()).await
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
    for dir in [&config.root, &config.state] {
        make_private_dir(dir)?;
    }
    // Plugin init is synchronous and may block briefly (opening the DB).
    let plugins = tokio::task::block_in_place(|| plugins::init_all(&registrations, &config))?;

    let mut routes = tonic::service::RoutesBuilder::default();
    let mut ttrpc_methods = std::collections::HashMap::new();
    for p in &plugins {
        let Ok(instance) = &p.instance else { continue };
        if p.plugin_type == types::GRPC {
            if let Some(svc) = instance.downcast_ref::<GrpcService>() {
                svc.register(&mut routes);
            }
        } else if p.plugin_type == types::TTRPC {
            if let Some(svc) = instance.downcast_ref::<TtrpcService>() {
                ttrpc_methods.extend(svc.take());
            }
        }
    }

    let grpc_path = config.grpc.address.clone();
    let ttrpc_path = ttrpc_address(&grpc_path);
    let grpc_listener = crate::socket::listen(&grpc_path, config.grpc.uid, config.grpc.gid)?;
    let ttrpc_listener =
        match crate::socket::listen(&ttrpc_path, config.ttrpc.uid, config.ttrpc.gid) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&grpc_path);
                return Err(e.into());
            }
        };

    let mut ttrpc_server = ttrpc::asynchronous::Server::new()
        .add_listener(ttrpc_listener.into())
        .register_service(ttrpc_methods);
    if let Err(e) = ttrpc_server.start().await {
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

    let grpc = tonic::transport::Server::builder()
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(UnixListenerStream::new(grpc_listener), shutdown);
    let result = grpc.await.map_err(|e| Error::Serve {
        server: "grpc",
        message: e.to_string(),
    });
    tracing::info!("shutting down");
    if let Err(e) = ttrpc_server.shutdown().await {
        tracing::warn!(error = %e, "ttrpc server shutdown");
    }
    remove_sockets(&grpc_path, &ttrpc_path);
    result
}

/// The ttrpc socket path for gRPC socket `address`, as containerd names it.
pub(crate) fn ttrpc_address(address: &Path) -> std::path::PathBuf {
    let mut s = address.as_os_str().to_owned();
    s.push(".ttrpc");
    s.into()
}

fn remove_sockets(grpc: &Path, ttrpc: &Path) {
    for p in [grpc, ttrpc] {
        if let Err(e) = std::fs::remove_file(p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(socket = %p.display(), error = %e, "cannot remove socket");
            }
        }
    }
}

/// Creates `dir` (and parents) with mode 0711 if missing.
fn make_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop berthd with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
