//! The two daemons under test, berthd and Debian's containerd: started on
//! a directory of their own with a metrics endpoint ([`start_berthd`],
//! [`start_containerd`] and their variants), registered for cleanup and
//! stopped when dropped; the clients that drive them and their memory as
//! `/proc` shows it.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{BUSYBOX, timed};
use crate::{Result, cleanup};

/// One daemon under test; stopped (with everything it started) when dropped.
pub(super) struct Daemon {
    pub(super) name: &'static str,
    pub(super) pid: u32,
    pub(super) address: PathBuf,
    pub(super) bin: PathBuf,
    /// The daemon's `--root`.
    pub(super) root: PathBuf,
    /// Port of its Prometheus endpoint on 127.0.0.1.
    pub(super) metrics_port: u16,
}

impl Daemon {
    pub(super) fn is_berth(&self) -> bool {
        self.name == "berthd"
    }

    /// Debian's `ctr` against this daemon.
    pub(super) fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("--address").arg(&self.address).args(args);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    /// This workspace's `berthctl` against this daemon.
    pub(super) fn berthctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("berthctl"));
        c.arg("--address")
            .arg(&self.address)
            .args(args)
            .env_remove("BERTH_NAMESPACE")
            .env_remove("CONTAINERD_NAMESPACE");
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    pub(super) fn rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmRSS:")
    }

    /// PIDs of this daemon's shims (started with `-address <our socket>`).
    pub(super) fn shims(&self) -> Vec<u32> {
        cleanup::shims_of(&self.address)
    }

    /// Imports the busybox test image into namespace `ns` unless there.
    pub(super) fn ensure_busybox(&self, ns: &str, archive: &Path) -> Result<()> {
        let out = self
            .ctr(&["-n", ns, "images", "ls", "-q"])
            .stdout(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == BUSYBOX)
        {
            return Ok(());
        }
        let archive = archive.display().to_string();
        timed(self.ctr(&["-n", ns, "images", "import", &archive]))?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        cleanup::stop_pid(self.pid);
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub(super) fn status_kib(pid: u32, field: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// A `kB` field of a `/proc` key-value file.
pub(super) fn kib_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn wait_for_socket(path: &Path, child: &mut std::process::Child, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited with {status} during startup"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not serve {} within 20s",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Spawns a daemon in a process group of its own (a terminal's Ctrl-C is
/// for the harness, which then stops it), registered for cleanup.
fn spawn_daemon(
    name: &'static str,
    mut cmd: Command,
    dir: &Path,
    address: PathBuf,
    bin: &Path,
    metrics_port: u16,
) -> Result<Daemon> {
    let state = dir.join("state");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    cleanup::daemon(child.id(), &address, &state, dir);
    let d = Daemon {
        name,
        pid: child.id(),
        address,
        bin: bin.to_path_buf(),
        root: dir.join("root"),
        metrics_port,
    };
    wait_for_socket(&d.address, &mut child, name)?;
    Ok(d)
}

pub(super) fn start_berthd(dir: &Path, bin: &Path) -> Result<Daemon> {
    start_berthd_with(dir, bin, "")
}

/// berthd with `plugins` (TOML tables) added to its config.
pub(super) fn start_berthd_with(dir: &Path, bin: &Path, plugins: &str) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("berthd.sock");
    let port = free_port()?;
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("{}{plugins}", metrics_config(port)))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin.join("berthd"));
    berthd_args(&mut cmd, dir, &config, &address);
    spawn_daemon("berthd", cmd, dir, address, bin, port)
}

/// berthd's arguments for a bench daemon: `config`, root and state under
/// `dir`, socket `address`, warnings only in its log.
pub(crate) fn berthd_args(cmd: &mut Command, dir: &Path, config: &Path, address: &Path) {
    cmd.arg("--config")
        .arg(config)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(address)
        .arg("--log-level")
        .arg("warn");
}

pub(super) fn start_containerd(dir: &Path, bin: &Path) -> Result<Daemon> {
    start_containerd_with(dir, bin, None)
}

/// containerd, with its btrfs snapshotter on `btrfs_root` (its
/// `root_path`, on a Btrfs) when given.
pub(super) fn start_containerd_with(
    dir: &Path,
    bin: &Path,
    btrfs_root: Option<&Path>,
) -> Result<Daemon> {
    // Only what the scenarios use: CRI and the extra snapshotters off.
    let mut disabled = vec![
        "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
    ];
    let mut plugins = String::new();
    match btrfs_root {
        Some(root) => {
            plugins = format!(
                "[plugins.\"io.containerd.snapshotter.v1.btrfs\"]\n  root_path = \"{}\"\n",
                root.display()
            )
        }
        None => disabled.push("io.containerd.snapshotter.v1.btrfs"),
    }
    spawn_containerd(dir, bin, |port| {
        format!(
            "disabled_plugins = {disabled:?}\n{}{plugins}",
            metrics_config(port)
        )
    })
}

/// containerd with its defaults, every plugin it loads by default (CRI
/// included) and nothing else but the metrics endpoint, as berthd's
/// defaults for the `memory` scenario.
pub(super) fn start_containerd_defaults(dir: &Path, bin: &Path) -> Result<Daemon> {
    spawn_containerd(dir, bin, metrics_config)
}

/// containerd on `dir` with the config `config(metrics port)`.
fn spawn_containerd(dir: &Path, bin: &Path, config: impl FnOnce(u16) -> String) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("containerd.sock");
    let path = dir.join("config.toml");
    let port = free_port()?;
    std::fs::write(&path, config(port)).map_err(|e| e.to_string())?;
    let mut cmd = berth_tests::containerd::command(dir, &address, &path);
    cmd.arg("--log-level").arg("warn");
    spawn_daemon("containerd", cmd, dir, address, bin, port)
}

/// A TCP port free right now on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Config (version 2, both daemons read it) serving metrics on `port`.
pub(crate) fn metrics_config(port: u16) -> String {
    format!("version = 2\n[metrics]\n  address = \"127.0.0.1:{port}\"\n")
}
