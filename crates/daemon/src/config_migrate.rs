//! `berthd config migrate`: a version 1 or 2 config rewritten as version 3,
//! as `containerd config migrate` does for containerd 2.x.
//!
//! - 1 to 2: plugin sections and `disabled_plugins` / `required_plugins`
//!   named by bare id (`cri`, `scheduler`) get their `type.id` name.
//! - 2 to 3: containerd 2 split the CRI plugin: image settings move to
//!   `io.containerd.cri.v1.images` (`sandbox_image` becomes
//!   `pinned_images.sandbox`), runtime settings to
//!   `io.containerd.cri.v1.runtime`; `io.containerd.grpc.v1.cri` keeps the
//!   streaming server. berth serves no CRI, but carries the sections over so
//!   the file works with containerd 2 too. Everything else is unchanged.

use std::path::Path;

use crate::config::{Config, ConfigError, v1_plugin_name};

/// The CRI section of version 2 and the two sections version 3 adds.
const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_IMAGES: &str = "io.containerd.cri.v1.images";
const CRI_RUNTIME: &str = "io.containerd.cri.v1.runtime";
/// Keys of the CRI section that stay: its streaming server.
const CRI_SERVER_KEYS: &[&str] = &[
    "disable_tcp_service",
    "stream_server_address",
    "stream_server_port",
    "stream_idle_timeout",
    "enable_tls_streaming",
    "x509_key_pair_streaming",
];
/// Top-level CRI keys that belong to the images plugin.
const CRI_IMAGE_KEYS: &[&str] = &[
    "registry",
    "image_decryption",
    "max_concurrent_downloads",
    "image_pull_progress_timeout",
    "image_pull_with_sync_fs",
    "stats_collect_period",
];
/// Keys of CRI's `containerd` table that belong to the images plugin.
const CRI_CONTAINERD_IMAGE_KEYS: &[&str] = &[
    "snapshotter",
    "disable_snapshot_annotations",
    "discard_unpacked_layers",
];

/// Rewrites config `text` (read from `path`) as a version 3 config.
pub fn migrate(text: &str, path: &Path) -> Result<String, ConfigError> {
    // Validates first, so a broken file gets the usual error with a line.
    Config::parse(text, path)?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
    let version = table
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    if version < 2 {
        migrate_v1(&mut table);
    }
    if version < 3
        && let Some(toml::Value::Table(plugins)) = table.get_mut("plugins")
    {
        split_cri(plugins);
    }
    table.insert("version".to_string(), toml::Value::Integer(3));
    toml::to_string_pretty(&table).map_err(|e| invalid(format!("cannot render: {e}")))
}

fn migrate_v1(table: &mut toml::Table) {
    if let Some(toml::Value::Table(plugins)) = table.remove("plugins") {
        let renamed = plugins
            .into_iter()
            .map(|(id, v)| (v1_plugin_name(&id), v))
            .collect();
        table.insert("plugins".to_string(), toml::Value::Table(renamed));
    }
    for key in ["disabled_plugins", "required_plugins"] {
        if let Some(toml::Value::Array(list)) = table.get_mut(key) {
            for v in list.iter_mut() {
                if let toml::Value::String(s) = v {
                    *s = v1_plugin_name(s);
                }
            }
        }
    }
}

/// Moves image and runtime settings out of the v2 CRI section.
fn split_cri(plugins: &mut toml::Table) {
    let Some(toml::Value::Table(cri)) = plugins.remove(CRI_V2) else {
        return;
    };
    let mut server = toml::Table::new();
    let mut images = toml::Table::new();
    let mut runtime = toml::Table::new();
    for (key, value) in cri {
        if CRI_SERVER_KEYS.contains(&key.as_str()) {
            server.insert(key, value);
        } else if CRI_IMAGE_KEYS.contains(&key.as_str()) {
            images.insert(key, value);
        } else if key == "sandbox_image" {
            let mut pinned = toml::Table::new();
            pinned.insert("sandbox".to_string(), value);
            images.insert("pinned_images".to_string(), toml::Value::Table(pinned));
        } else if key == "containerd" {
            let toml::Value::Table(mut containerd) = value else {
                runtime.insert(key, value);
                continue;
            };
            for image_key in CRI_CONTAINERD_IMAGE_KEYS {
                if let Some(v) = containerd.remove(*image_key) {
                    images.insert((*image_key).to_string(), v);
                }
            }
            runtime.insert(key, toml::Value::Table(containerd));
        } else {
            runtime.insert(key, value);
        }
    }
    for (name, section) in [
        (CRI_V2, server),
        (CRI_IMAGES, images),
        (CRI_RUNTIME, runtime),
    ] {
        if !section.is_empty() {
            plugins.insert(name.to_string(), toml::Value::Table(section));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated(text: &str) -> toml::Table {
        migrate(text, Path::new("c.toml")).unwrap().parse().unwrap()
    }

    #[test]
    fn version_1_gets_full_plugin_names() {
        let t = migrated(
            "root = \"/r\"\ndisabled_plugins = [\"btrfs\", \"diff-service\"]\n[plugins.scheduler]\npause_threshold = 0.05\n[plugins.foo]\nx = 1\n",
        );
        assert_eq!(t["version"].as_integer(), Some(3));
        assert_eq!(t["root"].as_str(), Some("/r"));
        let plugins = t["plugins"].as_table().unwrap();
        assert_eq!(
            plugins["io.containerd.gc.v1.scheduler"]["pause_threshold"].as_float(),
            Some(0.05)
        );
        assert!(plugins.contains_key("io.containerd.grpc.v1.foo"));
        let disabled: Vec<&str> = t["disabled_plugins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(
            disabled,
            [
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.service.v1.diff-service"
            ]
        );
    }

    #[test]
    fn version_2_cri_section_is_split() {
        let t = migrated(
            r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "registry.k8s.io/pause:3.9"
stream_server_address = "127.0.0.1"
enable_selinux = true
[plugins."io.containerd.grpc.v1.cri".containerd]
snapshotter = "overlayfs"
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".registry]
config_path = "/etc/containerd/certs.d"
[plugins."io.containerd.transfer.v1.local"]
stall_timeout = "30s"
"#,
        );
        let p = t["plugins"].as_table().unwrap();
        let images = p[CRI_IMAGES].as_table().unwrap();
        assert_eq!(
            images["pinned_images"]["sandbox"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert_eq!(images["snapshotter"].as_str(), Some("overlayfs"));
        assert!(images.contains_key("registry"));
        let runtime = p[CRI_RUNTIME].as_table().unwrap();
        assert_eq!(runtime["enable_selinux"].as_bool(), Some(true));
        assert_eq!(
            runtime["containerd"]["default_runtime_name"].as_str(),
            Some("runc")
        );
        assert_eq!(
            p[CRI_V2].as_table().unwrap().keys().collect::<Vec<_>>(),
            ["stream_server_address"]
        );
        assert_eq!(
            p["io.containerd.transfer.v1.local"]["stall_timeout"].as_str(),
            Some("30s")
        );
    }

    #[test]
    fn output_is_a_config_berthd_reads() {
        let out = migrate("version = 2\nroot = \"/r\"\n", Path::new("c.toml")).unwrap();
        let c = Config::parse(&out, Path::new("m.toml")).unwrap();
        assert_eq!(c.version, 3);
        assert_eq!(c.root, std::path::PathBuf::from("/r"));
    }
}
