//! `berthctl tasks ls|start|kill|ps|exec|pause|resume|metrics|rm|attach`.

use anyhow::{Context as _, bail};
use berth_api::containerd::services::tasks::v1 as pb;
use berth_api::containerd::v1::types::Status as TaskStatus;

use crate::context::{Global, clients};
use crate::stdio::{RawTerminal, Stdio};
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Checkpoint a task with CRIU (stored as a checkpoint image).
    Checkpoint(super::checkpoint::TaskCheckpointArgs),
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create and start a task for an existing container.
    Start {
        /// Do not wait for the task; leave it running.
        #[arg(short, long)]
        detach: bool,
        /// Allocate a terminal.
        #[arg(short, long)]
        tty: bool,
        /// Container id.
        id: String,
    },
    /// Signal a task (or one of its processes).
    Kill {
        /// Signal name or number.
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the task.
        #[arg(long)]
        all: bool,
        /// Signal this exec process instead of the init process.
        #[arg(long, default_value = "")]
        exec_id: String,
        /// Task id.
        id: String,
    },
    /// List the task's processes.
    Ps {
        /// Task id.
        id: String,
    },
    /// Run an additional process in a task.
    Exec {
        /// Id of the new process.
        #[arg(long)]
        exec_id: String,
        /// Allocate a terminal.
        #[arg(short, long)]
        tty: bool,
        /// Return at once, without waiting for the process.
        #[arg(short, long)]
        detach: bool,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Task id.
        id: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Pause a task.
    Pause {
        /// Task id.
        id: String,
    },
    /// Resume a paused task.
    Resume {
        /// Task id.
        id: String,
    },
    /// Show a task's cgroup metrics.
    #[command(visible_alias = "metric")]
    Metrics {
        /// Task id.
        id: String,
    },
    /// Delete stopped tasks (`--force` kills running ones first).
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Kill the task first if it is running.
        #[arg(short, long)]
        force: bool,
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Attach to a running task's output (and input) until it exits.
    Attach {
        /// Task id.
        id: String,
    },
}

/// A signal number from `SIGKILL`, `KILL` or `9`.
pub(crate) fn signal_number(s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    };
    let sig: nix::sys::signal::Signal = name
        .parse()
        .with_context(|| format!("unknown signal {s:?} (try SIGTERM, SIGKILL or a number)"))?;
    Ok(u32::try_from(sig as i32).unwrap_or(15))
}

fn status_name(s: i32) -> &'static str {
    match TaskStatus::try_from(s) {
        Ok(TaskStatus::Created) => "CREATED",
        Ok(TaskStatus::Running) => "RUNNING",
        Ok(TaskStatus::Stopped) => "STOPPED",
        Ok(TaskStatus::Paused) => "PAUSED",
        Ok(TaskStatus::Pausing) => "PAUSING",
        _ => "UNKNOWN",
    }
}

/// The mounts of container `id`'s snapshot (none when it has no snapshot).
pub(crate) async fn container_rootfs(
    client: &berth_api::client::Client,
    id: &str,
) -> anyhow::Result<Vec<berth_api::containerd::types::Mount>> {
    use berth_api::containerd::services::containers::v1 as cpb;
    use berth_api::containerd::services::snapshots::v1 as spb;
    use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
    let c = clients::containers(client)
        .get(cpb::GetContainerRequest { id: id.to_string() })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .container
        .unwrap_or_default();
    if c.snapshot_key.is_empty() {
        return Ok(Vec::new());
    }
    let mut snapshots = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    Ok(snapshots
        .mounts(spb::MountsRequest {
            snapshotter: c.snapshotter,
            key: c.snapshot_key.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("snapshot {:?}: {}", c.snapshot_key, e.message()))?
        .into_inner()
        .mounts)
}

/// Creates the task of container `id` with fresh stdio, starts it and,
/// unless `detach`, copies its stdio until it exits; returns its exit status.
pub(crate) async fn start_task(
    client: &berth_api::client::Client,
    id: &str,
    tty: bool,
    detach: bool,
    rootfs: Vec<berth_api::containerd::types::Mount>,
) -> anyhow::Result<u32> {
    let mut tasks = clients::tasks(client);
    // Detached tasks get no stdio: nobody would read it.
    let mut io = if detach {
        Stdio::null()
    } else {
        Stdio::create(id, true, tty)?
    };
    let _raw = (tty && !detach).then(RawTerminal::enable);
    if !detach {
        io.attach();
    }
    let created = tasks
        .create(pb::CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: tty,
            ..Default::default()
        })
        .await;
    if let Err(e) = created {
        bail!("creating task {id:?}: {}", e.message());
    }
    // Subscribe to the exit before starting, so a fast exit is not missed.
    let waiter = (!detach).then(|| {
        let mut t = tasks.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            t.wait(pb::WaitRequest {
                container_id: id,
                exec_id: String::new(),
            })
            .await
        })
    });
    tasks
        .start(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .with_context(|| format!("starting task {id:?}"))?;
    if tty && let Some((w, h)) = RawTerminal::size() {
        let _ = tasks
            .resize_pty(pb::ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                width: w,
                height: h,
            })
            .await;
    }
    let Some(waiter) = waiter else {
        return Ok(0);
    };
    let status = waiter.await??.into_inner().exit_status;
    io.wait();
    Ok(status)
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    if let Command::Checkpoint(a) = args.command {
        return super::checkpoint::task_checkpoint(global, a).await;
    }
    let client = global.connect().await?;
    let mut tasks = clients::tasks(&client);
    match args.command {
        Command::Checkpoint(_) => unreachable!("handled above"),
        Command::Ls { quiet } => {
            let mut list = tasks
                .list(pb::ListTasksRequest::default())
                .await?
                .into_inner()
                .tasks;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            if global.json() {
                return crate::json::print_list(&list);
            }
            if quiet {
                for t in list {
                    println!("{}", t.id);
                }
                return Ok(());
            }
            let mut rows = vec![vec!["TASK".into(), "PID".into(), "STATUS".into()]];
            for t in list {
                rows.push(vec![t.id, t.pid.to_string(), status_name(t.status).into()]);
            }
            print!("{}", table::render(&rows, 4));
        }
        Command::Start { detach, tty, id } => {
            // As containerd's client: the root filesystem is the mounts of
            // the container's snapshot.
            let rootfs = container_rootfs(&client, &id).await?;
            let status = start_task(&client, &id, tty, detach, rootfs).await?;
            if !detach {
                tasks
                    .delete(pb::DeleteTaskRequest { container_id: id })
                    .await?;
                if status != 0 {
                    return Err(crate::ExitStatus(i32::try_from(status).unwrap_or(1)).into());
                }
            }
        }
        Command::Kill {
            signal,
            all,
            exec_id,
            id,
        } => {
            tasks
                .kill(pb::KillRequest {
                    container_id: id,
                    exec_id,
                    signal: signal_number(&signal)?,
                    all,
                })
                .await?;
        }
        Command::Ps { id } => {
            let procs = tasks
                .list_pids(pb::ListPidsRequest { container_id: id })
                .await?
                .into_inner()
                .processes;
            if global.json() {
                return crate::json::print_list(&procs);
            }
            let mut rows = vec![vec!["PID".into(), "INFO".into()]];
            for p in procs {
                rows.push(vec![p.pid.to_string(), "-".into()]);
            }
            print!("{}", table::render(&rows, 4));
        }
        Command::Exec {
            exec_id,
            tty,
            detach,
            cwd,
            id,
            args,
        } => {
            let status = exec(&client, &id, &exec_id, tty, detach, cwd, args).await?;
            if status != 0 {
                return Err(crate::ExitStatus(i32::try_from(status).unwrap_or(1)).into());
            }
        }
        Command::Pause { id } => {
            tasks
                .pause(pb::PauseTaskRequest { container_id: id })
                .await?;
        }
        Command::Resume { id } => {
            tasks
                .resume(pb::ResumeTaskRequest { container_id: id })
                .await?;
        }
        Command::Metrics { id } => {
            let metrics = tasks
                .metrics(pb::MetricsRequest {
                    filters: vec![format!("id=={id}")],
                })
                .await?
                .into_inner()
                .metrics;
            let Some(m) = metrics.into_iter().next() else {
                bail!("no metrics for task {id:?}");
            };
            let data = m.data.unwrap_or_default();
            println!("ID\tTIMESTAMP");
            println!("{}\t{}", m.id, crate::format::time(m.timestamp));
            println!("TYPE\t{}\nBYTES\t{}", data.type_url, data.value.len());
        }
        Command::Rm { force, ids } => {
            let mut failed = 0;
            for id in ids {
                if force {
                    let _ = tasks
                        .kill(pb::KillRequest {
                            container_id: id.clone(),
                            exec_id: String::new(),
                            signal: 9,
                            all: true,
                        })
                        .await;
                    let _ = tasks
                        .wait(pb::WaitRequest {
                            container_id: id.clone(),
                            exec_id: String::new(),
                        })
                        .await;
                }
                match tasks
                    .delete(pb::DeleteTaskRequest {
                        container_id: id.clone(),
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.exit_status != 0 {
                            eprintln!("berthctl: task {id} exited with status {}", r.exit_status);
                        }
                    }
                    Err(e) => {
                        eprintln!("berthctl: failed to delete task {id:?}: {}", e.message());
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} task(s) could not be deleted");
            }
        }
        Command::Attach { id } => {
            let p = tasks
                .get(pb::GetRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })
                .await?
                .into_inner()
                .process
                .unwrap_or_default();
            if p.stdout.is_empty() {
                bail!("task {id:?} has no stdio to attach to");
            }
            let _raw = p.terminal.then(RawTerminal::enable);
            let copy = |path: String, to_err: bool| {
                std::thread::spawn(move || {
                    if let Ok(mut f) = std::fs::File::open(&path) {
                        let _ = if to_err {
                            std::io::copy(&mut f, &mut std::io::stderr())
                        } else {
                            std::io::copy(&mut f, &mut std::io::stdout())
                        };
                    }
                })
            };
            if !p.stdout.is_empty() {
                copy(p.stdout.clone(), false);
            }
            if !p.stderr.is_empty() {
                copy(p.stderr.clone(), true);
            }
            if !p.stdin.is_empty() {
                let path = p.stdin.clone();
                std::thread::spawn(move || {
                    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
                        let _ = std::io::copy(&mut std::io::stdin(), &mut f);
                    }
                });
            }
            let status = tasks
                .wait(pb::WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                })
                .await?
                .into_inner()
                .exit_status;
            if status != 0 {
                return Err(crate::ExitStatus(i32::try_from(status).unwrap_or(1)).into());
            }
        }
    }
    Ok(())
}

/// Runs `args` as exec process `exec_id` in task `id`; returns its exit status.
async fn exec(
    client: &berth_api::client::Client,
    id: &str,
    exec_id: &str,
    tty: bool,
    detach: bool,
    cwd: Option<String>,
    args: Vec<String>,
) -> anyhow::Result<u32> {
    let mut tasks = clients::tasks(client);
    let mut containers = clients::containers(client);
    let container = containers
        .get(
            berth_api::containerd::services::containers::v1::GetContainerRequest {
                id: id.to_string(),
            },
        )
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
    // The exec process starts from the container's process spec.
    let spec: serde_json::Value = container
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default();
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(tty);
    if let Some(cwd) = cwd {
        process["cwd"] = serde_json::json!(cwd);
    }
    let mut io = if detach {
        Stdio::null()
    } else {
        Stdio::create(exec_id, true, tty)?
    };
    let _raw = (tty && !detach).then(RawTerminal::enable);
    if !detach {
        io.attach();
    }
    tasks
        .exec(pb::ExecProcessRequest {
            container_id: id.to_string(),
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: tty,
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process)?,
            }),
            exec_id: exec_id.to_string(),
        })
        .await
        .with_context(|| format!("exec in task {id:?}"))?;
    let waiter = {
        let mut t = tasks.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            t.wait(pb::WaitRequest {
                container_id: id,
                exec_id,
            })
            .await
        })
    };
    tasks
        .start(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await?;
    if detach {
        return Ok(0);
    }
    let status = waiter.await??.into_inner().exit_status;
    io.wait();
    let _ = tasks
        .delete_process(pb::DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await;
    Ok(status)
}
