//! berth's shim, `containerd-shim-berth-v2`: one small process per
//! container that drives runc and serves containerd's shim v2 task API over
//! ttrpc, so berthd and containerd can both use it.
//!
//! The binary follows containerd's shim protocol:
//!
//! - `start`: run from the bundle directory, it starts the long-lived shim
//!   (a copy of itself in its own process group), prints the shim's ttrpc
//!   address and exits. Starting again while that shim lives prints the
//!   same address.
//! - `delete`: cleans up after a shim that died: `runc delete --force`,
//!   unmounts the rootfs and prints a protobuf `DeleteResponse`.
//! - no action: the long-lived shim. It is a child subreaper, so container
//!   processes are reparented to it and their exits reaped by it; it runs on
//!   one thread; it publishes task events to `TTRPC_ADDRESS`, in the order
//!   containerd's runc shim guarantees (a process's `/tasks/exit` never
//!   before its `/tasks/create`, `/tasks/start` or `/tasks/exec-started`,
//!   however fast it exits: Docker Engine depends on it); it exits after
//!   `Shutdown` once its container is deleted.

mod args;
mod direct;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
mod events;
mod info;
mod oom;
mod reaper;
mod runc;
mod service;
mod shim_cgroup;
mod stdio;
mod unmount;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use berth_api::errdefs::{Category, RpcError};
use berth_runtime::address::{SOCKET_DIR, socket_address};
use prost::Message;

pub use args::{Action, Args};
pub use runc::RuncError;

/// Runs the shim with the process's arguments.
pub fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.action {
        Action::Version => {
            println!(
                "containerd-shim-berth-v2:\n  Version: {}",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Action::Info => info::print(),
        Action::Start => start(&args),
        Action::Delete => delete(&args),
        Action::Serve => serve(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            ExitCode::FAILURE
        }
    }
}

fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// `start`: launches the long-lived shim and prints its address.
fn start(args: &Args) -> Result<(), String> {
    let bundle = args.bundle_dir()?;
    let address = socket_address(&args.address, &args.namespace, &args.id);
    if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_ok() {
        // A shim for this container already runs: hand out its address.
        println!("{address}");
        return Ok(());
    }
    let shim_cgroup = shim_cgroup::from_stdin()?;
    let exe = std::env::current_exe().map_err(|e| format!("finding my own binary: {e}"))?;
    // The shim's own log goes to the bundle's `log` FIFO, which the daemon
    // reads; without one (or without a reader) it is discarded.
    let log = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(bundle.join("log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut child = Command::new(exe)
        .args(args.serve_args())
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the shim: {e}"))?;
    if let Some(cgroup) = &shim_cgroup
        && let Err(e) = shim_cgroup::join(child.id(), cgroup)
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if line.is_empty() {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!(
            "the shim exited before serving ({status}); see the daemon's log"
        ));
    }
    std::fs::write(bundle.join("address"), line)
        .map_err(|e| format!("writing the address file: {e}"))?;
    println!("{line}");
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;

/// `delete`: cleans up after a dead shim and prints a `DeleteResponse`.
fn delete(args: &Args) -> Result<(), String> {
    let bundle = args.bundle_dir()?;
    let remembered: serde_json::Value = std::fs::read(bundle.join(service::OPTIONS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let root = remembered["root"].as_str().map_or_else(
        || Path::new("/run/containerd/runc").join(&args.namespace),
        PathBuf::from,
    );
    let binary = remembered["binary"].as_str().unwrap_or("runc");
    let out = Command::new(binary)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", &args.id])
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = &out
        && !out.status.success()
    {
        eprintln!(
            "runc delete {}: {}",
            args.id,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Err(e) = berth_snapshots::mount::unmount_all(bundle.join("rootfs")) {
        eprintln!("unmounting {}: {e}", bundle.join("rootfs").display());
    }
    let resp = berth_api::containerd::task::v2::DeleteResponse {
        pid: 0,
        exit_status: 128 + 9,
        exited_at: Some(SystemTime::now().into()),
    };
    std::io::stdout()
        .write_all(&resp.encode_to_vec())
        .map_err(|e| format!("writing the response: {e}"))
}

/// The long-lived shim: serves the task API until `Shutdown`.
fn serve(args: &Args) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the event loop: {e}"))?;
    let releases = unmount::Releases::default();
    let served = runtime.block_on(serve_async(args, releases.clone()));
    // Threads blocked opening a FIFO nobody opened must not keep us alive.
    runtime.shutdown_background();
    // The root filesystems unmounted by Delete are synced before the
    // process goes (see `unmount`).
    releases.wait();
    served
}

async fn serve_async(args: &Args, releases: unmount::Releases) -> Result<(), String> {
    // stderr is the bundle's log FIFO, which the daemon copies to its log.
    let level = if args.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(|| LogSink)
        .log_internal_errors(false)
        .try_init();
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("becoming a subreaper: {e}"))?;
    // Registered before anything is spawned, so no SIGCHLD is missed.
    let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(|e| format!("handling SIGCHLD: {e}"))?;
    let address = socket_address(&args.address, &args.namespace, &args.id);
    let path = socket_path(&address);
    std::fs::create_dir_all(SOCKET_DIR).map_err(|e| format!("{SOCKET_DIR}: {e}"))?;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("listening on {}: {e}", path.display()))?;
    // Only root (the daemon) may drive the shim.
    let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600));

    let reaper = Arc::new(reaper::Reaper::default());
    let publisher = events::Publisher::start(
        std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        args.namespace.clone(),
    );
    let events = publisher.clone();
    let service = Arc::new(service::Service::new(
        args.namespace.clone(),
        reaper.clone(),
        publisher,
        releases,
    ));
    let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(reaper.run(sigchld, exits_tx));
    let on_exit = service.clone();
    tokio::spawn(async move {
        while let Some(exit) = exits.recv().await {
            on_exit.before_exit(&exit).await;
            on_exit.on_exit(exit).await;
        }
    });

    let shutdown = service.shutdown.clone();
    let mut task_service = berth_api::containerd::task::v2::create_task(service.clone());
    // containerd 2.x names the same service (same messages) task API v3,
    // and its clients (`ctr shim`) ask for that name first.
    let v3 = berth_api::containerd::task::v2::create_task(service)
        .into_values()
        .map(|s| ("containerd.task.v3.Task".to_string(), s));
    task_service.extend(v3);
    let mut server = ttrpc::asynchronous::Server::new()
        .add_listener(listener.into())
        .register_service(task_service);
    server
        .start()
        .await
        .map_err(|e| format!("serving ttrpc: {e}"))?;

    // Tell `start` we are serving, then stop using the pipe it reads.
    // `start` gone already (killed before it read the line) means the
    // daemon never learns this address and nothing will ever drive or stop
    // this shim: it leaves rather than live on as an orphan.
    let mut stdout = std::io::stdout();
    if let Err(e) = writeln!(stdout, "{address}").and_then(|()| stdout.flush()) {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "`start` went away before handing out the address {address} ({e}); exiting"
        ));
    }
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }

    shutdown.notified().await;
    // No new connections; the events already queued (`/tasks/exit`) were
    // forwarded by `Shutdown` (this flush is for a shim that ends otherwise).
    let _ = std::fs::remove_file(path);
    events.flush(std::time::Duration::from_secs(2)).await;
    // Let the Shutdown reply be written; the caller's connection is not
    // waited for (containerd keeps it open until it sees the shim exit).
    // Nobody waits for this: the daemon goes on once it has the reply.
    tokio::task::yield_now().await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    drop(server);
    Ok(())
}

/// Where the long-lived shim's log goes: its stderr, the bundle's `log`
/// FIFO that berthd copies into its own log.
///
/// While berthd is down (killed, restarting) the FIFO has no reader and
/// every write fails with EPIPE; the line is lost and nothing else may
/// happen. tracing-subscriber's own writer reports a failed write with
/// `eprintln!`, which panics when stderr is broken: the task that logged
/// died. That killed the event forwarder whenever it logged during a
/// berthd restart (an event given up on), and every later event of the
/// task, its `/tasks/exit` included, was silently lost.
#[derive(Debug, Clone, Copy)]
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One write per event (the formatter buffers the line): a line
        // is written whole, in part if the FIFO is full, or not at all.
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The `Stats` answer: cgroup metrics of the container's init process.
fn stats(pid: u32) -> ttrpc::Result<prost_types::Any> {
    if pid == 0 {
        return Err(RpcError::new(Category::FailedPrecondition, "the task has no process").into());
    }
    let stats = berth_runtime::cgroups::Cgroup::for_pid(pid)
        .and_then(|cgroup| cgroup.stats())
        .map_err(|e| {
            let category = match &e {
                berth_runtime::cgroups::Error::NoCgroup { .. } => Category::NotFound,
                berth_runtime::cgroups::Error::Read { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Category::NotFound
                }
                _ => Category::Unknown,
            };
            ttrpc::Error::from(RpcError::new(
                category,
                format!("task metrics of pid {pid}: {e}"),
            ))
        })?;
    Ok(stats.to_any())
}
