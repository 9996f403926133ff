//! Network namespaces for pods: made by berth, pinned by a bind mount of
//! the namespace file (as `ip netns add` and containerd's `netns` package
//! do), so CNI and the pause container can both enter it by path.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{CriError, Result};

/// Creates a new network namespace pinned at `dir/<name>`.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::File::create(&path)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", path.display())))?;
    let target = path.clone();
    // A thread of its own enters the new namespace and dies with it: no
    // other thread of the daemon ever changes namespace.
    let pinned = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| CriError::Internal(format!("unshare(CLONE_NEWNET): {e}")))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            CriError::Internal(format!(
                "pinning the network namespace at {}: {e}",
                target.display()
            ))
        })
    })
    .join()
    .map_err(|_| CriError::Internal("the network namespace thread panicked".into()))?;
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unpins and removes the namespace at `path`; a missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(CriError::Internal(format!(
                "unmounting network namespace {}: {e}",
                path.display()
            )));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::Internal(format!(
            "removing {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `f` on a thread inside the network namespace at `path` (to dial a
/// pod's port for port forwarding).
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = std::fs::File::open(path)
        .map_err(|e| CriError::NotFound(format!("network namespace {}: {e}", path.display())))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| CriError::Internal(format!("setns: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| CriError::Internal("the network namespace thread panicked".into()))?
}
