//! Everything the benchmark harness starts is registered here and stopped
//! by PID — on normal exit, on error and on Ctrl-C (SIGINT, SIGTERM,
//! SIGHUP): daemons and their shims are killed, containers left in runc
//! roots deleted, mounts under the daemon's directory unmounted (deepest
//! first), loop devices backed by files there detached, temporary
//! directories removed (a Dockerd's: its runc containers deleted and its
//! data root unmounted first), Dockerds' cgroup parents removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::Result;

/// One thing to stop.
#[derive(Debug)]
enum Item {
    /// A daemon: its shims, runc containers and mounts go with it.
    Daemon {
        pid: u32,
        address: PathBuf,
        state: PathBuf,
        dir: PathBuf,
    },
    /// A plain child process.
    Process { pid: u32 },
    /// A temporary directory, removed last.
    Dir(PathBuf),
}

/// What is running now. Held for the whole of a cleanup, so a Ctrl-C
/// cleanup and a normal one never interleave.
static LIVE: Mutex<Vec<Item>> = Mutex::new(Vec::new());

fn with_live<T>(f: impl FnOnce(&mut Vec<Item>) -> T) -> T {
    let mut guard = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Registers daemon `pid` serving `address`, with state under `state` and everything under `dir`.
pub(crate) fn daemon(pid: u32, address: &Path, state: &Path, dir: &Path) {
    with_live(|l| {
        l.push(Item::Daemon {
            pid,
            address: address.to_path_buf(),
            state: state.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    });
}

/// Registers child process `pid`.
pub(crate) fn process(pid: u32) {
    with_live(|l| l.push(Item::Process { pid }));
}

/// Registers temporary directory `dir`.
pub(crate) fn dir(dir: &Path) {
    with_live(|l| l.push(Item::Dir(dir.to_path_buf())));
}

/// Stops what was registered under `pid` now (a no-op if already stopped).
pub(crate) fn stop_pid(pid: u32) {
    with_live(|l| {
        let (mine, rest): (Vec<Item>, Vec<Item>) = std::mem::take(l).into_iter().partition(
            |i| matches!(i, Item::Daemon { pid: p, .. } | Item::Process { pid: p } if *p == pid),
        );
        *l = rest;
        for i in &mine {
            stop(i);
        }
    });
}

/// Forgets `pid` without stopping it (its owner stops and reaps it).
pub(crate) fn forget(pid: u32) {
    with_live(|l| l.retain(|i| !matches!(i, Item::Process { pid: p } if *p == pid)));
}

/// Removes temporary directory `dir` now if registered.
pub(crate) fn remove_dir(dir: &Path) {
    with_live(|l| {
        let (mine, rest): (Vec<Item>, Vec<Item>) = std::mem::take(l)
            .into_iter()
            .partition(|i| matches!(i, Item::Dir(d) if d == dir));
        *l = rest;
        for i in &mine {
            stop(i);
        }
    });
}

/// Stops everything, newest first, directories last.
pub(crate) fn all() {
    with_live(|l| {
        let mut items = std::mem::take(l);
        items.reverse();
        items.sort_by_key(|i| matches!(i, Item::Dir(_)));
        for i in &items {
            stop(i);
        }
    });
    // A Dockerd not dropped (Ctrl-C) leaves its cgroup parent.
    berth_tests::docker::remove_cgroup_parents();
}

fn kill9(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
        // Reap our own children; others (shims) are not ours to wait for.
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

fn kill_and_reap(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Command lines of every process, by PID.
fn processes() -> Vec<(u32, Vec<String>)> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, args));
    }
    out
}

/// PIDs of the shims of the daemon on `address` (started with `-address <address>`).
pub(crate) fn shims_of(address: &Path) -> Vec<u32> {
    let needle = address.display().to_string();
    processes()
        .into_iter()
        .filter(|(_, args)| {
            args.iter().any(|a| a == "-address" || a == "--address")
                && args.contains(&needle)
                && args.first().is_some_and(|a| a.contains("shim"))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Force-deletes the runc containers of runc roots `<root>/<ns>/<id>`
/// whose state mentions `dir` (so a system containerd's are left alone).
fn delete_runc_containers(root: &Path, dir: &Path) {
    let needle = dir.display().to_string();
    for ns in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for id in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let state = std::fs::read_to_string(id.path().join("state.json")).unwrap_or_default();
            if !state.contains(&needle) {
                continue;
            }
            let _ = Command::new("runc")
                .arg("--root")
                .arg(ns.path())
                .args(["delete", "--force"])
                .arg(id.file_name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Unmounts (lazily) every mount under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    targets.dedup();
    for t in targets {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(t)
            .stderr(Stdio::null())
            .status();
    }
}

/// Loop devices whose backing file is under `dir`: `(device, file)`.
pub(crate) fn loops_under(dir: &Path) -> Vec<(String, String)> {
    let prefix = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let file = file.trim_end().to_owned();
        if file.starts_with(&prefix) {
            out.push((format!("/dev/{name}"), file));
        }
    }
    out
}

/// Detaches the loop devices backed by files under `dir` (one still in
/// use, say under a lazy unmount, goes when its last user does).
fn detach_loops_under(dir: &Path) {
    for (device, _) in loops_under(dir) {
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&device)
            .stderr(Stdio::null())
            .status();
    }
}

fn stop(item: &Item) {
    match item {
        Item::Daemon {
            pid,
            address,
            state,
            dir,
        } => {
            // The daemon first, so it starts nothing new; then its shims.
            kill_and_reap(*pid);
            for shim in shims_of(address) {
                kill9(shim);
            }
            delete_runc_containers(&state.join("runc"), dir);
            delete_runc_containers(Path::new("/run/containerd/runc"), dir);
            unmount_under(dir);
            detach_loops_under(dir);
        }
        Item::Process { pid } => kill_and_reap(*pid),
        Item::Dir(d) => {
            // A Dockerd's directory: runc keeps the containers berth's and
            // containerd's shims run for it under its exec root.
            delete_runc_containers(&d.join("exec").join("runtime-runc"), d);
            unmount_under(d);
            detach_loops_under(d);
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Stops everything and exits when SIGINT, SIGTERM or SIGHUP arrives.
pub(crate) fn on_signals() -> Result<()> {
    let (ready, wait) = std::sync::mpsc::channel::<Result<()>>();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(format!("signal runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ];
            let mut streams = Vec::new();
            for k in kinds {
                match signal(k) {
                    Ok(s) => streams.push(s),
                    Err(e) => {
                        let _ = ready.send(Err(format!("signal handler: {e}")));
                        return;
                    }
                }
            }
            let _ = ready.send(Ok(()));
            let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
            futures_select(waits.collect()).await;
            eprintln!("xtask: interrupted; stopping everything the benchmark started");
            all();
            #[allow(
                clippy::exit,
                reason = "interrupted: the cleanup above is the exit path"
            )]
            std::process::exit(130);
        });
    });
    wait.recv().map_err(|e| e.to_string())?
}

/// Resolves when the first of `futures` does.
async fn futures_select<F: std::future::Future + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if std::pin::Pin::new(&mut *f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}
