//! `config.toml`: containerd's version 2 layout, read by berthd.
//!
//! ```toml
//! version = 2
//! root = "/var/lib/berth"
//! state = "/run/berth"
//! disabled_plugins = []
//! [grpc]
//! address = "/run/berth/berthd.sock"
//! [plugins."io.containerd.grpc.v1.introspection"]
//! # per-plugin settings
//! [proxy_plugins.mysnap]
//! type = "snapshot"
//! address = "/run/mysnap.sock"
//! [metrics]
//! address = "127.0.0.1:1338"   # GET /v1/metrics (Prometheus); empty: off
//! grpc_histogram = false       # gRPC latency histogram
//! [debug]
//! address = "127.0.0.1:1339"   # GET /debug/state (JSON), /debug/pprof/profile; or a UNIX socket path; empty: off
//! ```
//!
//! Versions 1 to 3 are read: version 1's bare plugin ids (also in a file
//! without `version`) get their `type.id` names as containerd gives them;
//! the sections berth reads are named alike in versions 2 and 3
//! (`berthd config migrate` rewrites a file as version 3, see
//! [`crate::config_migrate`]).
//!
//! With no file, berthd runs on [`Config::default`]. Sections berthd does not
//! know are logged and ignored (containerd configs carry many); a file that
//! is not valid TOML, or whose known keys have the wrong type, is an error
//! that names the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default root directory for persistent data.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default state directory for runtime data (sockets, bundles).
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default gRPC socket address.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";
/// Default config file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// Errors reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or a known key has the wrong type.
    #[error("invalid config {path}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The file parsed but says something berthd cannot accept.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The daemon's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Config layout version; berth reads version 2 (and 3's common keys).
    pub version: i64,
    /// Persistent data directory.
    pub root: PathBuf,
    /// Runtime state directory.
    pub state: PathBuf,
    /// Directory holding extra config files merged in (containerd `imports`);
    /// accepted and ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    /// Address of the plugin directory (accepted for compatibility).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_dir: Option<String>,
    /// OOM score adjustment of the daemon (accepted for compatibility).
    pub oom_score: i64,
    /// Plugins not to load, by `type.id` or id (`io.containerd.snapshotter.v1.native`).
    pub disabled_plugins: Vec<String>,
    /// Plugins whose failure to initialise stops the daemon.
    pub required_plugins: Vec<String>,
    /// gRPC server settings.
    pub grpc: GrpcConfig,
    /// ttrpc server settings.
    pub ttrpc: TtrpcConfig,
    /// Debug endpoint settings.
    pub debug: DebugConfig,
    /// Metrics endpoint settings.
    pub metrics: MetricsConfig,
    /// Per-plugin configuration, keyed by `type.id`.
    pub plugins: BTreeMap<String, toml::Table>,
    /// Plugins served by other processes over gRPC.
    pub proxy_plugins: BTreeMap<String, ProxyPlugin>,
    /// Per-topic timeouts (accepted for compatibility).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<String, String>,
    /// `[cgroup]`: `path` puts berthd itself into that cgroup at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<toml::Table>,
    /// stream processors (accepted for compatibility).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_processors: Option<toml::Table>,
}

/// `[grpc]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GrpcConfig {
    /// UNIX socket path of the gRPC server.
    pub address: PathBuf,
    /// TCP address (not served by berth; accepted for compatibility).
    pub tcp_address: String,
    /// Owner uid of the socket.
    pub uid: u32,
    /// Owner gid of the socket.
    pub gid: u32,
    /// Maximum received message size.
    pub max_recv_message_size: usize,
    /// Maximum sent message size.
    pub max_send_message_size: usize,
}

/// `[ttrpc]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct TtrpcConfig {
    /// Owner uid of the ttrpc socket.
    pub uid: u32,
    /// Owner gid of the ttrpc socket.
    pub gid: u32,
}

/// `[debug]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct DebugConfig {
    /// Address of the debug endpoint (`GET /debug/state`, the daemon's state
    /// as JSON; `GET /debug/pprof/profile?seconds=N`, a CPU profile):
    /// `host:port`, or an absolute UNIX socket path (empty: off).
    pub address: String,
    /// Log level (`trace`, `debug`, `info`, `warn`, `error`).
    pub level: String,
    /// Log format (`text` or `json`; berth logs text).
    pub format: String,
    /// Owner uid of the debug socket.
    pub uid: u32,
    /// Owner gid of the debug socket.
    pub gid: u32,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct MetricsConfig {
    /// TCP address (`host:port`) of the Prometheus endpoint `GET /v1/metrics`
    /// (empty: off).
    pub address: String,
    /// Whether the gRPC latency histogram (`grpc_server_handling_seconds`)
    /// is collected.
    pub grpc_histogram: bool,
}

/// `[proxy_plugins.NAME]`: a plugin served by another process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxyPlugin {
    /// `snapshot` or `content`.
    #[serde(rename = "type")]
    pub kind: String,
    /// UNIX socket of the process serving the plugin.
    pub address: String,
    /// Platform the plugin supports (accepted for compatibility).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Exports advertised through introspection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exports: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            version: 2,
            root: PathBuf::from(DEFAULT_ROOT),
            state: PathBuf::from(DEFAULT_STATE),
            imports: Vec::new(),
            plugin_dir: None,
            oom_score: 0,
            disabled_plugins: Vec::new(),
            required_plugins: Vec::new(),
            grpc: GrpcConfig::default(),
            ttrpc: TtrpcConfig::default(),
            debug: DebugConfig::default(),
            metrics: MetricsConfig::default(),
            plugins: BTreeMap::new(),
            proxy_plugins: BTreeMap::new(),
            timeouts: BTreeMap::new(),
            cgroup: None,
            stream_processors: None,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> GrpcConfig {
        GrpcConfig {
            address: PathBuf::from(DEFAULT_ADDRESS),
            tcp_address: String::new(),
            uid: 0,
            gid: 0,
            max_recv_message_size: 16 << 20,
            max_send_message_size: 16 << 20,
        }
    }
}

/// Top-level keys berthd reads; anything else is logged and ignored, so a
/// containerd config with extra sections still loads.
const KNOWN_TOP_LEVEL: &[&str] = &[
    "version",
    "root",
    "state",
    "imports",
    "plugin_dir",
    "oom_score",
    "disabled_plugins",
    "required_plugins",
    "grpc",
    "ttrpc",
    "debug",
    "metrics",
    "plugins",
    "proxy_plugins",
    "timeouts",
    "cgroup",
    "stream_processors",
];

impl Config {
    /// Parses config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        };
        let table: toml::Table = text.parse().map_err(parse_error)?;
        for key in table.keys() {
            if !KNOWN_TOP_LEVEL.contains(&key.as_str()) {
                tracing::warn!(section = %key, config = %path.display(), "ignoring unknown config section");
            }
        }
        // Typed parse of the text itself, so type errors carry a span;
        // serde skips the unknown sections warned about above.
        let mut config: Config = toml::from_str(text).map_err(parse_error)?;
        // Version 1 (also a file without `version`, as containerd reads it)
        // names plugins by bare id: give them their `type.id` names.
        if table
            .get("version")
            .and_then(toml::Value::as_integer)
            .is_none_or(|v| v <= 1)
        {
            config.v1_plugin_names(path);
        }
        if config.version > 3 || config.version < 0 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "unsupported config version {} (berth reads versions 1 to 3; use version = 2)",
                    config.version
                ),
            });
        }
        let metrics = config.metrics.address.trim();
        if !metrics.is_empty() && metrics.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "metrics.address {metrics:?} is not host:port (e.g. \"127.0.0.1:1338\")"
                ),
            });
        }
        let debug = config.debug.address.trim();
        if !debug.is_empty()
            && !debug.starts_with('/')
            && debug.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "debug.address {debug:?} is neither host:port nor an absolute socket path"
                ),
            });
        }
        for (name, proxy) in &config.proxy_plugins {
            if proxy.kind != "snapshot" && proxy.kind != "content" {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "proxy_plugins.{name}: type {:?} is not supported (use \"snapshot\" or \"content\")",
                        proxy.kind
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Reads `path`. A missing file at the default path means defaults; a
    /// missing file that was asked for explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Renames version 1's bare plugin ids (`scheduler`) to their `type.id`
    /// names, in sections and in the disabled and required lists.
    fn v1_plugin_names(&mut self, path: &Path) {
        let mut renamed = Vec::new();
        self.plugins = std::mem::take(&mut self.plugins)
            .into_iter()
            .map(|(id, section)| {
                let full = v1_plugin_name(&id);
                if full != id {
                    renamed.push(id);
                }
                (full, section)
            })
            .collect();
        for list in [&mut self.disabled_plugins, &mut self.required_plugins] {
            for id in list.iter_mut() {
                let full = v1_plugin_name(id);
                if full != *id {
                    renamed.push(std::mem::replace(id, full));
                }
            }
        }
        if !renamed.is_empty() {
            tracing::warn!(
                config = %path.display(),
                plugins = ?renamed,
                "version 1 plugin names migrated; `berthd config migrate` rewrites the file as version 3"
            );
        }
    }

    /// The config section of plugin `type.id`, if any.
    pub fn plugin_section(&self, uri: &str) -> Option<&toml::Table> {
        self.plugins.get(uri)
    }

    /// The config as TOML text (what `berthd config default` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Bare v1 plugin ids containerd knew, with their `type.id` names.
const V1_PLUGINS: &[(&str, &str)] = &[
    ("cri", "io.containerd.grpc.v1.cri"),
    ("cgroups", "io.containerd.monitor.v1.cgroups"),
    ("linux", "io.containerd.runtime.v1.linux"),
    ("scheduler", "io.containerd.gc.v1.scheduler"),
    ("bolt", "io.containerd.metadata.v1.bolt"),
    ("task", "io.containerd.runtime.v2.task"),
    ("opt", "io.containerd.internal.v1.opt"),
    ("restart", "io.containerd.internal.v1.restart"),
    ("tracing", "io.containerd.internal.v1.tracing"),
    ("otlp", "io.containerd.tracing.processor.v1.otlp"),
    ("aufs", "io.containerd.snapshotter.v1.aufs"),
    ("btrfs", "io.containerd.snapshotter.v1.btrfs"),
    ("devmapper", "io.containerd.snapshotter.v1.devmapper"),
    ("native", "io.containerd.snapshotter.v1.native"),
    ("overlayfs", "io.containerd.snapshotter.v1.overlayfs"),
    ("zfs", "io.containerd.snapshotter.v1.zfs"),
];

/// The `type.id` name of a v1 plugin id (names with a dot are kept).
pub(crate) fn v1_plugin_name(id: &str) -> String {
    if id.contains('.') {
        return id.to_string();
    }
    if let Some((_, full)) = V1_PLUGINS.iter().find(|(short, _)| *short == id) {
        return (*full).to_string();
    }
    if id.ends_with("-service") {
        return format!("io.containerd.service.v1.{id}");
    }
    format!("io.containerd.grpc.v1.{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_defaults() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn reads_containerd_v2_layout() {
        let text = r#"
version = 2
root = "/tmp/r"
state = "/tmp/s"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
[grpc]
  address = "/tmp/s/sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pause"
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
[proxy_plugins.mysnap]
  type = "snapshot"
  address = "/run/mysnap.sock"
"#;
        let c = Config::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.grpc.address, PathBuf::from("/tmp/s/sock"));
        assert_eq!(
            c.disabled_plugins,
            vec!["io.containerd.snapshotter.v1.btrfs"]
        );
        assert!(c.plugin_section("io.containerd.grpc.v1.cri").is_some());
        assert_eq!(c.proxy_plugins["mysnap"].address, "/run/mysnap.sock");
    }

    #[test]
    fn unknown_sections_are_ignored() {
        let c =
            Config::parse("version = 2\n[something_new]\nx = 1\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.version, 2);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = Config::parse("version = 2\nroot = \n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("c.toml"), "{msg}");
    }

    #[test]
    fn type_error_names_the_line() {
        let err =
            Config::parse("version = 2\n\n[grpc]\naddress = 5\n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn metrics_and_debug_addresses() {
        let c = Config::parse(
            "[metrics]\naddress = \"127.0.0.1:1338\"\ngrpc_histogram = true\n[debug]\naddress = \"/run/berth/debug.sock\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.metrics.address, "127.0.0.1:1338");
        assert!(c.metrics.grpc_histogram);
        assert_eq!(c.debug.address, "/run/berth/debug.sock");
        assert!(
            Config::default().metrics.address.is_empty(),
            "off by default"
        );
        assert!(Config::default().debug.address.is_empty(), "off by default");
        let err =
            Config::parse("[metrics]\naddress = \"localhost\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("metrics.address"), "{err}");
        let err =
            Config::parse("[debug]\naddress = \"debug.sock\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("debug.address"), "{err}");
    }

    #[test]
    fn version_1_plugin_ids_get_full_names() {
        let c = Config::parse(
            "disabled_plugins = [\"btrfs\"]\n[plugins.scheduler]\npause_threshold = 0.1\n[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"5s\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.plugin_section("io.containerd.gc.v1.scheduler").is_some());
        assert!(
            c.plugin_section("io.containerd.internal.v1.restart")
                .is_some()
        );
        assert_eq!(c.disabled_plugins, ["io.containerd.snapshotter.v1.btrfs"]);
        // Version 2 names are taken as written.
        let c = Config::parse(
            "version = 2\n[plugins.scheduler]\nx = 1\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.plugin_section("scheduler").is_some());
    }

    #[test]
    fn bad_version_is_refused() {
        let err = Config::parse("version = 9\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml();
        assert_eq!(
            Config::parse(&text, Path::new("d.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn missing_default_file_is_defaults_but_explicit_is_error() {
        let p = Path::new("/nonexistent/berth/config.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(Config::load(p, true).is_err());
    }
}

/// A positive duration from a config value: a number of seconds, or a
/// string of a number with a unit `ms`, `s`, `m` or `h` (`"30s"`, `"5m"`).
pub fn parse_duration(v: &toml::Value) -> Option<std::time::Duration> {
    use std::time::Duration;
    let d = match v {
        toml::Value::Integer(n) => Duration::from_secs(u64::try_from(*n).ok()?),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit())?;
            let (n, unit) = s.split_at(split);
            let n: u64 = n.parse().ok()?;
            match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.checked_mul(60)?),
                "h" => Duration::from_secs(n.checked_mul(3600)?),
                _ => return None,
            }
        }
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        let p = |s: &str| parse_duration(&toml::Value::String(s.into()));
        assert_eq!(p("30s"), Some(Duration::from_secs(30)));
        assert_eq!(p("5m"), Some(Duration::from_secs(300)));
        assert_eq!(p("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_duration(&toml::Value::Integer(7)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(p("soon"), None);
        assert_eq!(p("0s"), None);
        assert_eq!(p("5"), None);
    }
}
