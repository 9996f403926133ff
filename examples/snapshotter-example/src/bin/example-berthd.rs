//! berthd with the example snapshotter compiled in, as plugin
//! `io.containerd.snapshotter.v1.audit`: the built-in registrations plus
//! one. Takes berthd's main flags (`--config`, `--root`, `--state`,
//! `--address`, `--log-level`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_daemon::Config;
use berth_daemon::plugins::builtins;
use clap::Parser;

/// berthd with the audit snapshotter.
#[derive(Debug, Parser)]
#[command(name = "example-berthd")]
struct Args {
    /// Path to the configuration file.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Root directory for persistent data.
    #[arg(long)]
    root: Option<PathBuf>,
    /// State directory for runtime data.
    #[arg(long)]
    state: Option<PathBuf>,
    /// gRPC socket path.
    #[arg(short, long)]
    address: Option<PathBuf>,
    /// Log level (trace, debug, info, warn, error).
    #[arg(short, long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{},h2=warn,hyper=warn,tower=warn",
            args.log_level
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (
            PathBuf::from(berth_daemon::config::DEFAULT_CONFIG_PATH),
            false,
        ),
    };
    let mut config = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("example-berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(s) = args.state {
        config.state = s;
    }
    if let Some(a) = args.address {
        config.grpc.address = a;
    }
    // The built-in plugins, and ours.
    let mut registrations = builtins::registrations();
    registrations.push(berth_snapshotter_example::registration());
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    };
    match berth_daemon::run_with(config, registrations, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-berthd: {e}");
            ExitCode::FAILURE
        }
    }
}
