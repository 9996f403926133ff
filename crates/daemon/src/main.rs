//! `berthd`: parses flags, sets up logging and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_daemon::config::{Config, DEFAULT_CONFIG_PATH};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

/// berth container runtime daemon (containerd-compatible API).
#[derive(Debug, Parser)]
#[command(name = "berthd", disable_version_flag = true)]
struct Cli {
    /// Print the version (as containerd: `-v`, `--version`).
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,
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
    #[command(name = "oci-hook", hide = true)]
    OciHook {
        /// The hook program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of berthd.
    Man,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the built-in configuration, every section with its defaults,
    /// with command-line flags applied.
    Default,
    /// Print the effective configuration: defaults, then the file, then flags.
    Dump,
    /// Print the config file (version 1 or 2) rewritten as version 3.
    Migrate,
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

/// `[debug] format`: containerd's `text` (the default) or `json`.
fn parse_format(s: &str) -> Result<bool, String> {
    match s {
        "" | "text" => Ok(false),
        "json" => Ok(true),
        other => Err(format!(
            "[debug] format {other:?} is not a log format; use \"text\" or \"json\""
        )),
    }
}

fn init_tracing(level: &str, json: bool) -> OtelHandle {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let level = if level.is_empty() { "info" } else { level };
    // The level applies to berth; the HTTP/2 stack stays quiet unless
    // BERTH_LOG asks for it explicitly.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn"))
    });
    // One JSON object a line with containerd's (logrus') keys, for log
    // collectors; text otherwise.
    let fmt: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(berth_daemon::log_json::LogrusJson)
                .with_writer(std::io::stderr),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
    };
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

/// berthd's clap command, with its version text.
fn command() -> clap::Command {
    let version: &'static str =
        Box::leak(berth_daemon::build_info::version_text().into_boxed_str());
    Cli::command().version(version)
}

/// `berthd config migrate`: the config file as version 3.
fn migrate(cli: &Cli) -> Result<String, String> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    berth_daemon::config_migrate::migrate(&text, &path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    berth_daemon::heap::limit_arenas();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match &cli.command {
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            let mut config = Config::default();
            cli.apply(&mut config);
            print!("{}", berth_daemon::config_defaults::render(&config));
            return ExitCode::SUCCESS;
        }
        Some(Command::Config {
            command: ConfigCommand::Dump,
        }) => {
            return match cli.load() {
                Ok(config) => {
                    print!("{}", berth_daemon::config_defaults::render(&config));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berthd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Config {
            command: ConfigCommand::Migrate,
        }) => {
            return match migrate(&cli) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berthd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Completion { shell }) => {
            clap_complete::generate(*shell, &mut command(), "berthd", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return match clap_mangen::Man::new(command())
                .section("8")
                .render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berthd: cannot write the man page: {e}");
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
    // A first read for the log settings ([debug] level and format; the
    // flag wins over the file), then tracing, then the read that logs what
    // the file has that berthd ignores.
    let (level, json) = match cli.load() {
        Ok(c) => {
            let level = match &cli.log_level {
                Some(l) => l.clone(),
                None if c.debug.level.is_empty() => String::new(),
                None => match parse_level(&c.debug.level) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("berthd: [debug] level in the config: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            match parse_format(&c.debug.format) {
                Ok(json) => (level, json),
                Err(e) => {
                    eprintln!("berthd: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let otel = init_tracing(&level, json);
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
