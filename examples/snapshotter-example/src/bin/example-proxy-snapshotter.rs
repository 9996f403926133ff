//! The example snapshotter out of process: served over containerd's
//! snapshots gRPC API on a UNIX socket, for berthd's (or containerd's)
//! `[proxy_plugins]`.
//!
//! ```text
//! example-proxy-snapshotter --root /var/lib/audit-snap --address /run/audit-snap.sock
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// Serve the audit snapshotter as a containerd proxy snapshotter.
#[derive(Debug, Parser)]
#[command(name = "example-proxy-snapshotter")]
struct Args {
    /// Directory holding the snapshots and their metadata.
    #[arg(long)]
    root: PathBuf,
    /// UNIX socket to serve the snapshots API on.
    #[arg(long)]
    address: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let sn = match berth_snapshotter_example::open(&args.root) {
        Ok(sn) => sn,
        Err(e) => {
            eprintln!("cannot open {}: {e}", args.root.display());
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    };
    match berth_snapshots::proxy::serve(Arc::new(sn), &args.address, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serving on {}: {e}", args.address.display());
            ExitCode::FAILURE
        }
    }
}
