//! Exec, attach and port-forward: the plugin's side of the streaming
//! server (berth-cri-streaming). Exec runs a process in a container with
//! its stdio as FIFOs (ExecSync too); attach joins a container's stdin FIFO
//! and the output its log copiers read; port-forward dials a port inside
//! the pod's network namespace.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_cri_streaming::{Input, Output, ProcessIo, RuntimeError, StreamingRuntime, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::unix::pipe;

use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::tasks::v1 as tpb;

use crate::Cri;
use crate::error::{CriError, Result};

/// A process started in a container by [`Cri::exec`].
#[derive(Debug)]
pub struct ExecProcess {
    /// Container id.
    pub container_id: String,
    /// Exec id.
    pub exec_id: String,
    /// Its stdin FIFO (write to it), when asked for.
    pub stdin: Option<PathBuf>,
    /// Its stdout FIFO (read from it).
    pub stdout: PathBuf,
    /// Its stderr FIFO (read from it; none with a terminal).
    pub stderr: Option<PathBuf>,
    dir: PathBuf,
}

/// What an exec ended with.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

fn mkfifo(p: &Path) -> Result<()> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| CriError::Internal(format!("creating FIFO {}: {e}", p.display())))
}

/// Reads a FIFO to its end on a thread.
fn drain(p: PathBuf) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&p) {
            let _ = f.read_to_end(&mut out);
        }
        out
    })
}

impl Cri {
    /// Creates (not starts) process `cmd` in running container
    /// `container_id`, its stdio as FIFOs.
    pub async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecProcess> {
        if cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd is required".into()));
        }
        let cur = self.container(container_id).await?;
        if cur.state != berth_api::runtime::v1::ContainerState::ContainerRunning {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                cur.meta.id
            )));
        }
        let record: cpb::Container = cur.record.clone();
        let spec: serde_json::Value = record
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(tty);
        let exec_id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self
            .inner
            .paths
            .state
            .join("io")
            .join(&cur.meta.id)
            .join(format!("exec-{exec_id}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
        let stdout = dir.join("stdout");
        mkfifo(&stdout)?;
        let stderr = (!tty).then(|| dir.join("stderr"));
        if let Some(p) = &stderr {
            mkfifo(p)?;
        }
        let stdin_path = stdin.then(|| dir.join("stdin"));
        if let Some(p) = &stdin_path {
            mkfifo(p)?;
        }
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let r = self
            .inner
            .backend
            .tasks()
            .exec(tpb::ExecProcessRequest {
                container_id: cur.meta.id.clone(),
                stdin: path(&stdin_path),
                stdout: stdout.display().to_string(),
                stderr: path(&stderr),
                terminal: tty,
                spec: Some(prost_types::Any {
                    type_url: crate::spec::PROCESS_TYPE_URL.to_string(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.clone(),
            })
            .await;
        if let Err(s) = r {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(CriError::Service {
                what: format!("failed to exec in container {}", cur.meta.id),
                status: Box::new(s),
            });
        }
        Ok(ExecProcess {
            container_id: cur.meta.id,
            exec_id,
            stdin: stdin_path,
            stdout,
            stderr,
            dir,
        })
    }

    /// Starts `p`.
    pub async fn start_exec(&self, p: &ExecProcess) -> Result<()> {
        self.inner
            .backend
            .tasks()
            .start(tpb::StartRequest {
                container_id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
            })
            .await
            .map(drop)
            .map_err(CriError::service(format!(
                "starting exec in {}",
                p.container_id
            )))
    }

    /// Waits for `p` to exit (its exit code), then deletes it.
    pub async fn wait_exec(&self, p: &ExecProcess) -> Result<i32> {
        let w = self
            .inner
            .backend
            .tasks()
            .wait(tpb::WaitRequest {
                container_id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
            })
            .await
            .map_err(CriError::service(format!(
                "waiting for exec in {}",
                p.container_id
            )))?
            .into_inner();
        self.delete_exec(p).await;
        Ok(i32::try_from(w.exit_status).unwrap_or(i32::MAX))
    }

    /// Kills `p` (SIGKILL).
    pub async fn kill_exec(&self, p: &ExecProcess) {
        let _ = self
            .inner
            .backend
            .tasks()
            .kill(tpb::KillRequest {
                container_id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
                signal: 9,
                all: false,
            })
            .await;
    }

    pub(crate) async fn delete_exec(&self, p: &ExecProcess) {
        let _ = self
            .inner
            .backend
            .tasks()
            .delete_process(tpb::DeleteProcessRequest {
                container_id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
            })
            .await;
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    /// ExecSync: runs `cmd`, collects its output; past `timeout` (0: none)
    /// the process is killed and the call fails with DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let p = self.exec(container_id, cmd, false, false).await?;
        let out = drain(p.stdout.clone());
        let err = p.stderr.clone().map(drain);
        if let Err(e) = self.start_exec(&p).await {
            self.delete_exec(&p).await;
            return Err(e);
        }
        let waited = if timeout.is_zero() {
            self.wait_exec(&p).await
        } else {
            match tokio::time::timeout(timeout, self.wait_exec(&p)).await {
                Ok(r) => r,
                Err(_) => {
                    self.kill_exec(&p).await;
                    let _ = self.wait_exec(&p).await;
                    return Err(CriError::DeadlineExceeded(format!(
                        "timeout {}s exceeded: context deadline exceeded",
                        timeout.as_secs()
                    )));
                }
            }
        };
        let exit_code = waited?;
        let join = |h: std::thread::JoinHandle<Vec<u8>>| async move {
            tokio::task::spawn_blocking(move || h.join().unwrap_or_default())
                .await
                .unwrap_or_default()
        };
        let stdout = join(out).await;
        let stderr = match err {
            Some(h) => join(h).await,
            None => Vec::new(),
        };
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    /// The FIFOs of a running container's stdio (for attach).
    pub async fn container_stdio(
        &self,
        container_id: &str,
    ) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
        let cur = self.container(container_id).await?;
        let p = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        Ok((p(&cur.meta.stdout), p(&cur.meta.stderr)))
    }

    /// Connects to `port` on `localhost` (127.0.0.1, then ::1) inside
    /// sandbox `sandbox_id`'s network namespace (the host's for a pod on
    /// the host network), as containerd's port forwarding does.
    pub async fn dial_in_sandbox(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<std::net::TcpStream> {
        let (_, m) = self.sandbox(sandbox_id).await?;
        let dial = move || {
            let v4 = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
            v4.or_else(|e| {
                std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).map_err(|_| e)
            })
        };
        let netns = (!m.netns.is_empty()).then(|| PathBuf::from(&m.netns));
        let dialed = tokio::task::spawn_blocking(move || match netns {
            Some(netns) => crate::netns::run_in(&netns, dial),
            None => Ok(dial()),
        })
        .await
        .map_err(|e| CriError::Internal(format!("dialing port {port}: {e}")))??;
        dialed.map_err(|e| {
            CriError::Internal(format!(
                "dialing localhost:{port} in pod sandbox {}: {e}",
                m.id
            ))
        })
    }
}

/// The streaming server's side of the plugin: runs exec, attach and
/// port-forward streams against containers and pods. Holds the plugin
/// weakly (the plugin owns the server that owns this).
struct Streams {
    cri: std::sync::Weak<crate::Inner>,
}

impl Streams {
    fn cri(&self) -> std::result::Result<Cri, RuntimeError> {
        self.cri
            .upgrade()
            .map(|inner| Cri { inner })
            .ok_or_else(|| "the CRI plugin has stopped".into())
    }
}

/// Why the streaming server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// `enable_tls_streaming = true`.
    #[error(
        "enable_tls_streaming = true: berth's streaming server does not serve TLS yet; set it to false (exec, attach and port-forward URLs are then plain http on stream_server_address)"
    )]
    TlsUnsupported,
    /// A configuration value is wrong.
    #[error("{key} = {value:?}: {why}")]
    BadConfig {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Listening failed.
    #[error("starting the CRI streaming server on {addr}: {source}")]
    Listen {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not take the listener.
    #[error(transparent)]
    Server(#[from] berth_cri_streaming::Error),
    /// Started twice.
    #[error("the CRI streaming server is already running")]
    AlreadyStarted,
}

/// Parses a Go duration (`time.ParseDuration`): `4h0m0s`, `30m`, `1.5h`,
/// `300ms`; units ns, us (µs), ms, s, m, h.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Where the streaming server listens and what its URLs name, from
/// `stream_server_address` and `stream_server_port`.
fn stream_addresses(
    config: &crate::CriConfig,
) -> std::result::Result<(Vec<std::net::SocketAddr>, Option<String>), StreamingError> {
    use std::net::ToSocketAddrs;
    let port: u16 =
        config
            .stream_server_port
            .trim()
            .parse()
            .map_err(|e| StreamingError::BadConfig {
                key: "stream_server_port",
                value: config.stream_server_port.clone(),
                why: format!("not a port number ({e}); \"0\" picks a free port"),
            })?;
    let host = config.stream_server_address.trim();
    if host.is_empty() {
        // containerd then binds the node's address (the default route's
        // interface); berth listens everywhere and names that address.
        let ip = default_route_ip().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        return Ok((
            vec![std::net::SocketAddr::from(([0, 0, 0, 0], port))],
            Some(ip.to_string()),
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| StreamingError::BadConfig {
            key: "stream_server_address",
            value: config.stream_server_address.clone(),
            why: format!("cannot resolve it: {e}"),
        })?
        .collect();
    Ok((addrs, None))
}

/// The local address of the default route (no packet is sent).
fn default_route_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

impl Cri {
    /// Starts the streaming server on `stream_server_address` and
    /// `stream_server_port` (port "0": a free one; URLs carry the bound
    /// port). Must run within a Tokio runtime. Returns the bound address.
    pub fn start_streaming(&self) -> std::result::Result<std::net::SocketAddr, StreamingError> {
        let config = &self.inner.config;
        if config.enable_tls_streaming {
            return Err(StreamingError::TlsUnsupported);
        }
        let idle = parse_go_duration(&config.stream_idle_timeout).ok_or_else(|| {
            StreamingError::BadConfig {
                key: "stream_idle_timeout",
                value: config.stream_idle_timeout.clone(),
                why: "not a duration (write it as Go does, e.g. \"4h0m0s\" or \"30m\")".into(),
            }
        })?;
        let (addrs, advertise_host) = stream_addresses(config)?;
        let mut last = None;
        let mut bound = None;
        for a in &addrs {
            match std::net::TcpListener::bind(a) {
                Ok(l) => {
                    bound = Some((l, *a));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some((listener, addr)) = bound else {
            return Err(StreamingError::Listen {
                addr: format!(
                    "{}:{}",
                    config.stream_server_address, config.stream_server_port
                ),
                source: last.unwrap_or_else(|| std::io::Error::other("no address to listen on")),
            });
        };
        let local = listener
            .local_addr()
            .map_err(|source| StreamingError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let mut sc = berth_cri_streaming::Config::new(local);
        // A zero timeout means none, as in containerd.
        if !idle.is_zero() {
            sc.idle_timeout = idle;
        } else {
            sc.idle_timeout = Duration::from_secs(u64::from(u32::MAX));
        }
        sc.advertise = advertise_host.map(|h| {
            std::net::SocketAddr::new(
                h.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
                local.port(),
            )
            .to_string()
        });
        let runtime = std::sync::Arc::new(Streams {
            cri: std::sync::Arc::downgrade(&self.inner),
        });
        let server = berth_cri_streaming::Server::from_listener(listener, sc, runtime)?;
        self.inner
            .stream_server
            .set(server)
            .map_err(|_| StreamingError::AlreadyStarted)?;
        Ok(local)
    }

    fn stream_server(&self) -> Result<&berth_cri_streaming::Server> {
        self.inner.stream_server.get().ok_or_else(|| {
            CriError::Unimplemented(
                "the CRI streaming server is not running in this berthd (exec, attach and port-forward need it)".into(),
            )
        })
    }

    /// Exec: checks the container runs and returns the URL to stream on.
    pub async fn exec_url(&self, r: berth_api::runtime::v1::ExecRequest) -> Result<String> {
        if r.cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd is required".into()));
        }
        let cur = self.container(&r.container_id).await?;
        running(&cur)?;
        self.stream_server()?
            .get_exec(berth_cri_streaming::ExecRequest {
                container_id: cur.meta.id,
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(stream_error)
    }

    /// Attach: checks the container runs and returns the URL to stream on.
    pub async fn attach_url(&self, r: berth_api::runtime::v1::AttachRequest) -> Result<String> {
        let cur = self.container(&r.container_id).await?;
        running(&cur)?;
        self.stream_server()?
            .get_attach(berth_cri_streaming::AttachRequest {
                container_id: cur.meta.id,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(stream_error)
    }

    /// PortForward: checks the pod is ready and returns the URL to stream on.
    pub async fn port_forward_url(
        &self,
        r: berth_api::runtime::v1::PortForwardRequest,
    ) -> Result<String> {
        let (_, m) = self.sandbox(&r.pod_sandbox_id).await?;
        let ready = self.task_state(&m.id).await?.is_some_and(|t| t.running());
        if !ready {
            return Err(CriError::FailedPrecondition(format!(
                "sandbox container {:?} is not running",
                m.id
            )));
        }
        for p in &r.port {
            if u16::try_from(*p).map_or(true, |p| p == 0) {
                return Err(CriError::InvalidArgument(format!(
                    "invalid port {p}: a port is 1 to 65535"
                )));
            }
        }
        self.stream_server()?
            .get_port_forward(berth_cri_streaming::PortForwardRequest {
                pod_sandbox_id: m.id,
                ports: r.port,
            })
            .map_err(stream_error)
    }

    async fn close_stdin(&self, container_id: &str, exec_id: &str) {
        let r = self
            .inner
            .backend
            .tasks()
            .close_io(tpb::CloseIoRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(container_id, exec_id, error = %e.message(), "closing stdin");
        }
    }

    async fn resize(&self, container_id: &str, exec_id: &str, size: TerminalSize) {
        let r = self
            .inner
            .backend
            .tasks()
            .resize_pty(tpb::ResizePtyRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                width: u32::from(size.width),
                height: u32::from(size.height),
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(container_id, exec_id, error = %e.message(), "resizing a terminal");
        }
    }

    /// Copies the client's terminal sizes to the process's terminal.
    fn spawn_resizer(
        &self,
        container_id: &str,
        exec_id: &str,
        resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut resize = resize?;
        let cri = self.clone();
        let (c, e) = (container_id.to_string(), exec_id.to_string());
        Some(tokio::spawn(async move {
            while let Some(size) = resize.recv().await {
                cri.resize(&c, &e, size).await;
            }
        }))
    }
}

fn running(cur: &crate::container::Current) -> Result<()> {
    use berth_api::runtime::v1::ContainerState;
    if cur.state != ContainerState::ContainerRunning {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is in {} state, not running",
            cur.meta.id,
            cur.state.as_str_name()
        )));
    }
    Ok(())
}

fn stream_error(e: berth_cri_streaming::Error) -> CriError {
    match e {
        berth_cri_streaming::Error::InvalidRequest(m) => CriError::InvalidArgument(m),
        // gRPC ResourceExhausted has no CriError of its own.
        other => CriError::FailedPrecondition(other.to_string()),
    }
}

/// Opens the read side of an output FIFO, waiting (off the async threads)
/// for its writer; `None` when it cannot be opened.
async fn open_output(path: PathBuf) -> Option<pipe::Receiver> {
    let f = tokio::task::spawn_blocking(move || std::fs::File::open(path))
        .await
        .ok()?
        .ok()?;
    pipe::Receiver::from_file(f).ok()
}

/// Copies `from` to the client's `to` (or nowhere), to the end.
async fn pump(from: Option<pipe::Receiver>, to: Option<Output>) {
    let Some(mut from) = from else { return };
    match to {
        Some(mut to) => {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                            // The client is gone: drain the rest.
                            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown().await;
        }
        None => {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
        }
    }
}

/// Copies the client's stdin into the FIFO at `path` (the shim holds its
/// read side); returns when the client's stdin ends.
async fn feed(path: &Path, mut from: Input) -> std::io::Result<()> {
    let mut to = pipe::OpenOptions::new().open_sender(path)?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Lets a blocked [`open_output`] of `path` return (no writer came).
fn unblock(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path);
}

#[async_trait::async_trait]
impl StreamingRuntime for Streams {
    async fn exec(
        &self,
        req: &berth_cri_streaming::ExecRequest,
        mut io: ProcessIo,
    ) -> std::result::Result<i32, RuntimeError> {
        let cri = self.cri()?;
        let p = cri
            .exec(
                &req.container_id,
                req.cmd.clone(),
                req.tty,
                io.stdin.is_some(),
            )
            .await?;
        let out = tokio::spawn(open_output(p.stdout.clone()));
        let err = p.stderr.clone().map(|e| tokio::spawn(open_output(e)));
        if let Err(e) = cri.start_exec(&p).await {
            unblock(&p.stdout);
            if let Some(e) = &p.stderr {
                unblock(e);
            }
            let _ = out.await;
            if let Some(h) = err {
                let _ = h.await;
            }
            cri.delete_exec(&p).await;
            return Err(e.into());
        }
        let out = out.await.ok().flatten();
        let err = match err {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        let stdout = tokio::spawn(pump(out, io.stdout.take()));
        let stderr = tokio::spawn(pump(err, io.stderr.take()));
        let resizer = cri.spawn_resizer(&p.container_id, &p.exec_id, io.resize.take());
        let stdin = match (io.stdin.take(), &p.stdin) {
            (Some(input), Some(path)) => {
                let (cri, path) = (cri.clone(), path.clone());
                let (c, e) = (p.container_id.clone(), p.exec_id.clone());
                Some(tokio::spawn(async move {
                    if let Err(err) = feed(&path, input).await {
                        tracing::debug!(error = %err, "exec stdin");
                    }
                    cri.close_stdin(&c, &e).await;
                }))
            }
            _ => None,
        };
        let mut gone = io.client_gone.clone();
        let exit = tokio::select! {
            r = cri.wait_exec(&p) => r,
            () = gone.wait() => {
                // containerd kills an exec whose client left.
                cri.kill_exec(&p).await;
                cri.wait_exec(&p).await
            }
        };
        if let Some(h) = stdin {
            h.abort();
        }
        let _ = stdout.await;
        let _ = stderr.await;
        if let Some(h) = resizer {
            h.abort();
        }
        Ok(exit?)
    }

    async fn attach(
        &self,
        req: &berth_cri_streaming::AttachRequest,
        mut io: ProcessIo,
    ) -> std::result::Result<(), RuntimeError> {
        let cri = self.cri()?;
        let cur = cri.container(&req.container_id).await?;
        running(&cur)?;
        let id = cur.meta.id.clone();
        let log = cri
            .inner
            .logs
            .lock()
            .await
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                CriError::FailedPrecondition(format!("container {id} has no output to attach to"))
            })?;
        let mut output = log.subscribe();
        let resizer = cri.spawn_resizer(&id, "", io.resize.take());
        let stdin_once = cur.config.stdin_once;
        let stdin = match io.stdin.take() {
            Some(input) if cur.config.stdin => {
                let path = cri.io_dir(&id).join("stdin");
                let (cri, id) = (cri.clone(), id.clone());
                Some(tokio::spawn(async move {
                    if let Err(err) = feed(&path, input).await {
                        tracing::debug!(error = %err, "attach stdin");
                    }
                    if stdin_once {
                        cri.close_stdin(&id, "").await;
                    }
                }))
            }
            _ => None,
        };
        let mut streams = vec!["stdout"];
        if !cur.meta.stderr.is_empty() {
            streams.push("stderr");
        }
        let mut stdout = io.stdout.take();
        let mut stderr = io.stderr.take();
        let mut gone = io.client_gone.clone();
        loop {
            let next = tokio::select! {
                o = output.recv() => o,
                () = gone.wait() => break,
            };
            match next {
                None => break,
                Some(crate::logs::Output::End(s)) => {
                    streams.retain(|x| *x != s);
                    if streams.is_empty() {
                        break;
                    }
                }
                Some(crate::logs::Output::Data(s, data)) => {
                    let to = if s == "stderr" {
                        &mut stderr
                    } else {
                        &mut stdout
                    };
                    if let Some(w) = to.as_mut()
                        && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                    {
                        *to = None;
                    }
                }
            }
        }
        drop(output);
        if let Some(h) = stdin
            && !h.is_finished()
        {
            h.abort();
            // The client left: a stdin_once container's stdin ends with it.
            if stdin_once {
                cri.close_stdin(&id, "").await;
            }
        }
        if let Some(h) = resizer {
            h.abort();
        }
        for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        mut stream: DuplexStream,
    ) -> std::result::Result<(), RuntimeError> {
        let cri = self.cri()?;
        let conn = cri.dial_in_sandbox(pod_sandbox_id, port).await?;
        conn.set_nonblocking(true)?;
        let mut conn = tokio::net::TcpStream::from_std(conn)?;
        tokio::io::copy_bidirectional(&mut stream, &mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_writes_them() {
        assert_eq!(
            parse_go_duration("4h0m0s"),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(parse_go_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("4 hours"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn stream_addresses_follow_the_config() {
        let mut c = crate::CriConfig::default();
        let (addrs, advertise) = stream_addresses(&c).expect("defaults");
        assert_eq!(addrs, vec!["127.0.0.1:0".parse().expect("addr")]);
        assert_eq!(advertise, None);
        c.stream_server_address = "::1".into();
        c.stream_server_port = "10010".into();
        let (addrs, _) = stream_addresses(&c).expect("v6");
        assert_eq!(addrs, vec!["[::1]:10010".parse().expect("addr")]);
        c.stream_server_address = String::new();
        let (addrs, advertise) = stream_addresses(&c).expect("empty address");
        assert_eq!(addrs, vec!["0.0.0.0:10010".parse().expect("addr")]);
        assert!(advertise.is_some());
        c.stream_server_port = "http".into();
        let e = stream_addresses(&c).expect_err("bad port");
        assert!(e.to_string().contains("stream_server_port"), "{e}");
    }
}
