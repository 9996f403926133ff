//! Runtime behaviours containerd's clients rely on, driven by Debian's
//! `ctr` 1.6: a runtime named by the absolute path of its shim (recorded
//! in the bundle as `shim-binary-path`, used again after a restart), the
//! legacy runtime names with their option types, containerd's error for a
//! missing shim, and `[cgroup] path` moving the daemon itself.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_tests::{Daemon, bin, busybox_rootfs, fails, ok};

/// berthd in its own namespace, and a busybox root filesystem.
fn daemon(namespace: &str, config: Option<&str>) -> Result<(Daemon, String)> {
    let d = Daemon::start_with_config(config)?.in_namespace(namespace);
    let rootfs = d.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    Ok((d, rootfs.display().to_string()))
}

/// The bundle of task `id` in the daemon's namespace.
fn bundle(d: &Daemon, id: &str) -> PathBuf {
    d.state
        .join("io.containerd.runtime.v2.task")
        .join(&d.namespace)
        .join(id)
}

#[test]
fn a_runtime_named_by_its_shim_path_survives_a_restart() -> Result<()> {
    let (mut d, rootfs) = daemon("rt-abs-path", None)?;
    let shim = bin("containerd-shim-berth-v2")?;
    let shim = shim.display().to_string();
    ok(d.ctr(&[
        "run",
        "-d",
        "--runtime",
        &shim,
        "--rootfs",
        &rootfs,
        "abs1",
        "/bin/sleep",
        "1000",
    ])?)?;
    let recorded = std::fs::read_to_string(bundle(&d, "abs1").join("shim-binary-path"))
        .context("the bundle records the shim binary")?;
    assert_eq!(recorded, shim);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(bundle(&d, "abs1").join("shim-binary-path"))?.permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "as containerd writes it");
    let info = ok(d.ctr(&["containers", "info", "abs1"])?)?;
    assert!(info.contains(&format!("\"Name\": \"{shim}\"")), "{info}");

    d.restart()?;
    let tasks = ok(d.ctr(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("abs1") && l.contains("RUNNING")),
        "reconnected through the recorded shim:\n{tasks}"
    );
    ok(d.ctr(&["tasks", "rm", "-f", "abs1"])?)?;
    ok(d.ctr(&["containers", "rm", "abs1"])?)?;
    Ok(())
}

#[test]
fn a_missing_shim_fails_with_containerds_error() -> Result<()> {
    let (d, rootfs) = daemon("rt-missing", None)?;
    let err = fails(d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nope.v1",
        "--rootfs",
        &rootfs,
        "gone1",
        "/bin/true",
    ])?)?;
    assert!(
        err.contains(
            "failed to start shim: failed to resolve runtime path: runtime \"io.containerd.nope.v1\" binary not installed \"containerd-shim-nope-v1\": file does not exist: unknown"
        ),
        "{err}"
    );
    let missing = d.scratch("no-such-shim");
    let err = fails(d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        &missing.display().to_string(),
        "--rootfs",
        &rootfs,
        "gone2",
        "/bin/true",
    ])?)?;
    assert!(
        err.contains(&format!(
            "failed to resolve runtime path: invalid custom binary path: stat {}: no such file or directory",
            missing.display()
        )),
        "{err}"
    );
    Ok(())
}

#[test]
fn legacy_runtime_names_run_with_their_option_types() -> Result<()> {
    let (d, rootfs) = daemon("rt-legacy", None)?;
    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v1",
        "--rootfs",
        &rootfs,
        "legacy1",
        "/bin/echo",
        "runc v1",
    ])?)?;
    assert_eq!(out, "runc v1\n");
    // --no-pivot under the v1 Linux runtime sends runctypes CreateOptions;
    // berth turns them into runc's options, so runc keeps its state under
    // berthd's own runc root as for any other task.
    ok(d.ctr(&[
        "run",
        "-d",
        "--no-pivot",
        "--runtime",
        "io.containerd.runtime.v1.linux",
        "--rootfs",
        &rootfs,
        "legacy2",
        "/bin/sleep",
        "1000",
    ])?)?;
    let runc_state = d.state.join("runc").join(&d.namespace).join("legacy2");
    assert!(
        runc_state.join("state.json").is_file(),
        "{} has runc's state",
        runc_state.display()
    );
    let tasks = ok(d.ctr(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("legacy2") && l.contains("RUNNING")),
        "{tasks}"
    );
    ok(d.ctr(&["tasks", "rm", "-f", "legacy2"])?)?;
    ok(d.ctr(&["containers", "rm", "legacy2"])?)?;
    Ok(())
}

/// The v1 hierarchies (or the v2 one) holding `path`, for cleanup.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    own.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            post.starts_with("cgroup")
                .then(|| Path::new(mount_point).join(path.trim_start_matches('/')))
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup directories a test made, once empty.
struct CgroupCleanup(String);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.0) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn cgroup_path_moves_the_daemon_into_that_cgroup() -> Result<()> {
    let name = format!("/berth-e2e-cgroup-{}", std::process::id());
    let cleanup = CgroupCleanup(name.clone());
    let config = format!("version = 2\n[cgroup]\npath = \"{name}\"\n");
    let (mut d, _) = daemon("rt-cgroup", Some(&config))?;
    let pid = d.pid().context("berthd runs")?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    // Every v1 hierarchy (every line, on a v2 host the single one).
    let v1: Vec<&str> = cgroups.lines().filter(|l| !l.starts_with("0::")).collect();
    let lines = if v1.is_empty() {
        cgroups.lines().collect()
    } else {
        v1
    };
    for line in &lines {
        assert!(line.ends_with(&format!(":{name}")), "{cgroups}");
    }
    d.stop()?;
    drop(d);
    drop(cleanup);
    Ok(())
}

/// A prestart hook calling the daemon back as `<daemon> oci-hook -- ...`
/// (what containerd's GPU option and nerdctl add): berthd expands
/// containerd's template functions in the arguments and environment and
/// runs the hook with them.
#[test]
fn prestart_hooks_call_the_daemon_back_as_oci_hook() -> Result<()> {
    let (d, rootfs) = daemon("rt-oci-hook", None)?;
    let out = d.scratch("hook.out");
    let mut spec: serde_json::Value = serde_json::from_str(&ok(d.ctr(&["oci", "spec"])?)?)?;
    spec["process"]["args"] = serde_json::json!(["/bin/echo", "ran"]);
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    spec["annotations"] = serde_json::json!({"berth.test": "annotated"});
    spec["hooks"] = serde_json::json!({
        "prestart": [{
            "path": bin("berthd")?.display().to_string(),
            "args": [
                "berthd",
                "oci-hook",
                "--",
                "/bin/sh",
                "-c",
                format!(
                    "echo \"$HOOK_ID {{{{id}}}} {{{{pid}}}} {{{{rootfs}}}} {{{{bundle}}}} {{{{annotation \"berth.test\"}}}}\" > {}",
                    out.display()
                ),
            ],
            "env": ["HOOK_ID=id:{{id}}", "PATH=/usr/bin:/bin"],
        }],
    });
    let spec_path = d.scratch("hook-spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let ran = ok(d.ctr(&[
        "run",
        "--rm",
        "--config",
        &spec_path.display().to_string(),
        "hook1",
    ])?)?;
    assert_eq!(ran, "ran\n");
    let written = std::fs::read_to_string(&out).context("the hook ran")?;
    let words: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(words.len(), 6, "{written}");
    assert_eq!(words[0], "id:hook1", "environment expanded: {written}");
    assert_eq!(words[1], "hook1", "{written}");
    assert!(
        words[2].parse::<u32>().is_ok_and(|p| p > 0),
        "the container's pid: {written}"
    );
    assert_eq!(words[3], rootfs, "{written}");
    assert_eq!(
        words[4],
        bundle(&d, "hook1").display().to_string(),
        "{written}"
    );
    assert_eq!(words[5], "annotated", "{written}");
    Ok(())
}

/// containerd's restart monitor: a container labelled
/// `containerd.io/restart.status=running` gets its task back when it dies
/// (output to `containerd.io/restart.loguri`, `restart.count` counted),
/// and `stopped` makes the monitor stop it.
#[test]
fn the_restart_monitor_keeps_a_labelled_task_running() -> Result<()> {
    let (d, rootfs) = daemon(
        "rt-restart",
        Some(
            "version = 2\n[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"200ms\"\n",
        ),
    )?;
    let timeout = std::time::Duration::from_secs(30);
    let mut events = std::process::Command::new(berth_tests::ctr_bin()?);
    events.arg("--address").arg(&d.address).arg("events");
    let watcher = berth_tests::Watcher::spawn(events)?;
    ok(d.ctr(&[
        "run",
        "-d",
        "--rootfs",
        &rootfs,
        "r1",
        "/bin/sh",
        "-c",
        "echo up; exec sleep 1000",
    ])?)?;
    // The watcher saw the first start: its subscription is live.
    watcher.wait_for(&["/tasks/start {\"container_id\":\"r1\""], timeout)?;
    let log = d.scratch("r1.log");
    // Labelled once running: the monitor never races ctr's own start.
    ok(d.ctr(&[
        "containers",
        "label",
        "r1",
        "containerd.io/restart.status=running",
        &format!("containerd.io/restart.loguri=file://{}", log.display()),
    ])?)?;

    ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", "r1"])?)?;
    // The monitor's task writes to the log URI; its create names the pid.
    let log_io = format!("\"stdout\":\"file://{}\"", log.display());
    let seen = watcher.wait_for(&[&log_io], timeout)?;
    let pid = event_pid(&seen, &log_io).context("pid of the restarted task")?;
    watcher.wait_for(
        &[&format!(
            "/tasks/start {{\"container_id\":\"r1\",\"pid\":{pid}}}"
        )],
        timeout,
    )?;
    let tasks = ok(d.ctr(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("r1") && l.contains(&pid) && l.contains("RUNNING")),
        "restarted as {pid}:\n{tasks}"
    );
    let info = ok(d.ctr(&["containers", "info", "r1"])?)?;
    assert!(
        info.contains("\"containerd.io/restart.count\": \"1\""),
        "{info}"
    );
    assert!(log.exists(), "the restarted task writes to the log URI");

    ok(d.ctr(&[
        "containers",
        "label",
        "r1",
        "containerd.io/restart.status=stopped",
    ])?)?;
    watcher.wait_for(
        &[&format!(
            "/tasks/delete {{\"container_id\":\"r1\",\"pid\":{pid},"
        )],
        timeout,
    )?;
    assert_eq!(ok(d.ctr(&["tasks", "ls", "-q"])?)?, "");
    ok(d.ctr(&["containers", "rm", "r1"])?)?;
    Ok(())
}

/// The `"pid"` of the event line holding `needle`.
fn event_pid(events: &str, needle: &str) -> Option<String> {
    let line = events.lines().find(|l| l.contains(needle))?;
    let rest = &line[line.rfind("\"pid\":")? + 6..];
    Some(rest.chars().take_while(char::is_ascii_digit).collect())
}
