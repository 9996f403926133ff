//! Tasks and processes: a container's running instance (its init process)
//! and the extra processes exec'd in it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::containerd::v1::types::Status as ApiStatus;
use tokio::sync::Mutex;

use crate::cio::{Io, Stdio};
use crate::client::Client;
use crate::container::Container;
use crate::error::{Error, Result, StatusContext};
use crate::spec;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code (128 + signal for a process killed by one, as containerd
    /// reports it).
    pub code: u32,
    /// When it exited.
    pub exited_at: Option<SystemTime>,
}

impl ExitStatus {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A task's or process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
    /// Frozen.
    Paused,
    /// Being frozen.
    Pausing,
    /// Anything else the daemon reports.
    Unknown,
}

impl From<i32> for Status {
    fn from(s: i32) -> Status {
        match ApiStatus::try_from(s) {
            Ok(ApiStatus::Created) => Status::Created,
            Ok(ApiStatus::Running) => Status::Running,
            Ok(ApiStatus::Stopped) => Status::Stopped,
            Ok(ApiStatus::Paused) => Status::Paused,
            Ok(ApiStatus::Pausing) => Status::Pausing,
            _ => Status::Unknown,
        }
    }
}

/// The exit of a process, awaited: `let exit = task.wait().await?;`
/// before `task.start()`, then `exit.await?` (containerd's `Wait` channel).
#[derive(Debug)]
pub struct ExitWaiter {
    handle: tokio::task::JoinHandle<Result<ExitStatus>>,
}

impl Future for ExitWaiter {
    type Output = Result<ExitStatus>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(Error::Io {
                    context: "waiting for the exit".into(),
                    source: std::io::Error::other(e),
                })
            })
        })
    }
}

/// A process in a task: the init process (exec id empty) or an exec'd one.
#[derive(Debug)]
pub struct Process {
    client: Client,
    container_id: String,
    exec_id: String,
    pid: u32,
    io: Mutex<Option<Io>>,
    started: tokio::sync::watch::Sender<bool>,
}

fn exit_status(code: u32, at: Option<prost_types::Timestamp>) -> ExitStatus {
    ExitStatus {
        code,
        exited_at: at.and_then(|t| SystemTime::try_from(t).ok()),
    }
}

impl Process {
    fn new(
        client: Client,
        container_id: String,
        exec_id: String,
        pid: u32,
        mut io: Option<Io>,
    ) -> Process {
        let (started, _) = tokio::sync::watch::channel(false);
        let eof = io.as_mut().and_then(Io::take_stdin_eof);
        let process = Process {
            client,
            container_id,
            exec_id,
            pid,
            io: Mutex::new(io),
            started,
        };
        if let Some(eof) = eof {
            process.close_io_at_eof(eof);
        }
        process
    }

    /// When the stdin copy ends, and once the process has started (the
    /// shim opens stdin then), asks the shim to close its side too, so the
    /// process reads end of file (as ctr's stdin closer does).
    fn close_io_at_eof(&self, eof: tokio::sync::oneshot::Receiver<()>) {
        let mut started = self.started.subscribe();
        let mut tasks = self.client.tasks();
        let request = tpb::CloseIoRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            stdin: true,
        };
        tokio::spawn(async move {
            if eof.await.is_err() {
                return;
            }
            // Fails when the process is gone unstarted: nothing to close.
            if started.wait_for(|s| *s).await.is_err() {
                return;
            }
            if let Err(s) = tasks.close_io(request).await {
                tracing::debug!("closing stdin at its end: {}", s.message());
            }
        });
    }

    /// What calls about this process are about, for error messages.
    fn what(&self) -> String {
        if self.exec_id.is_empty() {
            format!("task {:?}", self.container_id)
        } else {
            format!("process {:?} of task {:?}", self.exec_id, self.container_id)
        }
    }

    /// The container's id.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The exec id (empty for the init process).
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// The process id on the host (0 until started for exec'd processes).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts the process; returns its pid.
    pub async fn start(&mut self) -> Result<u32> {
        let what = self.what();
        let reply = self
            .client
            .tasks()
            .start(tpb::StartRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            })
            .await
            .ctx(|| format!("starting {what}"))?;
        self.pid = reply.pid;
        self.started.send_replace(true);
        Ok(reply.pid)
    }

    /// Waits for the exit in the background (containerd's `Wait`): call it
    /// before [`Process::start`] so a fast exit is not missed, then await
    /// the [`ExitWaiter`].
    pub async fn wait(&self) -> Result<ExitWaiter> {
        let mut tasks = self.client.tasks();
        let request = tpb::WaitRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        let what = self.what();
        let handle = tokio::spawn(async move {
            let reply = tasks
                .wait(request)
                .await
                .ctx(|| format!("waiting for {what}"))?;
            Ok(exit_status(reply.exit_status, reply.exited_at))
        });
        Ok(ExitWaiter { handle })
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the process.
    pub async fn kill(&self, signal: i32) -> Result<()> {
        self.signal(signal, false).await
    }

    async fn signal(&self, signal: i32, all: bool) -> Result<()> {
        let signal = u32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal} is not a signal")))?;
        let what = self.what();
        self.client
            .tasks()
            .kill(tpb::KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal,
                all,
            })
            .await
            .ctx(|| format!("signalling {what}"))?;
        Ok(())
    }

    /// Resizes the process's terminal.
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        let what = self.what();
        self.client
            .tasks()
            .resize_pty(tpb::ResizePtyRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                width,
                height,
            })
            .await
            .ctx(|| format!("resizing the terminal of {what}"))?;
        Ok(())
    }

    /// Closes the process's stdin: our side of the FIFO, then the shim's
    /// (containerd's `CloseIO(WithStdinCloser)`); the process reads end of
    /// file. Happens by itself when the stdin given to [`Stdio::copy`] ends.
    pub async fn close_io(&self) -> Result<()> {
        if let Some(io) = self.io.lock().await.as_ref() {
            io.close_stdin();
        }
        let what = self.what();
        self.client
            .tasks()
            .close_io(tpb::CloseIoRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            })
            .await
            .ctx(|| format!("closing the stdin of {what}"))?;
        Ok(())
    }

    /// Waits until the copies of the process's output are done (the
    /// process and everything holding its stdio exited).
    pub async fn wait_io(&self) {
        if let Some(io) = self.io.lock().await.as_mut() {
            io.wait().await;
        }
    }

    /// The process's state.
    pub async fn status(&self) -> Result<Status> {
        let what = self.what();
        let reply = self
            .client
            .tasks()
            .get(tpb::GetRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            })
            .await
            .ctx(|| format!("getting {what}"))?;
        Ok(reply.process.map_or(Status::Unknown, |p| p.status.into()))
    }

    /// Deletes the exited (or never started) process after its output is
    /// copied; returns how it exited (for the init process this deletes
    /// the task). A running process is not deleted: that fails with
    /// category `FailedPrecondition`, as containerd's client does.
    pub async fn delete(self) -> Result<ExitStatus> {
        let status = self.status().await?;
        match status {
            Status::Stopped | Status::Unknown => self.wait_io().await,
            Status::Created => {}
            Status::Running | Status::Paused | Status::Pausing => {
                return Err(Error::Daemon {
                    context: format!("deleting {}", self.what()),
                    category: berth_api::Category::FailedPrecondition,
                    message: format!("it must be stopped first (it is {status:?}): kill it"),
                });
            }
        }
        let what = self.what();
        let mut tasks = self.client.tasks();
        let reply = if self.exec_id.is_empty() {
            tasks
                .delete(tpb::DeleteTaskRequest {
                    container_id: self.container_id.clone(),
                })
                .await
        } else {
            tasks
                .delete_process(tpb::DeleteProcessRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                })
                .await
        }
        .ctx(|| format!("deleting {what}"))?;
        // A process never started: the shim closed its stdio just now.
        self.wait_io().await;
        Ok(exit_status(reply.exit_status, reply.exited_at))
    }
}

/// A container's task: its init process plus exec, pause and the rest.
/// The [`Process`] methods (start, wait, kill, resize, close_io, delete)
/// act on the init process.
#[derive(Debug)]
pub struct Task {
    init: Process,
    spec_process: Option<spec::Process>,
}

impl std::ops::Deref for Task {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.init
    }
}

impl std::ops::DerefMut for Task {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.init
    }
}

impl Container {
    /// Creates the container's task with `stdio` (containerd's
    /// `NewTask(ctx, cio.NewCreator(..))`); start it with
    /// [`Process::start`].
    pub async fn new_task(&self, stdio: Stdio) -> Result<Task> {
        let id = self.id().to_string();
        let io = stdio.open(&id)?;
        let rootfs = self.rootfs().await?;
        let reply = self
            .client
            .tasks()
            .create(tpb::CreateTaskRequest {
                container_id: id.clone(),
                rootfs,
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal: io.terminal,
                ..Default::default()
            })
            .await
            .ctx(|| format!("creating task {id:?}"))?;
        Ok(Task {
            init: Process::new(self.client.clone(), id, String::new(), reply.pid, Some(io)),
            spec_process: self.spec().ok().and_then(|s| s.process().clone()),
        })
    }
}

impl Container {
    /// The container's existing task, without attaching to its stdio
    /// (containerd's `Task(ctx, nil)`): to signal, exec in, wait for or
    /// delete a task another client started.
    pub async fn task(&self) -> Result<Task> {
        let id = self.id().to_string();
        let reply = self
            .client
            .tasks()
            .get(tpb::GetRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            })
            .await
            .ctx(|| format!("getting task {id:?}"))?;
        let process = reply.process.unwrap_or_default();
        let init = Process::new(self.client.clone(), id, String::new(), process.pid, None);
        if Status::from(process.status) != Status::Created {
            init.started.send_replace(true);
        }
        Ok(Task {
            init,
            spec_process: self.spec().ok().and_then(|s| s.process().clone()),
        })
    }
}

impl Task {
    /// Runs `args` in the task as process `exec_id`, with the container's
    /// process settings otherwise (env, cwd, user); start it with
    /// [`Process::start`].
    pub async fn exec<I, S>(&self, exec_id: &str, args: I, stdio: Stdio) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut process = self.spec_process.clone().unwrap_or_default();
        process.set_args(Some(args.into_iter().map(Into::into).collect()));
        self.exec_process(exec_id, process, stdio).await
    }

    /// Adds process `exec_id` with a full OCI process spec (its `terminal`
    /// is taken from `stdio`).
    pub async fn exec_process(
        &self,
        exec_id: &str,
        mut process: spec::Process,
        stdio: Stdio,
    ) -> Result<Process> {
        let io = stdio.open(exec_id)?;
        process.set_terminal(Some(io.terminal));
        let value = serde_json::to_vec(&process).map_err(|e| Error::Decode {
            what: format!("the spec of process {exec_id:?}"),
            reason: e.to_string(),
        })?;
        self.init
            .client
            .tasks()
            .exec(tpb::ExecProcessRequest {
                container_id: self.init.container_id.clone(),
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal: io.terminal,
                spec: Some(prost_types::Any {
                    type_url: spec::PROCESS_TYPE_URL.to_string(),
                    value,
                }),
                exec_id: exec_id.to_string(),
            })
            .await
            .ctx(|| {
                format!(
                    "adding process {exec_id:?} to task {:?}",
                    self.init.container_id
                )
            })?;
        Ok(Process::new(
            self.init.client.clone(),
            self.init.container_id.clone(),
            exec_id.to_string(),
            0,
            Some(io),
        ))
    }

    /// Sends `signal` to every process of the task.
    pub async fn kill_all(&self, signal: i32) -> Result<()> {
        self.init.signal(signal, true).await
    }

    /// Freezes the task.
    pub async fn pause(&self) -> Result<()> {
        let id = self.init.container_id.clone();
        self.init
            .client
            .tasks()
            .pause(tpb::PauseTaskRequest {
                container_id: id.clone(),
            })
            .await
            .ctx(|| format!("pausing task {id:?}"))?;
        Ok(())
    }

    /// Thaws the task.
    pub async fn resume(&self) -> Result<()> {
        let id = self.init.container_id.clone();
        self.init
            .client
            .tasks()
            .resume(tpb::ResumeTaskRequest {
                container_id: id.clone(),
            })
            .await
            .ctx(|| format!("resuming task {id:?}"))?;
        Ok(())
    }

    /// Pids of the task's processes.
    pub async fn pids(&self) -> Result<Vec<u32>> {
        let id = self.init.container_id.clone();
        let reply = self
            .init
            .client
            .tasks()
            .list_pids(tpb::ListPidsRequest {
                container_id: id.clone(),
            })
            .await
            .ctx(|| format!("listing the processes of task {id:?}"))?;
        Ok(reply.processes.into_iter().map(|p| p.pid).collect())
    }

    /// Deletes the exited task (see [`Process::delete`]).
    pub async fn delete(self) -> Result<ExitStatus> {
        self.init.delete().await
    }
}
