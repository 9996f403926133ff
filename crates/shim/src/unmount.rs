//! Unmounting a deleted task's root filesystem without waiting for the
//! kernel to sync it.
//!
//! When the last mount of a writable overlayfs goes, the kernel syncs the
//! whole filesystem that holds its upper directory (`ovl_sync_fs`): on a
//! host with other writers that is a journal commit at best (about 10 ms
//! here) and a flush of every dirty page of that disk at worst (seconds).
//! A plain `umount` makes the task's Delete wait for it.
//!
//! Instead, before unmounting, the shim takes a detached copy of the mount
//! (`open_tree(OPEN_TREE_CLONE)`), which keeps the filesystem alive: the
//! `umount` of the bundle's rootfs then only takes the mount out of the
//! mount table (nothing is mounted on the bundle any more when Delete
//! answers). The copy is closed on a thread of its own, which is where the
//! kernel then releases the filesystem and syncs it; the shim process
//! waits for those threads before it exits, so the sync still happens in
//! full, only not in the caller's time. Without `open_tree` (kernels
//! before 5.2) the unmount syncs inline, as before.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::MntFlags;

/// Threads releasing unmounted filesystems; [`Releases::wait`] joins them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Releases(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Releases {
    /// Closes `copy` (the last reference to a filesystem) on a new thread.
    fn release(&self, copy: OwnedFd) {
        let spawned = std::thread::Builder::new()
            .name("rootfs-release".into())
            .spawn(move || drop(copy));
        match spawned {
            Ok(handle) => self.lock().push(handle),
            // No thread: released here, inline, as a plain unmount would.
            Err(e) => tracing::debug!(error = %e, "releasing the rootfs inline"),
        }
    }

    /// Waits until every released filesystem is gone (synced).
    pub(crate) fn wait(&self) {
        let handles = std::mem::take(&mut *self.lock());
        for h in handles {
            let _ = h.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A detached copy of the mount at `target` (see the module docs); `None`
/// where the kernel has no `open_tree`.
fn detached_copy(target: &Path) -> Option<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    rustix::mount::open_tree(
        rustix::fs::CWD,
        target,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .ok()
}

/// `umount(target)`, retried for about a second while busy.
fn unmount_retrying(target: &Path) -> Result<(), Errno> {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Err(Errno::EBUSY) if tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Unmounts everything mounted on `target`, top first, until it is no
/// longer a mount point; each filesystem's release (and sync) is left to
/// `releases`.
pub(crate) fn unmount_all(target: &Path, releases: &Releases) -> Result<(), String> {
    // The bound only guards against a kernel that keeps reporting success.
    for _ in 0..1024 {
        // Taken before the umount; when `target` is no mount point it is a
        // copy of the mount that contains it, whose filesystem stays in
        // use, and dropping it costs nothing.
        let copy = detached_copy(target);
        match unmount_retrying(target) {
            Ok(()) => {
                if let Some(copy) = copy {
                    releases.release(copy);
                }
            }
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(format!("unmounting {}: {e}", target.display())),
        }
    }
    Err(format!(
        "unmounting {}: still mounted after 1024 unmounts",
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mounts a tmpfs on a fresh directory; `None` without the privilege.
    fn tmpfs() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().ok()?;
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .ok()?;
        Some(dir)
    }

    fn is_mount_point(path: &Path) -> bool {
        let path = std::fs::canonicalize(path).unwrap();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == path.to_str())
    }

    #[test]
    fn unmounts_stacked_mounts_and_releases_them_in_the_background() {
        let Some(dir) = tmpfs() else {
            eprintln!("skipped: mounting needs root");
            return;
        };
        // A second mount stacked on the first.
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(dir.path().join("file"), b"data").unwrap();
        let releases = Releases::default();
        unmount_all(dir.path(), &releases).unwrap();
        assert!(!is_mount_point(dir.path()), "still mounted");
        assert!(!dir.path().join("file").exists());
        releases.wait();
        // Not a mount point any more: nothing to do, no error.
        unmount_all(dir.path(), &releases).unwrap();
        releases.wait();
    }
}
