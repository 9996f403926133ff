//! `berthctl` against berthd: version, plugins, namespaces, events.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use berth_tests::{Daemon, Watcher, bin, ok};

#[test]
fn berthctl_version_and_plugins() -> Result<()> {
    let d = Daemon::start()?;
    let out = ok(d.berthctl(&["version"])?)?;
    assert!(out.contains("Server:") && out.contains("UUID:"), "{out}");
    let out = ok(d.berthctl(&["plugins", "ls"])?)?;
    assert!(out.starts_with("TYPE"), "{out}");
    assert!(
        out.contains("io.containerd.grpc.v1") && out.contains("namespaces"),
        "{out}"
    );
    let out = ok(d.berthctl(&["plugins", "ls", "-q", "id==version"])?)?;
    assert_eq!(out.trim(), "version");
    d.finish()
}

#[test]
fn berthctl_namespaces_round_trip() -> Result<()> {
    let d = Daemon::start()?;
    ok(d.berthctl(&["namespaces", "create", "y", "team=a"])?)?;
    ok(d.berthctl(&["ns", "label", "y", "k=v"])?)?;
    let out = ok(d.berthctl(&["namespaces", "ls"])?)?;
    let line = out
        .lines()
        .find(|l| l.starts_with("y "))
        .unwrap_or_default();
    assert!(line.contains("k=v") && line.contains("team=a"), "{out}");
    // ctr sees what berthctl wrote: same wire, same store.
    let out = ok(d.ctr(&["namespaces", "ls"])?)?;
    assert!(out.contains("team=a"), "{out}");
    let out = ok(d.berthctl(&["namespaces", "rm", "y"])?)?;
    assert_eq!(out.trim(), "y");
    // Like ctr, removing a namespace that is already gone is not a failure,
    // but berthctl says so.
    let out = d.berthctl(&["namespaces", "rm", "y"])?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    d.finish()
}

#[test]
fn berthctl_events_with_filter() -> Result<()> {
    let d = Daemon::start()?;
    let mut cmd = Command::new(bin("berthctl")?);
    cmd.arg("--address")
        .arg(&d.address)
        .args(["events", "topic==\"/namespaces/delete\""]);
    let watcher = Watcher::spawn(cmd)?;
    let mut seen = false;
    for i in 0..50 {
        let name = format!("f{i}");
        ok(d.berthctl(&["namespaces", "create", &name])?)?;
        ok(d.berthctl(&["namespaces", "rm", &name])?)?;
        if watcher
            .wait_for(&["/namespaces/delete", &name], Duration::from_millis(200))
            .is_ok()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "no delete event seen");
    let out = watcher.wait_for(&["/namespaces/delete"], Duration::from_secs(1))?;
    assert!(
        !out.contains("/namespaces/create"),
        "filter let a create event through:\n{out}"
    );
    d.finish()
}
