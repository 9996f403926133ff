//! `berthctl`: containerd's `ctr` command tree, talking to berthd (or any
//! containerd-compatible daemon) over its gRPC socket.

mod commands;
mod context;
mod format;
mod json;
mod stdio;
mod table;

/// A task's non-zero exit status, returned by berthctl as its own.
#[derive(Debug)]
pub(crate) struct ExitStatus(pub(crate) i32);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ExitStatus(code)) = e.downcast_ref::<ExitStatus>() {
                return ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            // A daemon's answer: its message says it all.
            if let Some(status) = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
                let context: Vec<String> = e
                    .chain()
                    .take_while(|c| c.downcast_ref::<tonic::Status>().is_none())
                    .map(ToString::to_string)
                    .collect();
                let mut parts = context;
                parts.push(status.message().to_string());
                eprintln!("berthctl: {}", parts.join(": "));
                return ExitCode::FAILURE;
            }
            eprintln!("berthctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
