//! Debian's containerd driving berth's shim: `--runtime io.containerd.berth.v2`
//! resolves to `containerd-shim-berth-v2`, which must speak shim v2 well
//! enough for containerd's own task service and events.

use std::time::Duration;

use anyhow::{Result, bail};
use berth_tests::{Containerd, busybox_rootfs, fails, ok};

const RUNTIME: &str = "io.containerd.berth.v2";

/// A bound that turns a hang into a failure.
const HANG: Duration = Duration::from_secs(30);

/// The status `ctr tasks ls` shows for `id` right now.
fn assert_status(c: &Containerd, id: &str, status: &str) -> Result<()> {
    let ls = ok(c.ctr(&["tasks", "ls"])?)?;
    let now = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2));
    if now != Some(status) {
        bail!(
            "task {id} is {now:?}, expected {status}:\n{ls}\n{}",
            c.log()
        );
    }
    Ok(())
}

/// PIDs and command lines of the berth shims serving `namespace`.
fn berth_shims(namespace: &str) -> Result<Vec<(i32, String)>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .filter(|(_, cmd)| cmd.contains("containerd-shim-berth-v2") && cmd.contains(namespace))
        .collect())
}

/// The shim of task `id` exits after containerd's Shutdown, which the call
/// that just returned made: wait for its pid (bounded only against hangs).
fn assert_shim_exits(c: &Containerd, id: &str) -> Result<()> {
    for (pid, cmd) in berth_shims(&c.namespace)? {
        if cmd.contains(&format!("-id {id} ")) {
            berth_tests::wait_pid_gone(pid, HANG)?;
        }
    }
    Ok(())
}

#[test]
fn containerd_runs_containers_through_berths_shim() -> Result<()> {
    let c = Containerd::start()?;
    let rootfs = c.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    let rootfs = rootfs.display().to_string();
    // ctr's --rootfs is a switch: the path is the first positional argument.
    let run = |flag: &str, rest: &[&str]| {
        let mut args = vec!["run", "--runtime", RUNTIME, flag, "--rootfs", &rootfs];
        args.extend_from_slice(rest);
        c.ctr(&args)
    };

    // Output, exit status and --rm through containerd and our shim.
    assert_eq!(ok(run("--rm", &["i1", "/bin/echo", "hello"])?)?, "hello\n");
    assert_shim_exits(&c, "i1")?;
    let out = run("--rm", &["i2", "/bin/sh", "-c", "echo err >&2; exit 7"])?;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_shim_exits(&c, "i2")?;

    // A detached task: the shim really is ours, exec works, kill reports 137.
    ok(run("-d", &["i3", "/bin/sleep", "300"])?)?;
    assert_status(&c, "i3", "RUNNING")?;
    let shims = berth_shims(&c.namespace)?;
    assert!(
        shims.len() == 1 && shims[0].1.contains("-id i3 "),
        "want exactly one berth shim (for i3), got: {shims:?}"
    );
    let i3_shim = shims[0].0;
    let hello = ok(c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "x1",
        "i3",
        "/bin/sh",
        "-c",
        "echo from-exec",
    ])?)?;
    assert_eq!(hello, "from-exec\n");
    let ps = ok(c.ctr(&["tasks", "ps", "i3"])?)?;
    assert!(ps.lines().count() >= 2, "{ps}");
    ok(c.ctr(&["tasks", "pause", "i3"])?)?;
    assert_status(&c, "i3", "PAUSED")?;
    ok(c.ctr(&["tasks", "resume", "i3"])?)?;
    assert_status(&c, "i3", "RUNNING")?;
    let err = fails(c.ctr(&["tasks", "rm", "i3"])?)?;
    assert!(err.contains("running"), "{err}");
    let watcher = berth_tests::subscribe_at(&c.address)?;
    ok(c.ctr(&["tasks", "kill", "-s", "SIGKILL", "i3"])?)?;
    watcher.wait_for(&["/tasks/exit", "\"exit_status\":137"], HANG)?;
    assert_status(&c, "i3", "STOPPED")?;
    // ctr reports a non-zero exit status on stderr as it deletes the task.
    let rm = c.ctr(&["tasks", "rm", "i3"])?;
    assert!(rm.status.success(), "{rm:?}");
    let stderr = String::from_utf8_lossy(&rm.stderr);
    assert!(stderr.contains("exit code 137"), "{stderr}");
    berth_tests::wait_pid_gone(i3_shim, HANG)?;
    ok(c.ctr(&["containers", "rm", "i3"])?)?;
    assert_eq!(ok(c.ctr(&["tasks", "ls", "-q"])?)?, "");
    let left = berth_shims(&c.namespace)?;
    assert!(left.is_empty(), "shims left: {left:?}");
    c.finish()
}

/// A namespace the test owns leaves nothing on the host once containerd is
/// stopped: deleting a container removes only its own runc state and
/// cgroup, not the namespace's runc root `/run/containerd/runc/<namespace>`
/// nor its cgroup parents `/<namespace>`, which the fixture removes.
#[test]
fn owned_namespaces_leave_no_directories_on_the_host() -> Result<()> {
    let c = Containerd::start()?;
    let rootfs = c.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    let rootfs = rootfs.display().to_string();
    // One namespace derived from the fixture's, one of the test's own.
    let derived = format!("{}-run", c.namespace);
    let own = c.own_namespace("berth-owned");
    for ns in [&derived, &own] {
        let out = ok(c.ctr_in(
            ns,
            &[
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                "--rootfs",
                &rootfs,
                "h1",
                "/bin/echo",
                "hi",
            ],
        )?)?;
        assert_eq!(out, "hi\n");
        assert_shim_exits_in(ns, "h1")?;
    }
    let dirs: Vec<_> = [&derived, &own]
        .into_iter()
        .flat_map(|ns| berth_tests::host_leftovers::namespace_dirs(ns))
        .collect();
    // The container made them (else the check below would prove nothing).
    let made: Vec<_> = dirs.iter().filter(|d| d.is_dir()).collect();
    for ns in [&derived, &own] {
        for dir in [
            std::path::Path::new(berth_tests::host_leftovers::RUNC_ROOT).join(ns),
            std::path::Path::new("/sys/fs/cgroup/memory").join(ns),
            std::path::Path::new("/sys/fs/cgroup/pids").join(ns),
        ] {
            if dir.parent().is_some_and(std::path::Path::is_dir) {
                assert!(made.contains(&&dir), "{} was not made", dir.display());
            }
        }
    }
    c.finish()?;
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
    Ok(())
}

/// The shim of task `id` in `namespace` exits after containerd's Shutdown.
fn assert_shim_exits_in(namespace: &str, id: &str) -> Result<()> {
    for (pid, cmd) in berth_shims(namespace)? {
        if cmd.contains(&format!("-id {id} ")) {
            berth_tests::wait_pid_gone(pid, HANG)?;
        }
    }
    Ok(())
}
