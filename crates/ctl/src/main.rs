//! `berthctl`: containerd's `ctr` command tree, talking to berthd (or any
//! containerd-compatible daemon) over its gRPC socket.

mod commands;
mod context;
mod format;
mod table;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
