//! `berthctl run` as ctr users expect it: short names, users by name
//! through the image's /etc/passwd, and ctr's run flags (env files, labels,
//! capabilities, read-only roots, cgroup resources, hostname, cwd).

use anyhow::Result;
use berth_tests::{Daemon, fails, ok, testimages};

fn daemon_with_busybox() -> Result<Daemon> {
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    Ok(d)
}

#[test]
fn short_names_and_named_users_resolve_as_with_ctr() -> Result<()> {
    let d = daemon_with_busybox()?;
    // `busybox` is `docker.io/library/busybox:latest`, as pull expands it.
    let out = ok(d.berthctl(&["run", "--rm", "busybox", "short", "echo", "hi"])?)?;
    assert_eq!(out.trim(), "hi");
    // A user by name, and name:group, from the image's /etc/passwd and
    // /etc/group (mounted read-only for the lookup, then unmounted).
    let out = ok(d.berthctl(&["run", "--rm", "--user", "nobody", "busybox", "named", "id"])?)?;
    assert!(
        out.contains("uid=65534") && out.contains("gid=65534"),
        "{out}"
    );
    let out = ok(d.berthctl(&[
        "run",
        "--rm",
        "-u",
        "nobody:root",
        "busybox",
        "named2",
        "id",
    ])?)?;
    assert!(out.contains("uid=65534") && out.contains("gid=0"), "{out}");
    // A uid without a passwd entry gets gid 0, as with containerd.
    let out = ok(d.berthctl(&["run", "--rm", "-u", "4242", "busybox", "num", "id"])?)?;
    assert!(out.contains("uid=4242") && out.contains("gid=0"), "{out}");
    // An unknown name is an error naming it; nothing is left behind.
    let err = fails(d.berthctl(&["run", "--rm", "-u", "ghost", "busybox", "bad", "id"])?)?;
    assert!(
        err.contains("\"ghost\"") && err.contains("/etc/passwd"),
        "{err}"
    );
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert!(
        !snapshots.lines().any(|l| l.starts_with("bad ")),
        "{snapshots}"
    );
    // The lookup's temporary read-only mounts are gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let snapshots_dir = d.scratch("root").display().to_string();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(&snapshots_dir) && l.contains(" /tmp/.tmp")),
        "{mounts}"
    );
    let containers = ok(d.ctr(&["containers", "ls", "-q"])?)?;
    assert!(containers.trim().is_empty(), "{containers}");
    d.finish()
}

#[test]
fn ctr_run_flags_reach_the_container() -> Result<()> {
    let d = daemon_with_busybox()?;
    let env_file = d.scratch("env");
    std::fs::write(&env_file, "# settings\nFROM_FILE=yes\n\nSHARED=file\n")?;
    let out = ok(d.berthctl(&[
        "run",
        "--rm",
        "--env-file",
        &env_file.display().to_string(),
        "--env",
        "SHARED=flag",
        "--hostname",
        "berth-host",
        "--cwd",
        "/tmp",
        "busybox",
        "flags",
        "sh",
        "-c",
        "echo $FROM_FILE $SHARED; hostname; pwd",
    ])?)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["yes flag", "berth-host", "/tmp"], "{out}");

    // Read-only root, and all capabilities dropped but one.
    let out = d.berthctl(&["run", "--rm", "--read-only", "busybox", "ro", "touch", "/x"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system")
            || String::from_utf8_lossy(&out.stdout).contains("Read-only file system"),
        "{out:?}"
    );
    let out = ok(d.berthctl(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "KILL",
        "busybox",
        "caps",
        "grep",
        "CapEff",
        "/proc/self/status",
    ])?)?;
    // CAP_KILL is bit 5.
    assert!(out.trim().ends_with("0000000000000020"), "{out}");
    let out = ok(d.berthctl(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "priv",
        "grep",
        "CapEff",
        "/proc/self/status",
    ])?)?;
    assert!(
        !out.trim().ends_with("00000000a80425fb"),
        "more than the default set: {out}"
    );

    // Labels on the container record, resources in its spec, runc options
    // on its runtime.
    ok(d.berthctl(&[
        "run",
        "-d",
        "--label",
        "team=infra",
        "--memory-limit",
        "67108864",
        "--cpus",
        "0.5",
        "--runc-binary",
        "/usr/sbin/runc",
        "busybox",
        "detached",
        "sleep",
        "60",
    ])?)?;
    let info = ok(d.ctr(&["containers", "info", "detached"])?)?;
    let v: serde_json::Value = serde_json::from_str(&info)?;
    assert_eq!(v["Labels"]["team"], "infra", "{info}");
    let resources = &v["Spec"]["linux"]["resources"];
    assert_eq!(resources["memory"]["limit"], 67_108_864, "{info}");
    assert_eq!(resources["cpu"]["quota"], 50_000, "{info}");
    assert_eq!(resources["cpu"]["period"], 100_000, "{info}");
    // ctr shows the options as the Any they travel in.
    assert_eq!(
        v["Runtime"]["Options"]["type_url"], "containerd.runc.v1.Options",
        "{info}"
    );
    assert_eq!(v["Image"], "docker.io/library/busybox:latest", "{info}");
    ok(d.ctr(&["tasks", "rm", "-f", "detached"])?)?;
    ok(d.ctr(&["containers", "rm", "detached"])?)?;
    d.finish()
}
