//! What `runc start` and `runc delete` do for a plain container, done by
//! the shim itself: each saves starting a runc process (about 8 ms of a
//! container's life here). Containers with hooks, systemd cgroups or Intel
//! RDT, and anything unexpected, go through runc as before.
//!
//! - start: runc's init process waits, before exec-ing the user process,
//!   for a reader on `<runc root>/<id>/exec.fifo`; reading its one byte and
//!   removing the fifo is what `runc start` does.
//! - delete of a stopped container: removing its cgroups (the paths runc
//!   recorded in `state.json`) and its state directory.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether the bundle's spec has hooks a start or delete would have to run.
pub(crate) fn has_hooks(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return true;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return true;
    };
    spec.get("hooks")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|h| {
            h.values()
                .any(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        })
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Lets container `id`'s init process (`pid`) exec the user process.
/// `Ok(false)` when the container is not waiting on its fifo (runc then
/// says why).
pub(crate) async fn start(root: &Path, id: &str, pid: u32) -> Result<bool, String> {
    let fifo = root.join(id).join("exec.fifo");
    if !fifo.exists() {
        return Ok(false);
    }
    let path = fifo.clone();
    let mut reader = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
        // Blocks until the init process has it open for writing, which it
        // has already unless it died.
        let mut f = std::fs::File::open(&path)?;
        let mut byte = [0_u8; 1];
        let n = f.read(&mut byte)?;
        std::fs::remove_file(&path)?;
        Ok(n)
    });
    loop {
        tokio::select! {
            r = &mut reader => {
                return match r {
                    Ok(Ok(1)) => Ok(true),
                    Ok(Ok(_)) => Err("the container's init process died before starting".into()),
                    Ok(Err(e)) => Err(format!("{}: {e}", fifo.display())),
                    Err(e) => Err(format!("start task: {e}")),
                };
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if !alive(pid) {
                    // Release the blocked reader: a writer that writes nothing.
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(nix::libc::O_NONBLOCK)
                        .open(&fifo);
                    let _ = reader.await;
                    return Err("the container's init process is dead".into());
                }
            }
        }
    }
}

/// Removes stopped container `id`: its cgroups and runc's state.
/// `Ok(false)` when runc must do it (hooks, Intel RDT, no state).
pub(crate) async fn delete(root: &Path, id: &str) -> Result<bool, String> {
    let dir = root.join(id);
    let Ok(text) = std::fs::read(dir.join("state.json")) else {
        return Ok(false);
    };
    let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return Ok(false);
    };
    let hooks = state
        .pointer("/config/Hooks")
        .or_else(|| state.pointer("/config/hooks"))
        .and_then(serde_json::Value::as_object)
        .is_some_and(|h| {
            h.values()
                .any(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        });
    let rdt = state
        .get("intel_rdt_path")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if hooks || rdt {
        return Ok(false);
    }
    let mut paths: Vec<PathBuf> = state
        .get("cgroup_paths")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(serde_json::Value::as_str)
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths.dedup();
    // Processes of the container may still be exiting: retry a while.
    for attempt in 0..50 {
        paths.retain(|p| match std::fs::remove_dir(p) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
        });
        if paths.is_empty() {
            break;
        }
        if attempt == 49 {
            return Err(format!("cgroups still busy: {paths:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(true)
}
