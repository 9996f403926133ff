//! One writer per ref: an in-process lock table plus `flock(2)`.
//!
//! The table (keyed by ingest directory, shared by every `LocalStore` in the
//! process) answers quickly and says since when a ref is held, which tells a
//! dead lock (long) from contention (short), as containerd's message does.
//! The `flock` on the ingest's `lock` file excludes writers in other
//! processes, and is released by the kernel if the holder dies, so a crash
//! never leaves a ref locked.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Ingest directories locked by writers in this process, and since when.
static LOCKS: LazyLock<Mutex<HashMap<PathBuf, SystemTime>>> = LazyLock::new(Default::default);

/// How many times a locked ref is tried, with doubling sleeps from 1 ms in
/// between (about 60 ms in all), so a writer that is closing has time to go.
const ATTEMPTS: u32 = 7;

fn table() -> MutexGuard<'static, HashMap<PathBuf, SystemTime>> {
    // The table holds no invariant a panic could break midway.
    LOCKS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The exclusive right to write one ingest; released on drop.
#[derive(Debug)]
pub(crate) struct IngestLock {
    dir: PathBuf,
    file: Option<Flock<File>>,
}

impl IngestLock {
    /// Locks ingest `dir` (creating it) for `ref_`, or fails with
    /// [`Error::Unavailable`] if another writer holds it.
    pub(crate) fn acquire(dir: &Path, ref_: &str) -> Result<IngestLock> {
        let mut attempt = 0;
        loop {
            match Self::try_acquire(dir, ref_) {
                Err(Error::Unavailable(msg)) if attempt + 1 < ATTEMPTS => {
                    tracing::trace!(ref_, attempt, %msg, "ref locked, retrying");
                    thread::sleep(Duration::from_millis(1 << attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(crate) fn try_acquire(dir: &Path, ref_: &str) -> Result<IngestLock> {
        {
            let mut table = table();
            if let Some(since) = table.get(dir) {
                let held = SystemTime::now()
                    .duration_since(*since)
                    .unwrap_or_default()
                    .as_millis();
                return Err(Error::Unavailable(format!(
                    "ref {ref_} locked for {}ms (since {})",
                    held,
                    humantime::format_rfc3339_millis(*since)
                )));
            }
            table.insert(dir.to_owned(), SystemTime::now());
        }
        // From here on, dropping `lock` (on any error) clears the table entry.
        let mut lock = IngestLock {
            dir: dir.to_owned(),
            file: None,
        };
        let path = dir.join("lock");
        // A committing or aborting writer elsewhere may remove the directory
        // between our mkdir and our flock; then the file we locked is no
        // longer the one at `path`, and we start over.
        for _ in 0..3 {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(Error::Unavailable(format!(
                        "ref {ref_} locked by another process"
                    )));
                }
                Err((_, errno)) => return Err(Error::io(&path, io::Error::from(errno))),
            };
            if same_file(&file, &path)? {
                lock.file = Some(file);
                return Ok(lock);
            }
        }
        Err(Error::Unavailable(format!(
            "ref {ref_}: ingest keeps being removed while locking it"
        )))
    }

    /// Whether this lock's file is still the one in the ingest directory,
    /// i.e. the ingest was not aborted (and maybe recreated) meanwhile.
    pub(crate) fn is_current(&self) -> Result<bool> {
        match &self.file {
            Some(file) => same_file(file, &self.dir.join("lock")),
            None => Ok(false),
        }
    }
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        // Release the flock before the table entry, so a writer in this
        // process that gets past the table also gets the flock.
        drop(self.file.take());
        table().remove(&self.dir);
    }
}

/// Whether open `file` is the file at `path` (false if `path` is gone).
pub(crate) fn same_file(file: &File, path: &Path) -> Result<bool> {
    let ours = file.metadata().map_err(|e| Error::io(path, e))?;
    match fs::metadata(path) {
        Ok(theirs) => Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_process_is_unavailable_and_says_since_when() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ingest-a");
        let first = IngestLock::acquire(&dir, "a").unwrap();
        let err = IngestLock::acquire(&dir, "a").unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("ref a locked for"), "{err}");
        drop(first);
        let _again = IngestLock::acquire(&dir, "a").unwrap();
    }

    #[test]
    fn flock_held_elsewhere_is_unavailable() {
        // Another open file description holding the flock is exactly what a
        // second process looks like to flock(2).
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ingest-b");
        fs::create_dir_all(&dir).unwrap();
        let other = File::create(dir.join("lock")).unwrap();
        let other = Flock::lock(other, FlockArg::LockExclusiveNonblock).unwrap();
        let err = IngestLock::acquire(&dir, "b").unwrap_err();
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        // The failed attempt left no table entry behind.
        assert!(!table().contains_key(&dir));
        drop(other);
        let lock = IngestLock::acquire(&dir, "b").unwrap();
        assert!(lock.is_current().unwrap());
        fs::remove_dir_all(&dir).unwrap();
        assert!(!lock.is_current().unwrap());
    }
}
