//! The full configuration `berthd config default` and `config dump` print:
//! every section berthd reads, with each key's default filled in where the
//! file left it out, as `containerd config default` shows every plugin's
//! settings. The output is itself a valid config that berthd reads back.

use std::collections::BTreeMap;

use crate::config::Config;

/// `(plugin section, key, default)` for each plugin setting berthd reads.
fn plugin_defaults() -> Vec<(&'static str, &'static str, toml::Value)> {
    use toml::Value::{Float, Integer, String as Str};
    vec![
        (
            "io.containerd.gc.v1.scheduler",
            "pause_threshold",
            Float(0.02),
        ),
        (
            "io.containerd.gc.v1.scheduler",
            "deletion_threshold",
            Integer(0),
        ),
        (
            "io.containerd.gc.v1.scheduler",
            "mutation_threshold",
            Integer(100),
        ),
        (
            "io.containerd.gc.v1.scheduler",
            "schedule_delay",
            Str("0s".into()),
        ),
        (
            "io.containerd.gc.v1.scheduler",
            "startup_delay",
            Str("100ms".into()),
        ),
        (
            "io.containerd.internal.v1.restart",
            "interval",
            Str("10s".into()),
        ),
        (
            "io.containerd.runtime.v2.task",
            "shims",
            toml::Value::Table(toml::Table::new()),
        ),
        (
            "io.containerd.snapshotter.v1.blockfile",
            "fs_type",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.blockfile",
            "mount_options",
            toml::Value::Array(Vec::new()),
        ),
        (
            "io.containerd.snapshotter.v1.blockfile",
            "recreate_scratch",
            toml::Value::Boolean(false),
        ),
        (
            "io.containerd.snapshotter.v1.blockfile",
            "root_path",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.blockfile",
            "scratch_file",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.btrfs",
            "root_path",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.erofs",
            "root_path",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.native",
            "root_path",
            Str(String::new()),
        ),
        (
            "io.containerd.snapshotter.v1.overlayfs",
            "root_path",
            Str(String::new()),
        ),
        (
            "io.containerd.transfer.v1.local",
            "stall_timeout",
            Str("60s".into()),
        ),
        (
            "io.containerd.tracing.processor.v1.otlp",
            "endpoint",
            Str(String::new()),
        ),
        (
            "io.containerd.tracing.processor.v1.otlp",
            "protocol",
            Str("http/protobuf".into()),
        ),
        (
            "io.containerd.internal.v1.tracing",
            "sampling_ratio",
            Float(1.0),
        ),
        (
            "io.containerd.internal.v1.tracing",
            "service_name",
            Str("berthd".into()),
        ),
    ]
}

/// `config` with every plugin default and every top-level section present.
pub fn complete(config: &Config) -> Config {
    let mut full = config.clone();
    for (section, key, value) in plugin_defaults() {
        full.plugins
            .entry(section.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert(value);
    }
    full.cgroup
        .get_or_insert_with(toml::Table::new)
        .entry("path".to_string())
        .or_insert_with(|| toml::Value::String(String::new()));
    if full.debug.format.is_empty() {
        full.debug.format = "text".to_string();
    }
    if full.debug.level.is_empty() {
        full.debug.level = "info".to_string();
    }
    full
}

/// The TOML of `config` with its defaults filled in, including the sections
/// an empty value would leave out (`imports`, `plugin_dir`, `timeouts`,
/// `stream_processors`).
pub fn render(config: &Config) -> String {
    let full = complete(config);
    let mut table = match toml::Table::try_from(&full) {
        Ok(t) => t,
        Err(e) => return format!("# cannot render config: {e}\n"),
    };
    table
        .entry("imports")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    table
        .entry("plugin_dir")
        .or_insert_with(|| toml::Value::String(String::new()));
    table
        .entry("timeouts")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    table
        .entry("stream_processors")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    // Scalars first, then sections: TOML needs keys before tables.
    let (scalars, sections): (BTreeMap<_, _>, BTreeMap<_, _>) =
        table.into_iter().partition(|(_, v)| !v.is_table());
    let mut ordered = toml::Table::new();
    ordered.extend(scalars);
    ordered.extend(sections);
    toml::to_string_pretty(&ordered).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn default_shows_every_section_and_reads_back() {
        let text = render(&Config::default());
        for section in [
            "[grpc]",
            "[ttrpc]",
            "[debug]",
            "[metrics]",
            "[cgroup]",
            "[timeouts]",
            "[plugins.\"io.containerd.gc.v1.scheduler\"]",
            "[plugins.\"io.containerd.transfer.v1.local\"]",
            "[plugins.\"io.containerd.internal.v1.restart\"]",
            "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]",
        ] {
            assert!(text.contains(section), "{section} missing from\n{text}");
        }
        assert!(text.contains("stall_timeout = \"60s\""), "{text}");
        let back = Config::parse(&text, Path::new("default.toml")).unwrap();
        assert_eq!(back.root, Config::default().root);
        assert_eq!(render(&back), text, "rendering is a fixed point");
    }

    #[test]
    fn file_values_win_over_defaults() {
        let c = Config::parse(
            "version = 2\n[plugins.\"io.containerd.transfer.v1.local\"]\nstall_timeout = \"5m\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let text = render(&c);
        assert!(text.contains("stall_timeout = \"5m\""), "{text}");
        assert!(text.contains("mutation_threshold = 100"), "{text}");
    }
}
