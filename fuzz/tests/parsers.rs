//! One bounded fuzz run per parser of outside input; each asserts the parser
//! returns (`Ok` or `Err`) and never panics. See the crate docs and README
//! for longer runs.

use std::borrow::Cow;
use std::path::Path;

use berth_fuzz::{Target, run};
use berth_images::{Descriptor, Platform, Reference, manifest, media};

/// Runs of plain in-memory parsers: cheap, so many inputs.
const PARSER_ITERS: u64 = 20_000;

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

#[test]
fn image_reference() {
    let target = Target {
        name: "reference",
        default_iters: PARSER_ITERS,
        dictionary: &[
            "docker.io/",
            "library/",
            "localhost:5000/",
            ":latest",
            "@sha256:",
            "sha256:",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "[::1]:5000/",
            "__",
            "--",
        ],
        max_len: 512,
    };
    run(&target, |data| {
        let s = text(data);
        for parse in [Reference::parse, Reference::parse_normalized] {
            let Ok(r) = parse(&s) else { continue };
            // What a parsed reference prints must parse again, the same.
            let again = parse(&r.to_string()).expect("reparse");
            assert_eq!(again.to_string(), r.to_string());
            let _ = (r.familiar(), r.locator(), r.object(), r.name_only());
            let _ = r.with_tag("v1");
        }
        let _ = Platform::parse(&s).map(|p| p.normalize());
    });
}

#[test]
fn manifest_index_config_json() {
    let target = Target {
        name: "manifest",
        default_iters: PARSER_ITERS,
        dictionary: &[
            r#""mediaType":"#,
            r#""schemaVersion":"#,
            r#""manifests":[]"#,
            r#""layers":[]"#,
            r#""config":{}"#,
            r#""platform":{"os":"linux","architecture":"arm","variant":"v7"}"#,
            r#""digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""#,
            r#""size":-1"#,
            r#""size":18446744073709551616"#,
            "null",
            "1e400",
            r#""\ud800""#,
            media::OCI_MANIFEST,
            media::OCI_INDEX,
            media::DOCKER_MANIFEST_LIST,
        ],
        max_len: 16 << 10,
    };
    run(&target, |data| {
        for mt in [media::OCI_MANIFEST, media::DOCKER_MANIFEST] {
            let _ = manifest::parse_manifest(&Descriptor::of(mt, data), data);
        }
        for mt in [media::OCI_INDEX, media::DOCKER_MANIFEST_LIST] {
            if let Ok(index) = manifest::parse_index(&Descriptor::of(mt, data), data) {
                let mut manifests = index.manifests;
                for p in manifests.iter().filter_map(|d| d.platform.as_ref()) {
                    let _ = p.normalize();
                }
                berth_images::Matcher::host().sort_descriptors(&mut manifests);
            }
        }
        for mt in [media::OCI_CONFIG, media::DOCKER_CONFIG] {
            if let Ok(config) = manifest::parse_config(&Descriptor::of(mt, data), data) {
                let _ = config.platform();
                let _ = manifest::chain_ids(&config.rootfs.diff_ids);
            }
        }
        // A descriptor whose size or digest does not match is refused.
        let _ = manifest::parse_manifest(&Descriptor::of(media::OCI_MANIFEST, b"x"), data);
    });
}

/// The filter syntax, matched against a fixed object.
struct Object;

impl berth_filters::Adaptor for Object {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        match fieldpath {
            ["topic"] => Some("/tasks/exit".into()),
            ["namespace"] => Some("default".into()),
            ["labels", "a.b"] => Some("c,d".into()),
            ["name"] => Some("".into()),
            _ => None,
        }
    }
}

#[test]
fn containerd_filters() {
    let target = Target {
        name: "filters",
        default_iters: PARSER_ITERS,
        dictionary: &[
            "==", "!=", "~=", ",", "|", ".", "\"", "\\", "/", "labels.", "topic", "(", ")", "*",
            "^", "$", "[", "]", "{", "}", "\\x",
        ],
        max_len: 512,
    };
    run(&target, |data| {
        let s = text(data);
        if let Ok(f) = berth_filters::parse(&s) {
            let _ = f.matches(&Object);
        }
        let parts: Vec<&str> = s.split('\n').collect();
        if let Ok(f) = berth_filters::parse_all(&parts) {
            let _ = f.matches(&Object);
        }
    });
}

#[test]
fn daemon_config_toml() {
    let target = Target {
        name: "config",
        default_iters: PARSER_ITERS / 4,
        dictionary: &[
            "version = 2\n",
            "version = 3\n",
            "[grpc]\n",
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n",
            "[proxy_plugins.p]\n",
            "address = ",
            "\"\"",
            "= -1\n",
            "= 9223372036854775807\n",
            "= \"1h\"\n",
            "= \"-5s\"\n",
            "= \"99999999999999h\"\n",
            "= [",
            "]\n",
            "= {}\n",
            "imports = [\"/nonexistent/*.toml\"]\n",
        ],
        max_len: 8 << 10,
    };
    run(&target, |data| {
        let s = text(data);
        if let Ok(config) = berth_daemon::config::Config::parse(&s, Path::new("config.toml")) {
            let _ = config.to_toml();
        }
    });
}

#[test]
fn registry_hosts_toml() {
    let target = Target {
        name: "hosts",
        default_iters: PARSER_ITERS / 4,
        dictionary: &[
            "server = ",
            "[host.\"https://mirror:5000\"]\n",
            "[host.\"http://[::1]\"]\n",
            "capabilities = [\"pull\", \"resolve\", \"push\"]\n",
            "skip_verify = true\n",
            "ca = ",
            "client = [[\"a.crt\", \"a.key\"]]\n",
            "override_path = true\n",
            "[header]\n",
            "\"\"",
            "://",
            "\n",
        ],
        max_len: 8 << 10,
    };
    run(&target, |data| {
        let s = text(data);
        if let Ok(hosts) = berth_remotes::hosts::parse_hosts_toml(&s, Path::new("/etc/hosts.d")) {
            for h in &hosts {
                let _ = h.is_mirror_of("docker.io");
            }
        }
    });
}
