//! berthctl's commands that ctr has, run side by side with Debian's ctr 1.6
//! (and ctr 2.1.5 for `images usage`) against the same berthd: same output,
//! same effect.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use berth_tests::{Daemon, fails, ok, testimages};

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const LAYERED: &str = "docker.io/library/layered:latest";

/// A daemon with `layout` imported by ctr, unpacked or not.
fn daemon_with(
    layout: impl FnOnce(&Path) -> Result<testimages::Layout>,
    unpack: bool,
) -> Result<Daemon> {
    let d = Daemon::start()?;
    let layout = layout(&d.scratch("image"))?;
    let archive = d.scratch("image.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();
    let mut args = vec!["images", "import"];
    if !unpack {
        args.push("--no-unpack");
    }
    args.push(&archive);
    ok(d.ctr(&args)?)?;
    Ok(d)
}

fn lines_trimmed(s: &str) -> Vec<String> {
    s.lines().map(|l| l.trim_end().to_string()).collect()
}

#[test]
fn images_mount_and_unmount_as_ctr() -> Result<()> {
    // Not unpacked: mount unpacks it first, as ctr's does.
    let d = daemon_with(testimages::layered, false)?;
    let mine = d.scratch("mnt-berthctl");
    let theirs = d.scratch("mnt-ctr");
    std::fs::create_dir_all(&mine)?;
    std::fs::create_dir_all(&theirs)?;
    let (mine_s, theirs_s) = (mine.display().to_string(), theirs.display().to_string());
    let b = ok(d.berthctl(&["images", "mount", LAYERED, &mine_s])?)?;
    let c = ok(d.ctr(&["images", "mount", LAYERED, &theirs_s])?)?;
    let (b_lines, c_lines) = (lines_trimmed(&b), lines_trimmed(&c));
    // The chain ID, then the target.
    assert_eq!(b_lines.len(), 2, "{b}");
    assert_eq!(b_lines[0], c_lines[0], "same chain ID:\n{b}\n{c}");
    assert!(b_lines[0].starts_with("sha256:"), "{b}");
    assert_eq!(b_lines[1], mine_s);
    assert_eq!(c_lines[1], theirs_s);
    for dir in [&mine, &theirs] {
        assert_eq!(std::fs::read_to_string(dir.join("data/new"))?, "new\n");
        assert!(!dir.join("data/gone").exists());
    }
    // Read-only view, as ctr's.
    assert!(std::fs::write(mine.join("x"), "x").is_err());
    // Both hold a lease named after the target.
    let leases = ok(d.ctr(&["leases", "ls", "-q"])?)?;
    assert!(leases.lines().any(|l| l == mine_s), "{leases}");
    let b = ok(d.berthctl(&["images", "unmount", "--rm", &mine_s])?)?;
    let c = ok(d.ctr(&["images", "unmount", "--rm", &theirs_s])?)?;
    assert_eq!(b.trim_end(), mine_s);
    assert_eq!(c.trim_end(), theirs_s);
    let leases = ok(d.ctr(&["leases", "ls", "-q"])?)?;
    assert!(!leases.contains("mnt-"), "{leases}");
    let snaps = ok(d.ctr(&["snapshots", "ls"])?)?;
    assert!(!snaps.contains("mnt-"), "{snaps}");
    // An unknown image fails in both.
    let b = fails(d.berthctl(&["images", "mount", "nope:1", &mine_s])?)?;
    let c = fails(d.ctr(&["images", "mount", "nope:1", &theirs_s])?)?;
    assert!(
        b.contains("not found") && c.contains("not found"),
        "{b}\n{c}"
    );
    d.finish()
}

#[test]
fn images_usage_as_ctr2() -> Result<()> {
    let d = daemon_with(testimages::layered, true)?;
    let b = ok(d.berthctl(&["images", "usage", LAYERED])?)?;
    let c = ok(d.ctr2(&["images", "usage", LAYERED])?)?;
    assert_eq!(
        lines_trimmed(&b),
        lines_trimmed(&c),
        "berthctl:\n{b}\nctr:\n{c}"
    );
    assert_eq!(b.lines().count(), 4, "header and three layers:\n{b}");
    d.finish()
}

#[test]
fn snapshots_unpack_and_diff_as_ctr() -> Result<()> {
    let d = daemon_with(testimages::busybox, false)?;
    let listed = ok(d.ctr(&["images", "ls"])?)?;
    let digest = listed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .context("image digest")?
        .to_string();
    let b = ok(d.berthctl(&["snapshots", "unpack", &digest])?)?;
    // Already unpacked by berthctl: ctr finds every layer in place.
    let c = ok(d.ctr(&["snapshots", "unpack", &digest])?)?;
    assert_eq!(b, c);
    assert!(
        b.starts_with(&format!("unpacking {digest} (")) && b.ends_with("...done\n"),
        "{b}"
    );
    let missing = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let b = fails(d.berthctl(&["snapshots", "unpack", missing])?)?;
    let c = fails(d.ctr(&["snapshots", "unpack", missing])?)?;
    assert!(
        b.contains("manifest not found") && c.contains("manifest not found"),
        "{b}\n{c}"
    );

    // A change in an active snapshot, diffed against its parent.
    let usage = ok(d.ctr2(&["images", "usage", BUSYBOX])?)?;
    let chain = usage
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .context("chain ID")?
        .to_string();
    let target = d.scratch("work");
    let target_s = target.display().to_string();
    let mounts = ok(d.ctr(&[
        "snapshots",
        "prepare",
        "--target",
        &target_s,
        "work",
        &chain,
    ])?)?;
    assert!(mounts.starts_with("mount "), "{mounts}");
    berth_tests::in_mount_namespace(&berth_tests::mount_script(
        &mounts,
        &target,
        &format!(
            "mkdir -p {t}/added && echo hello > {t}/added/file",
            t = target.display()
        ),
    ))?;
    let list = |out: std::process::Output| -> Result<Vec<String>> {
        let tgz = d.scratch("diff.tgz");
        std::fs::write(&tgz, &out.stdout)?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names = ok(Command::new("tar").arg("-tzf").arg(&tgz).output()?)?;
        let mut names: Vec<String> = names.lines().map(str::to_string).collect();
        names.sort();
        Ok(names)
    };
    let b = list(d.berthctl(&["snapshots", "diff", "work"])?)?;
    let c = list(d.ctr(&["snapshots", "diff", "work"])?)?;
    assert_eq!(b, c);
    assert!(
        b.iter().any(|n| n.trim_end_matches('/') == "added/file"),
        "{b:?}"
    );
    // Against an explicit second snapshot: the same layer.
    let b2 = list(d.berthctl(&["snapshots", "diff", "work", &chain])?)?;
    assert_eq!(b2, b);
    ok(d.ctr(&["snapshots", "rm", "work"])?)?;
    d.finish()
}

#[test]
fn containers_create_as_ctr() -> Result<()> {
    let d = daemon_with(testimages::busybox, true)?;
    ok(d.ctr(&[
        "containers",
        "create",
        "--label",
        "k=v",
        BUSYBOX,
        "c-ctr",
        "echo",
        "hi",
    ])?)?;
    ok(d.berthctl(&[
        "containers",
        "create",
        "--label",
        "k=v",
        BUSYBOX,
        "c-berth",
        "echo",
        "hi",
    ])?)?;
    let info = |id: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&ok(d.ctr(&[
            "containers",
            "info",
            id,
        ])?)?)?)
    };
    let (c, b) = (info("c-ctr")?, info("c-berth")?);
    for field in ["Image", "Snapshotter", "Labels"] {
        assert_eq!(b[field], c[field], "{field}");
    }
    assert_eq!(b["Runtime"]["Name"], c["Runtime"]["Name"]);
    assert_eq!(b["SnapshotKey"], "c-berth");
    assert_eq!(b["Spec"]["process"]["args"], c["Spec"]["process"]["args"]);
    assert_eq!(b["Spec"]["process"]["env"], c["Spec"]["process"]["env"]);
    assert_eq!(b["Spec"]["linux"]["cgroupsPath"], "/default/c-berth");
    // No task yet; `tasks start` creates it on the container's snapshot.
    let tasks = ok(d.ctr(&["tasks", "ls", "-q"])?)?;
    assert!(tasks.trim().is_empty(), "{tasks}");
    assert_eq!(ok(d.berthctl(&["tasks", "start", "c-berth"])?)?, "hi\n");
    assert_eq!(ok(d.ctr(&["tasks", "start", "c-ctr"])?)?, "hi\n");
    // Both delete the task once it exited; ctr starts berthctl's container
    // as its own, and berthctl ctr's.
    assert_eq!(ok(d.ctr(&["tasks", "start", "c-berth"])?)?, "hi\n");
    assert_eq!(ok(d.berthctl(&["tasks", "start", "c-ctr"])?)?, "hi\n");
    // An existing id fails in both.
    let b = fails(d.berthctl(&["containers", "create", BUSYBOX, "c-ctr"])?)?;
    let c = fails(d.ctr(&["containers", "create", BUSYBOX, "c-berth"])?)?;
    assert!(
        b.contains("already exists") && c.contains("already exists"),
        "{b}\n{c}"
    );
    ok(d.ctr(&["containers", "rm", "c-ctr", "c-berth"])?)?;
    d.finish()
}

/// Sorts every array of strings, so capability sets compare as sets.
fn sort_string_arrays(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Array(a) => {
            a.iter_mut().for_each(sort_string_arrays);
            if a.iter().all(serde_json::Value::is_string) {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
        serde_json::Value::Object(o) => o.values_mut().for_each(sort_string_arrays),
        _ => {}
    }
}

#[test]
fn oci_spec_as_ctr() -> Result<()> {
    let d = Daemon::start()?;
    let b = ok(d.berthctl(&["oci", "spec"])?)?;
    let c = ok(d.ctr(&["oci", "spec"])?)?;
    // Go's MarshalIndent layout.
    assert!(b.starts_with("{\n    \"ociVersion\""), "{b}");
    let mut b: serde_json::Value = serde_json::from_str(&b)?;
    let mut c: serde_json::Value = serde_json::from_str(&c)?;
    // Documented differences (crates/ctl/README.md): berth writes runtime
    // spec 1.1.0 and masks /sys/devices/virtual/powercap (as containerd 1.7+);
    // it spells out two `false` defaults that Go leaves out.
    b["ociVersion"] = c["ociVersion"].clone();
    if let Some(paths) = b["linux"]["maskedPaths"].as_array_mut() {
        paths.retain(|p| p != "/sys/devices/virtual/powercap");
    }
    for (obj, key) in [("process", "terminal"), ("root", "readonly")] {
        if b[obj][key] == false && c[obj].get(key).is_none() {
            b[obj].as_object_mut().map(|o| o.remove(key));
        }
    }
    sort_string_arrays(&mut b);
    sort_string_arrays(&mut c);
    assert_eq!(b, c);
    d.finish()
}

#[test]
fn containers_checkpoint_without_task_as_ctr() -> Result<()> {
    let d = daemon_with(testimages::busybox, true)?;
    ok(d.ctr(&["containers", "create", BUSYBOX, "c1", "sleep", "1"])?)?;
    ok(d.ctr(&["containers", "checkpoint", "--image", "c1", "ckpt/ctr:1"])?)?;
    ok(d.berthctl(&["containers", "checkpoint", "--image", "c1", "ckpt/berth:1"])?)?;
    let index = |name: &str| -> Result<String> {
        let listed = ok(d.ctr(&["images", "ls"])?)?;
        let line = listed
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in\n{listed}"))?;
        let digest = line
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .context("digest")?;
        ok(d.ctr(&["content", "get", digest])?)
    };
    // Same inputs, same index, byte for byte.
    assert_eq!(index("ckpt/berth:1")?, index("ckpt/ctr:1")?);
    // Neither writes the spec (containerd 1.6's Checkpoint does not), so
    // both restores fail the same way.
    let b = fails(d.berthctl(&["containers", "restore", "r1", "ckpt/ctr:1"])?)?;
    let c = fails(d.ctr(&["containers", "restore", "r2", "ckpt/berth:1"])?)?;
    assert!(b.contains("media type not found"), "{b}");
    assert!(c.contains("media type not found"), "{c}");
    ok(d.ctr(&["containers", "rm", "c1"])?)?;
    d.finish()
}

/// Why CRIU cannot checkpoint here, if it cannot.
fn criu_unusable() -> Option<String> {
    match Command::new("criu").arg("check").output() {
        Err(e) => Some(format!(
            "criu not found ({e}); `cargo xtask deps` installs it"
        )),
        Ok(out) if !out.status.success() => Some(format!(
            "`criu check` fails on this kernel: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .chain(String::from_utf8_lossy(&out.stdout).lines())
                .last()
                .unwrap_or_default()
        )),
        Ok(_) => None,
    }
}

#[test]
fn tasks_checkpoint_and_restore_as_ctr() -> Result<()> {
    if let Some(reason) = criu_unusable() {
        berth_tests::skip(&reason);
        return Ok(());
    }
    let d = daemon_with(testimages::busybox, true)?;
    for (client, id) in [("ctr", "k-ctr"), ("berthctl", "k-berth")] {
        ok(d.ctr(&["run", "-d", BUSYBOX, id, "sleep", "600"])?)?;
        let args = ["tasks", "checkpoint", id];
        let out = if client == "ctr" {
            d.ctr(&args)?
        } else {
            d.berthctl(&args)?
        };
        let name = ok(out)?;
        assert!(
            name.starts_with(&format!("containerd.io/checkpoint/{id}:")),
            "{name}"
        );
        let images = ok(d.ctr(&["images", "ls", "-q"])?)?;
        assert!(images.lines().any(|l| l == name.trim_end()), "{images}");
        ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", id])?)?;
        ok(d.ctr(&["tasks", "rm", "-f", id])?)?;
        ok(d.ctr(&["containers", "rm", id])?)?;
    }
    d.finish()
}

#[test]
fn content_edit_as_ctr() -> Result<()> {
    let d = Daemon::start()?;
    let ingest = |args: &[&str], data: &str| -> Result<()> {
        let mut child = d
            .berthctl_command(args)?
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(data.as_bytes())?;
        anyhow::ensure!(child.wait()?.success(), "ingest failed");
        Ok(())
    };
    ingest(&["content", "ingest", "original"], "hello\n")?;
    let digest = ok(d.ctr(&["content", "ls", "-q"])?)?.trim().to_string();
    // Kept through the collections `content rm` starts.
    ok(d.ctr(&["content", "label", &digest, "containerd.io/gc.root=test"])?)?;
    // The editor: a script that appends a line to the file it is given.
    let editor = d.scratch("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\necho edited >> \"$1\"\n")?;
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let editor = editor.display().to_string();
    let b = ok(d.berthctl(&["content", "edit", "--editor", &editor, &digest])?)?;
    assert_ne!(b.trim(), digest);
    assert_eq!(
        ok(d.ctr(&["content", "get", b.trim()])?)?,
        "hello\nedited\n"
    );
    // An edit whose result exists already fails in both, alike.
    let again_b = fails(d.berthctl(&["content", "edit", "--editor", &editor, &digest])?)?;
    let again_c = fails(d.ctr(&["content", "edit", "--editor", &editor, &digest])?)?;
    let expected = format!("commit failed: content {}: already exists", b.trim());
    assert!(again_b.contains(&expected), "{again_b}");
    assert!(again_c.contains(&expected), "{again_c}");
    // Without it, ctr makes the same blob.
    ok(d.ctr(&["content", "rm", b.trim()])?)?;
    let c = ok(d.ctr(&["content", "edit", "--editor", &editor, &digest])?)?;
    assert_eq!(b, c, "same edit, same new digest");
    // $EDITOR is the default, as with ctr.
    ok(d.ctr(&["content", "rm", b.trim()])?)?;
    let mut cmd = d.berthctl_command(&["content", "edit", &digest])?;
    let b = ok(cmd.env("EDITOR", &editor).output()?)?;
    assert_eq!(b, c);
    // Errors: no editor, --validate, unknown blob.
    let mut cmd = d.berthctl_command(&["content", "edit", &digest])?;
    let b = fails(cmd.env_remove("EDITOR").output()?)?;
    assert!(b.contains("editor is required"), "{b}");
    let b = fails(d.berthctl(&["content", "edit", "--validate", "json", &digest])?)?;
    let c = fails(d.ctr(&["content", "edit", "--validate", "json", &digest])?)?;
    assert!(
        b.contains("validating the edit result not supported"),
        "{b}"
    );
    assert!(
        c.contains("validating the edit result not supported"),
        "{c}"
    );
    let missing = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let b = fails(d.berthctl(&["content", "edit", "--editor", &editor, missing])?)?;
    let c = fails(d.ctr(&["content", "edit", "--editor", &editor, missing])?)?;
    assert!(
        b.contains("not found") && c.contains("not found"),
        "{b}\n{c}"
    );
    d.finish()
}

#[test]
fn content_prune_references_as_ctr() -> Result<()> {
    // The same unpacked image on two daemons; ctr prunes one, berthctl
    // the other: the same blobs and labels must remain.
    let mine = daemon_with(testimages::layered, true)?;
    let theirs = daemon_with(testimages::layered, true)?;
    let before = ok(mine.ctr(&["content", "ls", "-q"])?)?;
    let listing = ok(mine.ctr(&["content", "ls"])?)?;
    assert!(
        listing.contains("containerd.io/gc.ref.content.l."),
        "{listing}"
    );
    // A dry run changes nothing.
    let dry = mine.berthctl(&["content", "prune", "references", "--dry"])?;
    let said = String::from_utf8_lossy(&dry.stderr).into_owned();
    ok(dry)?;
    assert!(
        said.contains("would remove label containerd.io/gc.ref.content.l."),
        "{said}"
    );
    assert_eq!(ok(mine.ctr(&["content", "ls", "-q"])?)?, before);

    ok(mine.berthctl(&["content", "prune", "references"])?)?;
    ok(theirs.ctr(&["content", "prune", "references"])?)?;
    let (after_mine, after_theirs) = (
        ok(mine.ctr(&["content", "ls", "-q"])?)?,
        ok(theirs.ctr(&["content", "ls", "-q"])?)?,
    );
    assert_eq!(after_mine, after_theirs);
    // The layers went (the snapshots hold the image's files), the
    // manifest and config stayed.
    assert!(
        after_mine.lines().count() < before.lines().count(),
        "{before}\n{after_mine}"
    );
    assert!(!after_mine.is_empty());
    let listing = ok(mine.ctr(&["content", "ls"])?)?;
    assert!(!listing.contains("gc.ref.content.l."), "{listing}");
    mine.finish()?;
    theirs.finish()
}
