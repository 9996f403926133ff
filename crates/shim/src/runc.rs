//! Driving the `runc` command line: one invocation per operation, its
//! stdout captured where the operation answers with data, and its error
//! taken from runc's JSON log, because runc's stderr may be the container's.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::reaper::Reaper;

/// A failed runc invocation.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// runc could not be executed.
    #[error("running {binary}: {source} (is runc installed? apt-get install -y runc)")]
    Exec {
        /// The runc binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed: containerd's shim wording (`OCI runtime create
    /// failed: runc create failed: ...`); runc's own message already names
    /// the command, so it is not repeated, and the status only shows when
    /// runc logged nothing.
    #[error("OCI runtime {command} failed: {}", failure_detail(*status, message))]
    Failed {
        /// The subcommand.
        command: String,
        /// runc's exit status.
        status: u32,
        /// runc's last logged error.
        message: String,
    },
}

/// runc's logged message, or its exit status when it logged none.
fn failure_detail(status: u32, message: &str) -> String {
    if message.is_empty() {
        format!("runc exited with status {status}")
    } else {
        message.to_string()
    }
}

/// Where a process's standard streams go when runc starts it.
#[derive(Debug, Default)]
pub(crate) struct ProcessStdio {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// runc, with the root and log every invocation shares.
#[derive(Debug, Clone)]
pub(crate) struct Runc {
    pub(crate) binary: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) systemd_cgroup: bool,
    pub(crate) reaper: Arc<Reaper>,
}

fn to_stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

impl Runc {
    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(args);
        cmd
    }

    /// Runs `runc ARGS` with `stdio`; returns its stdout when `capture`.
    async fn run(
        &self,
        args: Vec<OsString>,
        stdio: ProcessStdio,
        capture: bool,
    ) -> Result<Vec<u8>, RuncError> {
        let mut cmd = self.command(&args);
        cmd.stdin(to_stdio(stdio.stdin))
            .stderr(to_stdio(stdio.stderr));
        if capture {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(to_stdio(stdio.stdout));
        }
        let (mut child, exited) =
            self.reaper
                .spawn(&mut cmd)
                .map_err(|source| RuncError::Exec {
                    binary: self.binary.display().to_string(),
                    source,
                })?;
        // Our copies of the process's stdio fds close here, so only the
        // process holds them (a reader sees end-of-file when it exits).
        drop(cmd);
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take()
            && let Ok(mut rx) =
                tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))
        {
            let _ = rx.read_to_end(&mut out).await;
        }
        let status = exited.await.unwrap_or(255);
        if status != 0 {
            let command = args
                .iter()
                .find(|a| !a.to_string_lossy().starts_with('-'))
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(RuncError::Failed {
                command,
                status,
                message: last_error(&self.log),
            });
        }
        Ok(out)
    }

    /// `runc create`: sets up container `id` from `bundle`, stopped before
    /// the user process; its pid lands in `pid_file`.
    pub(crate) async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["create".into(), "--bundle".into(), bundle.into()];
        args.extend(["--pid-file".into(), pid_file.into()]);
        if let Some(s) = console_socket {
            args.extend(["--console-socket".into(), s.into()]);
        }
        args.push(id.into());
        self.run(args, stdio, false).await.map(drop)
    }

    /// `runc start`: runs the user process of a created container.
    pub(crate) async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.simple(&["start", id]).await
    }

    /// `runc exec --detach`: starts the process described in `process_json`.
    pub(crate) async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["exec".into(), "--detach".into()];
        args.extend(["--process".into(), process_json.into()]);
        args.extend(["--pid-file".into(), pid_file.into()]);
        if let Some(s) = console_socket {
            args.extend(["--console-socket".into(), s.into()]);
        }
        args.push(id.into());
        self.run(args, stdio, false).await.map(drop)
    }

    /// `runc kill [--all] ID SIGNAL`.
    pub(crate) async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let signal = signal.to_string();
        if all {
            self.simple(&["kill", "--all", id, &signal]).await
        } else {
            self.simple(&["kill", id, &signal]).await
        }
    }

    /// `runc delete [--force] ID`.
    pub(crate) async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        if force {
            self.simple(&["delete", "--force", id]).await
        } else {
            self.simple(&["delete", id]).await
        }
    }

    /// `runc pause ID`.
    pub(crate) async fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.simple(&["pause", id]).await
    }

    /// `runc resume ID`.
    pub(crate) async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.simple(&["resume", id]).await
    }

    /// `runc update --resources FILE ID`.
    pub(crate) async fn update(&self, id: &str, resources: &Path) -> Result<(), RuncError> {
        let args = vec![
            "update".into(),
            "--resources".into(),
            resources.into(),
            id.into(),
        ];
        self.run(args, ProcessStdio::default(), false)
            .await
            .map(drop)
    }

    /// `runc ps --format json ID`: the pids in the container.
    pub(crate) async fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        let args = vec!["ps".into(), "--format".into(), "json".into(), id.into()];
        let out = self.run(args, ProcessStdio::default(), true).await?;
        serde_json::from_slice::<Option<Vec<u32>>>(&out)
            .map(Option::unwrap_or_default)
            .map_err(|e| RuncError::Failed {
                command: "ps".into(),
                status: 0,
                message: format!("unreadable output: {e}"),
            })
    }

    async fn simple(&self, args: &[&str]) -> Result<(), RuncError> {
        let args = args.iter().map(OsString::from).collect();
        self.run(args, ProcessStdio::default(), false)
            .await
            .map(drop)
    }
}

/// The message of the last error runc wrote to its JSON log.
pub(crate) fn last_error(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return "no runc log".to_string();
    };
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .and_then(|v| v["msg"].as_str().map(str::to_string))
        .unwrap_or_else(|| "runc gave no reason".to_string())
}
