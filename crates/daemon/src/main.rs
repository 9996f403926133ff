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
    /// Log level: trace, debug, info, warn, error (also containerd's
    /// warning, fatal, panic).
    #[arg(short = 'l', long, global = true, value_parser = parse_level)]
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
    /// OCI hook trampoline: `oci-hook -- PROGRAM ARGS...` with the
    /// container's state on stdin; expands containerd's template functions
    /// ({{id}}, {{pid}}, {{rootfs}}, {{bundle}}, {{status}},
    /// {{annotation "k"}}) in the arguments and environment, then execs.
    #[command(name = "oci-hook")]
    OciHook {
        /// The hook program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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

/// The slot the OpenTelemetry layer goes into once the config is read.
#[cfg(feature = "otel")]
type OtelSlot = Option<
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static>,
>;

/// Fills the [`OtelSlot`] later.
#[cfg(feature = "otel")]
type OtelHandle = tracing_subscriber::reload::Handle<OtelSlot, tracing_subscriber::Registry>;
/// Without the `otel` feature there is nothing to fill in later.
#[cfg(not(feature = "otel"))]
struct OtelHandle;

/// containerd's (logrus') level names, as the tracing level they mean.
const LEVELS: &[(&str, &str)] = &[
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("error", "error"),
    ("fatal", "error"),
    ("panic", "error"),
];

/// Checks a log level name (case-insensitive, as logrus), giving the
/// tracing level; an unknown one is refused rather than logging nothing.
fn parse_level(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    LEVELS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, level)| (*level).to_string())
        .ok_or_else(|| {
            let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
            format!("{s:?} is not a log level; use one of {}", names.join(", "))
        })
}

fn init_tracing(level: &str) -> OtelHandle {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let level = if level.is_empty() { "info" } else { level };
    // The level applies to berth; the HTTP/2 stack stays quiet unless
    // BERTH_LOG asks for it explicitly.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn"))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    #[cfg(feature = "otel")]
    {
        let (slot, handle) = tracing_subscriber::reload::Layer::new(OtelSlot::None);
        tracing_subscriber::registry()
            .with(slot)
            .with(filter)
            .with(fmt)
            .init();
        handle
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry().with(filter).with(fmt).init();
        OtelHandle
    }
}

/// Starts exporting spans if the config asks for it (inside the runtime).
#[cfg(feature = "otel")]
fn start_export(
    config: &Config,
    handle: &OtelHandle,
) -> Result<Option<berth_daemon::otlp::Exporter>, String> {
    let Some(otlp) = berth_daemon::otlp::config_of(config)? else {
        return Ok(None);
    };
    let (layer, exporter) = berth_daemon::otlp::layer(&otlp)?;
    handle
        .modify(|slot| *slot = Some(Box::new(layer)))
        .map_err(|e| format!("installing the OpenTelemetry layer: {e}"))?;
    tracing::info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, "exporting spans over OTLP");
    Ok(Some(exporter))
}

/// Without the `otel` feature, a configured endpoint is only reported.
#[cfg(not(feature = "otel"))]
fn start_export(config: &Config, _: &OtelHandle) -> Result<Option<()>, String> {
    if let Some(otlp) = berth_daemon::otlp::config_of(config)? {
        tracing::warn!(
            endpoint = %otlp.endpoint,
            "this berthd is built without the otel feature: spans are not exported"
        );
    }
    Ok(None)
}

fn main() -> ExitCode {
    berth_daemon::heap::limit_arenas();
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
        Some(Command::OciHook { args }) => {
            // Only returns if the program could not be run.
            let e = berth_daemon::oci_hook::run(args, std::io::stdin().lock());
            eprintln!("berthd oci-hook: {e}");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    // Tracing first, so config warnings (unknown sections) are shown.
    let otel = init_tracing(cli.log_level.as_deref().unwrap_or(""));
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.debug.level.is_empty() {
        if let Err(e) = parse_level(&config.debug.level) {
            eprintln!("berthd: [debug] level in the config: {e}");
            return ExitCode::FAILURE;
        }
    }
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
    let result = runtime.block_on(async {
        let exporter = start_export(&config, &otel)?;
        let result = berth_daemon::run(config).await;
        #[cfg(feature = "otel")]
        if let Some(exporter) = exporter {
            // Flushing blocks: off the async threads.
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
        #[cfg(not(feature = "otel"))]
        let _: Option<()> = exporter;
        Ok::<_, String>(result)
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}
