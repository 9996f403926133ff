//! berthctl's error messages, exactly: one prefix each, no repeated
//! transport or runc text, permission problems named as such.

use std::process::Command;

use anyhow::Result;
use berth_tests::{Daemon, fails, ok, testimages};

/// Imports busybox; returns its config's digest.
fn import_busybox(d: &Daemon) -> Result<String> {
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    let manifest = testimages::read_json(&layout, &layout.manifests[0].1.digest)?;
    Ok(manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn not_found_errors_name_the_object_once() -> Result<()> {
    let d = Daemon::start()?;
    assert_eq!(
        fails(d.berthctl(&["run", "nope", "x1", "true"])?)?,
        "berthctl: image \"nope\": not found (pull it first)\n"
    );
    assert_eq!(
        fails(d.berthctl(&["tasks", "start", "nope"])?)?,
        "berthctl: container \"nope\": not found\n"
    );
    assert_eq!(
        fails(d.berthctl(&["containers", "info", "nope"])?)?,
        "berthctl: container \"nope\": not found\n"
    );
    let out = d.scratch("x.tar").display().to_string();
    assert_eq!(
        fails(d.berthctl(&["images", "export", &out, "nope"])?)?,
        "berthctl: image \"docker.io/library/nope\": not found\n"
    );
    // As ctr: an unknown image is a warning, not a failure.
    let rm = d.berthctl(&["images", "rm", "nope"])?;
    assert!(rm.status.success());
    assert_eq!(
        String::from_utf8_lossy(&rm.stderr),
        "berthctl: nope: image not found\n"
    );
    d.finish()
}

#[test]
fn connection_errors_say_why_once() -> Result<()> {
    let d = Daemon::start()?;
    let missing = d.scratch("no.sock");
    let out = Command::new(berth_tests::bin("berthctl")?)
        .arg("-a")
        .arg(&missing)
        .args(["images", "ls"])
        .output()?;
    assert_eq!(
        fails(out)?,
        format!(
            "berthctl: cannot connect to {}: No such file or directory (os error 2) \
             (is the daemon running, and is the address right?)\n",
            missing.display()
        )
    );
    // An unprivileged user meets EACCES on berthd's socket (0660 root):
    // permission denied, with what to do, and no "is the daemon running?".
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(berth_tests::bin("berthctl")?)
        .arg("-a")
        .arg(&d.address)
        .args(["images", "ls"])
        .output()?;
    assert_eq!(
        fails(out)?,
        format!(
            "berthctl: permission denied connecting to {}: run as root (sudo), \
             or as a member of the group owning the socket\n",
            d.address.display()
        )
    );
    d.finish()
}

#[test]
fn runc_failures_are_reported_once() -> Result<()> {
    let d = Daemon::start()?;
    let rootfs = d.scratch("rootfs");
    berth_tests::busybox_rootfs(&rootfs)?;
    let err = fails(d.berthctl(&[
        "run",
        "--rootfs",
        &rootfs.display().to_string(),
        "r1",
        "/nonexistent",
    ])?)?;
    // runc itself writes its error to the task's stderr (as with ctr);
    // berthctl's own line carries containerd's wording, once.
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("berthctl:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].starts_with(
            "berthctl: creating task \"r1\": OCI runtime create failed: runc create failed: "
        ),
        "{err}"
    );
    assert_eq!(ours[0].matches("runc create failed").count(), 1, "{err}");
    assert!(ours[0].ends_with("no such file or directory"), "{err}");
    ok(d.ctr(&["containers", "rm", "r1"])?)?;
    d.finish()
}

#[test]
fn push_progress_names_the_config_as_a_config() -> Result<()> {
    let registry = berth_tests::Registry::start()?;
    let d = Daemon::start()?;
    let config = import_busybox(&d)?;
    assert!(config.starts_with("sha256:"), "config digest: {config:?}");
    let reference = format!("{}/berth/busybox:1", registry.host);
    let out = d.berthctl(&[
        "push",
        "--plain-http",
        &reference,
        "docker.io/library/busybox:latest",
    ])?;
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out)?;
    let short = &config["sha256:".len().."sha256:".len() + 12];
    assert!(progress.contains(&format!("config-{short}")), "{progress}");
    assert!(!progress.contains(&format!("layer-{short}")), "{progress}");
    d.finish()
}
