//! The CRI streaming calls end to end: the real `crictl` against berthd's
//! CRI plugin and its streaming server, on containers of a pod on a CNI
//! bridge network made by the test. `crictl exec` (piped stdin, stdout,
//! stderr, exit codes, and `-it` in a tmux terminal with a resize),
//! `crictl attach` (stdin of a `stdin_once` container, leaving without
//! stopping it), `crictl port-forward` to a listener bound to the pod's own
//! loopback, and the refusals for stopped containers.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::crictl::{Crictl, HANG, wait_output};
use berth_tests::registry::Registry;
use berth_tests::tmux::Tmux;
use berth_tests::{Daemon, fails, ok, pause, testimages};

/// Polls `f` until it returns `Some`, at most `limit` (for the container's
/// own readiness, e.g. a server listening).
fn eventually<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// berthd with the CRI, a pod on a bridge network of the test's own, and
/// busybox pulled.
struct Pod {
    scratch: tempfile::TempDir,
    _reg: Registry,
    d: Daemon,
    c: Crictl,
    busybox: String,
    pod: String,
    pod_json: String,
    _bridge: Bridge,
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<String> {
    std::fs::write(path, serde_json::to_vec_pretty(v)?)?;
    Ok(path.display().to_string())
}

impl Pod {
    fn start(name: &str) -> Result<Pod> {
        if !Path::new("/usr/lib/cni/bridge").exists() {
            bail!(
                "/usr/lib/cni/bridge not found: run `cargo xtask deps` (Debian package containernetworking-plugins)"
            );
        }
        let scratch = tempfile::Builder::new()
            .prefix("berth-cri-stream")
            .tempdir()?;
        let dir = scratch.path();
        let reg = Registry::start()?;
        let busybox =
            reg.push_layout(&testimages::busybox(&dir.join("busybox"))?, "busybox", "1")?;
        let pause = reg.push_layout(&pause::image(&dir.join("pause"))?, "pause", "1")?;
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let config = format!(
            r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  stream_idle_timeout = "30m"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{}"
"#,
            conf_dir.display()
        );
        let d = Daemon::start_with_config(Some(&config))?;
        let c = Crictl::new(&d)?;
        // A network of this test's own: bridge and subnet unique to it.
        let n = std::process::id() ^ u32::from(name.bytes().fold(0u8, |a, b| a.wrapping_add(b)));
        let bridge = Bridge(format!("bs{:x}", n % 0xfffff));
        let subnet = format!("10.{}.{}", 150 + (n % 50), (n / 50) % 250);
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("berth-stream-{n}"),
            "plugins": [berth_tests::cri_env::bridge_plugin(
                &bridge.0,
                &format!("{subnet}.0/24"),
                &dir.join("ipam"),
            )],
        });
        write_json(&conf_dir.join("10-berth-stream.conflist"), &conflist)?;
        c.ok(&["pull", &busybox])?;
        let pod_json = write_json(
            &dir.join("pod.json"),
            &serde_json::json!({
                "metadata": {"name": name, "namespace": "berth-test", "uid": format!("uid-{name}"), "attempt": 0},
                "hostname": name,
                "log_directory": dir.join("logs"),
                "linux": {},
            }),
        )?;
        let pod = c.ok(&["runp", &pod_json])?;
        Ok(Pod {
            scratch,
            _reg: reg,
            d,
            c,
            busybox,
            pod,
            pod_json,
            _bridge: bridge,
        })
    }

    /// Creates and starts a container running `command`; `extra` is merged
    /// into its config (e.g. `stdin`, `tty`).
    fn container(&self, name: &str, command: &[&str], extra: serde_json::Value) -> Result<String> {
        let mut config = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": self.busybox},
            "command": command,
            "log_path": format!("{name}.log"),
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let path = write_json(&self.scratch.path().join(format!("{name}.json")), &config)?;
        let cid = self.c.ok(&["create", &self.pod, &path, &self.pod_json])?;
        self.c.ok(&["start", &cid])?;
        Ok(cid)
    }

    fn state(&self, cid: &str) -> Result<serde_json::Value> {
        self.c.json(&["inspect", "-o", "json", cid])
    }

    fn finish(self) -> Result<()> {
        self.c.ok(&["stopp", &self.pod])?;
        self.c.ok(&["rmp", &self.pod])?;
        self.d.finish()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn crictl_exec_streams_stdin_output_and_exit_codes() -> Result<()> {
    let p = Pod::start("execpod")?;
    let c = &p.c;
    let cid = p.container("sh", &["sleep", "3600"], serde_json::json!({}))?;

    // Without -s crictl asks Exec for a URL and streams over SPDY.
    let out = c.run(&["exec", &cid, "sh", "-c", "echo out; echo err >&2; exit 3"])?;
    assert_eq!(text(&out.stdout), "out\n", "{out:?}");
    let said = text(&out.stderr);
    assert!(said.contains("err\n"), "{out:?}");
    assert!(
        said.contains("command terminated with exit code 3"),
        "{out:?}"
    );
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(c.ok(&["exec", &cid, "echo", "fine"])?, "fine");

    // Piped stdin reaches the process, and its end ends the process's input.
    let input: Vec<u8> = (0..20_000)
        .map(|i| format!("line {i}\n"))
        .collect::<String>()
        .into_bytes();
    let out = c.run_with_input(&["exec", "-i", &cid, "sh", "-c", "wc -l; md5sum"], &input)?;
    let stdout = text(&ok(out)?.into_bytes());
    assert!(stdout.starts_with("20000\n"), "{stdout}");
    let out = c.run_with_input(&["exec", "-i", &cid, "cat"], b"through stdin\n")?;
    assert_eq!(ok(out)?, "through stdin\n");

    // Over WebSocket too (v5, with its stdin close signal).
    let out = c.run_with_input(
        &[
            "exec",
            "-i",
            "-r",
            "websocket",
            &cid,
            "sh",
            "-c",
            "cat; exit 4",
        ],
        b"ws\n",
    )?;
    assert_eq!(text(&out.stdout), "ws\n", "{out:?}");
    assert!(
        text(&out.stderr).contains("command terminated with exit code 4"),
        "{out:?}"
    );

    // The exec runs in the container (the pod's UTS namespace).
    assert_eq!(c.ok(&["exec", &cid, "hostname"])?, "execpod");

    // A stopped container refuses exec (streaming and sync) clearly.
    let done = p.container("done", &["true"], serde_json::json!({}))?;
    eventually("the container exits", Duration::from_secs(20), || {
        Ok((p.state(&done)?["status"]["state"] == "CONTAINER_EXITED").then_some(()))
    })?;
    let err = fails(c.run(&["exec", &done, "echo", "hi"])?)?;
    assert!(
        err.contains("CONTAINER_EXITED") && err.contains("not running"),
        "{err}"
    );
    let err = fails(c.run(&["exec", "-s", &done, "echo", "hi"])?)?;
    assert!(err.contains("not running"), "{err}");
    let err = fails(c.run(&["exec", "no-such-container", "echo"])?)?;
    assert!(err.contains("not found"), "{err}");
    p.finish()
}

#[test]
fn crictl_exec_it_gets_a_terminal_that_follows_resizes() -> Result<()> {
    let p = Pod::start("ttypod")?;
    let cid = p.container("sh", &["sleep", "3600"], serde_json::json!({}))?;
    let dir = p.scratch.path();
    let tmux = Tmux::new(dir.join("tmux.sock"));
    // The initial size reaches the terminal just after the process starts
    // (as with containerd): wait for it (busybox's stty prints nothing, and
    // exits 0, on a 0x0 terminal); WINCH with an unchanged size (the
    // initial one, sent again) is not the resize.
    let script = "s=; while [ -z \"$s\" ]; do s=$(stty size 2>/dev/null); [ -n \"$s\" ] || sleep 0.1; done; \
                  tty; echo size=$s; \
                  onwinch() { n=$(stty size); if [ \"$n\" != \"30 100\" ]; then echo resized=$n; exit 5; fi; }; \
                  trap onwinch WINCH; \
                  l=; while [ -z \"$l\" ]; do read l; done; echo \"line:$l\"; \
                  while true; do sleep 600 & wait $!; done";
    let crictl = p.c.command(&[]);
    let args: Vec<String> = std::iter::once(crictl.get_program())
        .chain(crictl.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let run = format!(
        "{} exec -it {cid} sh -c '{script}'\necho exit=$?\nsleep 600\n",
        args.join(" ")
    );
    std::fs::write(dir.join("run.sh"), run)?;
    let run_sh = format!("sh {}", dir.join("run.sh").display());
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "100",
        "-y",
        "30",
        &run_sh,
    ])?;
    let pane = tmux.wait_pane("t", "size=")?;
    assert!(
        pane.contains("/dev/pts/"),
        "exec -t got no terminal: {pane}"
    );
    let pane = tmux.wait_pane("t", "size=30 100")?;
    tmux.run(&["send-keys", "-t", "t", "typed-through-tty", "Enter"])?;
    tmux.wait_pane("t", "line:typed-through-tty")?;
    tmux.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"])?;
    let pane = tmux
        .wait_pane("t", "exit=")
        .with_context(|| format!("before: {pane}"))?;
    assert!(pane.contains("resized=40 120"), "{pane}");
    // (The pane wraps long lines.)
    assert!(
        pane.replace('\n', "")
            .contains("command terminated with exit code 5"),
        "{pane}"
    );
    assert!(pane.contains("exit=1"), "{pane}");
    drop(tmux);
    p.finish()
}

#[test]
fn crictl_attach_joins_stdin_and_output_of_the_container() -> Result<()> {
    let mut p = Pod::start("attachpod")?;
    let c = &p.c;
    // stdin_once: the first attach's stdin ending closes the container's.
    let cid = p.container(
        "reader",
        &[
            "sh",
            "-c",
            "echo ready; while read l; do echo \"got:$l\"; echo \"err:$l\" >&2; done; echo stdin-closed",
        ],
        serde_json::json!({"stdin": true, "stdin_once": true}),
    )?;
    let log = p.scratch.path().join("logs").join("reader.log");
    eventually(
        "the container's first line",
        Duration::from_secs(20),
        || {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
                .then_some(()))
        },
    )?;
    let out = c.run_with_input(&["attach", "-i", &cid], b"one\ntwo\n")?;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("got:one\ngot:two\n") && stdout.contains("stdin-closed"),
        "{out:?}"
    );
    assert!(text(&out.stderr).contains("err:one\nerr:two\n"), "{out:?}");
    assert!(out.status.success(), "{out:?}");
    let s = eventually("the container exits", Duration::from_secs(20), || {
        let s = p.state(&cid)?;
        Ok((s["status"]["state"] == "CONTAINER_EXITED").then_some(s))
    })?;
    assert_eq!(s["status"]["exitCode"], 0, "{s}");
    // The log got the same output.
    let logged = std::fs::read_to_string(&log)?;
    assert!(logged.contains("stdout F got:two"), "{logged}");

    // Attaching without stdin, then leaving, leaves the container running.
    let ticker = p.container(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ],
        serde_json::json!({}),
    )?;
    attach_sees_ticks(&p.c, &ticker)?;
    assert_eq!(p.state(&ticker)?["status"]["state"], "CONTAINER_RUNNING");
    // Across a berthd restart too (the output copiers are reopened).
    p.d.restart()?;
    attach_sees_ticks(&p.c, &ticker)?;
    assert_eq!(p.state(&ticker)?["status"]["state"], "CONTAINER_RUNNING");

    // A stopped container refuses attach.
    let err = fails(p.c.run(&["attach", &cid])?)?;
    assert!(err.contains("not running"), "{err}");
    p.finish()
}

/// `crictl attach` (no stdin) to `cid` until a "tick" line arrives, then
/// the client leaves (killed).
fn attach_sees_ticks(c: &Crictl, cid: &str) -> Result<()> {
    let mut child = c
        .command(&["attach", cid])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !text(&seen).contains("tick") {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            let out = wait_output(child, HANG)?;
            bail!("crictl attach ended: {} {out:?}", text(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// One HTTP GET of `/` through `port` on the host.
fn http_get(port: u16) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(HANG))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut v = Vec::new();
    s.read_to_end(&mut v)?;
    Ok(text(&v))
}

#[test]
fn crictl_port_forward_reaches_the_pods_loopback() -> Result<()> {
    let p = Pod::start("fwdpod")?;
    let c = &p.c;
    // Bound to the pod's own loopback: reachable only from inside its netns.
    let web = p.container(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
        ],
        serde_json::json!({}),
    )?;
    eventually("the pod's web server", Duration::from_secs(20), || {
        let out = c.run(&[
            "exec",
            "-s",
            &web,
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/",
        ])?;
        Ok(text(&out.stdout)
            .contains("hello-from-the-pod")
            .then_some(()))
    })?;

    let mut fwd = c
        .command(&["port-forward", &p.pod, "0:8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = fwd.stdout.take().context("stdout")?;
    let port = {
        use std::io::BufRead;
        let mut port = None;
        let mut lines = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while lines.read_line(&mut line)? > 0 {
            let l = std::mem::take(&mut line);
            let line = l.trim_end();
            // "Forwarding from 127.0.0.1:PORT -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                port = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                break;
            }
        }
        // crictl goes on printing ("Handling connection for 8080"): keep
        // reading, or it dies of SIGPIPE.
        std::thread::spawn(move || std::io::copy(&mut lines.into_inner(), &mut std::io::sink()));
        port
    };
    let Some(port) = port else {
        let _ = fwd.kill();
        let out = wait_output(fwd, HANG)?;
        bail!("crictl port-forward did not forward: {out:?}");
    };
    // Two connections in turn, then two at once.
    for _ in 0..2 {
        let r = match http_get(port) {
            Ok(r) => r,
            Err(e) => {
                let _ = fwd.kill();
                let out = wait_output(fwd, HANG)?;
                let log: String = p
                    .d
                    .log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("forward"))
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!("GET through the forward: {e}; crictl: {out:?}; berthd: {log}");
            }
        };
        assert!(
            r.contains("200 OK") && r.contains("hello-from-the-pod"),
            "{r}"
        );
    }
    let a = std::thread::spawn(move || http_get(port));
    let b = std::thread::spawn(move || http_get(port));
    for h in [a, b] {
        let r = h.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        assert!(r.contains("hello-from-the-pod"), "{r}");
    }
    fwd.kill()?;
    fwd.wait()?;
    p.finish()
}

#[test]
fn critest_streaming_specs_pass_against_berthd() -> Result<()> {
    use berth_tests::cri_daemon::{CriDaemon, CriDaemonKind};
    use berth_tests::cri_env::CriEnv;
    let env = CriEnv::start()?;
    let daemon = CriDaemon::start(CriDaemonKind::Berthd, &env)?;
    let report = berth_tests::critest::run_focused(
        &daemon,
        &["Streaming"],
        &[],
        Duration::from_secs(15 * 60),
    )?;
    println!(
        "critest Streaming specs against berthd: {}",
        report.summary()
    );
    for (name, message) in &report.failed {
        println!("FAILED: {name}\n    {message}");
    }
    daemon.finish()?;
    env.finish()?;
    assert!(report.failed.is_empty(), "{}", report.summary());
    assert!(report.passed.len() >= 5, "{}", report.summary());
    Ok(())
}

#[test]
fn tls_streaming_is_refused_clearly() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_tls_streaming = true\n",
    ))?;
    let c = Crictl::new(&d)?;
    // The CRI plugin does not load; the daemon serves the rest.
    let out = fails(c.run(&["version"])?)?;
    assert!(out.contains("Unimplemented"), "{out}");
    let log = d.log();
    assert!(
        log.contains("enable_tls_streaming = true") && log.contains("does not serve TLS"),
        "{log}"
    );
    d.finish()
}
