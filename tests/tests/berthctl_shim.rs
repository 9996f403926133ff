//! `berthctl shim`: straight to a container's shim over its ttrpc socket,
//! found where containerd (and so Debian's `ctr shim`) looks for it.

use anyhow::{Context, Result};
use berth_tests::{Daemon, fails, ok, testimages};
use serde_json::Value;

#[test]
fn berthctl_shim_reads_state_and_runs_an_exec() -> Result<()> {
    let d = Daemon::start()?.in_namespace("shimtest");
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    let image = "docker.io/library/busybox:latest";
    ok(d.ctr(&["run", "-d", image, "s1", "sleep", "1000"])?)?;

    // The main process's state, as JSON; the pid is the task's.
    let state = ok(d.berthctl(&["shim", "--id", "s1", "state"])?)?;
    let state: Value = serde_json::from_str(&state).context(state)?;
    assert_eq!(state["id"], "s1", "{state}");
    assert_eq!(state["status"], "RUNNING", "{state}");
    let pid = state["pid"].as_u64().unwrap_or(0);
    let tasks = ok(d.ctr(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("s1") && l.contains(&pid.to_string())),
        "pid {pid}:\n{tasks}"
    );
    // ctr 1.6 dials the same socket and sees the same process.
    let theirs = ok(d.ctr(&["shim", "--id", "s1", "state"])?)?;
    assert!(theirs.contains(&format!("\"pid\": {pid}")), "{theirs}");

    // An exec, its output to a file, started, then deleted with its status.
    let spec = d.scratch("process.json");
    std::fs::write(
        &spec,
        r#"{"args":["sh","-c","echo exec-via-shim"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#,
    )?;
    let out = d.scratch("exec.out");
    std::fs::write(&out, "")?;
    let started = ok(d.berthctl(&[
        "shim",
        "--id",
        "s1",
        "exec",
        "--spec",
        &spec.display().to_string(),
        "--stdout",
        &out.display().to_string(),
        "x1",
    ])?)?;
    assert!(started.starts_with("exec running with pid "), "{started}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = ok(d.berthctl(&["shim", "--id", "s1", "state", "x1"])?)?;
        if state.contains("STOPPED") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "exec still running: {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&out)?, "exec-via-shim\n");
    let deleted = ok(d.berthctl(&["shim", "--id", "s1", "delete", "x1"])?)?;
    assert_eq!(deleted, "container deleted and returned exit status 0\n");

    // No such shim: said plainly.
    let err = fails(d.berthctl(&["shim", "--id", "nope", "state"])?)?;
    assert!(
        err.contains("fail to connect to container nope's shim"),
        "{err}"
    );
    let err = fails(d.berthctl(&["shim", "state"])?)?;
    assert!(err.contains("--id"), "{err}");

    ok(d.ctr(&["tasks", "rm", "-f", "s1"])?)?;
    ok(d.ctr(&["containers", "rm", "s1"])?)?;
    d.finish()
}
