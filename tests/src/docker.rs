//! Docker Engine (Debian's `docker.io` 20.10) on a temporary root, driven
//! through berthd: `dockerd --containerd=<berthd socket>`.
//!
//! Each [`Dockerd`] keeps everything in its own temporary directory (data
//! root, exec root, pid file, API socket, daemon.json, trust key, the CLI's
//! config) and never touches the host's defaults:
//! - it runs in a mount namespace of its own (a slave of the host's, so
//!   the host's mounts still reach it), with a private tmpfs on `/run`:
//!   dockerd 20.10 always creates `/run/docker/plugins`, whatever its flags;
//! - its storage driver is `vfs`, which mounts nothing, so every rootfs it
//!   hands berth is a plain directory runc can reach from the host's mount
//!   namespace (overlay2's mounts would stay inside dockerd's namespace);
//! - no bridge, no iptables, no IP forwarding or masquerading, no userland
//!   proxy, and a cgroup parent of its own.
//!
//! Dropping it stops dockerd by PID, then removes the containers berth's
//! shims run for it (runc keeps them under `<exec root>/runtime-runc/moby`)
//! and its cgroup parent.

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

/// A dockerd using a berthd as its containerd, stopped when dropped.
#[derive(Debug)]
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    containerd: PathBuf,
    extra: Vec<String>,
    cgroup_parent: String,
    /// The API socket (`DOCKER_HOST=unix://<socket>`).
    pub socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd on `containerd` (a berthd's socket).
    pub fn start(containerd: &Path) -> Result<Dockerd> {
        Dockerd::start_with(containerd, &[])
    }

    /// Starts dockerd on `containerd` with extra flags (`--live-restore`).
    pub fn start_with(containerd: &Path, extra: &[&str]) -> Result<Dockerd> {
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
            containerd: containerd.to_path_buf(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        d.spawn()?;
        Ok(d)
    }

    /// The exec root, where runc keeps dockerd's containers.
    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
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
            format!("--data-root={}", p("data")),
            format!("--exec-root={}", p("exec")),
            format!("--pidfile={}", p("docker.pid")),
            format!("--host=unix://{}", self.socket.display()),
            format!("--containerd={}", self.containerd.display()),
            format!("--cgroup-parent=/{}", self.cgroup_parent),
            "--storage-driver=vfs".into(),
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
        let script =
            format!("mount -t tmpfs -o mode=0755 berth-dockerd-run /run && exec {DOCKERD} \"$@\"");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let _ = std::fs::remove_file(&self.socket);
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-ec",
                &script,
                "dockerd",
            ])
            .args(&flags)
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
        remove_cgroup(&self.cgroup_parent);
    }
}

/// Removes the (empty) cgroup `name` under the cgroup root, in every v1
/// hierarchy or the v2 one.
fn remove_cgroup(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(root.join(name));
    if let Ok(hierarchies) = std::fs::read_dir(root) {
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join(name));
        }
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
