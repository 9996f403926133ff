//! An example out-of-process snapshotter: the native driver served over
//! containerd's snapshots gRPC API on a UNIX socket.
//!
//! ```text
//! berth-proxy-snapshotter --root /var/lib/mysnap --address /run/mysnap.sock
//! ```
//!
//! Declare it to berthd in `config.toml`:
//!
//! ```toml
//! [proxy_plugins.mysnap]
//! type = "snapshot"
//! address = "/run/mysnap.sock"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berth_snapshots::native::NativeSnapshotter;
use clap::Parser;

/// Serve berth's native snapshotter as a containerd proxy snapshotter.
#[derive(Debug, Parser)]
#[command(name = "berth-proxy-snapshotter", version)]
struct Args {
    /// Directory holding the snapshots and their metadata.
    #[arg(long)]
    root: PathBuf,
    /// UNIX socket to serve the snapshots API on.
    #[arg(long)]
    address: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sn = match NativeSnapshotter::new(&args.root) {
        Ok(sn) => sn,
        Err(e) => {
            eprintln!(
                "berth-proxy-snapshotter: cannot open {}: {e}",
                args.root.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-proxy-snapshotter: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(async {
        let shutdown = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        berth_snapshots::proxy::serve(Arc::new(sn), &args.address, shutdown).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "berth-proxy-snapshotter: serving on {}: {e}",
                args.address.display()
            );
            ExitCode::FAILURE
        }
    }
}
