//! `berthd`: parses flags, sets up logging and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_daemon::config::{Config, DEFAULT_CONFIG_PATH};
use clap::{Parser, Subcommand};

/// berth container runtime daemon (containerd-compatible API).
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about)]
struct Cli {
    /// Path to the configuration file.
    #[arg(short = 'c', long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(short = 'l', long, global = true)]
    log_level: Option<String>,
    /// gRPC socket path.
    #[arg(short = 'a', long, global = true)]
    address: Option<PathBuf>,
    /// Root directory for persistent data.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// State directory for runtime data.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the built-in configuration with command-line flags applied.
    Default,
    /// Print the effective configuration: the file, then flags.
    Dump,
}

impl Cli {
    fn apply(&self, config: &mut Config) {
        if let Some(a) = &self.address {
            config.grpc.address = a.clone();
        }
        if let Some(r) = &self.root {
            config.root = r.clone();
        }
        if let Some(s) = &self.state {
            config.state = s.clone();
        }
        if let Some(l) = &self.log_level {
            config.debug.level = l.clone();
        }
    }

    fn load(&self) -> Result<Config, berth_daemon::config::ConfigError> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = Config::load(&path, explicit)?;
        self.apply(&mut config);
        Ok(config)
    }
}

fn init_tracing(level: &str) {
    use std::io::IsTerminal;
    let level = if level.is_empty() { "info" } else { level };
    // The level applies to berth; the HTTP/2 stack stays quiet unless
    // BERTH_LOG asks for it explicitly.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            let mut config = Config::default();
            cli.apply(&mut config);
            print!("{}", config.to_toml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Config {
            command: ConfigCommand::Dump,
        }) => {
            return match cli.load() {
                Ok(config) => {
                    print!("{}", config.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berthd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    // Tracing first, so config warnings (unknown sections) are shown.
    init_tracing(cli.log_level.as_deref().unwrap_or(""));
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(berth_daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}
