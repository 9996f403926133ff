//! berthd and berthctl as operators meet them: version flags, the version
//! the Version API reports, systemd readiness, JSON logs, and the config
//! commands. Each test runs the real berthd on a temp root.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use berth_tests::{bin, ctr_bin, ok};

/// Generous bound on berthd's start, so a hang fails the test.
const START: Duration = Duration::from_secs(120);

/// The text `prog -v` and `prog --version` print, checked to agree.
fn version_of(prog: &str) -> Result<String> {
    let short = ok(Command::new(bin(prog)?).arg("-v").output()?)?;
    let long = ok(Command::new(bin(prog)?).arg("--version").output()?)?;
    ensure!(short == long, "{prog}: -v {short:?} but --version {long:?}");
    Ok(short.trim().to_string())
}

#[test]
fn version_flags_print_the_version() -> Result<()> {
    let berthd = version_of("berthd")?;
    let fields: Vec<&str> = berthd.split(' ').collect();
    ensure!(
        fields.len() == 4 && fields[0] == "berthd" && fields[1] == "github.com/berth-dev/berth",
        "berthd -v: {berthd:?}"
    );
    ensure!(fields[2].contains("+berth."), "berthd -v: {berthd:?}");
    let berthctl = version_of("berthctl")?;
    ensure!(
        berthctl.starts_with("berthctl github.com/berth-dev/berth "),
        "berthctl -v: {berthctl:?}"
    );
    Ok(())
}

/// A berthd started as systemd starts it (`$NOTIFY_SOCKET`), stopped by
/// its pid even when the test fails.
struct Notified {
    child: std::process::Child,
    notify: UnixDatagram,
}

impl Notified {
    fn start(dir: &Path, config: &str) -> Result<Notified> {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)?;
        let socket = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&socket)?;
        notify.set_read_timeout(Some(START))?;
        let child = Command::new(bin("berthd")?)
            .arg("--config")
            .arg(&config_path)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("berthd.sock"))
            .env("NOTIFY_SOCKET", &socket)
            .env_remove("BERTH_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Notified { child, notify })
    }

    /// The next notification berthd sends.
    fn next(&self) -> Result<String> {
        let mut buf = [0u8; 256];
        let n = self
            .notify
            .recv(&mut buf)
            .context("no notification from berthd")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends SIGTERM.
    fn terminate(&self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// SIGTERM, then berthd's log once it exited.
    fn stop(self) -> Result<String> {
        self.terminate()?;
        self.log()
    }

    /// berthd's log once it exited.
    fn log(mut self) -> Result<String> {
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut log)?;
        }
        let status = self.child.wait()?;
        ensure!(status.success(), "berthd exited {status}: {log}");
        Ok(log)
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

#[test]
fn notifies_systemd_and_logs_json_at_the_configured_level() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let daemon = Notified::start(
        dir.path(),
        "version = 3\n[debug]\nlevel = \"debug\"\nformat = \"json\"\n",
    )?;
    ensure!(daemon.next()? == "READY=1", "first notification");
    // The Version API reports what `berthd -v` prints.
    let out = ok(Command::new(ctr_bin()?)
        .arg("--address")
        .arg(dir.path().join("berthd.sock"))
        .arg("version")
        .output()?)?;
    let version = version_of("berthd")?;
    let api_version = version.split(' ').nth(2).unwrap_or_default();
    ensure!(
        out.lines()
            .any(|l| l.trim() == format!("Version:  {api_version}")),
        "ctr version: {out}"
    );
    // SIGTERM: berthd says it is stopping, then exits.
    daemon.terminate()?;
    ensure!(daemon.next()? == "STOPPING=1", "stopping notification");
    let log = daemon.log()?;
    let mut levels = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        levels.push(v["level"].as_str().unwrap_or_default().to_string());
        // containerd's (logrus') keys.
        ensure!(v["msg"].is_string(), "no msg: {line}");
        ensure!(v["time"].is_string(), "no time: {line}");
    }
    ensure!(levels.iter().any(|l| l == "debug"), "no debug line: {log}");
    ensure!(levels.iter().any(|l| l == "info"), "no info line: {log}");
    Ok(())
}

#[test]
fn warn_level_in_the_config_silences_info() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let daemon = Notified::start(dir.path(), "version = 2\n[debug]\nlevel = \"warn\"\n")?;
    ensure!(daemon.next()? == "READY=1", "first notification");
    let log = daemon.stop()?;
    ensure!(
        !log.contains("berthd successfully booted"),
        "info logged at level warn: {log}"
    );
    Ok(())
}

#[test]
fn berthd_starts_on_its_full_default_config() -> Result<()> {
    // What `config default` prints (and `xtask install` installs) is a
    // config every plugin accepts: berthd gets ready on it.
    let default = ok(Command::new(bin("berthd")?)
        .args(["config", "default"])
        .output()?)?;
    let dir = tempfile::tempdir()?;
    let daemon = Notified::start(dir.path(), &default)?;
    ensure!(daemon.next()? == "READY=1", "first notification");
    let log = daemon.stop()?;
    ensure!(!log.contains("ERROR"), "{log}");
    Ok(())
}

#[test]
fn bad_log_format_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[debug]\nformat = \"xml\"\n")?;
    let out = Command::new(bin("berthd")?)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(dir.path().join("berthd.sock"))
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "berthd started with format xml");
    ensure!(err.contains("\"xml\"") && err.contains("json"), "{err}");
    Ok(())
}

#[test]
fn config_default_dump_and_migrate() -> Result<()> {
    let berthd = bin("berthd")?;
    let default = ok(Command::new(&berthd).args(["config", "default"]).output()?)?;
    for section in [
        "[grpc]",
        "[ttrpc]",
        "[debug]",
        "[metrics]",
        "[cgroup]",
        "[timeouts]",
        "[plugins.\"io.containerd.gc.v1.scheduler\"]",
        "[plugins.\"io.containerd.internal.v1.restart\"]",
        "[plugins.\"io.containerd.transfer.v1.local\"]",
        "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]",
    ] {
        ensure!(default.contains(section), "{section} missing:\n{default}");
    }
    let dir = tempfile::tempdir()?;
    let v1 = dir.path().join("v1.toml");
    std::fs::write(
        &v1,
        "root = \"/srv/berth\"\n[plugins.scheduler]\npause_threshold = 0.05\n[plugins.cri]\nsandbox_image = \"pause:3.9\"\n",
    )?;
    let migrated = ok(Command::new(&berthd)
        .arg("--config")
        .arg(&v1)
        .args(["config", "migrate"])
        .output()?)?;
    let v3 = dir.path().join("v3.toml");
    std::fs::write(&v3, &migrated)?;
    let table: toml::Table = migrated.parse()?;
    ensure!(table["version"].as_integer() == Some(3), "{migrated}");
    ensure!(
        table["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str()
            == Some("pause:3.9"),
        "{migrated}"
    );
    // berthd reads the version 3 file: the dump shows the migrated values.
    let dump = ok(Command::new(&berthd)
        .arg("--config")
        .arg(&v3)
        .args(["config", "dump"])
        .output()?)?;
    let dumped: toml::Table = dump.parse()?;
    ensure!(dumped["root"].as_str() == Some("/srv/berth"), "{dump}");
    ensure!(
        dumped["plugins"]["io.containerd.gc.v1.scheduler"]["pause_threshold"].as_float()
            == Some(0.05),
        "{dump}"
    );
    ensure!(
        dumped["plugins"]["io.containerd.gc.v1.scheduler"]["mutation_threshold"].as_integer()
            == Some(100),
        "defaults filled in: {dump}"
    );
    Ok(())
}

#[test]
fn berthctl_bash_completion_loads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for prog in ["berthd", "berthctl"] {
        let file = dir.path().join(prog);
        std::fs::write(
            &file,
            ok(Command::new(bin(prog)?)
                .args(["completion", "bash"])
                .output()?)?,
        )?;
        let out = ok(Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p {prog}", file.display()))
            .output()?)?;
        ensure!(out.contains(&format!("-F _{prog} {prog}")), "{out}");
        let man = ok(Command::new(bin(prog)?).arg("man").output()?)?;
        ensure!(man.contains(&format!(".TH {prog}")), "{man}");
    }
    Ok(())
}
