//! Docker Engine (Debian's `docker.io` 20.10) on a temporary root, driven
//! through berthd: `dockerd --containerd=<berthd socket>`.
//!
//! Each [`Dockerd`] keeps everything in its own temporary directory (data
//! root, exec root, pid file, API socket, daemon.json, trust key, the CLI's
//! config) and never touches the host's defaults:
//! - it runs in a mount namespace of its own, with a private tmpfs on
//!   `/run`: dockerd 20.10 always creates `/run/docker/plugins`, whatever
//!   its flags;
//! - its storage driver is `vfs` unless asked otherwise
//!   ([`StorageDriver`]). vfs mounts nothing: every rootfs it hands berth is
//!   a plain directory runc can reach from the host's mount namespace, and
//!   dockerd's namespace is a plain slave of the host's. overlay2 (Docker's
//!   default) mounts each rootfs under the data root, and the shims and
//!   runc of the daemon under test run in the host's namespace: there the
//!   data root is a bind mount of itself, shared, which dockerd's namespace
//!   keeps as a peer while every other mount it has is made a slave; so
//!   exactly the mounts under the data root reach the host (both ways), and
//!   the tmpfs on `/run` and the network namespace files do not;
//! - no bridge, no iptables, no IP forwarding or masquerading, no userland
//!   proxy, and a cgroup parent of its own.
//!
//! Dropping it stops dockerd by PID, then removes the containers berth's
//! shims run for it (runc keeps them under `<exec root>/runtime-runc/moby`),
//! unmounts on the host whatever is left under the data root and then the
//! data root's own bind mount (overlay2), and removes its cgroup parent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Debian's Docker CLI (another `docker` may come first on PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// Debian's Docker daemon.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The containerd namespace dockerd keeps its containers in.
pub const NAMESPACE: &str = "moby";
/// How long one docker command may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Distinguishes the dockerds one test process starts (cgroup parents).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Path of Debian's `docker` CLI and `dockerd`, checked to exist.
fn check_installed() -> Result<()> {
    for p in [DOCKER, DOCKERD] {
        if !Path::new(p).exists() {
            bail!("{p} not found: run `cargo xtask deps` (installs Debian's docker.io)");
        }
    }
    Ok(())
}

/// The storage driver a [`Dockerd`] keeps images and container root
/// filesystems with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageDriver {
    /// A full copy of the image per container; mounts nothing.
    #[default]
    Vfs,
    /// Docker's default: an overlay mount per container, under the data
    /// root, shared with the host's mount namespace.
    Overlay2,
}

impl StorageDriver {
    /// The driver's name, as `--storage-driver` and `docker info` have it.
    pub fn name(self) -> &'static str {
        match self {
            StorageDriver::Vfs => "vfs",
            StorageDriver::Overlay2 => "overlay2",
        }
    }
}

/// How to start a [`Dockerd`]: [`Dockerd::builder`].
#[derive(Debug, Clone)]
pub struct DockerdBuilder {
    containerd: PathBuf,
    extra: Vec<String>,
    driver: StorageDriver,
}

impl DockerdBuilder {
    /// Extra dockerd flags (`--live-restore`).
    pub fn flags(mut self, extra: &[&str]) -> DockerdBuilder {
        self.extra.extend(extra.iter().map(|s| (*s).to_string()));
        self
    }

    /// The storage driver ([`StorageDriver::Vfs`] unless set).
    pub fn storage_driver(mut self, driver: StorageDriver) -> DockerdBuilder {
        self.driver = driver;
        self
    }

    /// Starts dockerd.
    pub fn start(self) -> Result<Dockerd> {
        check_installed()?;
        let dir = tempfile::Builder::new().prefix("berth-docker").tempdir()?;
        // The trust key goes to /etc/docker/key.json unless daemon.json
        // names a place (there is no flag for it).
        let config = serde_json::json!({
            "deprecated-key-path": dir.path().join("key.json"),
        });
        std::fs::write(dir.path().join("daemon.json"), config.to_string())?;
        std::fs::create_dir_all(dir.path().join("cli"))?;
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let mut d = Dockerd {
            socket: dir.path().join("docker.sock"),
            cgroup_parent: format!("berth-docker-{}-{n}", std::process::id()),
            dir,
            child: None,
            containerd: self.containerd,
            extra: self.extra,
            driver: self.driver,
            shared_data_root: false,
        };
        if d.driver == StorageDriver::Overlay2 {
            d.share_data_root()?;
        }
        d.spawn()?;
        Ok(d)
    }
}

/// A dockerd using a berthd as its containerd, stopped when dropped.
#[derive(Debug)]
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    containerd: PathBuf,
    extra: Vec<String>,
    driver: StorageDriver,
    /// Whether the data root is bound onto itself, shared (to unmount).
    shared_data_root: bool,
    cgroup_parent: String,
    /// The API socket (`DOCKER_HOST=unix://<socket>`).
    pub socket: PathBuf,
}

impl Dockerd {
    /// How to start a dockerd on `containerd` (a berthd's socket): `vfs`,
    /// no extra flags unless set.
    pub fn builder(containerd: &Path) -> DockerdBuilder {
        DockerdBuilder {
            containerd: containerd.to_path_buf(),
            extra: Vec::new(),
            driver: StorageDriver::default(),
        }
    }

    /// Starts dockerd on `containerd` (a berthd's socket), on `vfs`.
    pub fn start(containerd: &Path) -> Result<Dockerd> {
        Dockerd::builder(containerd).start()
    }

    /// Starts dockerd on `containerd` with extra flags (`--live-restore`),
    /// on `vfs`.
    pub fn start_with(containerd: &Path, extra: &[&str]) -> Result<Dockerd> {
        Dockerd::builder(containerd).flags(extra).start()
    }

    /// The exec root, where runc keeps dockerd's containers.
    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
    }

    /// The data root (images, container root filesystems).
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding everything of this dockerd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The storage driver dockerd runs with.
    pub fn storage_driver(&self) -> StorageDriver {
        self.driver
    }

    /// Binds the data root onto itself in the host's mount namespace and
    /// makes that mount shared, in a peer group of its own (private first:
    /// it must not join the peer group of the mount it sits on).
    fn share_data_root(&mut self) -> Result<()> {
        let data = self.data_root();
        std::fs::create_dir_all(&data)?;
        mount(&["--bind"], &data, Some(&data))?;
        self.shared_data_root = true;
        mount(&["--make-private"], &data, None)?;
        mount(&["--make-shared"], &data, None)?;
        Ok(())
    }

    /// Unmounts, on the host, everything under the data root (deepest
    /// first) and then the data root's bind mount.
    fn unshare_data_root(&mut self) {
        if !self.shared_data_root {
            return;
        }
        for t in crate::mounts_under(&self.data_root()) {
            // A mount still busy (a process of a container that escaped
            // the runc delete) goes when its last user does.
            let quiet = |args: &[&str]| {
                Command::new("umount")
                    .args(args)
                    .arg(&t)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !quiet(&[]) {
                quiet(&["-l"]);
            }
        }
        self.shared_data_root = false;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// PID of the running dockerd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let p = |name: &str| self.dir.path().join(name).display().to_string();
        let mut flags = vec![
            format!("--config-file={}", p("daemon.json")),
            format!("--data-root={}", self.data_root().display()),
            format!("--exec-root={}", p("exec")),
            format!("--pidfile={}", p("docker.pid")),
            format!("--host=unix://{}", self.socket.display()),
            format!("--containerd={}", self.containerd.display()),
            format!("--cgroup-parent=/{}", self.cgroup_parent),
            format!("--storage-driver={}", self.driver.name()),
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
            "--userland-proxy=false".into(),
            // Running containers get a second to stop when dockerd does.
            "--shutdown-timeout=1".into(),
            "--debug".into(),
        ];
        flags.extend(self.extra.iter().cloned());
        // `unshare` execs the shell, which execs dockerd: one PID throughout.
        let run_tmpfs = "mount -t tmpfs -o mode=0755 berth-dockerd-run /run";
        let (propagation, script) = match self.driver {
            // Every mount a slave of the host's: the host's mounts still
            // reach dockerd, none of dockerd's reaches the host.
            StorageDriver::Vfs => ("slave", format!("{run_tmpfs}\nexec {DOCKERD} \"$@\"")),
            // Every mount keeps its propagation, then each one but the data
            // root (and what is under it) is made a slave, one by one (not
            // `--make-rslave /`, which would take the data root along):
            // on a host whose `/` is private that changes nothing, on one
            // where mounts are shared (systemd) it cuts them off.
            StorageDriver::Overlay2 => (
                "unchanged",
                format!("{SLAVE_ALL_BUT_DATA}{run_tmpfs}\nexec {DOCKERD} \"$@\""),
            ),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let _ = std::fs::remove_file(&self.socket);
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                propagation,
                "sh",
                "-ec",
                &script,
                "dockerd",
            ])
            .args(&flags)
            .env("BERTH_DOCKER_DATA", self.data_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd under unshare (util-linux)")?;
        crate::wait_until_serving(
            &mut child,
            &self.socket,
            "dockerd",
            Duration::from_secs(60),
            || self.log(),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops dockerd with SIGTERM and waits for it to exit (with
    /// `--live-restore` its containers keep running).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("dockerd not running");
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "dockerd did not exit within 60s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts dockerd again on the same directories.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    /// `docker` with `args` against this dockerd, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .stdin(Stdio::null());
        cmd
    }

    /// `docker` with `args`, run to completion; a command still running
    /// after [`COMMAND_TIMEOUT`] is killed and reported as hung.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        run_bounded(self.command(args), COMMAND_TIMEOUT)
            .with_context(|| format!("docker {}", args.join(" ")))
    }

    /// `docker` with `args` as a successful command; returns its stdout
    /// trimmed, or fails with everything it printed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "docker {} failed ({}):\nstdout: {stdout}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// Builds the project's busybox image and loads it as `busybox:latest`.
    pub fn load_busybox(&self) -> Result<()> {
        let layout = crate::testimages::busybox(&self.dir.path().join("image"))?;
        let archive = self.dir.path().join("busybox.tar");
        layout.write_docker_archive(&archive, "busybox:latest")?;
        let out = self.ok(&["load", "-i", &archive.display().to_string()])?;
        if !out.contains("busybox:latest") {
            bail!("docker load did not name busybox:latest: {out}");
        }
        Ok(())
    }

    /// A scratch path inside the temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The shims berth started for dockerd keep their containers under
        // dockerd's runc root: stop them there.
        let root = self.exec_root().join("runtime-runc").join(NAMESPACE);
        if let Ok(ids) = std::fs::read_dir(&root) {
            for id in ids.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(id.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        self.unshare_data_root();
        // The cgroup parent is unique to this Dockerd: removed (if empty)
        // like a namespace's.
        crate::host_leftovers::remove_namespace_dirs(&self.cgroup_parent);
    }
}

/// Shell lines (for `sh -e`) that make every mount of the current mount
/// namespace a slave, one by one, except `$BERTH_DOCKER_DATA` and the
/// mounts under it. Only shared mounts change (a private one stays
/// private); mount points come from `/proc/self/mountinfo`, where a space,
/// tab, newline or backslash in a path is an octal escape (`\040`), which
/// `printf %b` decodes once written `\0040`.
const SLAVE_ALL_BUT_DATA: &str = r#"while read -r _ _ _ _ mp _ rest; do
  case "$mp" in "$BERTH_DOCKER_DATA"|"$BERTH_DOCKER_DATA"/*) continue ;; esac
  rest=" $rest"
  case "${rest%% - *}" in *" shared:"*) ;; *) continue ;; esac
  case "$mp" in *\\*) mp=$(printf '%b' "$(printf '%s' "$mp" | sed 's/\\\([0-7]\)/\\0\1/g')") ;; esac
  mount --make-slave "$mp"
done < /proc/self/mountinfo
"#;

/// Runs `mount <flags> <source> [<target>]`, failing with its stderr.
fn mount(flags: &[&str], source: &Path, target: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("mount");
    cmd.args(flags).arg(source);
    if let Some(t) = target {
        cmd.arg(t);
    }
    let out = cmd.output().context("running mount (util-linux)")?;
    if !out.status.success() {
        bail!(
            "mount {} {}: {}",
            flags.join(" "),
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the (empty) cgroup parents of every [`Dockerd`] this process
/// started, for a cleanup that could not drop them (a Ctrl-C'd bench).
pub fn remove_cgroup_parents() {
    for n in 0..STARTED.load(Ordering::Relaxed) {
        crate::host_leftovers::remove_namespace_dirs(&format!(
            "berth-docker-{}-{n}",
            std::process::id()
        ));
    }
}

/// Runs `cmd` to completion with its output captured; kills it and fails
/// if it runs longer than `timeout` (a hang is a failure, not a wait).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {timeout:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut outs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout: outs.next().unwrap_or_default(),
        stderr: outs.next().unwrap_or_default(),
    })
}

/// Processes that keep the CPUs busy (`yes > /dev/null`), killed by PID
/// when dropped.
#[derive(Debug)]
pub struct CpuLoad {
    children: Vec<Child>,
}

impl CpuLoad {
    /// Starts `n` busy processes.
    pub fn start(n: usize) -> Result<CpuLoad> {
        let mut load = CpuLoad {
            children: Vec::new(),
        };
        for _ in 0..n {
            load.children.push(
                Command::new("yes")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting yes")?,
            );
        }
        Ok(load)
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
