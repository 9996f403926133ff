//! What a CRI daemon under test needs around it: the stand-in images
//! ([`crate::cri_images`]) in a local registry that the daemon reaches
//! through registry mirrors, and a CNI network of its own.
//!
//! The mirrors keep image names unchanged (critest checks `RepoTags`):
//! `registry.k8s.io`, `gcr.io` and `docker.io` all resolve to
//! `http://127.0.0.1:<port>`, where every image is pushed under its
//! upstream repository and tag.
//!
//! The CNI network is a conflist in a temporary `conf_dir`: the `bridge`
//! plugin on a bridge named for this run, a free private /24, no IP
//! masquerading, host-local IPAM keeping its data in the temporary
//! directory, then `portmap`. Plugins come from Debian's
//! `containernetworking-plugins` in `/usr/lib/cni`; the daemon adds the
//! `loopback` network itself (containerd's CRI loads it besides the
//! conflist). Dropping the [`CniNetwork`] deletes the bridge and the
//! iptables chains the portmap plugin made for it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::Registry;
use crate::cri_images::{self, CriImage};

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Where libcni (in the daemon) caches each attachment's result.
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";

/// The registries whose images the CRI tests pull.
pub const MIRRORED: &[&str] = &["registry.k8s.io", "gcr.io", "docker.io"];

/// The local registry with every stand-in image pushed, and the CNI
/// network: what a CRI daemon config points at.
#[derive(Debug)]
pub struct CriEnv {
    /// The registry serving the stand-ins.
    pub registry: Registry,
    /// The pod network.
    pub cni: CniNetwork,
    /// The images pushed.
    pub images: Vec<CriImage>,
    _build: tempfile::TempDir,
}

impl CriEnv {
    /// Ends the test: checks and tears down the CNI network (see
    /// [`CniNetwork::finish`]); the registry stops on drop.
    pub fn finish(self) -> Result<()> {
        self.cni.finish()
    }

    /// Builds the images, starts a registry, pushes them and writes the
    /// CNI config.
    pub fn start() -> Result<CriEnv> {
        for plugin in ["bridge", "host-local", "portmap", "loopback"] {
            if !Path::new(CNI_BIN_DIR).join(plugin).exists() {
                bail!(
                    "{CNI_BIN_DIR}/{plugin} not found: run `cargo xtask deps` (Debian package containernetworking-plugins)"
                );
            }
        }
        let build = tempfile::Builder::new()
            .prefix("berth-cri-images")
            .tempdir()?;
        let images = cri_images::build_all(build.path())?;
        let registry = Registry::start()?;
        for image in &images {
            for name in &image.names {
                let (_, repo, tag) = cri_images::split_reference(name)?;
                registry
                    .push_layout(&image.layout, repo, tag)
                    .with_context(|| format!("pushing {name}"))?;
            }
        }
        let cni = CniNetwork::create()?;
        Ok(CriEnv {
            registry,
            cni,
            images,
            _build: build,
        })
    }

    /// The `registry.mirrors` part of the CRI plugin's config (version 2
    /// layout), sending every mirrored registry to the local one.
    pub fn mirrors_toml(&self) -> String {
        let mut out = String::new();
        for host in MIRRORED {
            let _ = writeln!(
                out,
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n  endpoint = [\"http://{}\"]",
                self.registry.host
            );
        }
        out
    }
}

/// A CNI bridge network for one test run, torn down on drop.
#[derive(Debug)]
pub struct CniNetwork {
    dir: tempfile::TempDir,
    /// The directory holding the conflist (the daemon's `conf_dir`).
    pub conf_dir: PathBuf,
    /// The network's name in the conflist.
    pub name: String,
    /// The bridge device, unique to this run.
    pub bridge: String,
    /// The pod subnet, `10.x.y.0/24`.
    pub subnet: String,
    /// The portmap chains that existed before this run (left alone).
    chains_before: Vec<String>,
}

/// The nat chains the portmap plugin shares among all its users.
const PORTMAP_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

impl CniNetwork {
    /// Picks a bridge name and a free /24 and writes the conflist.
    pub fn create() -> Result<CniNetwork> {
        let dir = tempfile::Builder::new().prefix("berth-cni").tempdir()?;
        let seed = unique_seed();
        let bridge = format!("bcri{:08x}", seed & 0xffff_ffff);
        let subnet = free_subnet(seed)?;
        let name = format!("berth-cri-{:08x}", seed & 0xffff_ffff);
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.path().join("ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(
            conf_dir.join("10-berth-cri.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        let chains_before = nat_chains()?
            .into_iter()
            .filter(|c| PORTMAP_CHAINS.contains(&c.as_str()))
            .collect();
        Ok(CniNetwork {
            dir,
            conf_dir,
            name,
            bridge,
            subnet,
            chains_before,
        })
    }

    /// The host-local IPAM data directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Whether a pod IP lies in this network's subnet.
    pub fn contains(&self, ip: &str) -> bool {
        let prefix = self.subnet.trim_end_matches("0/24");
        ip.starts_with(prefix)
    }

    /// What this network's pods left on the host: per-pod portmap chains
    /// for its subnet. Empty when clean (after every pod is gone).
    pub fn leftovers(&self) -> Vec<String> {
        self.pod_chains()
            .into_iter()
            .map(|c| format!("iptables nat chain {c}"))
            .collect()
    }

    /// Ends the test: fails if pods left portmap chains, tears the network
    /// down, then fails if the bridge or a portmap chain this run made is
    /// still there.
    pub fn finish(self) -> Result<()> {
        let left = self.leftovers();
        self.teardown();
        let mut after = Vec::new();
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            after.push(format!("bridge {}", self.bridge));
        }
        let chains = nat_chains()?;
        let others_use_portmap = nat_rules()
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT") && l.contains("-j CNI-DN-"));
        for chain in PORTMAP_CHAINS {
            let ours = !self.chains_before.iter().any(|c| c == chain);
            if ours && !others_use_portmap && chains.iter().any(|c| c == chain) {
                after.push(format!("iptables nat chain {chain}"));
            }
        }
        if !left.is_empty() {
            bail!("the pods left (now removed):\n  {}", left.join("\n  "));
        }
        if !after.is_empty() {
            bail!("teardown did not remove:\n  {}", after.join("\n  "));
        }
        Ok(())
    }

    /// Per-pod portmap chains (`CNI-DN-*`) whose rules name this subnet.
    fn pod_chains(&self) -> Vec<String> {
        let rules = nat_rules();
        let prefix = self.subnet.trim_end_matches("0/24");
        let mut chains: Vec<String> = rules
            .lines()
            .filter_map(|l| l.strip_prefix("-A "))
            .filter(|l| l.starts_with("CNI-DN-") && l.contains(prefix))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        chains.sort();
        chains.dedup();
        chains
    }

    /// Deletes the bridge, the per-pod chains for this subnet, and the
    /// shared portmap chains if this run made them and nobody else uses
    /// them now.
    fn teardown(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // libcni caches results machine-wide; a pod the daemon never tore
        // down leaves its entries there, under this network's unique name
        // and (for the loopback network the daemon adds) its sandbox id.
        let cache = Path::new(CNI_RESULTS_DIR);
        let ours = format!("{}-", self.name);
        for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(sandbox) = file
                .strip_prefix(&ours)
                .and_then(|rest| rest.strip_suffix("-eth0"))
            {
                let _ = std::fs::remove_file(cache.join(format!("cni-loopback-{sandbox}-lo")));
                let _ = std::fs::remove_file(entry.path());
            }
        }
        for chain in self.pod_chains() {
            delete_chain(&chain);
        }
        let rules = nat_rules();
        // Other networks' pods still jump from CNI-HOSTPORT-DNAT: keep it all.
        let in_use = rules
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT") && l.contains("-j CNI-DN-"));
        if in_use {
            return;
        }
        for chain in PORTMAP_CHAINS {
            if !self.chains_before.iter().any(|c| c == chain) {
                delete_chain(chain);
            }
        }
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `iptables -t nat -S`, or nothing when iptables is missing.
fn nat_rules() -> String {
    Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The user chains of the nat table.
fn nat_chains() -> Result<Vec<String>> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .context("running iptables: run `cargo xtask deps` (Debian package iptables)")?;
    if !out.status.success() {
        bail!(
            "iptables -t nat -S failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(|c| c.trim().to_string())
        .collect())
}

/// Deletes every rule jumping to `chain`, then the chain itself.
fn delete_chain(chain: &str) {
    let rules = nat_rules();
    let jump = format!("-j {chain}");
    for rule in rules
        .lines()
        .filter(|l| l.starts_with("-A ") && (l.ends_with(&jump) || l.contains(&format!("{jump} "))))
    {
        // `-S` prints rules shell-quoted: let sh split them back.
        let delete = format!("iptables -w -t nat -D {}", &rule[3..]);
        let _ = Command::new("sh").args(["-c", &delete]).output();
    }
    let _ = Command::new("iptables")
        .args(["-w", "-t", "nat", "-F", chain])
        .output();
    let _ = Command::new("iptables")
        .args(["-w", "-t", "nat", "-X", chain])
        .output();
}

/// A number that differs between runs and between concurrent processes.
fn unique_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() ^ u64::from(d.subsec_nanos()).rotate_left(32))
        .unwrap_or_default();
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// A /24 in 10.200.0.0-10.254.255.0 that no host address or route covers.
fn free_subnet(seed: u64) -> Result<String> {
    let taken = host_prefixes()?;
    for i in 0..64_u64 {
        let n = seed.wrapping_add(i.wrapping_mul(7919));
        let second = 200 + u8::try_from(n % 55).unwrap_or_default();
        let third = u8::try_from((n >> 8) % 256).unwrap_or_default();
        let net = u32::from_be_bytes([10, second, third, 0]);
        if !taken.iter().any(|(p, len)| overlaps(net, 24, *p, *len)) {
            return Ok(format!("10.{second}.{third}.0/24"));
        }
    }
    bail!("no free /24 found in 10.200.0.0/8 for the CNI bridge")
}

/// Whether two IPv4 prefixes overlap.
fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// Every IPv4 prefix on a host interface or in its routing table (the
/// default route excluded).
fn host_prefixes() -> Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let o = Command::new("ip")
            .args(args)
            .output()
            .context("running ip (Debian package iproute2)")?;
        for word in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Some(p) = parse_prefix(word) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// `a.b.c.d/len` or a bare `a.b.c.d` (a /32).
fn parse_prefix(word: &str) -> Option<(u32, u32)> {
    let (addr, len) = match word.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (word, 32),
    };
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    (len <= 32).then_some((u32::from(ip), len))
}

/// `path` as a TOML basic string (quoted and escaped).
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A CNI `bridge` plugin entry for a test network: bridge `bridge` as the
/// pods' gateway, no masquerading, addresses from `subnet` (a CIDR) by
/// host-local IPAM keeping its data in `ipam_dir`.
pub fn bridge_plugin(bridge: &str, subnet: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "dataDir": ipam_dir,
        },
    })
}
