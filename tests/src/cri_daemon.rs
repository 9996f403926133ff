//! A daemon serving the Kubernetes CRI on a temporary root, for critest and
//! crictl: Debian's containerd 1.6 with its CRI plugin, or berthd with the
//! same `[plugins."io.containerd.grpc.v1.cri"]` section. Which one runs is
//! the [`CriDaemonKind`] a test passes to [`CriDaemon::start`].
//!
//! The config both get ([`cri_plugin_toml`]): the stand-in pause image as
//! `sandbox_image`, `restrict_oom_score_adj = true` (this VM refuses to
//! lower `oom_score_adj`, so an unclamped value fails every sandbox), the
//! CNI bin and conf dirs of the [`CriEnv`], registry mirrors to its local
//! registry, runc state and network namespaces inside the temporary
//! directory, and the streaming server on `127.0.0.1` port 0.
//!
//! The daemon and every client a test runs against it share an IPC
//! namespace of their own ([`isolate_ipc`]): critest creates a SysV shared
//! memory segment "on the host" to check `HostIpc`, which then disappears
//! with the test instead of staying on the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cri_env::{CNI_BIN_DIR, CriEnv, toml_path};
use crate::cri_images::PAUSE_IMAGE;
use crate::{Daemon, ok, shared_tool};

/// Which daemon serves the CRI under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriDaemonKind {
    /// Debian's containerd 1.6.20 and its CRI plugin: the reference.
    Containerd,
    /// berthd with its CRI plugin.
    Berthd,
}

/// The CRI plugin's section of a version 2 config, for containerd and
/// berthd alike. `runc_root` is where runc keeps the pods' container state.
pub fn cri_plugin_toml(env: &CriEnv, runc_root: &Path) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = {runc_root}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = {conf_dir}
  max_conf_num = 1
{mirrors}"#,
        runc_root = toml_path(runc_root),
        conf_dir = toml_path(&env.cni.conf_dir),
        mirrors = env.mirrors_toml(),
    )
}

/// Snapshotters Debian's containerd would try and that need what the
/// machine may lack: off, as in the other containerd tests.
const DISABLED_SNAPSHOTTERS: &str = r#""io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs""#;

/// A whole containerd config for the CRI tests, everything under `dir`.
pub fn containerd_config(env: &CriEnv, dir: &Path) -> String {
    format!(
        "version = 2\ndisabled_plugins = [{DISABLED_SNAPSHOTTERS}]\n[ttrpc]\n  address = {ttrpc}\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n{cri}",
        ttrpc = toml_path(&dir.join("containerd.sock.ttrpc")),
        opt = toml_path(&dir.join("opt")),
        cri = cri_plugin_toml(env, &dir.join("runc")),
    )
}

/// A berthd config for the CRI tests: the same CRI section.
pub fn berthd_config(env: &CriEnv, dir: &Path) -> String {
    format!("version = 2\n{}", cri_plugin_toml(env, &dir.join("runc")))
}

/// Moves the calling thread (and so every process it starts from now on)
/// into a new IPC namespace. Once per thread; later calls do nothing.
pub fn isolate_ipc() -> Result<()> {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if DONE.with(std::cell::Cell::get) {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
        .context("unshare(CLONE_NEWIPC): the CRI tests run as root")?;
    DONE.with(|d| d.set(true));
    Ok(())
}

/// A CRI daemon on a temporary root, stopped with every pod it ran.
#[derive(Debug)]
pub struct CriDaemon {
    /// Which daemon this is.
    pub kind: CriDaemonKind,
    /// The socket serving the CRI (and the daemon's containerd API).
    pub address: PathBuf,
    dir: tempfile::TempDir,
    inner: Inner,
    /// Pod cgroup parents that did not exist before this daemon started.
    new_cgroups: Vec<PathBuf>,
}

/// The cgroup directories pods land under without a cgroup parent (the
/// CRI namespace `k8s.io`) or with critest's systemd-style default
/// (`test.slice`), in every mounted hierarchy.
fn pod_cgroup_parents() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            hierarchies.push(e.path());
        }
    }
    for h in hierarchies {
        for name in ["k8s.io", "test.slice"] {
            dirs.push(h.join(name));
        }
    }
    dirs
}

#[derive(Debug)]
enum Inner {
    Containerd(Option<Child>),
    Berthd(Box<Option<Daemon>>),
}

impl CriDaemon {
    /// Starts `kind` with the CRI plugin configured for `env`.
    pub fn start(kind: CriDaemonKind, env: &CriEnv) -> Result<CriDaemon> {
        isolate_ipc()?;
        let dir = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
        let new_cgroups = pod_cgroup_parents()
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        std::fs::write(
            dir.path().join("crictl.yaml"),
            "# empty: the tests pass endpoints as flags\n",
        )?;
        let (address, inner) = match kind {
            CriDaemonKind::Containerd => {
                let (address, child) = start_containerd(env, dir.path())?;
                (address, Inner::Containerd(Some(child)))
            }
            CriDaemonKind::Berthd => {
                let daemon = Daemon::start_with_config(Some(&berthd_config(env, dir.path())))?;
                (
                    daemon.address.clone(),
                    Inner::Berthd(Box::new(Some(daemon))),
                )
            }
        };
        Ok(CriDaemon {
            kind,
            address,
            dir,
            inner,
            new_cgroups,
        })
    }

    /// `unix://<socket>`, the endpoint CRI clients are given.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.address.display())
    }

    /// A scratch path inside the test's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        match &self.inner {
            Inner::Containerd(_) => {
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
            }
            Inner::Berthd(d) => d.as_ref().as_ref().map(Daemon::log).unwrap_or_default(),
        }
    }

    /// The shared tools' `crictl` against this daemon, with `args`.
    pub fn crictl_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(shared_tool("crictl")?);
        cmd.arg("--config")
            .arg(self.dir.path().join("crictl.yaml"))
            .args(["--runtime-endpoint", &self.endpoint()])
            .args(["--image-endpoint", &self.endpoint()])
            .args(["--timeout", "60s"])
            .args(args)
            .stdin(Stdio::null());
        without_proxy(&mut cmd);
        Ok(cmd)
    }

    /// `crictl` with `args`, run to completion.
    pub fn crictl(&self, args: &[&str]) -> Result<Output> {
        self.crictl_command(args)?
            .output()
            .context("running crictl")
    }

    /// Whether the daemon serves the CRI: `false` when its `Version` call
    /// answers `Unimplemented` (no CRI plugin), an error for anything else
    /// that fails.
    pub fn serves_cri(&self) -> Result<bool> {
        let out = self.crictl(&["version"])?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("code = Unimplemented") {
            return Ok(false);
        }
        bail!("crictl version failed: {stderr}")
    }

    /// Removes every pod the daemon runs (stopping their containers and
    /// tearing down their networks).
    pub fn remove_all_pods(&self) -> Result<()> {
        ok(self.crictl(&["rmp", "--all", "--force"])?)?;
        Ok(())
    }

    /// What the test's pods left: shim processes, runc state, mounts under
    /// the temporary directories. Empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = crate::shims_of(&self.address)
            .into_iter()
            .map(|pid| format!("shim process {pid}"))
            .collect();
        for (ns, id) in runc_state(&self.dir.path().join("runc")) {
            left.push(format!("runc state of {ns}/{id}"));
        }
        let mut dirs = vec![self.dir.path().display().to_string()];
        if let Inner::Berthd(d) = &self.inner
            && let Some(d) = d.as_ref()
        {
            dirs.push(
                d.root
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if dirs.iter().any(|d| !d.is_empty() && target.starts_with(d)) {
                left.push(format!("mount {target}"));
            }
        }
        left
    }

    /// Ends the test: removes every pod (when the daemon serves the CRI),
    /// fails (naming them) if anything is left, then stops the daemon.
    pub fn finish(mut self) -> Result<()> {
        // A daemon without the CRI has no pods to remove.
        let removed = match self.serves_cri() {
            Ok(false) => Ok(()),
            _ => self.remove_all_pods(),
        };
        let left = self.leftovers();
        let log = self.log();
        if let Inner::Berthd(d) = &mut self.inner
            && let Some(d) = d.take()
        {
            d.finish()?;
        }
        removed.with_context(|| format!("removing the pods:\n{}", tail(&log, 40)))?;
        if !left.is_empty() {
            bail!(
                "left behind by the test's pods:\n  {}\ndaemon log:\n{}",
                left.join("\n  "),
                tail(&log, 40)
            );
        }
        Ok(())
    }
}

impl Drop for CriDaemon {
    fn drop(&mut self) {
        // A failed test still removes its pods through the daemon, so CNI
        // teardown runs (IPAM, portmap chains); then everything is killed.
        let _ = self.crictl(&["rmp", "--all", "--force"]);
        match &mut self.inner {
            Inner::Containerd(child) => {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Inner::Berthd(d) => drop(d.take()),
        }
        let runc_root = self.dir.path().join("runc");
        for (ns, id) in runc_state(&runc_root) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(runc_root.join(&ns))
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        crate::cleanup_runtime(
            &self.dir.path().join("none"),
            &self.address,
            self.dir.path(),
        );
        // Cgroup parents the pods made: removed once empty (rmdir fails
        // while another daemon's pods still use them).
        for dir in &self.new_cgroups {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Starts Debian's containerd with the CRI config under `dir`; returns its
/// socket and process.
fn start_containerd(env: &CriEnv, dir: &Path) -> Result<(PathBuf, Child)> {
    let address = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    std::fs::write(&config, containerd_config(env, dir))?;
    let log = std::fs::File::create(dir.join("containerd.log"))?;
    let mut cmd = crate::containerd::command(dir, &address, &config);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    without_proxy(&mut cmd);
    let mut child = cmd
        .spawn()
        .context("starting /usr/bin/containerd (cargo xtask deps installs it)")?;
    let log_path = dir.join("containerd.log");
    crate::wait_until_serving(
        &mut child,
        &address,
        "containerd",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
    )?;
    Ok((address, child))
}

/// Clears proxy variables: pulls go to the local registry and critest
/// GETs pod IPs directly.
pub fn without_proxy(cmd: &mut Command) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
}

/// `(namespace, id)` of every container runc keeps state for under `root`.
fn runc_state(root: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Ok(namespaces) = std::fs::read_dir(root) {
        for ns in namespaces.flatten() {
            if let Ok(ids) = std::fs::read_dir(ns.path()) {
                for id in ids.flatten() {
                    found.push((
                        ns.file_name().to_string_lossy().into_owned(),
                        id.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
        }
    }
    found
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
