//! Snapshotters beyond overlayfs and native, end to end: images unpacked
//! (by ctr's client-side unpack and by berthd's Transfer service),
//! containers run through `ctr run` and `berthctl run`, and a berthd killed
//! with SIGKILL that comes back with its snapshots and runs containers.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Daemon, fails, ok, skip, subscribe, testimages};

/// Whether the kernel knows filesystem `fs_type` (else the skip is recorded).
fn kernel_has(fs_type: &str) -> bool {
    let known = std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs_type));
    if !known {
        skip(&format!(
            "the kernel does not support {fs_type} (not in /proc/filesystems)"
        ));
    }
    known
}

/// berthd whose root is a loop-mounted Btrfs of its own (containerd's
/// btrfs snapshotter needs its root on Btrfs); the mount goes with the
/// daemon's directory.
fn daemon_on_btrfs(namespace: &str) -> Result<Daemon> {
    let d = Daemon::start_prepared(None, |d| {
        let image = d.scratch("btrfs.img");
        std::fs::File::create(&image)?.set_len(512 << 20)?;
        ok(Command::new("mkfs.btrfs")
            .arg("-q")
            .arg(&image)
            .output()
            .context("mkfs.btrfs (cargo xtask deps installs btrfs-progs)")?)?;
        std::fs::create_dir_all(&d.root)?;
        ok(Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop"])
            .arg(&image)
            .arg(&d.root)
            .output()?)?;
        Ok(())
    })?;
    Ok(d.in_namespace(namespace))
}

/// The loop device the daemon's root is mounted from.
fn root_device(d: &Daemon) -> Result<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let root = d.root.display().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(root.as_str()))
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            f.get(dash + 2).map(|s| (*s).to_string())
        })
        .context("the daemon's root is not a mount point")
}

#[test]
fn btrfs_runs_containers_through_ctr_and_berthctl_and_survives_kill9() -> Result<()> {
    if !kernel_has("btrfs") {
        return Ok(());
    }
    let mut d = daemon_on_btrfs("sn-btrfs")?;
    let plugins = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains(" btrfs ")
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    let layout = testimages::layered(&d.scratch("layered"))?;
    let archive = d.scratch("layered.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();
    // ctr unpacks on the client side: Diff.Apply on the btrfs mounts.
    ok(d.ctr(&["images", "import", "--snapshotter", "btrfs", &archive])?)?;
    let image = ok(d.ctr(&["images", "ls", "-q"])?)?;
    let image = image
        .lines()
        .next()
        .context("no image imported")?
        .to_owned();
    let committed = ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"])?)?;
    assert!(
        committed.lines().skip(1).count() >= 2
            && committed.lines().skip(1).all(|l| l.contains("Committed")),
        "{committed}"
    );

    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "btrfs",
        &image,
        "c1",
        "/bin/sh",
        "-c",
        "echo written > /new && cat /new /data/kept /data/new /links/hard && ls /opq \
         && test ! -e /data/gone && echo gone-is-hidden",
    ])?)?;
    assert_eq!(out, "written\nkept\nnew\nshared\nfresh\ngone-is-hidden\n");

    // Mounts are containerd's: the root's device, by subvolume id.
    ok(d.ctr(
        &["snapshots", "--snapshotter", "btrfs", "prepare", "look", {
            let first = committed.lines().nth(1).context("no snapshot")?;
            first.split_whitespace().next().context("no key")?
        }],
    )?)?;
    let mounts = ok(d.ctr(&[
        "snapshots",
        "--snapshotter",
        "btrfs",
        "mounts",
        "/mnt",
        "look",
    ])?)?;
    let device = root_device(&d)?;
    assert!(
        mounts.starts_with(&format!("mount -t btrfs {device} /mnt -o subvolid=")),
        "{mounts}"
    );
    ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "rm", "look"])?)?;

    // berthd's own import (Transfer service) unpacks into btrfs through
    // the plain mount-and-apply path, and berthctl runs on it.
    ok(d.berthctl(&["images", "rm", &image])?)?;
    ok(d.berthctl(&["images", "import", "--snapshotter", "btrfs", &archive])?)?;
    let out = ok(d.berthctl(&[
        "run",
        "--rm",
        "--snapshotter",
        "btrfs",
        &image,
        "c2",
        "/bin/cat",
        "/data/new",
    ])?)?;
    assert_eq!(out, "new\n");

    // A running container across SIGKILL of berthd.
    ok(d.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        "btrfs",
        &image,
        "c3",
        "/bin/sleep",
        "300",
    ])?)?;
    let before = ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"])?)?;
    d.kill9()?;
    d.restart()?;
    let after = ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"])?)?;
    assert_eq!(before, after, "the snapshots changed across kill -9");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("c3 ") && l.contains("Active")),
        "{after}"
    );
    let tasks = ok(d.ctr(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("c3 ") && l.contains("RUNNING")),
        "{tasks}"
    );
    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "btrfs",
        &image,
        "c4",
        "/bin/echo",
        "after restart",
    ])?)?;
    assert_eq!(out, "after restart\n");
    let watcher = subscribe(&d)?;
    ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", "c3"])?)?;
    watcher.wait_for(
        &["\"container_id\":\"c3\"", "/tasks/exit"],
        Duration::from_secs(30),
    )?;
    ok(d.ctr(&["tasks", "delete", "c3"])?)?;
    ok(d.ctr(&["containers", "delete", "c3"])?)?;
    // Nothing of c3 is left, and the image's layers are still parents.
    let left = ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"])?)?;
    assert!(!left.contains("c3 "), "{left}");
    let err = fails(
        d.ctr(&[
            "snapshots",
            "--snapshotter",
            "btrfs",
            "rm",
            left.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .context("no snapshot left")?,
        ])?,
    )?;
    assert!(
        err.contains("child") || err.contains("precondition"),
        "{err}"
    );
    finish_on_own_root(d)
}

/// Stops berthd, unmounts the filesystem under its root (the test's own
/// mount, not a leftover), then checks nothing else is left.
fn finish_on_own_root(mut d: Daemon) -> Result<()> {
    let status = d.stop()?;
    anyhow::ensure!(status.success(), "berthd exited with {status} on SIGTERM");
    ok(Command::new("umount").arg(&d.root).output()?)?;
    d.finish()
}
