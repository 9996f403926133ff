//! Debian's containerd on a temporary root, for interop tests: it finds
//! berth's shim on its PATH, so `--runtime io.containerd.berth.v2` runs
//! containers through `containerd-shim-berth-v2`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::host_leftovers;

/// Debian's containerd with its root at `<dir>/root`, its state at
/// `<dir>/state`, its gRPC socket at `address` and config file `config`:
/// the command line the test harnesses and `cargo xtask bench` start it
/// with.
pub fn command(dir: &Path, address: &Path, config: &Path) -> Command {
    let mut cmd = Command::new("/usr/bin/containerd");
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(address)
        .arg("--config")
        .arg(config);
    cmd
}

/// A containerd running on a temporary root, stopped when dropped along
/// with every shim, container and mount it made.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    /// gRPC socket path.
    pub address: PathBuf,
    /// The namespace tests use; unique ([`host_leftovers::unique_namespace`]),
    /// because runc keeps containerd's containers under the machine-wide
    /// `/run/containerd/runc/<namespace>` and `ctr` puts them in the cgroup
    /// `/<namespace>/<id>`. On drop, once containerd and its containers are
    /// stopped, its directories on the host are removed where empty, and
    /// those of every `<namespace>-<suffix>` a test derived from it.
    pub namespace: String,
    /// [`Containerd::namespace`] and the further namespaces the test owns
    /// (see [`Containerd::own_namespace`]).
    owned: host_leftovers::OwnedNamespaces,
}

impl Containerd {
    /// Starts `/usr/bin/containerd` with CRI off and berth's binaries first
    /// on its PATH.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with_config("")
    }

    /// Like [`Containerd::start`], with `extra` appended to the config file
    /// (top-level sections such as `[metrics]`).
    pub fn start_with_config(extra: &str) -> Result<Containerd> {
        Containerd::start_prepared(extra, &[], |_| Ok(()))
    }

    /// Like [`Containerd::start_with_config`], with the plugins in `enable`
    /// (by `type.id`) loaded although the harness normally disables them,
    /// and `prepare` run on the root directory (made, empty) before the
    /// start (say, to mount a filesystem there: unmounted on drop).
    pub fn start_prepared(
        extra: &str,
        enable: &[&str],
        prepare: impl FnOnce(&std::path::Path) -> Result<()>,
    ) -> Result<Containerd> {
        let dir = tempfile::Builder::new().prefix("berth-ctrd").tempdir()?;
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        let disabled: Vec<String> = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
        ]
        .iter()
        .filter(|p| !enable.contains(p))
        .map(|p| format!("{p:?}"))
        .collect();
        std::fs::write(
            &config,
            format!(
                "version = 2\ndisabled_plugins = [{}]\n{extra}",
                disabled.join(", ")
            ),
        )?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root)?;
        prepare(&root)?;
        let path = format!(
            "{}:{}",
            crate::bin_dir().display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let mut child = command(dir.path(), &address, &config)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting /usr/bin/containerd (cargo xtask deps installs it)")?;
        crate::wait_until_serving(
            &mut child,
            &address,
            "containerd",
            Duration::from_secs(20),
            String::new,
        )?;
        let owned = host_leftovers::OwnedNamespaces::default();
        Ok(Containerd {
            namespace: owned.own("berth-interop"),
            owned,
            dir,
            child,
            address,
        })
    }

    /// Runs Debian's `ctr` against this containerd in the test namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_in(&self.namespace, args)
    }

    /// Runs Debian's `ctr` against this containerd in `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Result<Output> {
        Ok(Command::new(crate::ctr_bin()?)
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// A namespace no other test uses ([`host_leftovers::unique_namespace`]
    /// of `prefix`), owned by the test: its directories on the host are
    /// removed on drop like those of [`Containerd::namespace`].
    pub fn own_namespace(&self, prefix: &str) -> String {
        self.owned.own(prefix)
    }

    /// PID of the containerd process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A directory under the temporary root.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// What the test's containers left: shims started with this
    /// containerd's address, runc state of the test namespace, mounts under
    /// the temporary directory. Empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = crate::shims_of(&self.address)
            .into_iter()
            .map(|pid| format!("shim process {pid}"))
            .collect();
        let runc_root = PathBuf::from("/run/containerd/runc").join(&self.namespace);
        if let Ok(ids) = std::fs::read_dir(&runc_root) {
            for id in ids.flatten() {
                left.push(format!(
                    "runc state of {}",
                    id.file_name().to_string_lossy()
                ));
            }
        }
        let prefix = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if target.starts_with(&prefix) {
                left.push(format!("mount {target}"));
            }
        }
        left
    }

    /// Ends the test: fails, naming them, if the test's containers left
    /// anything (cleaned up on drop either way).
    pub fn finish(self) -> Result<()> {
        let left = self.leftovers();
        if !left.is_empty() {
            bail!(
                "left behind by the test's containers:\n  {}",
                left.join("\n  ")
            );
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims and containers outlive containerd: stop them by pid and
        // runc root, then unmount what they left.
        let runc_root = PathBuf::from("/run/containerd/runc").join(&self.namespace);
        if let Ok(ids) = std::fs::read_dir(&runc_root) {
            for id in ids.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(id.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        crate::cleanup_runtime(
            &self.dir.path().join("none"),
            &self.address,
            self.dir.path(),
        );
        // Its containers are gone: their namespaces' parents are empty.
        self.owned.remove();
    }
}
