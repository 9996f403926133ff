//! Snapshotters beyond overlayfs and native, end to end: images unpacked
//! (by ctr's client-side unpack and by berthd's Transfer service),
//! containers run through `ctr run` and `berthctl run`, and a berthd killed
//! with SIGKILL that comes back with its snapshots and runs containers.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{
    Containerd, Daemon, fails, in_mount_namespace, mount_script, ok, subscribe, testimages,
};

/// Whether this machine has the kernel filesystems and loop devices
/// snapshotter `driver` needs (its test filesystem included); if not, the
/// skip is recorded with the reasons and the test returns.
fn host_supports(driver: &str) -> bool {
    berth_snapshots::testsuite::host_supports(driver)
}

/// Makes a 512 MiB Btrfs image at `image` and loop-mounts it on `target`.
fn mount_new_btrfs(image: &Path, target: &Path) -> Result<()> {
    std::fs::File::create(image)?.set_len(512 << 20)?;
    ok(Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(image)
        .output()
        .context("mkfs.btrfs (cargo xtask deps installs btrfs-progs)")?)?;
    std::fs::create_dir_all(target)?;
    ok(Command::new("mount")
        .args(["-t", "btrfs", "-o", "loop"])
        .arg(image)
        .arg(target)
        .output()?)?;
    Ok(())
}

/// berthd whose root is a loop-mounted Btrfs of its own (containerd's
/// btrfs snapshotter needs its root on Btrfs); the mount goes with the
/// daemon's directory.
fn daemon_on_btrfs(namespace: &str) -> Result<Daemon> {
    let d = Daemon::start_prepared(None, |d| mount_new_btrfs(&d.scratch("btrfs.img"), &d.root))?;
    Ok(d.in_namespace(namespace))
}

/// The loop device the daemon's root is mounted from.
fn root_device(d: &Daemon) -> Result<String> {
    device_of(&d.root)
}

/// The device mounted on `target`.
fn device_of(target: &Path) -> Result<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let root = target.display().to_string();
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
    if !host_supports("btrfs") {
        return Ok(());
    }
    let mut d = daemon_on_btrfs("sn-btrfs")?;
    containers_on(&mut d, "btrfs", &|d| {
        Ok((
            format!("mount -t btrfs {} /mnt -o subvolid=", root_device(d)?),
            String::new(),
        ))
    })?;
    finish_on_own_root(d)
}

#[test]
fn blockfile_runs_containers_through_ctr_and_berthctl_and_survives_kill9() -> Result<()> {
    if !host_supports("blockfile") {
        return Ok(());
    }
    let mut d = daemon_with_blockfile("sn-blockfile", &[])?;
    // containerd 2.x's shape: the image file, through a loop device.
    containers_on(&mut d, "blockfile", &|d| {
        Ok((
            format!(
                "mount -t ext4 {}/",
                d.root
                    .join("io.containerd.snapshotter.v1.blockfile/snapshots")
                    .display()
            ),
            " /mnt -o loop,rw".to_owned(),
        ))
    })?;
    d.finish()
}

#[test]
fn erofs_runs_containers_through_ctr_and_berthctl_and_survives_kill9() -> Result<()> {
    if !host_supports("erofs") {
        return Ok(());
    }
    let mut d = Daemon::start()?.in_namespace("sn-erofs");
    containers_on(&mut d, "erofs", &|_| {
        Ok((
            "mount -t overlay overlay /mnt -o workdir=".to_owned(),
            String::new(),
        ))
    })?;
    let status = d.stop()?;
    anyhow::ensure!(status.success(), "berthd exited with {status} on SIGTERM");
    // The layer images stay mounted on their `fs` directories after berthd
    // exits, as containerd's do (running containers' overlays use them; a
    // restart finds them mounted). Those are the snapshotter's, not the
    // containers' leftovers: check that is all they are, then unmount.
    let layers = d.root.join("io.containerd.snapshotter.v1.erofs/snapshots");
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = layers.display().to_string();
    let mut seen = 0;
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (Some(target), Some(dash)) = (f.get(4), f.iter().position(|x| *x == "-")) else {
            continue;
        };
        if target.starts_with(&prefix) {
            assert!(target.ends_with("/fs"), "{l}");
            assert_eq!(f.get(dash + 1), Some(&"erofs"), "{l}");
            ok(Command::new("umount").arg(target).output()?)?;
            seen += 1;
        }
    }
    assert!(seen >= 2, "no layer image was mounted as a lower directory");
    d.finish()
}

/// berthd with the blockfile snapshotter configured: a 128 MiB ext4
/// scratch image made by `mkfs.ext4`, plus `extra` lines in its section.
fn daemon_with_blockfile(namespace: &str, extra: &[&str]) -> Result<Daemon> {
    let dir = tempfile::Builder::new().prefix("berth-scratch").tempdir()?;
    let scratch = dir.path().join("scratch.ext4");
    std::fs::File::create(&scratch)?.set_len(128 << 20)?;
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&scratch)
        .output()
        .context("mkfs.ext4 (cargo xtask deps installs e2fsprogs)")?)?;
    let config = format!(
        "version = 2\n[plugins.\"io.containerd.snapshotter.v1.blockfile\"]\n  scratch_file = \"{}\"\n{}\n",
        scratch.display(),
        extra.join("\n")
    );
    // The scratch image is copied into the root at start: this one may go.
    let d = Daemon::start_with_config(Some(&config))?;
    drop(dir);
    Ok(d.in_namespace(namespace))
}

/// The end-to-end run on snapshotter `sn` of berthd `d`: unpack by ctr and
/// by berthd, containers by `ctr run` and `berthctl run`, a mount printed
/// as `mount_shape` says (its start and end), and a kill -9 of berthd with a container
/// running.
fn containers_on(
    d: &mut Daemon,
    sn: &str,
    mount_shape: &dyn Fn(&Daemon) -> Result<(String, String)>,
) -> Result<()> {
    let plugins = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains(&format!(" {sn} "))
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    let layout = testimages::layered(&d.scratch("layered"))?;
    let archive = d.scratch("layered.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();
    // ctr unpacks on the client side: Diff.Apply on the btrfs mounts.
    ok(d.ctr(&["images", "import", "--snapshotter", sn, &archive])?)?;
    let image = ok(d.ctr(&["images", "ls", "-q"])?)?;
    let image = image
        .lines()
        .next()
        .context("no image imported")?
        .to_owned();
    let committed = ok(d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?)?;
    assert!(
        committed.lines().skip(1).count() >= 2
            && committed.lines().skip(1).all(|l| l.contains("Committed")),
        "{committed}"
    );

    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        sn,
        &image,
        "c1",
        "/bin/sh",
        "-c",
        "echo written > /new && cat /new /data/kept /data/new /links/hard && ls /opq \
         && test ! -e /data/gone && echo gone-is-hidden",
    ])?)?;
    assert_eq!(out, "written\nkept\nnew\nshared\nfresh\ngone-is-hidden\n");

    // Mounts are containerd's: the root's device, by subvolume id.
    ok(
        d.ctr(&["snapshots", "--snapshotter", sn, "prepare", "look", {
            let first = committed.lines().nth(1).context("no snapshot")?;
            first.split_whitespace().next().context("no key")?
        }])?,
    )?;
    let mounts = ok(d.ctr(&["snapshots", "--snapshotter", sn, "mounts", "/mnt", "look"])?)?;
    let (prefix, suffix) = mount_shape(d)?;
    assert!(
        mounts.starts_with(&prefix) && mounts.trim_end().ends_with(&suffix),
        "{mounts} (expected {prefix}...{suffix})"
    );
    ok(d.ctr(&["snapshots", "--snapshotter", sn, "rm", "look"])?)?;

    // berthd's own import (Transfer service) unpacks into the snapshotter
    // through the plain mount-and-apply path, and berthctl runs on it. In
    // a namespace of its own, so the unpack is a new one (removing the
    // image first would race its garbage collection against the import:
    // see the README of crates/snapshots).
    let other = format!("{}-b", d.namespace);
    ok(d.berthctl(&[
        "-n",
        &other,
        "images",
        "import",
        "--snapshotter",
        sn,
        &archive,
    ])?)?;
    let out = ok(d.berthctl(&[
        "-n",
        &other,
        "run",
        "--rm",
        "--snapshotter",
        sn,
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
        sn,
        &image,
        "c3",
        "/bin/sleep",
        "300",
    ])?)?;
    let before = ok(d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?)?;
    d.kill9()?;
    d.restart()?;
    let after = ok(d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?)?;
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
        sn,
        &image,
        "c4",
        "/bin/echo",
        "after restart",
    ])?)?;
    assert_eq!(out, "after restart\n");
    let watcher = subscribe(d)?;
    ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", "c3"])?)?;
    watcher.wait_for(
        &["\"container_id\":\"c3\"", "/tasks/exit"],
        Duration::from_secs(30),
    )?;
    ok(d.ctr(&["tasks", "delete", "c3"])?)?;
    ok(d.ctr(&["containers", "delete", "c3"])?)?;
    // Nothing of c3 is left, and the image's layers are still parents.
    let left = ok(d.ctr(&["snapshots", "--snapshotter", sn, "ls"])?)?;
    assert!(!left.contains("c3 "), "{left}");
    let err = fails(
        d.ctr(&[
            "snapshots",
            "--snapshotter",
            sn,
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
    Ok(())
}

/// Stops berthd, unmounts the filesystem under its root (the test's own
/// mount, not a leftover), then checks nothing else is left.
fn finish_on_own_root(mut d: Daemon) -> Result<()> {
    let status = d.stop()?;
    anyhow::ensure!(status.success(), "berthd exited with {status} on SIGTERM");
    ok(Command::new("umount").arg(&d.root).output()?)?;
    d.finish()
}

/// What `ctr` shows of the btrfs snapshotter after the same steps, with
/// the device and subvolume ids (which differ between two filesystems)
/// written as `DEV` and `N`.
fn btrfs_observations(
    ctr: &dyn Fn(&[&str]) -> Result<Output>,
    berthctl: &dyn Fn(&[&str]) -> Result<Output>,
    archive: &str,
    device: &str,
    scratch: &Path,
) -> Result<Vec<String>> {
    let sn = |args: &[&str]| {
        let mut all = vec!["snapshots", "--snapshotter", "btrfs"];
        all.extend_from_slice(args);
        ctr(&all)
    };
    let normal = |s: String| {
        let s = s
            .replace(device, "DEV")
            .replace(&scratch.display().to_string(), "SCRATCH");
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find("subvolid=") {
            out.push_str(&rest[..i + 9]);
            rest = rest[i + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
            out.push('N');
        }
        out.push_str(rest);
        out
    };
    let mut seen = Vec::new();
    ok(ctr(&[
        "images",
        "import",
        "--snapshotter",
        "btrfs",
        archive,
    ])?)?;
    let ls = ok(sn(&["ls"])?)?;
    seen.push(format!("ls:\n{ls}"));
    let keys: Vec<String> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    for key in &keys {
        let info: serde_json::Value = serde_json::from_str(&ok(sn(&["info", key])?)?)?;
        seen.push(format!(
            "info {key}: kind={} parent={} labels={}",
            info["Kind"], info["Parent"], info["Labels"]
        ));
    }
    seen.push(format!("usage:\n{}", ok(sn(&["usage", "-b"])?)?));
    let top = keys.last().context("nothing unpacked")?;
    let chain = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .find(|k| !ls.lines().any(|l| l.split_whitespace().nth(1) == Some(k)))
        .unwrap_or(top)
        .to_owned();
    ok(sn(&["prepare", "work", &chain])?)?;
    // ctr 1.6 makes views without a gc.root label, so the collector may
    // take one at any time: this one is held by a lease instead.
    ok(ctr(&["leases", "create", "--id", "keep-view"])?)?;
    ok(berthctl(&[
        "--lease",
        "keep-view",
        "snapshots",
        "--snapshotter",
        "btrfs",
        "view",
        "look",
        &chain,
    ])?)?;
    let target = scratch.join("mnt");
    let target_s = target.display().to_string();
    let work_mounts = ok(sn(&["mounts", &target_s, "work"])?)?;
    seen.push(format!("mounts work: {}", normal(work_mounts.clone())));
    seen.push(format!(
        "mounts look: {}",
        normal(ok(sn(&["mounts", &target_s, "look"])?)?)
    ));
    seen.push(format!(
        "usage work (fresh): {}",
        ok(sn(&["usage", "-b", "work"])?)?
    ));
    in_mount_namespace(&mount_script(
        &work_mounts,
        &target,
        &format!(
            "head -c 100000 /dev/zero > {t}/new && mkdir {t}/newdir && echo x > {t}/data/kept \
             && rm {t}/data/new && umount {t}",
            t = target_s
        ),
    ))?;
    seen.push(format!(
        "usage work (written): {}",
        ok(sn(&["usage", "-b", "work"])?)?
    ));
    ok(sn(&["commit", "mine", "work"])?)?;
    let info: serde_json::Value = serde_json::from_str(&ok(sn(&["info", "mine"])?)?)?;
    seen.push(format!(
        "info mine: kind={} parent={}",
        info["Kind"], info["Parent"]
    ));
    seen.push(format!(
        "usage mine: {}",
        ok(sn(&["usage", "-b", "mine"])?)?
    ));
    // The category only: berth's metadata layer names the child in the
    // message ("snapshot \"look\" has it as parent"), containerd does not.
    let err = fails(sn(&["rm", &chain])?)?;
    seen.push(format!(
        "rm parent: {}",
        err.trim_end().rsplit(": ").next().unwrap_or_default()
    ));
    ok(sn(&["rm", "look"])?)?;
    ok(sn(&["rm", "mine"])?)?;
    seen.push(format!("ls after:\n{}", ok(sn(&["ls"])?)?));
    Ok(seen)
}

/// The same steps against Debian's containerd 1.6 (its btrfs plugin) and
/// berthd, each with its root on a fresh loop-mounted Btrfs: snapshot
/// lists, kinds, labels, usage and mounts print the same.
#[test]
fn btrfs_matches_containerd_1_6() -> Result<()> {
    if !host_supports("btrfs") {
        return Ok(());
    }
    let c = Containerd::start_prepared("", &["io.containerd.snapshotter.v1.btrfs"], |root| {
        let image = root
            .parent()
            .context("root has a parent")?
            .join("btrfs.img");
        mount_new_btrfs(&image, root)
    })?;
    let c_root = c.scratch("root");
    let layout = testimages::layered(&c.scratch("layered"))?;
    let archive = c.scratch("layered.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();
    let berthctl_c = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(berth_tests::bin("berthctl")?)
            .arg("--address")
            .arg(&c.address)
            .args(args)
            .env("BERTH_NAMESPACE", &c.namespace)
            .env_remove("CONTAINERD_NAMESPACE")
            .output()?)
    };
    let theirs = btrfs_observations(
        &|args| c.ctr(args),
        &berthctl_c,
        &archive,
        &device_of(&c_root)?,
        &c.scratch("work"),
    );
    let d = daemon_on_btrfs("sn-btrfs-cmp")?;
    let ours = btrfs_observations(
        &|args| d.ctr(args),
        &|args| d.berthctl(args),
        &archive,
        &root_device(&d)?,
        &d.scratch("work"),
    )?;
    drop(c);
    let theirs = theirs?;
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(o, t, "berthd (left) differs from containerd 1.6 (right)");
    }
    assert_eq!(ours.len(), theirs.len());
    finish_on_own_root(d)
}

/// The mounts berth's native driver (which the example wraps) prints.
fn native_shape(root: std::path::PathBuf) -> (String, String) {
    (
        format!("mount -t bind {}/", root.join("snapshots").display()),
        " /mnt -o rbind,rw".to_owned(),
    )
}

/// The example snapshotter from outside the workspace crates
/// (`examples/snapshotter-example`), out of process: its
/// `example-proxy-snapshotter` serves it on a socket, berthd declares it
/// under `[proxy_plugins.audit]`, and containers run on it across a kill -9
/// of berthd (the proxy keeps running).
#[test]
fn example_snapshotter_as_a_proxy_plugin() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("berth-audit").tempdir()?;
    let socket = dir.path().join("audit.sock");
    let sn_root = dir.path().join("root");
    let log = dir.path().join("proxy.log");
    let mut proxy = Command::new(berth_tests::bin("example-proxy-snapshotter")?)
        .arg("--root")
        .arg(&sn_root)
        .arg("--address")
        .arg(&socket)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting example-proxy-snapshotter")?;
    let _stop = StopOnDrop(proxy.id());
    berth_tests::wait_until_serving(
        &mut proxy,
        &socket,
        "example-proxy-snapshotter",
        Duration::from_secs(20),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    )?;
    let config = format!(
        "version = 2\n[proxy_plugins.audit]\n  type = \"snapshot\"\n  address = \"{}\"\n",
        socket.display()
    );
    let mut d = Daemon::start_with_config(Some(&config))?.in_namespace("sn-audit-proxy");
    let root = sn_root.clone();
    containers_on(&mut d, "audit", &|_| Ok(native_shape(root.clone())))?;
    d.finish()?;
    // It was the example's code that did the work.
    let logged = std::fs::read_to_string(&log)?;
    assert!(
        logged.contains("snapshot call") && logged.contains("op=\"prepare\""),
        "{logged}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(proxy.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = proxy.wait()?;
    assert!(status.success(), "the proxy exited with {status}");
    Ok(())
}

/// The example snapshotter compiled into a custom berthd
/// (`example-berthd`: the built-in registrations plus the example's), used
/// as `--snapshotter audit` exactly like a built-in one, across a kill -9.
#[test]
fn example_snapshotter_compiled_into_a_custom_berthd() -> Result<()> {
    let mut d =
        Daemon::start_binary("example-berthd", None, |_| Ok(()))?.in_namespace("sn-audit-built");
    containers_on(&mut d, "audit", &|d| {
        Ok(native_shape(
            d.root.join("io.containerd.snapshotter.v1.audit"),
        ))
    })?;
    let logged = d.log();
    assert!(
        logged.contains("snapshot call") && logged.contains("op=\"commit\""),
        "{logged}"
    );
    d.finish()
}

/// Sends SIGKILL to a process this test started, if it still runs when
/// the test ends (a failing test).
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `root_path` (containerd's option) puts the btrfs snapshotter on a Btrfs
/// elsewhere while berthd's own root is not on Btrfs.
#[test]
fn btrfs_root_path_moves_the_snapshotter_to_a_btrfs_mount() -> Result<()> {
    if !host_supports("btrfs") {
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-btrfs-rp")
        .tempdir()?;
    let mnt = dir.path().join("mnt");
    mount_new_btrfs(&dir.path().join("btrfs.img"), &mnt)?;
    let _unmount = Unmount(mnt.clone());
    let root = mnt.join("snapshots-here");
    let config = format!(
        "version = 2\n[plugins.\"io.containerd.snapshotter.v1.btrfs\"]\n  root_path = \"{}\"\n",
        root.display()
    );
    let d = Daemon::start_with_config(Some(&config))?.in_namespace("sn-btrfs-rp");
    let plugins = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        plugins
            .lines()
            .any(|l| l.contains(" btrfs ") && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "prepare", "a"])?)?;
    let mounts = ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "mounts", "/mnt", "a"])?)?;
    assert!(
        mounts.starts_with(&format!(
            "mount -t btrfs {} /mnt -o subvolid=",
            device_of(&mnt)?
        )),
        "{mounts}"
    );
    assert!(root.join("active/1").exists());
    ok(d.ctr(&["snapshots", "--snapshotter", "btrfs", "rm", "a"])?)?;
    // Remove answers once the record is gone (as containerd's does); the
    // subvolume goes with the next collection, which a synchronous lease
    // removal waits for.
    ok(d.ctr(&["leases", "create", "--id", "sync-point"])?)?;
    ok(d.ctr(&["leases", "rm", "--sync", "sync-point"])?)?;
    assert!(!root.join("active/1").exists());
    d.finish()
}

/// Unmounts a filesystem this test mounted, even when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
