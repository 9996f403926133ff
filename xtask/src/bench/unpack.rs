//! `unpack`: the big image pulled and unpacked into each snapshotter
//! (overlayfs, native, btrfs, blockfile, erofs), berthd side by side with
//! containerd 1.6 where containerd 1.6 has the same snapshotter (overlayfs,
//! native, btrfs).
//!
//! Each round, per daemon: everything of the image is removed (images,
//! snapshots, content), then it is pulled from the local registry into the
//! snapshotter (`pull`: download and unpack); then its snapshots are
//! removed, the content kept (the pulled image holds it), and the same
//! image is imported from its archive (`unpack`: the blobs are already in
//! the store, so this is the unpack). Each run is checked to have left the
//! image's layers as committed snapshots of that snapshotter.
//!
//! The scenario runs on a pair of daemons of its own, under a directory of
//! its own: btrfs gets a loop-mounted Btrfs image per daemon (its
//! `root_path`), blockfile (berthd only) an ext4 scratch image. A
//! snapshotter whose prerequisites are missing here (kernel filesystem,
//! loop devices, mkfs tool: `berth_snapshots::testsuite::needs`), or whose
//! plugin the daemon does not load, is listed as skipped with the reason.
//! Daemons, mounts and loop devices are registered with [`crate::cleanup`]
//! (stopped, unmounted and detached on error and Ctrl-C too), and the
//! scenario fails if anything of them is left when it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::{Daemon, start_berthd_with, start_containerd_with};
use super::pull::{remove_content, remove_snapshots};
use super::report::{Better, Goal, Row, Summary, print_and_save};
use super::{Ctx, rounds, timed};
use crate::{Result, cleanup};

/// The snapshotters measured, in this order, and whether containerd 1.6
/// has the same one.
const SNAPSHOTTERS: [(&str, bool); 5] = [
    ("overlayfs", true),
    ("native", true),
    ("btrfs", true),
    ("blockfile", false),
    ("erofs", false),
];

/// Size of each daemon's Btrfs image (sparse; the image unpacks to ~260 MB).
const BTRFS_BYTES: u64 = 2 << 30;
/// Size of blockfile's scratch image, so of every blockfile snapshot
/// (sparse; it must hold the whole unpacked image).
const SCRATCH_BYTES: u64 = 1 << 30;
/// The image's name when imported from its archive.
const NAME: &str = "docker.io/library/big:latest";

/// Runs the scenario.
pub(super) fn scenario(shared: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    let big = ctx.big(shared)?;
    let remote = big.remote.clone();
    let archive = big.archive.clone();
    let layers = big.layout.layers.len();
    let dir = ctx.dir.join("unpack");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    cleanup::dir(&dir);
    let result = measure(&dir, &ctx.bin, &remote, &archive, layers, s);
    // Stops the daemons (already stopped unless measuring failed), unmounts
    // and detaches what is under `dir`, removes it.
    cleanup::remove_dir(&dir);
    let left = leftovers(&dir);
    match (result, left.is_empty()) {
        (Err(e), _) => Err(e),
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => Err(format!(
            "the unpack scenario left behind: {}",
            left.join(", ")
        )),
    }
}

/// The setup, the measurements, and an orderly stop.
fn measure(
    dir: &Path,
    bin: &Path,
    remote: &str,
    archive: &str,
    layers: usize,
    s: &mut Summary,
) -> Result<()> {
    let berth_dir = dir.join("berth");
    let containerd_dir = dir.join("containerd");
    // Why each snapshotter cannot be measured here, per daemon.
    let mut skip_berth: BTreeMap<&str, String> = BTreeMap::new();
    let mut skip_containerd: BTreeMap<&str, String> = BTreeMap::new();
    for (sn, _) in SNAPSHOTTERS {
        let unmet = berth_snapshots::testsuite::unmet(sn);
        if !unmet.is_empty() {
            skip_berth.insert(sn, unmet.join("; "));
            skip_containerd.insert(sn, unmet.join("; "));
        }
    }
    let mut berth_plugins = String::new();
    let mut containerd_btrfs = None;
    if !skip_berth.contains_key("btrfs") {
        let root = loop_btrfs(&berth_dir)?;
        berth_plugins.push_str(&format!(
            "[plugins.\"io.containerd.snapshotter.v1.btrfs\"]\n  root_path = \"{}\"\n",
            root.display()
        ));
        containerd_btrfs = Some(loop_btrfs(&containerd_dir)?);
    }
    if !skip_berth.contains_key("blockfile") {
        let scratch = scratch_ext4(&berth_dir)?;
        berth_plugins.push_str(&format!(
            "[plugins.\"io.containerd.snapshotter.v1.blockfile\"]\n  scratch_file = \"{}\"\n",
            scratch.display()
        ));
    }
    let berth = start_berthd_with(&berth_dir, bin, &berth_plugins)?;
    let containerd = start_containerd_with(&containerd_dir, bin, containerd_btrfs.as_deref())?;
    // What the daemons themselves report of each plugin.
    for (d, skips) in [
        (&berth, &mut skip_berth),
        (&containerd, &mut skip_containerd),
    ] {
        let plugins = snapshot_plugins(d)?;
        for (sn, in_containerd) in SNAPSHOTTERS {
            if skips.contains_key(sn) || (!d.is_berth() && !in_containerd) {
                continue;
            }
            match plugins.get(sn).map(String::as_str) {
                Some("ok") => {}
                Some(status) => {
                    skips.insert(sn, format!("{}'s {sn} plugin: {status}", d.name));
                }
                None => {
                    skips.insert(sn, format!("{} has no {sn} plugin", d.name));
                }
            }
        }
    }

    let mut rows = Vec::new();
    for (sn, in_containerd) in SNAPSHOTTERS {
        let mut pull = Row::new(format!("pull 250 MB, 6 layers: {sn}"), "s", Better::Lower);
        let mut unpack = Row::new(
            format!("unpack 250 MB, content local: {sn}"),
            "s",
            Better::Lower,
        );
        if sn == "overlayfs" {
            pull = pull.goal(Goal::AtMost(0.33));
            unpack = unpack.goal(Goal::AtMost(0.33));
        }
        if let Some(reason) = skip_berth.get(sn) {
            pull.skipped = Some(reason.clone());
            unpack.skipped = Some(reason.clone());
            rows.extend([pull, unpack]);
            continue;
        }
        let mut daemons = vec![&berth];
        let no_baseline = if !in_containerd {
            Some("none in 1.6".to_owned())
        } else if let Some(reason) = skip_containerd.get(sn) {
            Some(format!("skipped: {reason}"))
        } else {
            daemons.push(&containerd);
            None
        };
        pull.no_baseline.clone_from(&no_baseline);
        unpack.no_baseline = no_baseline;
        eprintln!("unpack: {sn}");
        for _ in 0..rounds() {
            for d in &daemons {
                let (p, u) = pull_and_unpack(d, sn, remote, archive, layers)?;
                pull.push(d, p);
                unpack.push(d, u);
            }
        }
        for d in &daemons {
            clear(d, sn, remote);
        }
        rows.extend([pull, unpack]);
    }
    // An orderly stop first (a SIGKILL is the cleanup's fallback).
    for d in [&berth, &containerd] {
        stop(d);
    }
    drop(berth);
    drop(containerd);
    print_and_save("unpack", &mut rows, s)
}

/// One round on `d` into snapshotter `sn`: the pull's and the unpack's
/// seconds.
fn pull_and_unpack(
    d: &Daemon,
    sn: &str,
    remote: &str,
    archive: &str,
    layers: usize,
) -> Result<(f64, f64)> {
    clear(d, sn, remote);
    // Each daemon's fastest client path: berthd pulls and imports
    // daemon-side (Transfer); ctr 1.6 pulls and imports client-side.
    let pull = if d.is_berth() {
        timed(d.berthctl(&["pull", "--plain-http", "--snapshotter", sn, remote]))?
    } else {
        timed(d.ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            sn,
            remote,
        ]))?
    };
    check_unpacked(d, sn, layers)?;
    // The content stays (the pulled image holds it); only the layers go.
    let _ = d.ctr(&["images", "rm", "--sync", NAME]).status();
    remove_snapshots(d, sn);
    let left = committed(d, sn)?;
    if left != 0 {
        return Err(format!("{}: {left} {sn} snapshot(s) would not go", d.name));
    }
    let unpack = if d.is_berth() {
        timed(d.berthctl(&["images", "import", "--snapshotter", sn, archive]))?
    } else {
        timed(d.ctr(&["images", "import", "--snapshotter", sn, archive]))?
    };
    check_unpacked(d, sn, layers)?;
    Ok((pull.as_secs_f64(), unpack.as_secs_f64()))
}

/// Removes both names of the image, every snapshot of `sn` and all content.
fn clear(d: &Daemon, sn: &str, remote: &str) {
    for name in [NAME, remote] {
        let _ = d.ctr(&["images", "rm", "--sync", name]).status();
    }
    remove_snapshots(d, sn);
    remove_content(d);
}

/// Fails unless `d` has at least `layers` committed snapshots in `sn`.
fn check_unpacked(d: &Daemon, sn: &str, layers: usize) -> Result<()> {
    let n = committed(d, sn)?;
    if n < layers {
        return Err(format!(
            "{}: {n} committed {sn} snapshot(s) after the unpack, want {layers}",
            d.name
        ));
    }
    Ok(())
}

/// How many snapshots `ctr snapshots ls` lists for `sn` (all committed
/// here: nothing else is prepared).
fn committed(d: &Daemon, sn: &str) -> Result<usize> {
    let out = d
        .ctr(&["snapshots", "--snapshotter", sn, "ls"])
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: ctr snapshots --snapshotter {sn} ls: {}",
            d.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| l.contains("Committed"))
        .count())
}

/// The status (`ok`, `skip`, `error`) of each snapshotter plugin of `d`.
fn snapshot_plugins(d: &Daemon) -> Result<BTreeMap<String, String>> {
    let out = d
        .ctr(&["plugins", "ls"])
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: ctr plugins ls: {}",
            d.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [kind, id, .., status] if *kind == "io.containerd.snapshotter.v1" => {
                    Some(((*id).to_owned(), (*status).to_owned()))
                }
                _ => None,
            }
        })
        .collect())
}

/// Asks `d` to exit (SIGTERM) and waits up to 20 s for it to have exited,
/// without reaping it: its PID stays its own until the cleanup (which
/// `Drop` runs) reaps it.
fn stop(d: &Daemon) {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let Ok(raw) = i32::try_from(d.pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(20);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        while Instant::now() < deadline {
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}

/// A fresh Btrfs image under `dir`, loop-mounted on `dir/btrfs`; the
/// snapshotter's root inside it. The mount is under the daemon's directory,
/// so the daemon's cleanup unmounts it (and the loop device, with
/// autoclear, goes with it).
fn loop_btrfs(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let image = dir.join("btrfs.img");
    sparse_file(&image, BTRFS_BYTES)?;
    checked(Command::new("mkfs.btrfs").arg("-q").arg(&image))?;
    let mnt = dir.join("btrfs");
    std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    checked(
        Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop"])
            .arg(&image)
            .arg(&mnt),
    )?;
    Ok(mnt.join("root"))
}

/// An empty ext4 image for blockfile's `scratch_file`.
fn scratch_ext4(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scratch = dir.join("scratch.ext4");
    sparse_file(&scratch, SCRATCH_BYTES)?;
    checked(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&scratch))?;
    Ok(scratch)
}

fn sparse_file(path: &Path, len: u64) -> Result<()> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `cmd`; its stderr in the error if it fails.
fn checked(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Mounts and loop devices of `dir` still there. A loop device with
/// autoclear goes when the kernel releases its last user, which it may
/// finish a moment after the unmount: this waits up to 10 s for that.
fn leftovers(dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left: Vec<String> = berth_tests::mounts_under(dir)
            .into_iter()
            .map(|m| format!("mount {m}"))
            .collect();
        left.extend(
            cleanup::loops_under(dir)
                .into_iter()
                .map(|(dev, file)| format!("loop device {dev} on {file}")),
        );
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
