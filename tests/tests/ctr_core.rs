//! Debian's `ctr` as a real client of berthd: version, plugins, namespaces, events.

use std::time::Duration;

use anyhow::Result;
use berth_tests::{Daemon, fails, ok};

#[test]
fn ctr_version_reports_server() -> Result<()> {
    let d = Daemon::start()?;
    let out = ok(d.ctr(&["version"])?)?;
    assert!(out.contains("Server:"), "{out}");
    assert!(out.contains("+berth."), "{out}");
    // The UUID printed comes from Introspection.Server.
    assert!(out.contains("UUID:"), "{out}");
    d.finish()
}

#[test]
fn ctr_plugins_ls_lists_services() -> Result<()> {
    let d = Daemon::start()?;
    let out = ok(d.ctr(&["plugins", "ls"])?)?;
    for needle in [
        "io.containerd.grpc.v1",
        "namespaces",
        "introspection",
        "version",
        "io.containerd.metadata.v1",
        "io.containerd.event.v1",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    // All load, except (as in containerd) the snapshotters that need a
    // setup a default root lacks: btrfs (a Btrfs root), blockfile (a
    // scratch_file), erofs (a kernel with EROFS); they are listed as `skip`.
    assert!(
        out.lines().skip(1).all(|l| {
            let l = l.trim_end();
            l.ends_with("ok")
                || (l.ends_with("skip")
                    && l.starts_with("io.containerd.snapshotter.v1")
                    && [" btrfs ", " blockfile ", " erofs "]
                        .iter()
                        .any(|id| l.contains(id)))
        }),
        "{out}"
    );
    // Listed either way (loaded where /tmp happens to be on Btrfs).
    assert!(out.lines().any(|l| l.contains(" btrfs ")), "{out}");
    // Filters go through the filter language on the server.
    let out = ok(d.ctr(&["plugins", "ls", "type==io.containerd.grpc.v1"])?)?;
    assert!(out.contains("namespaces"), "{out}");
    assert!(!out.contains("io.containerd.metadata.v1"), "{out}");
    d.finish()
}

#[test]
fn ctr_namespaces_create_label_ls_rm() -> Result<()> {
    let d = Daemon::start()?;
    ok(d.ctr(&["namespaces", "create", "x"])?)?;
    ok(d.ctr(&["namespaces", "label", "x", "k=v"])?)?;
    let out = ok(d.ctr(&["namespaces", "ls"])?)?;
    let line = out
        .lines()
        .find(|l| l.starts_with("x "))
        .unwrap_or_default();
    assert!(line.contains("k=v"), "{out}");

    // Creating it again is AlreadyExists, named as such by ctr.
    let err = fails(d.ctr(&["namespaces", "create", "x"])?)?;
    assert!(err.contains("already exists"), "{err}");

    // Clearing a label.
    ok(d.ctr(&["namespaces", "label", "x", "k="])?)?;
    let out = ok(d.ctr(&["namespaces", "ls"])?)?;
    assert!(!out.contains("k=v"), "{out}");

    ok(d.ctr(&["namespaces", "rm", "x"])?)?;
    let out = ok(d.ctr(&["namespaces", "ls", "-q"])?)?;
    assert!(!out.lines().any(|l| l == "x"), "{out}");

    // ctr treats NotFound on delete as done (containerd does the same), so
    // a second removal succeeds and the namespace stays absent.
    ok(d.ctr(&["namespaces", "rm", "x"])?)?;
    let out = ok(d.ctr(&["namespaces", "ls", "-q"])?)?;
    assert!(!out.lines().any(|l| l == "x"), "{out}");
    d.finish()
}

/// containerd's Go client (Docker Engine's, ctr's) labels its namespace
/// before anything created it: the label creates it, as in containerd.
#[test]
fn ctr_labelling_a_missing_namespace_creates_it() -> Result<()> {
    let d = Daemon::start()?;
    ok(d.ctr(&["namespaces", "label", "fresh", "k=v"])?)?;
    let out = ok(d.ctr(&["namespaces", "ls"])?)?;
    let line = out
        .lines()
        .find(|l| l.starts_with("fresh "))
        .unwrap_or_default();
    assert!(line.contains("k=v"), "{out}");
    Ok(())
}

#[test]
fn ctr_rejects_invalid_namespace_name() -> Result<()> {
    let d = Daemon::start()?;
    let err = fails(d.ctr(&["namespaces", "create", "bad name!"])?)?;
    assert!(
        err.contains("bad name!") && err.contains("invalid argument"),
        "{err}"
    );
    d.finish()
}

#[test]
fn ctr_events_sees_namespace_events() -> Result<()> {
    let d = Daemon::start()?;
    let watcher = berth_tests::subscribe(&d)?;
    let name = "ev1".to_string();
    ok(d.ctr(&["namespaces", "create", &name, "a=b"])?)?;
    ok(d.ctr(&["namespaces", "label", &name, "k=v"])?)?;
    ok(d.ctr(&["namespaces", "rm", &name])?)?;
    let out = watcher.wait_for(
        &[
            "/namespaces/create",
            "/namespaces/update",
            "/namespaces/delete",
        ],
        Duration::from_secs(10),
    )?;
    // ctr decodes the payload through its type registry: the name is in it.
    let create = out
        .lines()
        .find(|l| l.contains("/namespaces/create") && l.contains(&name))
        .unwrap_or_default();
    assert!(create.contains(&format!("\"name\":\"{name}\"")), "{out}");
    d.finish()
}
