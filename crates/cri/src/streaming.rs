//! The pieces a streaming server (exec, attach, port-forward) builds on:
//! run a process in a container with its stdio as FIFOs, and dial a port
//! inside a pod's network namespace. ExecSync uses the first.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    async fn delete_exec(&self, p: &ExecProcess) {
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

    /// Connects to `port` on the loopback of sandbox `sandbox_id`'s network
    /// (port forwarding).
    pub async fn dial_in_sandbox(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<std::net::TcpStream> {
        let (_, m) = self.sandbox(sandbox_id).await?;
        if m.netns.is_empty() {
            return std::net::TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| CriError::Internal(format!("dialing port {port}: {e}")));
        }
        let netns = PathBuf::from(&m.netns);
        tokio::task::spawn_blocking(move || {
            crate::netns::run_in(&netns, move || {
                std::net::TcpStream::connect(("127.0.0.1", port))
            })
        })
        .await
        .map_err(|e| CriError::Internal(format!("dialing port {port}: {e}")))??
        .map_err(|e| {
            CriError::Internal(format!("dialing port {port} in sandbox {sandbox_id}: {e}"))
        })
    }
}
