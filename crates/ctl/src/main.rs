//! `berthctl`: containerd's `ctr` command tree, talking to berthd (or any
//! containerd-compatible daemon) over its gRPC socket.

mod commands;
mod context;
mod format;
mod json;
mod progress;
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

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};

/// berthctl's clap command: ctr's `-v`/`--version`, and two subcommands
/// that describe the command itself (`completion`, `man`).
fn command() -> clap::Command {
    let version: &'static str = Box::leak(
        format!(
            "github.com/berth-dev/berth {} {}",
            env!("CARGO_PKG_VERSION"),
            option_env!("BERTH_REVISION").unwrap_or("unknown")
        )
        .into_boxed_str(),
    );
    commands::Cli::command()
        .version(version)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .help("Print the version")
                .action(ArgAction::Version),
        )
        .subcommand(
            clap::Command::new("completion")
                .about("Print a shell completion script (bash, zsh, fish, elvish, powershell)")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
        .subcommand(clap::Command::new("man").about("Print the man page (roff) of berthctl"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = command().get_matches();
    match matches.subcommand() {
        Some(("completion", args)) => {
            if let Some(shell) = args.get_one::<clap_complete::Shell>("shell") {
                clap_complete::generate(*shell, &mut command(), "berthctl", &mut std::io::stdout());
            }
            return ExitCode::SUCCESS;
        }
        Some(("man", _)) => {
            return match clap_mangen::Man::new(command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berthctl: cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let cli = match commands::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ExitStatus(code)) = e.downcast_ref::<ExitStatus>() {
                return ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            // Connecting failed: the connect error says where and why.
            if let Some(c) = e
                .chain()
                .find_map(|c| c.downcast_ref::<berth_api::client::ConnectError>())
            {
                eprintln!("berthctl: {c}");
                return ExitCode::FAILURE;
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
