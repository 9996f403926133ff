//! One berthd per root and state directory.
//!
//! Two daemons on one root would share the databases and reconnect to each
//! other's shims. containerd relies on bolt's file lock (a second daemon
//! waits on it); berthd takes an explicit lock first and refuses to start,
//! naming the holder.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// The lock file's name in root and in state.
pub(crate) const LOCK_FILE: &str = "berthd.lock";

/// A held lock: released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Flock<std::fs::File>,
}

/// Locks `dir` for this daemon, writing its pid into the lock file;
/// [`Error::InUse`] if another process holds it.
pub(crate) fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Error::InUse {
                dir: dir.to_path_buf(),
                lock: path,
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err((_, errno)) => return Err(io(errno.into())),
    };
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}
