//! berthd startup, configuration errors, sockets and restarts.

use std::process::Command;

use anyhow::Result;
use berth_tests::{Daemon, bin, fails, ok};

#[test]
fn starts_without_config_and_socket_is_0660() -> Result<()> {
    let d = Daemon::start()?;
    assert_eq!(d.socket_mode()?, 0o660);
    let mut ttrpc = d.address.as_os_str().to_owned();
    ttrpc.push(".ttrpc");
    assert!(std::path::Path::new(&ttrpc).exists(), "no ttrpc socket");
    // Reported, not asserted: machines are shared and noisy.
    eprintln!("startup to a served socket: {:?}", d.startup);
    d.finish()
}

#[test]
fn malformed_config_names_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "version = 2\n[grpc]\naddress = \"/tmp/x.sock\"\nroot = = 3\n",
    )?;
    let out = Command::new(bin("berthd")?)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()?;
    let err = fails(out)?;
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains(&config.display().to_string()), "{err}");
    Ok(())
}

#[test]
fn unknown_sections_are_ignored() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"pause\"\n[something_else]\nx = 1\n",
    ))?;
    ok(d.ctr(&["version"])?)?;
    assert!(
        d.log().contains("something_else"),
        "unknown section not logged:\n{}",
        d.log()
    );
    d.finish()
}

#[test]
fn disabled_plugins_are_not_loaded() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.events\"]\n",
    ))?;
    let out = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        !out.lines()
            .any(|l| l.contains("io.containerd.grpc.v1") && l.contains(" events ")),
        "{out}"
    );
    // The service is really gone: ctr events fails as unimplemented.
    let err = fails(d.ctr(&["events"])?)?;
    assert!(err.contains("code = Unimplemented"), "{err}");
    d.finish()
}

#[test]
fn second_daemon_on_live_socket_fails_clearly() -> Result<()> {
    let d = Daemon::start()?;
    let other = tempfile::tempdir()?;
    let out = Command::new(bin("berthd")?)
        .arg("--address")
        .arg(&d.address)
        .arg("--root")
        .arg(other.path().join("root"))
        .arg("--state")
        .arg(other.path().join("state"))
        .output()?;
    let err = fails(out)?;
    assert!(err.contains("in use by another running daemon"), "{err}");
    // The first daemon is unharmed.
    ok(d.ctr(&["version"])?)?;
    d.finish()
}

#[test]
fn kill9_restart_keeps_namespaces_and_labels() -> Result<()> {
    let mut d = Daemon::start()?;
    ok(d.ctr(&["namespaces", "create", "keep", "a=1"])?)?;
    ok(d.ctr(&["namespaces", "label", "keep", "b=2"])?)?;
    let uuid_before = ok(d.ctr(&["version"])?)?;
    d.kill9()?;
    // The killed daemon left its socket file behind; the new one replaces it.
    assert!(d.address.exists());
    d.restart()?;
    let out = ok(d.ctr(&["namespaces", "ls"])?)?;
    let line = out
        .lines()
        .find(|l| l.starts_with("keep "))
        .unwrap_or_default();
    assert!(line.contains("a=1") && line.contains("b=2"), "{out}");
    // The server uuid is stable across restarts.
    let uuid = |s: &str| s.lines().find(|l| l.contains("UUID")).map(str::to_string);
    assert_eq!(uuid(&uuid_before), uuid(&ok(d.ctr(&["version"])?)?));
    d.finish()
}

#[test]
fn sigterm_removes_sockets() -> Result<()> {
    let mut d = Daemon::start()?;
    let status = d.stop()?;
    assert!(status.success(), "{status}");
    assert!(
        !d.address.exists(),
        "socket left behind after clean shutdown"
    );
    d.finish()
}

#[test]
fn config_default_prints_effective_config() -> Result<()> {
    let out = Command::new(bin("berthd")?)
        .args(["--root", "/srv/berth", "config", "default"])
        .output()?;
    let text = ok(out)?;
    assert!(text.contains("version = 2"), "{text}");
    assert!(text.contains("root = \"/srv/berth\""), "{text}");
    assert!(text.contains("[grpc]"), "{text}");
    Ok(())
}

/// Makes the metadata plugin's directory a file, so its init fails.
fn break_metadata(root: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    std::fs::write(
        root.join("io.containerd.metadata.v1.redb"),
        "not a directory",
    )?;
    Ok(())
}

#[test]
fn failed_plugin_is_reported_not_fatal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    break_metadata(&root)?;
    let address = dir.path().join("s.sock");
    let mut child = Command::new(bin("berthd")?)
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(&address)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&address).is_err() {
        assert!(std::time::Instant::now() < deadline, "berthd did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = Command::new(berth_tests::ctr_bin()?)
        .arg("--address")
        .arg(&address)
        .args(["plugins", "ls"])
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let text = ok(out?)?;
    let status = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(status("redb").as_deref(), Some("error"), "{text}");
    // namespaces needs the metadata plugin, so it fails too; version is fine.
    assert_eq!(status("namespaces").as_deref(), Some("error"), "{text}");
    assert_eq!(status("version").as_deref(), Some("ok"), "{text}");
    Ok(())
}

#[test]
fn failed_required_plugin_is_fatal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    break_metadata(&root)?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "version = 2\nrequired_plugins = [\"io.containerd.metadata.v1.redb\"]\n",
    )?;
    let out = Command::new(bin("berthd")?)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(dir.path().join("s.sock"))
        .output()?;
    let err = fails(out)?;
    assert!(
        err.contains("required plugin io.containerd.metadata.v1.redb failed"),
        "{err}"
    );
    Ok(())
}
