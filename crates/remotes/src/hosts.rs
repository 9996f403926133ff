//! Which endpoints serve a registry: containerd's `certs.d/<host>/hosts.toml`.
//!
//! For a registry host named in a reference (`docker.io`,
//! `localhost:5000`), [`HostsConfig::registry_hosts`] returns the ordered
//! list of [`RegistryHost`] endpoints to try: the mirrors of `hosts.toml`
//! (`[host."https://mirror"]` tables, in file order) and then the registry
//! itself (`server`, or the default for the name). A request goes to each
//! endpoint that has the capability it needs, in order, until one answers.
//!
//! ```toml
//! # /etc/berth/certs.d/docker.io/hosts.toml
//! server = "https://registry-1.docker.io"
//!
//! [host."http://127.0.0.1:5001"]
//!   capabilities = ["pull", "resolve"]
//!
//! [host."https://mirror.example"]
//!   capabilities = ["pull"]
//!   ca = "mirror-ca.pem"          # relative to the hosts.toml directory
//!   skip_verify = false
//!   client = [["client.cert", "client.key"]]
//!   override_path = true          # the URL path is the API root, no /v2 appended
//!   [host."https://mirror.example".header]
//!     x-custom = "1"
//! ```
//!
//! The directory for a host is looked up as containerd does:
//! `<dir>/<host>_<port>_` (for `host:port`), `<dir>/<host:port>`, then
//! `<dir>/_default`. A directory without `hosts.toml` contributes its
//! `*.crt` files as CAs and `*.cert`/`*.key` pairs as client certificates.
//!
//! Without configuration: `docker.io` is `https://registry-1.docker.io/v2`;
//! `localhost` and loopback addresses use plain HTTP; everything else HTTPS,
//! unless [`HostsConfig::plain_http`] is set.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// What an endpoint may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Resolve a tag to a digest (only trusted endpoints should).
    pub resolve: bool,
    /// Push blobs and manifests.
    pub push: bool,
}

impl Capabilities {
    /// Every capability.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };

    /// Whether every capability of `other` is in `self`.
    pub fn has(&self, other: Capabilities) -> bool {
        (self.pull || !other.pull) && (self.resolve || !other.resolve) && (self.push || !other.push)
    }
}

/// One endpoint serving a registry's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API root path, normally `/v2`.
    pub path: String,
    /// What the endpoint is used for.
    pub capabilities: Capabilities,
    /// Skip TLS certificate verification (`None`: the default, verify).
    pub skip_verify: Option<bool>,
    /// Extra CA certificate files (PEM), trusted besides the system's.
    pub ca: Vec<PathBuf>,
    /// Client certificates: (certificate PEM, key PEM, or `None` if the key
    /// is in the certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl RegistryHost {
    /// An endpoint `scheme://host/v2` with every capability and default TLS.
    pub fn new(scheme: &str, host: &str) -> RegistryHost {
        RegistryHost {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path: "/v2".to_owned(),
            capabilities: Capabilities::ALL,
            skip_verify: None,
            ca: Vec::new(),
            client: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Whether this endpoint is a mirror of registry `name` rather than the
    /// registry itself (requests then carry `?ns=<name>`, as containerd's do).
    pub fn is_mirror_of(&self, name: &str) -> bool {
        name != self.host && !(name == "docker.io" && self.host == "registry-1.docker.io")
    }
}

/// How registry names map to endpoints: a `certs.d`-style directory and the
/// plain-HTTP default.
#[derive(Debug, Clone, Default)]
pub struct HostsConfig {
    /// The root of the per-host directories (`/etc/berth/certs.d`), if any.
    pub dir: Option<PathBuf>,
    /// Use `http://` for registries that configuration does not say
    /// otherwise about (the `--plain-http` flag).
    pub plain_http: bool,
}

impl HostsConfig {
    /// The endpoints for registry `name`, mirrors first.
    ///
    /// Errors: [`Error::Io`] for an unreadable directory or file,
    /// [`Error::InvalidArgument`] for a malformed `hosts.toml`.
    pub fn registry_hosts(&self, name: &str) -> Result<Vec<RegistryHost>> {
        let mut hosts = match self.dir.as_deref().and_then(|d| host_dir(d, name)) {
            Some(dir) => {
                tracing::debug!(dir = %dir.display(), "loading host directory");
                load_host_dir(&dir)?
            }
            None => Vec::new(),
        };
        if hosts.is_empty() {
            hosts.push(RegistryHost::new("", ""));
        }
        // The last entry stands for the registry itself; fill in what the
        // configuration left out.
        if let Some(last) = hosts.last_mut()
            && last.host.is_empty()
        {
            if name == "docker.io" {
                last.scheme = "https".into();
                last.host = "registry-1.docker.io".into();
            } else {
                last.host = name.to_owned();
                last.scheme = if self.plain_http || is_localhost(name) {
                    "http".into()
                } else {
                    "https".into()
                };
            }
            last.path = "/v2".into();
            last.capabilities = Capabilities::ALL;
        }
        Ok(hosts)
    }
}

/// Whether `host` (with or without port) is `localhost` or a loopback address.
pub fn is_localhost(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The existing directory for `name` under `root`, as containerd looks it up.
fn host_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some((h, port)) = name.rsplit_once(':') {
        candidates.push(root.join(format!("{h}_{port}_")));
    }
    candidates.push(root.join(name));
    candidates.push(root.join("_default"));
    candidates.into_iter().find(|p| p.is_dir())
}

/// Reads the endpoints of one host directory.
fn load_host_dir(dir: &Path) -> Result<Vec<RegistryHost>> {
    let file = dir.join("hosts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => parse_hosts_toml(&text, dir).map_err(|e| match e {
            Error::InvalidArgument(msg) => {
                Error::InvalidArgument(format!("{}: {msg}", file.display()))
            }
            other => other,
        }),
        Ok(_) => load_cert_files(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => load_cert_files(dir),
        Err(source) => Err(Error::Io { path: file, source }),
    }
}

/// Docker's `certs.d` layout: `*.crt` CAs and `*.cert` + `*.key` client pairs,
/// for the registry itself.
fn load_cert_files(dir: &Path) -> Result<Vec<RegistryHost>> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut host = RegistryHost::new("", "");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for p in names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => host.ca.push(p),
            Some("cert") => {
                let key = p.with_extension("key");
                let key = key.is_file().then_some(key);
                host.client.push((p, key));
            }
            _ => {}
        }
    }
    Ok(vec![host])
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One `client` entry: a combined file or a `[cert, key]` pair.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientEntry {
    One(String),
    Pair(Vec<String>),
}

/// `client = "a.pem"` or `client = ["a.pem", ["b.cert", "b.key"]]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientConfig {
    One(String),
    Many(Vec<ClientEntry>),
}

/// The settings of one endpoint in `hosts.toml`.
#[derive(Debug, Default, Deserialize)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<ClientConfig>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
}

/// A whole `hosts.toml`: the server's settings at the top level, mirrors in
/// `[host."..."]`.
#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    host: BTreeMap<String, toml::Spanned<HostEntry>>,
    #[serde(flatten)]
    top: HostEntry,
}

/// Parses a `hosts.toml`; relative file names are relative to `base`.
///
/// Returns the mirrors in file order and then the server; a server entry
/// with an empty `host` means "the registry itself" (filled in by
/// [`HostsConfig::registry_hosts`]).
pub fn parse_hosts_toml(text: &str, base: &Path) -> Result<Vec<RegistryHost>> {
    let file: HostsFile = toml::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("invalid hosts.toml: {e}")))?;
    let mut mirrors: Vec<(String, toml::Spanned<HostEntry>)> = file.host.into_iter().collect();
    mirrors.sort_by_key(|(_, entry)| entry.span().start);
    let mut hosts = Vec::with_capacity(mirrors.len() + 1);
    for (server, entry) in mirrors {
        hosts.push(host_config(Some(&server), entry.into_inner(), base)?);
    }
    hosts.push(host_config(file.server.as_deref(), file.top, base)?);
    Ok(hosts)
}

/// One endpoint from its server URL (if any) and settings.
fn host_config(server: Option<&str>, entry: HostEntry, base: &Path) -> Result<RegistryHost> {
    let mut h = RegistryHost::new("", "");
    if let Some(server) = server.filter(|s| !s.is_empty()) {
        let with_scheme = if server.starts_with("http://") || server.starts_with("https://") {
            server.to_owned()
        } else {
            format!("https://{server}")
        };
        let url = url::Url::parse(&with_scheme)
            .map_err(|e| Error::InvalidArgument(format!("bad server {server:?}: {e}")))?;
        let Some(host) = url.host_str() else {
            return Err(Error::InvalidArgument(format!(
                "server {server:?} has no host"
            )));
        };
        h.scheme = url.scheme().to_owned();
        h.host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = url.path().trim_end_matches('/');
        h.path = if entry.override_path || path.ends_with("/v2") {
            path.to_owned()
        } else {
            format!("{path}/v2")
        };
    }
    if let Some(caps) = entry.capabilities {
        h.capabilities = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for c in caps {
            match c.to_ascii_lowercase().as_str() {
                "pull" => h.capabilities.pull = true,
                "resolve" => h.capabilities.resolve = true,
                "push" => h.capabilities.push = true,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown capability {other:?}"
                    )));
                }
            }
        }
    }
    h.skip_verify = entry.skip_verify;
    let abs = |p: &str| base.join(p);
    if let Some(ca) = entry.ca {
        h.ca = ca.into_vec().iter().map(|p| abs(p)).collect();
    }
    match entry.client {
        None => {}
        Some(ClientConfig::One(p)) => h.client.push((abs(&p), None)),
        Some(ClientConfig::Many(entries)) => {
            for e in entries {
                match e {
                    ClientEntry::One(p) => h.client.push((abs(&p), None)),
                    ClientEntry::Pair(pair) => match pair.as_slice() {
                        [cert, key] => h.client.push((abs(cert), Some(abs(key)))),
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "client pair {pair:?} must be [cert, key]"
                            )));
                        }
                    },
                }
            }
        }
    }
    for (k, v) in entry.header.unwrap_or_default() {
        for v in v.into_vec() {
            h.headers.push((k.clone(), v));
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors_in_file_order_then_server() {
        let text = r#"
server = "https://registry.example"
capabilities = ["pull", "resolve", "push"]

[host."https://zz-mirror.example/base"]
  capabilities = ["pull"]
  ca = "ca.pem"
  client = [["c.cert", "c.key"], "both.pem"]

[host."http://127.0.0.1:5001"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  override_path = true
  [host."http://127.0.0.1:5001".header]
    x-a = "1"
    x-b = ["2", "3"]

[host."aa-mirror.example:8443"]
"#;
        let hosts = parse_hosts_toml(text, Path::new("/etc/x")).unwrap();
        let names: Vec<_> = hosts
            .iter()
            .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path))
            .collect();
        assert_eq!(
            names,
            [
                "https://zz-mirror.example/base/v2",
                "http://127.0.0.1:5001",
                "https://aa-mirror.example:8443/v2",
                "https://registry.example/v2",
            ]
        );
        let zz = &hosts[0];
        assert!(zz.capabilities.pull && !zz.capabilities.resolve && !zz.capabilities.push);
        assert_eq!(zz.ca, [PathBuf::from("/etc/x/ca.pem")]);
        assert_eq!(
            zz.client,
            [
                (
                    PathBuf::from("/etc/x/c.cert"),
                    Some(PathBuf::from("/etc/x/c.key"))
                ),
                (PathBuf::from("/etc/x/both.pem"), None)
            ]
        );
        assert_eq!(hosts[1].skip_verify, Some(true));
        assert_eq!(
            hosts[1].headers,
            [
                ("x-a".to_owned(), "1".to_owned()),
                ("x-b".to_owned(), "2".to_owned()),
                ("x-b".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    }

    #[test]
    fn rejects_unknown_capability_and_bad_toml() {
        let err = parse_hosts_toml(
            "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown capability"), "{err}");
        assert!(parse_hosts_toml("server = [", Path::new("/")).is_err());
    }

    #[test]
    fn defaults_without_configuration() {
        let cfg = HostsConfig::default();
        let h = cfg.registry_hosts("docker.io").unwrap();
        assert_eq!(
            (h[0].scheme.as_str(), h[0].host.as_str()),
            ("https", "registry-1.docker.io")
        );
        assert!(!h[0].is_mirror_of("docker.io"));
        let h = cfg.registry_hosts("localhost:5000").unwrap();
        assert_eq!(h[0].scheme, "http");
        let h = cfg.registry_hosts("127.0.0.1:5000").unwrap();
        assert_eq!(h[0].scheme, "http");
        let h = cfg.registry_hosts("quay.io").unwrap();
        assert_eq!(h[0].scheme, "https");
        let plain = HostsConfig {
            dir: None,
            plain_http: true,
        };
        assert_eq!(plain.registry_hosts("quay.io").unwrap()[0].scheme, "http");
    }

    #[test]
    fn host_directory_lookup_and_cert_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("reg.example:5000");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "x").unwrap();
        std::fs::write(dir.join("me.cert"), "x").unwrap();
        std::fs::write(dir.join("me.key"), "x").unwrap();
        let cfg = HostsConfig {
            dir: Some(root.path().to_owned()),
            plain_http: false,
        };
        let h = cfg.registry_hosts("reg.example:5000").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].host, "reg.example:5000");
        assert_eq!(h[0].scheme, "https");
        assert_eq!(h[0].ca, [dir.join("ca.crt")]);
        assert_eq!(
            h[0].client,
            [(dir.join("me.cert"), Some(dir.join("me.key")))]
        );

        // `_default` applies to any host without its own directory.
        let d = root.path().join("_default");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("hosts.toml"), "[host.\"http://m:1\"]\n").unwrap();
        let h = cfg.registry_hosts("other.example").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, "m:1");
        assert!(h[0].is_mirror_of("other.example"));
        assert_eq!(h[1].host, "other.example");
    }

    #[test]
    fn localhost_detection() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_localhost(yes), "{yes}");
        }
        for no in ["example.com", "10.0.0.1:5000", "localhost.example"] {
            assert!(!is_localhost(no), "{no}");
        }
    }
}
