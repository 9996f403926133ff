//! `[plugins."io.containerd.grpc.v1.cri"]`: containerd's option names and
//! defaults (containerd 1.6). Options berth does not act on are accepted
//! and ignored, as containerd ignores keys it does not know.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The CRI plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CriConfig {
    /// Image of every pod's pause container.
    pub sandbox_image: String,
    /// Clamp containers' `oom_score_adj` to no lower than the daemon's own
    /// (for daemons that may not lower it, e.g. in a user namespace).
    pub restrict_oom_score_adj: bool,
    /// CNI settings.
    pub cni: CniConfig,
    /// Snapshotter and runtime handlers.
    pub containerd: ContainerdConfig,
    /// Registry mirrors and hosts directory.
    pub registry: RegistryConfig,
    /// Longest log line written whole; longer lines are split in partial
    /// (`P`) lines. Negative: no limit.
    pub max_container_log_line_size: i64,
    /// Address of the streaming server (exec, attach, port-forward).
    pub stream_server_address: String,
    /// Port of the streaming server ("0": any free port).
    pub stream_server_port: String,
    /// A streaming connection with no traffic for this long is closed (Go
    /// duration, e.g. "4h0m0s", "30m").
    pub stream_idle_timeout: String,
    /// Serve the streaming server over TLS (not supported by berth yet:
    /// starting fails with a clear error when set).
    pub enable_tls_streaming: bool,
    /// Set `net.ipv4.ip_unprivileged_port_start=0` in pods with their own network.
    pub enable_unprivileged_ports: bool,
    /// Set `net.ipv4.ping_group_range=0 2147483647` in pods with their own network.
    pub enable_unprivileged_icmp: bool,
}

impl Default for CriConfig {
    fn default() -> CriConfig {
        CriConfig {
            sandbox_image: "k8s.gcr.io/pause:3.6".to_string(),
            restrict_oom_score_adj: false,
            cni: CniConfig::default(),
            containerd: ContainerdConfig::default(),
            registry: RegistryConfig::default(),
            max_container_log_line_size: 16 * 1024,
            stream_server_address: "127.0.0.1".to_string(),
            stream_server_port: "0".to_string(),
            stream_idle_timeout: "4h0m0s".to_string(),
            enable_tls_streaming: false,
            enable_unprivileged_ports: false,
            enable_unprivileged_icmp: false,
        }
    }
}

/// `cni`: where plugins and network configurations are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CniConfig {
    /// Directory of the CNI plugin binaries.
    pub bin_dir: PathBuf,
    /// Directory of the network configurations (`.conflist`, `.conf`, `.json`).
    pub conf_dir: PathBuf,
    /// How many configurations (in file name order) each pod is attached to.
    pub max_conf_num: usize,
}

impl Default for CniConfig {
    fn default() -> CniConfig {
        CniConfig {
            bin_dir: PathBuf::from("/opt/cni/bin"),
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            max_conf_num: 1,
        }
    }
}

/// `containerd`: snapshotter and runtime handlers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ContainerdConfig {
    /// Snapshotter of pod and container root filesystems.
    pub snapshotter: String,
    /// The handler used when a pod names none.
    pub default_runtime_name: String,
    /// Runtime handlers by name.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

impl Default for ContainerdConfig {
    fn default() -> ContainerdConfig {
        ContainerdConfig {
            snapshotter: "overlayfs".to_string(),
            default_runtime_name: "runc".to_string(),
            runtimes: BTreeMap::from([(
                "runc".to_string(),
                RuntimeHandler {
                    runtime_type: "io.containerd.runc.v2".to_string(),
                    options: toml::Table::new(),
                },
            )]),
        }
    }
}

/// `containerd.runtimes.<handler>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuntimeHandler {
    /// The containerd runtime (shim) name, e.g. `io.containerd.runc.v2`.
    pub runtime_type: String,
    /// The runtime's options (for runc: `SystemdCgroup`, `BinaryName`, ...).
    pub options: toml::Table,
}

/// `registry`: mirrors and a `hosts.toml` directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Directory of `<host>/hosts.toml` files.
    pub config_path: String,
    /// Mirrors by registry host (`docker.io`, or `*` for every host).
    pub mirrors: BTreeMap<String, Mirror>,
}

/// `registry.mirrors.<host>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mirror {
    /// Endpoints tried in order (`http://127.0.0.1:5000`).
    pub endpoint: Vec<String>,
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "[plugins.\"io.containerd.grpc.v1.cri\"]: {0} (use containerd's option names and types, e.g. sandbox_image = \"registry/pause:3.6\")"
)]
pub struct ConfigError(String);

impl CriConfig {
    /// Reads the plugin's section; `None` gives the defaults.
    pub fn from_section(section: Option<&toml::Table>) -> Result<CriConfig, ConfigError> {
        let Some(section) = section else {
            return Ok(CriConfig::default());
        };
        let mut config: CriConfig = toml::Value::Table(section.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        // A config naming its own runtimes keeps containerd's runc unless it
        // replaces it.
        config
            .containerd
            .runtimes
            .entry("runc".to_string())
            .or_insert_with(|| RuntimeHandler {
                runtime_type: "io.containerd.runc.v2".to_string(),
                options: toml::Table::new(),
            });
        Ok(config)
    }

    /// Reads a version 3 (containerd 2) configuration, whose CRI settings
    /// are split over `io.containerd.cri.v1.runtime` (cni, containerd,
    /// log and OOM settings), `io.containerd.cri.v1.images` (snapshotter,
    /// registry, `pinned_images.sandbox`) and `io.containerd.grpc.v1.cri`
    /// (the streaming server): merged into the version 2 shape.
    pub fn from_v3_sections(
        grpc: Option<&toml::Table>,
        runtime: Option<&toml::Table>,
        images: Option<&toml::Table>,
    ) -> Result<CriConfig, ConfigError> {
        let mut merged = grpc.cloned().unwrap_or_default();
        if let Some(r) = runtime {
            for (k, v) in r {
                merged.insert(k.clone(), v.clone());
            }
            // containerd 2.1 lists plugin directories; berth uses the first.
            let cni = merged.get_mut("cni").and_then(toml::Value::as_table_mut);
            if let Some(cni) = cni {
                let first = cni
                    .get("bin_dirs")
                    .and_then(toml::Value::as_array)
                    .and_then(|a| a.first())
                    .cloned();
                if let Some(first) = first {
                    cni.entry("bin_dir").or_insert(first);
                }
                cni.remove("bin_dirs");
            }
        }
        if let Some(i) = images {
            if let Some(s) = i.get("snapshotter") {
                let containerd = merged
                    .entry("containerd")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(t) = containerd.as_table_mut() {
                    t.insert("snapshotter".to_string(), s.clone());
                }
            }
            if let Some(r) = i.get("registry") {
                merged.insert("registry".to_string(), r.clone());
            }
            if let Some(s) = i.get("pinned_images").and_then(|p| p.get("sandbox")) {
                merged.insert("sandbox_image".to_string(), s.clone());
            }
        }
        CriConfig::from_section(Some(&merged))
    }

    /// The runtime handler `name` (empty: the default).
    pub fn handler(&self, name: &str) -> Option<(&str, &RuntimeHandler)> {
        let name = if name.is_empty() {
            self.containerd.default_runtime_name.as_str()
        } else {
            name
        };
        self.containerd
            .runtimes
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_options_are_ignored_and_known_ones_read() {
        let text = r#"
            sandbox_image = "localhost:5000/pause:1"
            restrict_oom_score_adj = true
            some_future_option = 3
            [cni]
            bin_dir = "/usr/lib/cni"
            max_conf_num = 2
            [containerd]
            default_runtime_name = "runc"
            [containerd.runtimes.runc]
            runtime_type = "io.containerd.runc.v2"
            [containerd.runtimes.runc.options]
            SystemdCgroup = false
            [registry.mirrors."docker.io"]
            endpoint = ["http://127.0.0.1:5000"]
        "#;
        let table: toml::Table = text.parse().expect("toml");
        let c = CriConfig::from_section(Some(&table)).expect("config");
        assert_eq!(c.sandbox_image, "localhost:5000/pause:1");
        assert!(c.restrict_oom_score_adj);
        assert_eq!(c.cni.bin_dir, PathBuf::from("/usr/lib/cni"));
        assert_eq!(c.cni.max_conf_num, 2);
        assert_eq!(c.cni.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            c.registry.mirrors["docker.io"].endpoint,
            vec!["http://127.0.0.1:5000".to_string()]
        );
        assert_eq!(
            c.handler("").map(|(n, h)| (n, h.runtime_type.as_str())),
            Some(("runc", "io.containerd.runc.v2"))
        );
    }

    #[test]
    fn version_3_sections_merge_into_one() {
        let runtime: toml::Table = r#"
            enable_unprivileged_ports = true
            [cni]
            bin_dirs = ["/usr/lib/cni"]
            [containerd.runtimes.runc]
            runtime_type = "io.containerd.runc.v2"
        "#
        .parse()
        .expect("toml");
        let images: toml::Table = r#"
            snapshotter = "native"
            [pinned_images]
            sandbox = "localhost:5000/pause:2"
            [registry]
            config_path = "/etc/berth/certs.d"
        "#
        .parse()
        .expect("toml");
        let c = CriConfig::from_v3_sections(None, Some(&runtime), Some(&images)).expect("config");
        assert!(c.enable_unprivileged_ports);
        assert_eq!(c.cni.bin_dir, PathBuf::from("/usr/lib/cni"));
        assert_eq!(c.containerd.snapshotter, "native");
        assert_eq!(c.sandbox_image, "localhost:5000/pause:2");
        assert_eq!(c.registry.config_path, "/etc/berth/certs.d");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let table: toml::Table = "max_container_log_line_size = \"big\""
            .parse()
            .expect("toml");
        let e = CriConfig::from_section(Some(&table)).expect_err("bad type");
        assert!(e.to_string().contains("max_container_log_line_size"), "{e}");
    }
}
