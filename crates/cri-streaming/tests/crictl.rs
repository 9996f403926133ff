//! The streaming server against a real client: cri-tools' `crictl` v1.32
//! (client-go's SPDY and WebSocket executors and port forwarder).
//!
//! Each test runs a tiny CRI RuntimeService of its own on a unix socket in a
//! temporary directory (`support/cri.rs`), whose Exec/Attach/PortForward
//! answer with URLs from a [`Server`] on 127.0.0.1 (a free port). Its
//! runtime runs real local processes (`exec`, with a pty for `-t`), runs
//! `cat` for attach, and dials a TCP listener the test opened for
//! port-forward. crictl comes from the shared tools
//! (`<repo>/../shared/tools/crictl`, else `$BERTH_SHARED_TOOLS/crictl`).

#![allow(missing_docs, clippy::unwrap_used, clippy::result_large_err)]

#[path = "support/cri.rs"]
mod cri;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_cri_streaming::{
    AttachRequest, Config, ExecRequest, ProcessIo, RuntimeError, Server, StreamingRuntime,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// Turns a hang into a failure; never a pacing device.
const HANG: Duration = Duration::from_secs(60);

/// The test's runtime: host processes stand in for containers.
struct HostRuntime {
    /// Told when an attach to "wait-gone" saw its client leave.
    saw_client_leave: tokio::sync::mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl StreamingRuntime for HostRuntime {
    async fn exec(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
        if req.container_id != "c1" {
            return Err(format!("container {:?} not found", req.container_id).into());
        }
        if req.tty {
            run_on_pty(&req.cmd, io).await
        } else {
            run_with_pipes(&req.cmd, io).await
        }
    }

    async fn attach(&self, req: &AttachRequest, mut io: ProcessIo) -> Result<(), RuntimeError> {
        if req.container_id == "wait-gone" {
            // A container that prints once, then only the client leaving
            // ends the attach.
            let mut out = io.stdout.take().ok_or("no stdout")?;
            out.write_all(b"attached\n").await?;
            io.client_gone.wait().await;
            let _ = self.saw_client_leave.send(());
            return Ok(());
        }
        if req.container_id != "a1" {
            return Err(format!("container {:?} not found", req.container_id).into());
        }
        // The "container's main process" echoes its input.
        run_with_pipes(&["cat".to_string()], io).await?;
        Ok(())
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        mut stream: DuplexStream,
    ) -> Result<(), RuntimeError> {
        if pod_sandbox_id != "p1" {
            return Err(format!("pod sandbox {pod_sandbox_id:?} not found").into());
        }
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
        tokio::io::copy_bidirectional(&mut stream, &mut conn).await?;
        Ok(())
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn run_with_pipes(cmd: &[String], io: ProcessIo) -> Result<i32, RuntimeError> {
    let (prog, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if io.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin_task = match (io.stdin, child.stdin.take()) {
        (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
        })),
        _ => None,
    };
    let mut child_out = child.stdout.take().ok_or("no stdout")?;
    let mut child_err = child.stderr.take().ok_or("no stderr")?;
    let out = async {
        match io.stdout {
            Some(mut o) => {
                let _ = tokio::io::copy(&mut child_out, &mut o).await;
                let _ = o.shutdown().await;
            }
            None => {
                let _ = tokio::io::copy(&mut child_out, &mut tokio::io::sink()).await;
            }
        }
    };
    let err = async {
        match io.stderr {
            Some(mut o) => {
                let _ = tokio::io::copy(&mut child_err, &mut o).await;
                let _ = o.shutdown().await;
            }
            None => {
                let _ = tokio::io::copy(&mut child_err, &mut tokio::io::sink()).await;
            }
        }
    };
    let (status, (), ()) = tokio::join!(child.wait(), out, err);
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(exit_code(status?))
}

/// Runs `cmd` as session leader on a new pty sized by the client's first
/// resize; later resizes are applied to the pty.
async fn run_on_pty(cmd: &[String], mut io: ProcessIo) -> Result<i32, RuntimeError> {
    let mut resize = io.resize.take().ok_or("tty without a resize stream")?;
    let first = resize.recv().await.ok_or("client sent no terminal size")?;
    let size = nix::pty::Winsize {
        ws_row: first.height,
        ws_col: first.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    let mut child = {
        let slave: OwnedFd = pty.slave;
        let mut command = Command::new("setsid");
        command
            .arg("-w")
            .arg("-c")
            .args(cmd)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        // The command (and its copies of the slave) drops here, so the
        // master reads EIO once the process tree has exited.
        command.spawn()?
    };
    let master = std::fs::File::from(pty.master);
    let sizer = master.try_clone()?;
    let mut master_w = tokio::fs::File::from_std(master.try_clone()?);
    let mut master_r = tokio::fs::File::from_std(master);
    // Rows and columns in one TIOCSWINSZ: one SIGWINCH per resize.
    let resizer = tokio::spawn(async move {
        while let Some(s) = resize.recv().await {
            let _ = rustix::termios::tcsetwinsize(
                &sizer,
                rustix::termios::Winsize {
                    ws_row: s.height,
                    ws_col: s.width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                },
            );
        }
    });
    let stdin_task = io.stdin.take().map(|mut from| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut master_w).await;
        })
    });
    let out = async {
        if let Some(mut o) = io.stdout.take() {
            // EIO marks the end of a pty: the copy's error is the EOF.
            let _ = tokio::io::copy(&mut master_r, &mut o).await;
            let _ = o.shutdown().await;
        }
    };
    let (status, ()) = tokio::join!(child.wait(), out);
    resizer.abort();
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(exit_code(status?))
}

/// A CRI endpoint on a temp socket with the streaming server behind it.
struct Fixture {
    dir: tempfile::TempDir,
    socket: PathBuf,
    grpc: JoinHandle<()>,
    pod: JoinHandle<()>,
    /// The port the "pod" listens on (127.0.0.1).
    pod_port: u16,
    crictl: PathBuf,
    /// One message per attach that saw its client leave.
    client_left: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.grpc.abort();
        self.pod.abort();
    }
}

fn crictl_path() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut tried = vec![repo.join("../shared/tools/crictl")];
    if let Some(dir) = std::env::var_os("BERTH_SHARED_TOOLS") {
        tried.push(PathBuf::from(dir).join("crictl"));
    }
    tried.into_iter().find(|p| p.is_file())
}

async fn fixture() -> Fixture {
    fixture_with(Config::new("127.0.0.1:0".parse().unwrap())).await
}

async fn fixture_with(config: Config) -> Fixture {
    let crictl = crictl_path().expect(
        "crictl not found: put the shared tools beside the checkout as ../shared/tools, or set BERTH_SHARED_TOOLS to their directory",
    );
    let dir = tempfile::tempdir().unwrap();
    let (saw_client_leave, client_left) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::bind(config, Arc::new(HostRuntime { saw_client_leave }))
        .await
        .unwrap();
    let socket = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let service = cri::RuntimeService {
        server: Arc::new(server),
    };
    let grpc = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    // The "pod": greets each connection, then echoes it.
    let pod_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod_port = pod_listener.local_addr().unwrap().port();
    let pod = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = pod_listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = conn.write_all(b"hello from pod\n").await;
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    std::fs::write(dir.path().join("crictl.yaml"), "").unwrap();
    Fixture {
        dir,
        socket,
        grpc,
        pod,
        pod_port,
        crictl,
        client_left,
    }
}

impl Fixture {
    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn crictl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.crictl);
        c.env("CRI_CONFIG_FILE", self.dir.path().join("crictl.yaml"))
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .args(["--runtime-endpoint", &self.endpoint()])
            .args(["--image-endpoint", &self.endpoint()])
            .args(["--timeout", "20s"])
            .args(args)
            .kill_on_drop(true);
        c
    }

    /// Runs crictl with `stdin` and returns what it printed and its status.
    async fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .crictl(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        tokio::time::timeout(HANG, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("crictl {args:?} hung"))
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn exec_with_stdin_and_exit_codes(transport: &str) {
    let f = fixture().await;
    let out = f
        .run(
            &[
                "exec",
                "-r",
                transport,
                "-i",
                "c1",
                "sh",
                "-c",
                "tr a-z A-Z; echo to-stderr >&2; exit 3",
            ],
            b"hello streaming\n",
        )
        .await;
    assert_eq!(
        text(&out.stdout),
        "HELLO STREAMING\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "stderr: {}",
        text(&out.stderr)
    );
    // client-go reads the exit code from the status's ExitCode cause;
    // crictl reports it and exits 1 (it exits 1 on every error).
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));

    let ok = f
        .run(&["exec", "-r", transport, "c1", "echo", "fine"], b"")
        .await;
    assert_eq!(text(&ok.stdout), "fine\n", "stderr: {}", text(&ok.stderr));
    assert!(ok.status.success(), "stderr: {}", text(&ok.stderr));

    // A runtime failure reaches the client as an error, not as success.
    let missing = f.run(&["exec", "-r", transport, "nope", "true"], b"").await;
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("container \"nope\" not found"),
        "stderr: {}",
        text(&missing.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_spdy_stdin_stdout_stderr_and_exit_code() {
    exec_with_stdin_and_exit_codes("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_websocket_stdin_stdout_stderr_and_exit_code() {
    exec_with_stdin_and_exit_codes("websocket").await;
}

async fn attach_echoes_stdin(transport: &str) {
    let f = fixture().await;
    let out = f
        .run(
            &["attach", "-r", transport, "-i", "a1"],
            b"ping over attach\n",
        )
        .await;
    assert_eq!(
        text(&out.stdout),
        "ping over attach\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_spdy() {
    attach_echoes_stdin("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_websocket() {
    attach_echoes_stdin("websocket").await;
}

async fn port_forward_carries_connections(transport: &str) {
    let f = fixture().await;
    let remote = f.pod_port.to_string();
    // Port 0: crictl (client-go) picks a free local port and prints it.
    let mut child = f
        .crictl(&[
            "port-forward",
            "-r",
            transport,
            "p1",
            &format!("0:{remote}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let local_port = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // "Forwarding from 127.0.0.1:PORT -> REMOTE"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        }
        panic!("crictl port-forward ended without forwarding");
    })
    .await
    .expect("crictl port-forward never became ready");

    // Two connections in turn over the one streaming session.
    for round in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
        let msg = format!("round {round}\n");
        conn.write_all(msg.as_bytes()).await.unwrap();
        let want = format!("hello from pod\n{msg}");
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(HANG, conn.read_exact(&mut got))
            .await
            .expect("port-forward hung")
            .unwrap();
        assert_eq!(text(&got), want);
    }

    // Two connections at once: streams are paired by requestID, and each
    // connection's bytes stay on it.
    let mut a = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
    a.write_all(b"first\n").await.unwrap();
    b.write_all(b"second\n").await.unwrap();
    a.write_all(b"third\n").await.unwrap();
    let want_a = "hello from pod\nfirst\nthird\n";
    let want_b = "hello from pod\nsecond\n";
    let mut got_a = vec![0u8; want_a.len()];
    let mut got_b = vec![0u8; want_b.len()];
    tokio::time::timeout(HANG, async {
        a.read_exact(&mut got_a).await.unwrap();
        b.read_exact(&mut got_b).await.unwrap();
    })
    .await
    .expect("port-forward hung");
    assert_eq!(text(&got_a), want_a);
    assert_eq!(text(&got_b), want_b);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_spdy() {
    port_forward_carries_connections("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_websocket_tunnel() {
    port_forward_carries_connections("websocket").await;
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args).kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(HANG, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("tmux {args:?} hung"))
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// The pane's size as `stty size` prints it: "rows cols".
    async fn pane_size(&self) -> String {
        self.run(&[
            "display-message",
            "-p",
            "-t",
            "t",
            "#{pane_height} #{pane_width}",
        ])
        .await
        .trim()
        .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Only our server: the one on our socket.
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

async fn exec_tty_in_tmux(transport: &str) {
    let f = fixture().await;
    let d = f.dir.path();
    let tmux = Tmux {
        socket: d.join("tmux.sock"),
    };
    let t = format!("tmux -S {}", tmux.socket.display());
    let dd = d.display();
    // The "container" side: reports its terminal, reads a typed line, then
    // waits for SIGWINCH and exits 7 once resized.
    let script = format!(
        "trap 'stty size > {dd}/resized; kill $p; exit 7' WINCH\n\
         stty size > {dd}/initial\n\
         tty > {dd}/tty\n\
         {t} wait-for -S ready\n\
         read line\n\
         echo \"$line\" > {dd}/line\n\
         sleep 600 & p=$!\n\
         {t} wait-for -S got-line\n\
         wait $p\n"
    );
    std::fs::write(d.join("script.sh"), script).unwrap();
    let crictl: Vec<String> = f
        .crictl(&[])
        .as_std()
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let run = format!(
        "export CRI_CONFIG_FILE={dd}/crictl.yaml\n\
         '{}' {} exec -it -r {transport} c1 bash {dd}/script.sh 2> {dd}/stderr\n\
         echo $? > {dd}/exit\n\
         {t} wait-for -S done\n\
         {t} wait-for never\n",
        f.crictl.display(),
        crictl.join(" "),
    );
    // run.sh stays in its pane after `done` (the session, and the tmux
    // server, would end with it) until Tmux's drop kills the server.
    std::fs::write(d.join("run.sh"), run).unwrap();
    let run_sh = format!("sh {dd}/run.sh");
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
    ])
    .await;

    tmux.run(&["wait-for", "ready"]).await;
    let tty = std::fs::read_to_string(d.join("tty")).unwrap();
    assert!(
        tty.starts_with("/dev/pts/"),
        "exec -t got no terminal: {tty}"
    );
    let initial = std::fs::read_to_string(d.join("initial")).unwrap();
    assert_eq!(
        initial.trim(),
        tmux.pane_size().await,
        "initial terminal size"
    );

    // Keys typed into crictl's terminal reach the process's terminal.
    tmux.run(&["send-keys", "-t", "t", "typed-through-tty", "Enter"])
        .await;
    tmux.run(&["wait-for", "got-line"]).await;
    let line = std::fs::read_to_string(d.join("line")).unwrap();
    assert_eq!(line, "typed-through-tty\n");

    // Resizing crictl's terminal resizes the process's.
    tmux.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"])
        .await;
    let resized_pane = tmux.pane_size().await;
    tmux.run(&["wait-for", "done"]).await;
    let resized = std::fs::read_to_string(d.join("resized")).unwrap();
    assert_eq!(resized.trim(), resized_pane, "size after resize");
    assert_ne!(resized.trim(), initial.trim());
    let stderr = std::fs::read_to_string(d.join("stderr")).unwrap();
    assert!(
        stderr.contains("command terminated with exit code 7"),
        "crictl stderr: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(d.join("exit")).unwrap().trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_resize_spdy() {
    exec_tty_in_tmux("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_resize_websocket() {
    exec_tty_in_tmux("websocket").await;
}

/// A forwarded connection the runtime cannot make: the error stream carries
/// kubelet's message and client-go gives up on the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_failure_reaches_client() {
    let f = fixture().await;
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = f
        .crictl(&["port-forward", "p1", &format!("0:{closed}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let local_port = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        }
        panic!("crictl port-forward ended without forwarding");
    })
    .await
    .expect("crictl port-forward never became ready");
    let mut conn = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(HANG, conn.read_to_end(&mut rest))
        .await
        .expect("the failed connection was never closed");
    assert!(rest.is_empty(), "got {:?}", text(&rest));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("crictl hung")
        .unwrap();
    assert!(
        stderr.contains(&format!("error forwarding port {closed} to pod p1")),
        "crictl stderr: {stderr}"
    );
    assert!(!status.success(), "crictl stderr: {stderr}");
}

/// A stream with no traffic either way is closed after the idle timeout
/// (containerd's `stream_idle_timeout`), releasing the client.
async fn idle_stream_is_closed(transport: &str) {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    config.idle_timeout = Duration::from_secs(1);
    let f = fixture_with(config).await;
    // Without the idle timeout this runs for 10 minutes and HANG fails it.
    let out = f
        .run(&["exec", "-r", transport, "c1", "sleep", "600"], b"")
        .await;
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_is_closed_spdy() {
    idle_stream_is_closed("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_is_closed_websocket() {
    idle_stream_is_closed("websocket").await;
}

/// Megabytes both ways: many frames/messages, no loss, no stall.
async fn exec_moves_megabytes(transport: &str) {
    let f = fixture().await;
    let input = vec![b'y'; 3_000_000];
    let counted = f
        .run(&["exec", "-r", transport, "-i", "c1", "wc", "-c"], &input)
        .await;
    assert_eq!(
        text(&counted.stdout).trim(),
        "3000000",
        "stderr: {}",
        text(&counted.stderr)
    );
    assert!(counted.status.success());

    let out = f
        .run(
            &[
                "exec",
                "-r",
                transport,
                "c1",
                "sh",
                "-c",
                "head -c 3000000 /dev/zero | tr '\\0' x",
            ],
            b"",
        )
        .await;
    assert_eq!(out.stdout.len(), 3_000_000, "stderr: {}", text(&out.stderr));
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_megabytes_spdy() {
    exec_moves_megabytes("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_megabytes_websocket() {
    exec_moves_megabytes("websocket").await;
}

/// The runtime learns that an attached client went away (crictl killed).
async fn attach_sees_client_leave(transport: &str) {
    let mut f = fixture().await;
    let mut child = f
        .crictl(&["attach", "-r", transport, "wait-gone"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(HANG, lines.next_line())
        .await
        .expect("attach never printed")
        .unwrap();
    assert_eq!(first.as_deref(), Some("attached"));
    child.kill().await.unwrap();
    tokio::time::timeout(HANG, f.client_left.recv())
        .await
        .expect("the runtime never learned the client left")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sees_client_leave_spdy() {
    attach_sees_client_leave("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_sees_client_leave_websocket() {
    attach_sees_client_leave("websocket").await;
}

/// Several execs at once, each on its own connection and token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execs_keep_their_streams() {
    let f = fixture().await;
    let runs = (0..4).map(|i| {
        let f = &f;
        async move {
            let transport = if i % 2 == 0 { "spdy" } else { "websocket" };
            let arg = format!("echo exec-{i}; exit {i}");
            let out = f
                .run(&["exec", "-r", transport, "c1", "sh", "-c", &arg], b"")
                .await;
            (i, out)
        }
    });
    for (i, out) in futures::future::join_all(runs).await {
        assert_eq!(text(&out.stdout), format!("exec-{i}\n"));
        if i == 0 {
            assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        } else {
            assert!(
                text(&out.stderr).contains(&format!("command terminated with exit code {i}")),
                "stderr: {}",
                text(&out.stderr)
            );
        }
    }
}
