//! Containers and tasks through Debian's `ctr` and berthctl, with berthd
//! driving berth's own shim and (for the shim v2 protocol interop) Debian's
//! `containerd-shim-runc-v2`, with real runc on a busybox root filesystem.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_tests::{Daemon, busybox_rootfs, fails, ok, subscribe};

/// Which shim berthd runs `io.containerd.runc.v2` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shim {
    /// berth's `containerd-shim-berth-v2` (the default, found next to berthd).
    Berth,
    /// Debian's `containerd-shim-runc-v2`.
    Debian,
}

/// berthd running `io.containerd.runc.v2` with `shim`, and a busybox rootfs.
fn daemon(shim: Shim) -> Result<(Daemon, String)> {
    // Each variant in its own namespace: both run at once with the same
    // container ids, which would otherwise share cgroups.
    let d = match shim {
        Shim::Berth => Daemon::start_with_config(None)?.in_namespace("berth-shim"),
        Shim::Debian => Daemon::start_with_config(Some(
            "version = 2\n[plugins.\"io.containerd.runtime.v2.task\".shims]\n\"io.containerd.runc.v2\" = \"/usr/bin/containerd-shim-runc-v2\"\n",
        ))?
        .in_namespace("debian-shim"),
    };
    let rootfs = d.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    Ok((d, rootfs.display().to_string()))
}

/// The status `ctr tasks ls` shows for `id` (fails if it is not listed).
fn status_of(d: &Daemon, id: &str) -> Result<String> {
    let ls = ok(d.ctr(&["tasks", "ls"])?)?;
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("task {id} is not listed:\n{ls}"))
}

/// Asserts `id`'s status right now: calls that returned have taken effect.
fn assert_status(d: &Daemon, id: &str, status: &str) -> Result<()> {
    let now = status_of(d, id)?;
    if now != status {
        bail!("task {id} is {now}, expected {status}");
    }
    Ok(())
}

/// Kills `id` with SIGKILL and reads events until its exit was published;
/// then the task must be STOPPED.
fn kill_and_wait(d: &Daemon, id: &str) -> Result<String> {
    let watcher = subscribe(d)?;
    ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", id])?)?;
    let seen = watcher.wait_for(
        &[&format!("\"container_id\":\"{id}\""), "/tasks/exit"],
        HANG,
    )?;
    assert_status(d, id, "STOPPED")?;
    Ok(seen)
}

/// A bound that turns a hang into a failure.
const HANG: Duration = Duration::from_secs(30);

fn run_rm_prints(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs,
        "t1",
        "/bin/echo",
        "hello",
    ])?)?;
    assert_eq!(out, "hello\n");
    // --rm removed the container; nothing is left running.
    assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    assert_eq!(ok(d.ctr(&["tasks", "ls", "-q"])?)?, "");
    let out = d.ctr(&[
        "run", "--rm", "--rootfs", &rootfs, "t2", "/bin/sh", "-c", "exit 3",
    ])?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "ctr run returns the task's exit status"
    );
    d.finish()
}

fn out_of_memory_is_an_event(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    let watcher = subscribe(&d)?;
    // A string that doubles until the 16 MiB limit stops it (no swap here
    // or not: the limit covers memory, and the kernel kills the task).
    let out = d.ctr(&[
        "run",
        "--rm",
        "--memory-limit",
        "16777216",
        "--rootfs",
        &rootfs,
        "oom",
        "/bin/sh",
        "-c",
        // The pause lets a shim that watches for OOM only after start
        // (Debian's) be listening before the kill.
        "sleep 1; x=aaaaaaaa; while :; do x=$x$x; done",
    ])?;
    assert_eq!(
        out.status.code(),
        Some(137),
        "killed by the OOM killer: {out:?}"
    );
    let seen = watcher.wait_for(&["/tasks/oom", "\"container_id\":\"oom\""], HANG)?;
    assert!(seen.contains("/tasks/oom"), "{seen}");
    d.finish()
}

fn detached_task_lifecycle(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    let watcher = subscribe(&d)?;
    ok(d.ctr(&["run", "-d", "--rootfs", &rootfs, "t3", "/bin/sleep", "300"])?)?;
    assert_status(&d, "t3", "RUNNING")?;
    let ls = ok(d.ctr(&["tasks", "exec", "--exec-id", "e1", "t3", "/bin/ls", "/"])?)?;
    assert!(
        ls.lines().any(|l| l == "bin") && ls.lines().any(|l| l == "proc"),
        "{ls}"
    );
    let ps = ok(d.ctr(&["tasks", "ps", "t3"])?)?;
    assert!(ps.starts_with("PID") && ps.lines().count() >= 2, "{ps}");
    ok(d.ctr(&["tasks", "pause", "t3"])?)?;
    assert_status(&d, "t3", "PAUSED")?;
    ok(d.ctr(&["tasks", "resume", "t3"])?)?;
    assert_status(&d, "t3", "RUNNING")?;
    let metrics = ok(d.ctr(&["tasks", "metrics", "t3"])?)?;
    assert!(
        metrics.contains("t3") && metrics.contains("memory.usage_in_bytes"),
        "{metrics}"
    );
    let usage = metrics
        .lines()
        .find(|l| l.starts_with("cpuacct.usage "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        usage.is_some_and(|u| u > 0),
        "cpu usage reported: {metrics}"
    );
    // A running task cannot be deleted.
    let err = fails(d.ctr(&["tasks", "rm", "t3"])?)?;
    assert!(err.contains("failed precondition"), "{err}");
    ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", "t3"])?)?;
    let seen = watcher.wait_for(
        &[
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "\"exit_status\":137",
        ],
        HANG,
    )?;
    assert!(seen.contains("/tasks/exit"), "{seen}");
    assert_status(&d, "t3", "STOPPED")?;
    ok(d.ctr(&["tasks", "rm", "t3"])?)?;
    ok(d.ctr(&["containers", "rm", "t3"])?)?;
    assert_eq!(ok(d.ctr(&["tasks", "ls", "-q"])?)?, "");
    d.finish()
}

fn tasks_survive_a_daemon_crash(shim: Shim) -> Result<()> {
    let (mut d, rootfs) = daemon(shim)?;
    ok(d.ctr(&["run", "-d", "--rootfs", &rootfs, "t4", "/bin/sleep", "300"])?)?;
    assert_status(&d, "t4", "RUNNING")?;
    d.kill9()?;
    d.restart()?;
    // berthd reconnects before it serves: the first call finds the task.
    assert_status(&d, "t4", "RUNNING")?;
    let seen = kill_and_wait(&d, "t4")?;
    assert!(seen.contains("\"exit_status\":137"), "{seen}");
    ok(d.ctr(&["tasks", "rm", "t4"])?)?;
    ok(d.ctr(&["containers", "rm", "t4"])?)?;
    d.finish()
}

fn unknown_task_and_missing_criu_are_clear_errors(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    let err = fails(d.ctr(&["tasks", "kill", "nope"])?)?;
    assert!(err.contains("not found"), "{err}");
    ok(d.ctr(&["run", "-d", "--rootfs", &rootfs, "t5", "/bin/sleep", "300"])?)?;
    assert_status(&d, "t5", "RUNNING")?;
    let criu_ok = std::process::Command::new("criu")
        .arg("check")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if criu_ok {
        berth_tests::skip("criu check passes here; the FailedPrecondition path is not exercised");
    } else {
        let err = fails(d.ctr(&["tasks", "checkpoint", "t5"])?)?;
        assert!(
            err.contains("CRIU") && err.contains("failed precondition"),
            "{err}"
        );
    }
    kill_and_wait(&d, "t5")?;
    ok(d.ctr(&["tasks", "rm", "t5"])?)?;
    ok(d.ctr(&["containers", "rm", "t5"])?)?;
    d.finish()
}

fn berthctl_runs_and_manages_tasks(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    let b = |args: &[&str]| d.berthctl(args);
    assert_eq!(
        ok(b(&[
            "run",
            "--rm",
            "--rootfs",
            &rootfs,
            "b1",
            "/bin/echo",
            "hello"
        ])?)?,
        "hello\n"
    );
    let out = b(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs,
        "b2",
        "/bin/sh",
        "-c",
        "echo oops >&2; exit 5",
    ])?;
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    ok(b(&[
        "run",
        "-d",
        "--env",
        "GREETING=hi",
        "--rootfs",
        &rootfs,
        "b3",
        "/bin/sleep",
        "300",
    ])?)?;
    assert_status(&d, "b3", "RUNNING")?;
    let env = ok(b(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "b3",
        "/bin/sh",
        "-c",
        "echo $GREETING",
    ])?)?;
    assert_eq!(env, "hi\n");
    let ls = ok(b(&["tasks", "ls"])?)?;
    assert!(ls.contains("b3") && ls.contains("RUNNING"), "{ls}");
    ok(b(&["tasks", "pause", "b3"])?)?;
    assert_status(&d, "b3", "PAUSED")?;
    ok(b(&["tasks", "resume", "b3"])?)?;
    assert_status(&d, "b3", "RUNNING")?;
    let metrics = ok(b(&["tasks", "metrics", "b3"])?)?;
    assert!(metrics.contains("io.containerd.cgroups"), "{metrics}");
    assert!(ok(b(&["tasks", "ps", "b3"])?)?.lines().count() >= 2);
    ok(b(&["containers", "label", "b3", "team=db"])?)?;
    let info = ok(b(&["containers", "info", "b3"])?)?;
    assert!(
        info.contains("\"team\": \"db\"") && info.contains("GREETING=hi"),
        "{info}"
    );
    let watcher = subscribe(&d)?;
    ok(b(&["tasks", "kill", "-s", "KILL", "b3"])?)?;
    watcher.wait_for(&["/tasks/exit", "\"container_id\":\"b3\""], HANG)?;
    assert_status(&d, "b3", "STOPPED")?;
    let rm = b(&["tasks", "rm", "b3"])?;
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("137"),
        "{rm:?}"
    );
    ok(b(&["containers", "rm", "b3"])?)?;
    assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    d.finish()
}

/// `run -t` driven through a real terminal (tmux), for ctr and berthctl.
fn run_with_a_terminal_in_tmux(shim: Shim) -> Result<()> {
    let (d, rootfs) = daemon(shim)?;
    for (tool, bin) in [
        ("ctr", berth_tests::ctr_bin()?),
        ("berthctl", berth_tests::bin("berthctl")?),
    ] {
        let session = format!("berth-tty-{}-{tool}", std::process::id());
        let id = format!("tty-{tool}");
        let command = format!(
            "{} --address {} --namespace {} run -t --rm --rootfs {rootfs} {id} /bin/sh; tmux -L {session} wait-for -S {session}-done; sleep 5",
            bin.display(),
            d.address.display(),
            d.namespace
        );
        struct Session(String);
        impl Drop for Session {
            fn drop(&mut self) {
                let _ = std::process::Command::new("tmux")
                    .args(["-L", &self.0, "kill-server"])
                    .status();
            }
        }
        ok(std::process::Command::new("tmux")
            .args([
                "-L",
                &session,
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "100",
                "-y",
                "25",
                &command,
            ])
            .output()?)?;
        let _session = Session(session.clone());
        let capture = || -> Result<String> {
            ok(std::process::Command::new("tmux")
                .args(["-L", &session, "capture-pane", "-t", &session, "-p"])
                .output()?)
        };
        let wait_for = |needle: &str| -> Result<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let screen = capture()?;
                if screen.contains(needle) {
                    return Ok(screen);
                }
                if Instant::now() > deadline {
                    bail!("{tool}: {needle:?} never appeared:\n{screen}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_for("/ #")?;
        let send = |keys: &str| -> Result<String> {
            ok(std::process::Command::new("tmux")
                .args(["-L", &session, "send-keys", "-t", &session, keys, "Enter"])
                .output()?)
        };
        send("echo tty-$((6*7))")?;
        wait_for("tty-42")?;
        // The client sizes the pty right after the start; ask until it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            send("stty size")?;
            std::thread::sleep(Duration::from_millis(200));
            let screen = capture()?;
            if screen.contains("25 100") {
                break;
            }
            if Instant::now() > deadline {
                bail!("{tool}: the pty never got the terminal's size:\n{screen}");
            }
        }
        ok(std::process::Command::new("tmux")
            .args(["-L", &session, "send-keys", "-t", &session, "exit", "Enter"])
            .output()?)?;
        // The client has returned once tmux is signalled; --rm has removed
        // the container by then.
        ok(std::process::Command::new("timeout")
            .args([
                "30",
                "tmux",
                "-L",
                &session,
                "wait-for",
                &format!("{session}-done"),
            ])
            .output()?)?;
        let left = ok(d.ctr(&["containers", "ls", "-q"])?)?;
        assert!(
            !left.contains(&id),
            "{tool}: --rm did not remove {id}: {left}"
        );
    }
    d.finish()
}

/// A shim that died while berthd was down is cleaned up at restart, and the
/// container can get a new task.
fn dead_shims_are_cleaned_up_at_restart(shim: Shim) -> Result<()> {
    let (mut d, rootfs) = daemon(shim)?;
    ok(d.ctr(&["run", "-d", "--rootfs", &rootfs, "t6", "/bin/sleep", "300"])?)?;
    assert_status(&d, "t6", "RUNNING")?;
    d.kill9()?;
    // Kill the shim and its container, as a host crash would.
    berth_tests::cleanup_runtime(&d.state, &d.address, &d.scratch("none"));
    d.restart()?;
    // berthd cleans up after dead shims before it serves.
    let bundle = d
        .state
        .join("io.containerd.runtime.v2.task")
        .join(&d.namespace)
        .join("t6");
    assert_eq!(ok(d.ctr(&["tasks", "ls", "-q"])?)?, "");
    assert!(!bundle.exists(), "the dead task's bundle is left");
    ok(d.ctr(&["tasks", "start", "-d", "t6"])?)?;
    assert_status(&d, "t6", "RUNNING")?;
    kill_and_wait(&d, "t6")?;
    ok(d.ctr(&["tasks", "rm", "t6"])?)?;
    ok(d.ctr(&["containers", "rm", "t6"])?)?;
    d.finish()
}

/// berthd killed (SIGKILL) while a batch of `ctr run -d` is under way:
/// after the restart every task is running (or created) and answers kill,
/// or it is gone with its shim; no shim without a task, no task without a
/// shim, and nothing is left once the tasks are removed.
fn kill9_during_starts_leaves_no_orphans(shim: Shim) -> Result<()> {
    let (mut d, rootfs) = daemon(shim)?;
    const ROUNDS: usize = 4;
    const BATCH: usize = 6;
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..BATCH).map(|i| format!("c{round}-{i}")).collect();
        let mut runs = Vec::new();
        for id in &ids {
            let mut cmd = std::process::Command::new(berth_tests::ctr_bin()?);
            cmd.arg("--address")
                .arg(&d.address)
                .args(["run", "-d", "--rootfs", &rootfs, id, "/bin/sleep", "300"])
                .env("CONTAINERD_NAMESPACE", &d.namespace)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            runs.push(cmd.spawn()?);
        }
        // Kill at a different point of the batch each round: once the
        // first shim exists, once half of them do, once all do, and once a
        // `ctr run -d` has returned (so at least one task runs).
        let deadline = Instant::now() + HANG;
        loop {
            let shims = berth_tests::shims_of(&d.address).len();
            let ready = match round {
                0 => shims >= 1,
                1 => shims >= BATCH / 2,
                2 => shims >= BATCH,
                _ => runs.iter_mut().any(|r| matches!(r.try_wait(), Ok(Some(_)))),
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: the batch never got there:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(d.pid().unwrap_or(0))?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        d.kill9()?;
        for mut r in runs {
            r.wait()?;
        }
        d.restart()?;

        let ls = ok(d.ctr(&["tasks", "ls"])?)?;
        let mut tasks = Vec::new();
        for line in ls.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [id, pid, status] = cols[..] else {
                bail!("unexpected tasks ls line {line:?}");
            };
            // STOPPED: its process exited (while berthd was down); the
            // task is still there to be deleted, with its exit status.
            assert!(
                pid != "0" && matches!(status, "RUNNING" | "CREATED" | "STOPPED"),
                "round {round}: task {id} is {status} with pid {pid}:\n{ls}"
            );
            tasks.push(id.to_string());
        }
        let mut shim_ids: Vec<String> = berth_tests::shims_of(&d.address)
            .into_iter()
            .filter_map(|p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let i = args.iter().position(|a| a == "-id")?;
                args.get(i + 1).cloned()
            })
            .collect();
        shim_ids.sort();
        tasks.sort();
        assert_eq!(shim_ids, tasks, "round {round}: shims vs tasks:\n{ls}");
        // Every task left is controllable: it exits on SIGKILL and goes.
        for id in &tasks {
            let status = status_of(&d, id)?;
            if status == "STOPPED" {
                let rm = d.ctr(&["tasks", "rm", id])?;
                eprintln!(
                    "round {round}: {id} had stopped: {}",
                    String::from_utf8_lossy(&rm.stderr).trim()
                );
                assert!(rm.status.success(), "{rm:?}");
                continue;
            } else if status == "CREATED" {
                // A created task's init waits for Start; kill reaches it too.
                let watcher = subscribe(&d)?;
                ok(d.ctr(&["tasks", "kill", "-s", "SIGKILL", id])?)?;
                watcher.wait_for(
                    &["/tasks/exit", &format!("\"container_id\":\"{id}\"")],
                    HANG,
                )?;
            } else {
                kill_and_wait(&d, id)?;
            }
            ok(d.ctr(&["tasks", "rm", id])?)?;
        }
        for id in ok(d.ctr(&["containers", "ls", "-q"])?)?.lines() {
            ok(d.ctr(&["containers", "rm", id])?)?;
        }
        d.assert_clean()?;
        eprintln!(
            "round {round}: {} of {BATCH} tasks survived the kill",
            tasks.len()
        );
    }
    let namespace = d.namespace.clone();
    d.finish()?;
    // berthd killed mid-Create closes the shim's connection; Debian's shim
    // then cancels the call, which SIGKILLs its `runc create` (as with
    // containerd). That runc had made the container's cgroup but not saved
    // the state naming it, so `runc delete --force` cannot remove it: the
    // test removes its containers' empty leaf cgroups. One still holding a
    // process is a container that outlived everything.
    let mut busy = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..BATCH {
            busy.extend(berth_tests::host_leftovers::remove_container_cgroups(
                &namespace,
                &format!("c{round}-{i}"),
            ));
        }
    }
    if !busy.is_empty() {
        bail!("containers' cgroups still hold processes: {busy:?}");
    }
    Ok(())
}

/// A namespace of the test's own leaves no cgroup parents on the host once
/// the daemon is finished: `ctr` puts a container in the cgroup
/// `/<namespace>/<id>` and runc, deleting it, removes only the leaf.
#[test]
fn an_owned_namespace_leaves_no_cgroups_on_the_host() -> Result<()> {
    let d = Daemon::start()?.in_unique_namespace("ctr-tasks-owned");
    let rootfs = d.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    let rootfs = rootfs.display().to_string();
    let out = ok(d.ctr(&["run", "--rm", "--rootfs", &rootfs, "o1", "/bin/echo", "hi"])?)?;
    assert_eq!(out, "hi\n");
    ok(d.ctr(&["run", "-d", "--rootfs", &rootfs, "o2", "/bin/sleep", "300"])?)?;
    kill_and_wait(&d, "o2")?;
    ok(d.ctr(&["tasks", "rm", "o2"])?)?;
    ok(d.ctr(&["containers", "rm", "o2"])?)?;
    let ns = d.namespace.clone();
    let dirs = berth_tests::host_leftovers::namespace_dirs(&ns);
    // The containers made the cgroup parents (else the check below would
    // prove nothing).
    for hierarchy in ["memory", "pids"] {
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(&ns);
        if dir.parent().is_some_and(std::path::Path::is_dir) {
            assert!(dir.is_dir(), "{} was not made", dir.display());
        }
    }
    assert!(dirs.iter().any(|d| d.is_dir()), "none of {dirs:?} was made");
    d.finish()?;
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
    Ok(())
}

/// One test per scenario and shim: berth's shim runs them all, Debian's the
/// protocol-level ones.
macro_rules! with_shims {
    ($($name:ident: $($shim:ident),+;)*) => {
        $(mod $name {
            $(
                #[test]
                #[allow(non_snake_case)]
                fn $shim() -> anyhow::Result<()> {
                    super::$name(super::Shim::$shim)
                }
            )+
        })*
    };
}

with_shims! {
    run_rm_prints: Berth, Debian;
    out_of_memory_is_an_event: Berth, Debian;
    detached_task_lifecycle: Berth, Debian;
    tasks_survive_a_daemon_crash: Berth, Debian;
    unknown_task_and_missing_criu_are_clear_errors: Berth;
    berthctl_runs_and_manages_tasks: Berth;
    run_with_a_terminal_in_tmux: Berth;
    dead_shims_are_cleaned_up_at_restart: Berth, Debian;
    kill9_during_starts_leaves_no_orphans: Berth, Debian;
}
