//! Harness for berth's end-to-end tests: a real `berthd` on a temporary
//! root, and helpers to run Debian's `ctr` and `berthctl` against it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod containerd;
pub mod cri_daemon;
pub mod cri_env;
pub mod cri_images;
pub mod crictl;
pub mod critest;
pub mod docker;
pub mod faults;
pub mod goclient;
pub mod host_leftovers;
pub mod pause;
pub mod registry;
pub mod testimages;
pub mod tmux;

pub use containerd::Containerd;
pub use goclient::GoClient;
pub use registry::Registry;

/// Directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target/debug"), Path::to_path_buf)
}

/// Path of workspace binary `name`, checked to exist.
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace --all-targets)",
            path.display()
        );
    }
    Ok(path)
}

/// Path of Debian's `ctr`, checked to exist.
pub fn ctr_bin() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/ctr");
    if !path.exists() {
        bail!(
            "/usr/bin/ctr not found: run `cargo xtask deps` (installs Debian's containerd package for its ctr client)"
        );
    }
    Ok(path)
}

/// Waits until `child` accepts connections on the UNIX socket `socket`.
/// Fails, with `log()` in the message, if the child exits first or does
/// not serve within `limit` (then it is killed and reaped).
pub fn wait_until_serving(
    child: &mut Child,
    socket: &Path,
    what: &str,
    limit: Duration,
    log: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} during startup:\n{}", log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not serve {} within {limit:?}:\n{}",
                socket.display(),
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Path of the shared test tool `name` (`ctr-2.1.5`, `critest`, `crictl`):
/// `<repo>/../shared/tools/<name>` as CI lays it out, else
/// `$BERTH_SHARED_TOOLS/<name>`.
pub fn shared_tool(name: &str) -> Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut tried = vec![repo.join("../shared/tools").join(name)];
    if let Some(dir) = std::env::var_os("BERTH_SHARED_TOOLS") {
        tried.push(PathBuf::from(dir).join(name));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "{name} not found (looked at {}): put the shared tools beside the checkout as ../shared/tools, or set BERTH_SHARED_TOOLS to their directory",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A `berthd` running on a temporary root, killed when dropped.
///
/// Tests end with [`Daemon::finish`], which fails if anything the test
/// started is left over; dropping without it (a failing test) cleans up
/// silently.
#[derive(Debug)]
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The daemon binary (`berthd`, or a custom build taking its flags).
    binary: &'static str,
    config: Option<PathBuf>,
    /// gRPC socket path.
    pub address: PathBuf,
    /// Root directory.
    pub root: PathBuf,
    /// State directory.
    pub state: PathBuf,
    /// How long the last start took until the socket accepted connections.
    pub startup: Duration,
    /// The namespace `ctr` and `berthctl` use unless given `-n`.
    pub namespace: String,
    /// Namespaces the test owns (see [`Daemon::own_namespace`]), removed
    /// from the host when the daemon is dropped.
    owned: host_leftovers::OwnedNamespaces,
}

impl Daemon {
    /// Starts berthd with no config file.
    pub fn start() -> Result<Daemon> {
        Daemon::start_with_config(None)
    }

    /// Starts berthd with `config` written to a file (if given).
    pub fn start_with_config(config: Option<&str>) -> Result<Daemon> {
        Daemon::start_prepared(config, |_| Ok(()))
    }

    /// Starts berthd with `config` (if given) after `prepare` ran on the
    /// not yet started daemon (say, to mount a filesystem on its root;
    /// mounts under its directory are unmounted when it is dropped).
    pub fn start_prepared(
        config: Option<&str>,
        prepare: impl FnOnce(&Daemon) -> Result<()>,
    ) -> Result<Daemon> {
        Daemon::start_binary("berthd", config, prepare)
    }

    /// Like [`Daemon::start_prepared`], running `binary` from the build's
    /// binaries instead of berthd: a custom build of berthd (say, with a
    /// third party's plugins compiled in) that takes berthd's flags.
    pub fn start_binary(
        binary: &'static str,
        config: Option<&str>,
        prepare: impl FnOnce(&Daemon) -> Result<()>,
    ) -> Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("berth-e2e").tempdir()?;
        let config_path = match config {
            Some(text) => {
                let p = dir.path().join("config.toml");
                std::fs::write(&p, text)?;
                Some(p)
            }
            None => None,
        };
        let mut d = Daemon {
            address: dir.path().join("state/berthd.sock"),
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            dir,
            child: None,
            binary,
            config: config_path,
            startup: Duration::ZERO,
            namespace: "default".to_string(),
            owned: host_leftovers::OwnedNamespaces::default(),
        };
        prepare(&d)?;
        d.spawn()?;
        Ok(d)
    }

    /// The command line that starts this daemon.
    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(bin(self.binary)?);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.address)
            .arg("--log-level")
            .arg("debug");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        Ok(cmd)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("berthd.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let started = Instant::now();
        let mut child = self
            .command()?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary))?;
        wait_until_serving(
            &mut child,
            &self.address,
            self.binary,
            Duration::from_secs(20),
            || self.log(),
        )?;
        self.startup = started.elapsed();
        self.child = Some(child);
        Ok(())
    }

    /// A scratch path inside the daemon's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// PID of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon not running");
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berthd did not exit within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the daemon again on the same root, state and address.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    /// Debian's `ctr -a <address>` with `args`.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(ctr_bin()?);
        cmd.arg("--address")
            .arg(&self.address)
            .args(args)
            .env("CONTAINERD_NAMESPACE", &self.namespace);
        cmd.output().context("running ctr")
    }

    /// containerd 2.1.5's `ctr -a <address>` with `args` (see [`shared_tool`]).
    pub fn ctr2(&self, args: &[&str]) -> Result<Output> {
        self.ctr2_command(args)?
            .output()
            .context("running ctr 2.1.5")
    }

    /// containerd 2.1.5's `ctr -a <address>` with `args`, to spawn.
    pub fn ctr2_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(shared_tool("ctr-2.1.5")?);
        cmd.arg("--address")
            .arg(&self.address)
            .args(args)
            .env("CONTAINERD_NAMESPACE", &self.namespace);
        Ok(cmd)
    }

    /// This daemon with `ctr` and `berthctl` working in `namespace`: tests
    /// running at once must not share a namespace and container id, since
    /// `ctr`'s specs put containers in the cgroup `/<namespace>/<id>`.
    pub fn in_namespace(mut self, namespace: &str) -> Daemon {
        self.namespace = namespace.to_string();
        self
    }

    /// A namespace no other test uses ([`host_leftovers::unique_namespace`]
    /// of `prefix`), owned by the test: once the daemon and its containers
    /// are stopped, on drop, its directories on the host (runc root and
    /// cgroup parents, and those of every `<name>-<suffix>`) are removed
    /// where empty.
    pub fn own_namespace(&self, prefix: &str) -> String {
        self.owned.own(prefix)
    }

    /// This daemon with `ctr` and `berthctl` working in a namespace of the
    /// test's own ([`Daemon::own_namespace`] of `prefix`).
    pub fn in_unique_namespace(self, prefix: &str) -> Daemon {
        let name = self.own_namespace(prefix);
        self.in_namespace(&name)
    }

    /// `berthctl -a <address>` with `args`, run to completion.
    pub fn berthctl(&self, args: &[&str]) -> Result<Output> {
        self.berthctl_command(args)?
            .output()
            .context("running berthctl")
    }

    /// `berthctl -a <address>` with `args`, to spawn.
    pub fn berthctl_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(bin("berthctl")?);
        cmd.arg("--address")
            .arg(&self.address)
            .args(args)
            .env("BERTH_NAMESPACE", &self.namespace)
            .env_remove("CONTAINERD_NAMESPACE");
        Ok(cmd)
    }

    /// The socket's permission bits.
    pub fn socket_mode(&self) -> Result<u32> {
        Ok(std::fs::metadata(&self.address)?.permissions().mode() & 0o777)
    }
}

impl Daemon {
    /// What this daemon's tasks left behind right now: shim processes
    /// started with its address, runc state under its runc root, mounts
    /// under its temporary directory and task bundles. Empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for pid in shims_of(&self.address) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            left.push(format!("shim process {pid}: {}", cmdline.trim()));
        }
        for (ns, id) in runc_containers(&self.state) {
            left.push(format!("runc state of {ns}/{id}"));
        }
        for m in mounts_under(self.dir.path()) {
            left.push(format!("mount {m}"));
        }
        let bundles = self.state.join("io.containerd.runtime.v2.task");
        for (ns, id) in two_levels(&bundles) {
            left.push(format!("task bundle {ns}/{id}"));
        }
        left
    }

    /// Fails (naming them) if this daemon's tasks left anything behind.
    /// berthd keeps running.
    pub fn assert_clean(&self) -> Result<()> {
        let left = self.leftovers();
        if !left.is_empty() {
            bail!(
                "left behind by the test's containers:\n  {}\nberthd log:\n{}",
                left.join("\n  "),
                tail(&self.log(), 60)
            );
        }
        Ok(())
    }

    /// Ends the test: stops berthd with SIGTERM, then fails if it did not
    /// exit cleanly or if shims, runc state, mounts or bundles are left
    /// (they are removed either way).
    pub fn finish(mut self) -> Result<()> {
        let status = if self.child.is_some() {
            Some(self.stop()?)
        } else {
            None
        };
        let left = self.leftovers();
        cleanup_runtime(&self.state, &self.address, self.dir.path());
        if !left.is_empty() {
            bail!(
                "left behind by the test's containers (now cleaned up):\n  {}\nberthd log:\n{}",
                left.join("\n  "),
                tail(&self.log(), 60)
            );
        }
        if let Some(status) = status.filter(|s| !s.success()) {
            bail!(
                "berthd exited with {status} on SIGTERM:\n{}",
                tail(&self.log(), 60)
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A test that ends without finish() failed (or panicked): tidy up
        // silently, without hiding its own error.
        cleanup_runtime(&self.state, &self.address, self.dir.path());
        // Its containers are gone: their namespaces' parents are empty.
        self.owned.remove();
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `(a, b)` for every `dir/a/b`.
fn two_levels(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Ok(first) = std::fs::read_dir(dir) {
        for a in first.flatten() {
            if let Ok(second) = std::fs::read_dir(a.path()) {
                for b in second.flatten() {
                    found.push((
                        a.file_name().to_string_lossy().into_owned(),
                        b.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
        }
    }
    found.sort();
    found
}

/// Containers runc keeps state for under `state/runc/<namespace>`.
fn runc_containers(state: &Path) -> Vec<(String, String)> {
    two_levels(&state.join("runc"))
}

/// PIDs of shim processes started with `-address <address>`.
pub fn shims_of(address: &Path) -> Vec<i32> {
    let needle = address.display().to_string();
    let mut pids = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.contains(&needle) && args.iter().any(|a| a == "-address") {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Mount points under `dir` (in this process's mount namespace), deepest
/// first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    mountinfo_under(dir).into_iter().map(|(t, _)| t).collect()
}

/// `(mount point, filesystem type)` of every mount of this process's
/// namespace at `dir` or below it, deepest first.
pub fn mountinfo_under(dir: &Path) -> Vec<(String, String)> {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<(String, String)> = mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let target = fields.get(4)?;
            // The filesystem type follows the optional fields' "-".
            let fstype = fields.get(fields.iter().position(|f| *f == "-")? + 1)?;
            format!("{target}/")
                .starts_with(&prefix)
                .then(|| ((*target).to_string(), (*fstype).to_string()))
        })
        .collect();
    found.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    found
}

/// Stops everything a daemon's tasks left running: containers in runc
/// roots under `state/runc`, shim processes started with
/// `-address <address>`, and mounts under `dir`.
pub fn cleanup_runtime(state: &Path, address: &Path, dir: &Path) {
    if let Ok(namespaces) = std::fs::read_dir(state.join("runc")) {
        for ns in namespaces.flatten() {
            let root = ns.path();
            let Ok(ids) = std::fs::read_dir(&root) else {
                continue;
            };
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
    }
    for pid in shims_of(address) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        // A killed shim leaves its socket where containerd's shims
        // keep theirs: `/run/containerd/s/<sha256 of address/ns/id>`.
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
        };
        if let (Some(ns), Some(id)) = (flag("-namespace"), flag("-id")) {
            use sha2::Digest;
            let key = address.join(ns).join(id);
            let hash = sha2::Sha256::digest(key.as_os_str().as_encoded_bytes());
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hex));
        }
    }
    for t in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&t).status();
    }
}

/// Writes a minimal busybox root filesystem (static busybox, applet links,
/// empty /proc, /dev, /sys) into `dir`.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("copying /bin/busybox (Debian package busybox-static)")?;
    for a in [
        "sh", "echo", "ls", "sleep", "cat", "true", "false", "yes", "ps",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a))?;
    }
    Ok(())
}

/// Runs `out` as a successful command and returns its stdout, or fails with
/// everything it printed.
pub fn ok(out: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "command failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Runs `out` as a failing command and returns its stderr.
pub fn fails(out: Output) -> Result<String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        bail!(
            "command succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(stderr)
}

/// A child whose stdout is collected in the background; killed on drop.
#[derive(Debug)]
pub struct Watcher {
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watcher {
    /// Spawns `cmd` with stdout captured.
    pub fn spawn(mut cmd: Command) -> Result<Watcher> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for pipe in [
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
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0_u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut o) = out.lock() {
                        o.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Ok(Watcher { child, output })
    }

    /// Waits until the output contains every one of `needles`.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.output.lock().map(|o| o.clone()).unwrap_or_default();
            if needles.iter().all(|n| text.contains(n)) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {needles:?}; output so far:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` with `sh -c` in a private mount namespace of its own
/// (`unshare --mount`), so every mount it makes disappears when it exits,
/// even if it fails halfway. Returns its stdout; fails with its output.
pub fn in_mount_namespace(script: &str) -> Result<String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", script])
        .output()
        .context("running unshare (util-linux)")?;
    ok(out)
}

/// Turns the `mount -t ...` lines `ctr snapshot mounts` prints into a
/// script that mounts them on `target` (creating it) and then runs `then`.
pub fn mount_script(mount_lines: &str, target: &Path, then: &str) -> String {
    let target = target.display();
    let mut script = format!("mkdir -p {target}\n");
    for line in mount_lines.lines().filter(|l| l.starts_with("mount ")) {
        script.push_str(line);
        script.push('\n');
    }
    script.push_str(then);
    script
}

/// Waits until process `pid` has exited (or is a zombie), failing after
/// `hang`: a bound that turns a hang into a failure, not a timing
/// expectation. The process need not be our child, so this watches /proc.
pub fn wait_pid_gone(pid: i32, hang: Duration) -> Result<()> {
    let deadline = Instant::now() + hang;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        if stat.is_empty() || matches!(state, Some("Z" | "X")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("process {pid} still runs {hang:?} later");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where skipped tests are recorded for `cargo xtask test` to print:
/// `BERTH_SKIP_LOG` (set by xtask), else beside the binaries.
pub fn skip_log() -> PathBuf {
    std::env::var_os("BERTH_SKIP_LOG")
        .map_or_else(|| bin_dir().join("berth-test-skips.log"), PathBuf::from)
}

/// Marks the running test as skipped for `reason`: prints `SKIP: <test>:
/// <reason>` and records it in [`skip_log`], which `cargo xtask test`
/// prints after the run so skips are visible in CI. The caller returns
/// `Ok(())` right after.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    let line = format!("SKIP: {test}: {reason}");
    eprintln!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

/// A `ctr events` subscription that is known to be live: the first event
/// it must see is a marker published after it started, so every event of
/// a call made after [`subscribe`] returns is seen.
pub fn subscribe(d: &Daemon) -> Result<Watcher> {
    subscribe_at(&d.address)
}

/// [`subscribe`] to any containerd-compatible daemon at `address`.
pub fn subscribe_at(address: &Path) -> Result<Watcher> {
    let ctr = |args: &[&str]| -> Result<String> {
        ok(Command::new(ctr_bin()?)
            .arg("--address")
            .arg(address)
            .args(args)
            .output()?)
    };
    let mut events = Command::new(ctr_bin()?);
    events.arg("--address").arg(address).arg("events");
    let watcher = Watcher::spawn(events)?;
    let marker = format!("subscribed-{}", std::process::id());
    let mut tries = 0;
    loop {
        // The subscription may start after a marker was published: publish
        // again until one reaches it (bounded: a hang becomes a failure).
        ctr(&["namespaces", "create", &marker])?;
        ctr(&["namespaces", "rm", &marker])?;
        if watcher
            .wait_for(&[&marker], Duration::from_millis(200))
            .is_ok()
        {
            return Ok(watcher);
        }
        tries += 1;
        if tries > 150 {
            bail!("ctr events never saw the marker {marker}");
        }
    }
}
