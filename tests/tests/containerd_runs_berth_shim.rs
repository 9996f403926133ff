//! Debian's containerd driving berth's shim: `--runtime io.containerd.berth.v2`
//! resolves to `containerd-shim-berth-v2`, which must speak shim v2 well
//! enough for containerd's own task service and events.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_tests::{Containerd, busybox_rootfs, fails, ok};

const RUNTIME: &str = "io.containerd.berth.v2";

fn wait_for_status(c: &Containerd, id: &str, status: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ls = ok(c.ctr(&["tasks", "ls"])?)?;
        if ls.lines().any(|l| l.starts_with(id) && l.contains(status)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task {id} never reached {status}:\n{ls}\n{}", c.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Command lines of the berth shims serving `namespace`.
fn berth_shims(namespace: &str) -> Result<Vec<String>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|cmd| String::from_utf8_lossy(&cmd).replace('\0', " "))
        .filter(|cmd| cmd.contains("containerd-shim-berth-v2") && cmd.contains(namespace))
        .collect())
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
    let out = run("--rm", &["i2", "/bin/sh", "-c", "echo err >&2; exit 7"])?;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // A detached task: the shim really is ours, exec works, kill reports 137.
    ok(run("-d", &["i3", "/bin/sleep", "300"])?)?;
    wait_for_status(&c, "i3", "RUNNING")?;
    // The shims of the --rm runs exit right after their Shutdown answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shims = berth_shims(&c.namespace)?;
        if shims.len() == 1 && shims[0].contains("-id i3 ") {
            break;
        }
        if Instant::now() > deadline {
            bail!("want exactly one berth shim (for i3), got: {shims:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    wait_for_status(&c, "i3", "PAUSED")?;
    ok(c.ctr(&["tasks", "resume", "i3"])?)?;
    wait_for_status(&c, "i3", "RUNNING")?;
    let err = fails(c.ctr(&["tasks", "rm", "i3"])?)?;
    assert!(err.contains("running"), "{err}");
    ok(c.ctr(&["tasks", "kill", "-s", "SIGKILL", "i3"])?)?;
    wait_for_status(&c, "i3", "STOPPED")?;
    let rm = ok(c.ctr(&["tasks", "rm", "i3"])?)?;
    assert!(rm.is_empty() || rm.contains("137"), "{rm}");
    ok(c.ctr(&["containers", "rm", "i3"])?)?;
    assert_eq!(ok(c.ctr(&["tasks", "ls", "-q"])?)?, "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth_shims(&c.namespace)?.is_empty() {
        if Instant::now() > deadline {
            bail!("the shim did not exit after its task was deleted");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
