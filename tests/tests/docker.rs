//! Docker Engine 20.10 (Debian's docker.io) on berthd: `dockerd
//! --containerd=<berthd socket>` runs, stops, execs into and restores
//! containers through berth's API and shims.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::docker::{CpuLoad, Dockerd, NAMESPACE, StorageDriver};
use berth_tests::{Daemon, ok};

/// A berthd and a dockerd on it; dockerd is stopped first (field order).
struct Env {
    docker: Dockerd,
    berth: Daemon,
}

impl Env {
    fn start() -> Result<Env> {
        Env::start_with(&[])
    }

    fn start_with(dockerd_flags: &[&str]) -> Result<Env> {
        let berth = Daemon::start()?;
        let docker = Dockerd::start_with(&berth.address, dockerd_flags)?;
        docker.load_busybox()?;
        Ok(Env { docker, berth })
    }

    /// dockerd on overlay2, Docker's default storage driver.
    fn start_overlay2() -> Result<Env> {
        let berth = Daemon::start()?;
        let docker = Dockerd::builder(&berth.address)
            .storage_driver(StorageDriver::Overlay2)
            .start()?;
        assert_eq!(docker.ok(&["info", "-f", "{{.Driver}}"])?, "overlay2");
        docker.load_busybox()?;
        Ok(Env { docker, berth })
    }

    /// Debian's ctr against berthd in dockerd's namespace.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["--namespace", NAMESPACE];
        all.extend_from_slice(args);
        ok(self.berth.ctr(&all)?)
    }

    /// `docker inspect -f <format> <name>`.
    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        self.docker.ok(&["inspect", "-f", format, name])
    }

    /// Waits until `name`'s log holds `needle` at least `count` times.
    fn wait_for_log(&self, name: &str, needle: &str, count: usize) -> Result<String> {
        wait_until(Duration::from_secs(60), || {
            let out = self.docker.docker(&["logs", name])?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok((text.matches(needle).count() >= count).then_some(text))
        })
        .with_context(|| format!("{needle:?} x{count} in the log of {name}"))
    }
}

/// Calls `check` until it gives a value or `timeout` passes: waiting for
/// an outcome (a log line, a restart) that comes when it comes.
fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("not reached within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A shell that exits with 7 on SIGTERM once it has said "up" (PID 1
/// ignores signals it has no handler for).
const TRAPPING: &str = r#"trap "exit 7" TERM; echo up; while true; do sleep 0.1; done"#;

#[test]
fn docker_starts_on_berthd() -> Result<()> {
    // dockerd's containerd client reads the labels of `moby` before
    // anything created it; berthd must answer as containerd does (no
    // labels, no error) or dockerd exits.
    let e = Env::start()?;
    let info = e
        .docker
        .ok(&["info", "-f", "{{.Containers}} {{.Driver}}"])?;
    assert_eq!(info, "0 vfs");
    // The first container creates the namespace.
    e.docker.ok(&["run", "--rm", "busybox", "true"])?;
    let out = ok(e.berth.ctr(&["namespaces", "ls", "-q"])?)?;
    assert!(out.lines().any(|l| l == NAMESPACE), "{out}");
    Ok(())
}

#[test]
fn docker_run_reports_exit_codes_and_output() -> Result<()> {
    let e = Env::start()?;
    assert_eq!(
        e.docker.ok(&["run", "--rm", "busybox", "echo", "hello"])?,
        "hello"
    );
    for code in [0, 1, 3, 42] {
        let out = e.docker.docker(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("exit {code}"),
        ])?;
        assert_eq!(out.status.code(), Some(code), "{out:?}");
    }
    // Without --rm the container stays, stopped with its code.
    let out = e
        .docker
        .docker(&["run", "--name", "kept", "busybox", "sh", "-c", "exit 7"])?;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(
        e.inspect("kept", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 7"
    );
    // A command that does not exist: runc's error reaches docker, which
    // tells "not found" (127) from other failures by its text.
    let out = e
        .docker
        .docker(&["run", "--rm", "busybox", "no-such-command"])?;
    assert_eq!(out.status.code(), Some(127), "{out:?}");

    // Only `kept` is left in docker; berth holds nothing (dockerd deletes
    // its containerd container when the task exits, and makes it anew on
    // start).
    assert_eq!(
        e.docker.ok(&["ps", "-a", "--format", "{{.Names}}"])?,
        "kept"
    );
    assert_eq!(e.ctr(&["containers", "ls", "-q"])?.trim(), "");
    assert_eq!(e.ctr(&["tasks", "ls", "-q"])?.trim(), "");
    Ok(())
}

#[test]
fn docker_detached_exec_logs_top_stats() -> Result<()> {
    let e = Env::start()?;
    e.docker.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ])?;
    e.wait_for_log("web", "started", 1)?;

    let out = e
        .docker
        .docker(&["exec", "web", "sh", "-c", "echo in-exec; exit 4"])?;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in-exec");
    assert_eq!(
        e.docker.ok(&["exec", "web", "cat", "/proc/1/comm"])?,
        "sleep"
    );

    let top = e.docker.ok(&["top", "web"])?;
    assert!(top.contains("sleep 1000"), "{top}");
    // berth's shim answers the task's pid; docker lists it.
    let pid = e.inspect("web", "{{.State.Pid}}")?;
    assert!(top.contains(&pid), "{top}");

    let stats = e.docker.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "web",
    ])?;
    assert_eq!(stats, "web 1");
    Ok(())
}

#[test]
fn docker_pause_and_unpause() -> Result<()> {
    let e = Env::start()?;
    e.docker
        .ok(&["run", "-d", "--name", "pz", "busybox", "sleep", "1000"])?;
    e.docker.ok(&["pause", "pz"])?;
    assert_eq!(
        e.inspect("pz", "{{.State.Status}} {{.State.Paused}}")?,
        "paused true"
    );
    let id = e.inspect("pz", "{{.Id}}")?;
    let tasks = e.ctr(&["tasks", "ls"])?;
    let line = tasks
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(line.contains("PAUSED"), "{tasks}");

    e.docker.ok(&["unpause", "pz"])?;
    assert_eq!(
        e.inspect("pz", "{{.State.Status}} {{.State.Paused}}")?,
        "running false"
    );
    assert_eq!(e.docker.ok(&["exec", "pz", "echo", "awake"])?, "awake");
    Ok(())
}

#[test]
fn docker_stop_restart_kill() -> Result<()> {
    let e = Env::start()?;
    e.docker
        .ok(&["run", "-d", "--name", "st", "busybox", "sh", "-c", TRAPPING])?;
    e.wait_for_log("st", "up", 1)?;
    // SIGTERM reaches the trap: the container's own exit code.
    e.docker.ok(&["stop", "-t", "60", "st"])?;
    assert_eq!(
        e.inspect("st", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 7"
    );

    // Restarting a stopped container runs it again, same container.
    e.docker.ok(&["restart", "-t", "60", "st"])?;
    e.wait_for_log("st", "up", 2)?;
    assert_eq!(e.inspect("st", "{{.State.Status}}")?, "running");
    // And restarting a running one stops (trap, 7) and starts it again.
    e.docker.ok(&["restart", "-t", "60", "st"])?;
    e.wait_for_log("st", "up", 3)?;
    assert_eq!(e.inspect("st", "{{.State.Status}}")?, "running");

    // kill: SIGKILL, 128 + 9.
    e.docker.ok(&["kill", "st"])?;
    assert_eq!(e.docker.ok(&["wait", "st"])?, "137");
    assert_eq!(
        e.inspect("st", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 137"
    );
    // kill with a chosen signal, handled by the trap.
    e.docker.ok(&["start", "st"])?;
    e.wait_for_log("st", "up", 4)?;
    e.docker.ok(&["kill", "-s", "TERM", "st"])?;
    assert_eq!(e.docker.ok(&["wait", "st"])?, "7");
    Ok(())
}

#[test]
fn docker_restart_always_restarts_an_exited_process() -> Result<()> {
    let e = Env::start()?;
    e.docker.ok(&[
        "run",
        "-d",
        "--name",
        "ra",
        "--restart=always",
        "busybox",
        "sh",
        "-c",
        "echo ran; exit 3",
    ])?;
    // Each exit reaches dockerd, which starts the container again.
    let count = wait_until(Duration::from_secs(120), || {
        let n: u32 = e.inspect("ra", "{{.RestartCount}}")?.parse()?;
        Ok((n >= 2).then_some(n))
    })
    .context("restart count of ra")?;
    assert!(count >= 2);
    e.wait_for_log("ra", "ran", 3)?;
    e.docker.ok(&["rm", "-f", "ra"])?;
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");
    assert_eq!(e.ctr(&["containers", "ls", "-q"])?.trim(), "");
    Ok(())
}

#[test]
fn docker_rm_force_removes_a_running_container() -> Result<()> {
    let e = Env::start()?;
    e.docker
        .ok(&["run", "-d", "--name", "gone", "busybox", "sleep", "1000"])?;
    let pid = e.inspect("gone", "{{.State.Pid}}")?;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    e.docker.ok(&["rm", "-f", "gone"])?;
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} lives"
    );
    assert_eq!(e.ctr(&["containers", "ls", "-q"])?.trim(), "");
    assert_eq!(e.ctr(&["tasks", "ls", "-q"])?.trim(), "");
    Ok(())
}

/// What dockerd on overlay2 has mounted that the host sees: only the data
/// root's bind mount and the overlay mounts under it, never its `/run`
/// tmpfs or anything under its exec root.
fn overlay_mounts_on_host(docker: &Dockerd) -> Result<Vec<String>> {
    let data = docker.data_root();
    let mut overlays = Vec::new();
    for (target, fstype) in berth_tests::mountinfo_under(docker.dir()) {
        if Path::new(&target) == data {
            continue;
        }
        assert!(
            target.starts_with(&format!("{}/", data.display())),
            "dockerd's mount {target} ({fstype}) reached the host"
        );
        assert_eq!(fstype, "overlay", "{target}");
        overlays.push(target);
    }
    let run = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !run.contains("berth-dockerd-run"),
        "dockerd's /run reached the host"
    );
    Ok(overlays)
}

#[test]
fn docker_overlay2_run_rm_leaves_no_mount() -> Result<()> {
    let e = Env::start_overlay2()?;
    let dir = e.docker.dir().to_path_buf();
    assert_eq!(
        e.docker.ok(&["run", "--rm", "busybox", "true"])?,
        "",
        "docker run --rm busybox true"
    );
    assert_eq!(
        e.docker.ok(&["run", "--rm", "busybox", "echo", "hello"])?,
        "hello"
    );
    let out = e
        .docker
        .docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])?;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Each container's overlay went with it, on the host too.
    assert_eq!(overlay_mounts_on_host(&e.docker)?, Vec::<String>::new());
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");
    assert_eq!(e.ctr(&["containers", "ls", "-q"])?.trim(), "");
    drop(e);
    assert_eq!(berth_tests::mountinfo_under(&dir), Vec::new());
    Ok(())
}

#[test]
fn docker_overlay2_detached_exec_rm_force() -> Result<()> {
    let e = Env::start_overlay2()?;
    let dir = e.docker.dir().to_path_buf();
    e.docker.ok(&[
        "run",
        "-d",
        "--name",
        "ov",
        "busybox",
        "sh",
        "-c",
        "echo written > /f; exec sleep 1000",
    ])?;
    // The container runs on its overlay, which the host (berth's shim and
    // runc) sees where dockerd mounted it.
    let merged = e.inspect("ov", "{{.GraphDriver.Data.MergedDir}}")?;
    assert_eq!(overlay_mounts_on_host(&e.docker)?, vec![merged.clone()]);
    let pid = e.inspect("ov", "{{.State.Pid}}")?;
    let out = e
        .docker
        .docker(&["exec", "ov", "sh", "-c", "cat /f; exit 4"])?;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "written");
    assert_eq!(
        std::fs::read_to_string(Path::new(&merged).join("f"))?,
        "written\n"
    );
    e.docker.ok(&["rm", "-f", "ov"])?;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} lives"
    );
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");
    assert_eq!(e.ctr(&["tasks", "ls", "-q"])?.trim(), "");
    assert_eq!(overlay_mounts_on_host(&e.docker)?, Vec::<String>::new());
    drop(e);
    assert_eq!(berth_tests::mountinfo_under(&dir), Vec::new());
    Ok(())
}

#[test]
fn docker_overlay2_killed_dockerd_leaves_no_mount() -> Result<()> {
    let e = Env::start_overlay2()?;
    let dir = e.docker.dir().to_path_buf();
    e.docker
        .ok(&["run", "-d", "--name", "killed", "busybox", "sleep", "1000"])?;
    assert_eq!(overlay_mounts_on_host(&e.docker)?.len(), 1);
    // dockerd gets no chance to unmount anything: dropping the Dockerd
    // must.
    let pid = e.docker.pid().context("dockerd pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    drop(e);
    assert_eq!(berth_tests::mountinfo_under(&dir), Vec::new());
    Ok(())
}

/// A tmux server on a socket of its own, killed by PID when dropped.
struct Tmux {
    socket: std::path::PathBuf,
    pid: Option<i32>,
}

impl Tmux {
    fn start(socket: std::path::PathBuf, command: &str) -> Result<Tmux> {
        let mut t = Tmux { socket, pid: None };
        ok(
            t.cmd(&["new-session", "-d", "-s", "main", "-x", "120", "-y", "30"])
                .arg(command)
                .output()?,
        )?;
        let pid = ok(t.cmd(&["display-message", "-p", "#{pid}"]).output()?)?;
        t.pid = Some(pid.trim().parse()?);
        Ok(t)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args);
        c
    }

    fn send(&self, keys: &str) -> Result<()> {
        ok(self
            .cmd(&["send-keys", "-t", "main", keys, "Enter"])
            .output()?)?;
        Ok(())
    }

    fn wait_for_screen(&self, needles: &[&str]) -> Result<String> {
        wait_until(Duration::from_secs(60), || {
            let screen = ok(self.cmd(&["capture-pane", "-p", "-t", "main"]).output()?)?;
            Ok(needles.iter().all(|n| screen.contains(n)).then_some(screen))
        })
        .with_context(|| format!("{needles:?} on the tmux screen"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn docker_run_interactive_terminal_in_tmux() -> Result<()> {
    let e = Env::start()?;
    let rc = e.docker.scratch("rc");
    let command = format!(
        "DOCKER_HOST=unix://{} DOCKER_CONFIG={} {} run -it --rm busybox sh; echo rc=$? > {}",
        e.docker.socket.display(),
        e.docker.scratch("cli").display(),
        berth_tests::docker::DOCKER,
        rc.display()
    );
    let tmux = Tmux::start(e.docker.scratch("tmux.sock"), &command)?;
    // The shell has a terminal, and its output comes back through it.
    tmux.send("echo hello-$((40+2)); tty")?;
    tmux.wait_for_screen(&["hello-42", "/dev/pts/"])?;
    // The pane's size reached the container's terminal.
    let size = ok(tmux
        .cmd(&["display-message", "-p", "#{pane_height} #{pane_width}"])
        .output()?)?;
    tmux.send("stty size")?;
    tmux.wait_for_screen(&[size.trim()])?;
    tmux.send("exit 5")?;
    let text = wait_until(Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&rc)
            .ok()
            .filter(|t| t.ends_with('\n')))
    })
    .context("docker run -it did not return")?;
    assert_eq!(text.trim(), "rc=5");
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");
    drop(tmux);
    Ok(())
}

#[test]
fn docker_live_restore_keeps_containers_across_a_dockerd_restart() -> Result<()> {
    let mut e = Env::start_with(&["--live-restore"])?;
    e.docker
        .ok(&["run", "-d", "--name", "lr", "busybox", "sh", "-c", TRAPPING])?;
    e.wait_for_log("lr", "up", 1)?;
    let pid = e.inspect("lr", "{{.State.Pid}}")?;

    e.docker.stop()?;
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with dockerd"
    );
    e.docker.restart()?;

    assert_eq!(
        e.inspect("lr", "{{.State.Status}} {{.State.Pid}}")?,
        format!("running {pid}")
    );
    assert_eq!(
        e.docker.ok(&["exec", "lr", "echo", "restored"])?,
        "restored"
    );
    // Its exit still reaches the new dockerd.
    e.docker.ok(&["stop", "-t", "60", "lr"])?;
    assert_eq!(
        e.inspect("lr", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 7"
    );
    assert_eq!(
        e.docker
            .docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])?
            .status
            .code(),
        Some(3)
    );
    Ok(())
}

#[test]
fn docker_containers_survive_berthd_kill9_and_restart() -> Result<()> {
    let mut e = Env::start()?;
    e.docker
        .ok(&["run", "-d", "--name", "k9", "busybox", "sh", "-c", TRAPPING])?;
    e.wait_for_log("k9", "up", 1)?;
    let pid = e.inspect("k9", "{{.State.Pid}}")?;

    e.berth.kill9()?;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    e.berth.restart()?;

    // dockerd's gRPC channel redials after a backoff and fails calls
    // meanwhile (as with containerd): wait until it has subscribed to the
    // new berthd's events again.
    let subscribed = r#"event subscription started filters=["namespace==moby,"#;
    wait_until(Duration::from_secs(120), || {
        Ok((e.berth.log().matches(subscribed).count() >= 2).then_some(()))
    })
    .context("dockerd did not subscribe to the restarted berthd")?;
    // Then it reaches the container through berthd's reconnected shim.
    let after = e
        .docker
        .ok(&["exec", "k9", "echo", "after"])
        .with_context(|| format!("berthd log:\n{}", e.berth.log()))?;
    assert_eq!(after, "after");
    e.docker.ok(&["stop", "-t", "60", "k9"])?;
    assert_eq!(
        e.inspect("k9", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 7"
    );
    assert_eq!(
        e.docker
            .docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])?
            .status
            .code(),
        Some(3)
    );
    Ok(())
}

/// `ctr events` against a berthd, written to a file; killed when dropped.
struct EventLog {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl EventLog {
    /// Subscribes to every event of `berth` and waits until berthd has
    /// the subscription.
    fn start(berth: &Daemon, path: std::path::PathBuf) -> Result<EventLog> {
        let subscribed = "event subscription started filters=[]";
        let before = berth.log().matches(subscribed).count();
        let child = Command::new(berth_tests::ctr_bin()?)
            .arg("--address")
            .arg(&berth.address)
            .arg("events")
            .stdout(std::fs::File::create(&path)?)
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let log = EventLog { child, path };
        wait_until(Duration::from_secs(60), || {
            Ok((berth.log().matches(subscribed).count() > before).then_some(()))
        })
        .context("ctr events did not subscribe")?;
        Ok(log)
    }

    /// The topics of each container's task events in `namespace`, in order.
    fn task_topics(&self, namespace: &str) -> Result<Vec<(String, Vec<String>)>> {
        let text = std::fs::read_to_string(&self.path)?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            // `<date> <time> +0000 UTC <namespace> <topic> <json>`
            let fields: Vec<&str> = line.splitn(7, ' ').collect();
            let [_, _, _, _, ns, topic, json] = fields[..] else {
                continue;
            };
            if ns != namespace || !topic.starts_with("/tasks/") {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(json)?;
            let id = event["container_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match out.iter_mut().find(|(c, _)| *c == id) {
                Some((_, topics)) => topics.push(topic.to_string()),
                None => out.push((id, vec![topic.to_string()])),
            }
        }
        Ok(out)
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker run --rm` of a process that exits at once, with the CPUs busy:
/// its exit must reach dockerd after its start (dockerd drops an exit it
/// sees before it has recorded the start), so every run returns; and berthd
/// sends each container's events in containerd's order.
#[test]
fn docker_run_rm_under_cpu_load_always_returns() -> Result<()> {
    const RUNS: usize = 20;
    let e = Env::start()?;
    let events = EventLog::start(&e.berth, e.docker.scratch("events.txt"))?;
    let load = CpuLoad::start(2)?;
    for i in 0..RUNS {
        let code = i32::try_from(i % 5)?;
        let out = berth_tests::docker::run_bounded(
            e.docker.command(&[
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                &format!("exit {code}"),
            ]),
            Duration::from_secs(120),
        )
        .with_context(|| format!("run {i}:\n{}", e.docker.log()))?;
        assert_eq!(out.status.code(), Some(code), "run {i}: {out:?}");
    }
    drop(load);
    assert_eq!(e.docker.ok(&["ps", "-aq"])?, "");

    // Every run's task events, as containerd sends them for `docker run`.
    let runs = wait_until(Duration::from_secs(60), || {
        let runs = events.task_topics(NAMESPACE)?;
        let deleted = runs
            .iter()
            .filter(|(_, t)| t.last().is_some_and(|t| t == "/tasks/delete"))
            .count();
        Ok((deleted == RUNS).then_some(runs))
    })
    .context("a /tasks/delete for every run")?;
    for (id, topics) in &runs {
        assert_eq!(
            topics,
            &[
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "events of {id}"
        );
    }
    Ok(())
}
