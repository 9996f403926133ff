//! A redb database file that reopens itself after an I/O error.
//!
//! redb poisons a [`Database`] after any I/O error (a full disk, a
//! filesystem gone read-only): every later transaction fails with
//! [`redb::StorageError::PreviousIo`] until the database is closed and opened
//! again. A daemon must not need a restart for that, so [`RecoveringDb`]
//! does it by itself: its storage backend sees every I/O error, logs the
//! first of an episode once (saying what to do), and the next transaction
//! to begin opens the same file again. redb's recovery on open keeps every
//! committed transaction; only the one that failed is lost, and its caller
//! got the error.
//!
//! An open redb [`Database`] keeps about half a megabyte of allocator
//! state in memory whatever the file holds, so a file that may well never
//! be used (the store of a snapshotter nobody picks) can be closed with
//! [`RecoveringDb::close_until_used`]: the lock on the file stays, and the
//! next transaction opens it again.

// redb's own error types are large; this crate passes them through as redb
// does, and its callers box them in their own errors.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, DatabaseError, ReadTransaction, StorageBackend, WriteTransaction};

/// One redb file, reopened transparently after an I/O error; share it
/// behind an `Arc`.
pub struct RecoveringDb {
    file: Arc<File>,
    episode: Arc<Episode>,
    /// None while closed until used.
    current: RwLock<Option<Arc<Generation>>>,
}

/// One open [`Database`] on the file, and whether it has seen an I/O error
/// (after which redb refuses every transaction on it).
struct Generation {
    db: Database,
    failed: Arc<AtomicBool>,
}

/// What the log says about the file, and whether the current run of
/// failures was logged already.
#[derive(Debug)]
struct Episode {
    path: PathBuf,
    what: String,
    logged: AtomicBool,
    /// Unit tests: writes fail with ENOSPC while set.
    #[cfg(test)]
    full: AtomicBool,
}

impl fmt::Debug for RecoveringDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveringDb")
            .field("path", &self.episode.path)
            .finish_non_exhaustive()
    }
}

impl RecoveringDb {
    /// Opens (creating if missing) the redb file at `path`; `what` names it
    /// in log messages (e.g. `"metadata"`). The parent directory must exist.
    ///
    /// New files use redb's v3 file format, which later redb majors read
    /// without an upgrade step. Fails with
    /// [`DatabaseError::DatabaseAlreadyOpen`] if this or another process
    /// has the file open.
    pub fn open(path: impl AsRef<Path>, what: &str) -> Result<RecoveringDb, DatabaseError> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // One lock for the handle's whole life, across reopens: each
        // generation shares this file description.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                if e == rustix::io::Errno::WOULDBLOCK {
                    DatabaseError::DatabaseAlreadyOpen
                } else {
                    DatabaseError::Storage(io::Error::from(e).into())
                }
            },
        )?;
        let file = Arc::new(file);
        let episode = Arc::new(Episode {
            path,
            what: what.to_string(),
            logged: AtomicBool::new(false),
            #[cfg(test)]
            full: AtomicBool::new(false),
        });
        let first = open_generation(&file, &episode)?;
        Ok(RecoveringDb {
            file,
            episode,
            current: RwLock::new(Some(Arc::new(first))),
        })
    }

    /// Closes the database until the next transaction begins, which opens
    /// it again; the lock on the file is kept, so no other process can
    /// open it meanwhile. Waits for the transactions open now to end.
    pub fn close_until_used(&self) {
        let old = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(old);
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.episode.path
    }

    /// Begins a read transaction (reopening the file first if it failed).
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        Ok(self.generation()?.db.begin_read()?)
    }

    /// Begins the write transaction (reopening the file first if it
    /// failed), waiting while another one is open.
    pub fn begin_write(&self) -> Result<WriteTransaction, redb::Error> {
        Ok(self.generation()?.db.begin_write()?)
    }

    /// The usable generation: the current one, or a fresh one if the
    /// current one has seen an I/O error or the file was closed until used.
    fn generation(&self) -> Result<Arc<Generation>, redb::Error> {
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(current) = current.filter(|c| !c.failed.load(Ordering::Acquire)) {
            return Ok(current);
        }
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            // Another thread reopened it meanwhile.
            Some(c) if !c.failed.load(Ordering::Acquire) => return Ok(c.clone()),
            Some(_) => {}
            None => {
                let fresh = Arc::new(open_generation(&self.file, &self.episode)?);
                *slot = Some(fresh.clone());
                return Ok(fresh);
            }
        }
        // Still failing (say the disk is still full): the caller gets the
        // error and the next transaction tries again.
        let fresh = Arc::new(open_generation(&self.file, &self.episode)?);
        let old = slot.replace(fresh.clone());
        drop(slot);
        // Dropped outside the lock: it waits for the old generation's open
        // transactions, which all fail now anyway.
        drop(old);
        // Debug only: while the disk stays full this happens on every request.
        tracing::debug!(
            path = %self.episode.path.display(),
            database = %self.episode.what,
            "reopened the database after an I/O error; committed data is intact"
        );
        Ok(fresh)
    }
}

/// Opens the file as a new [`Database`] whose I/O goes through a [`Backend`].
fn open_generation(file: &Arc<File>, episode: &Arc<Episode>) -> Result<Generation, DatabaseError> {
    let failed = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicBool::new(false));
    let backend = Backend {
        file: file.clone(),
        failed: failed.clone(),
        opened: opened.clone(),
        episode: episode.clone(),
    };
    let db = Database::builder()
        .create_with_file_format_v3(true)
        .create_with_backend(backend)?;
    opened.store(true, Ordering::Release);
    Ok(Generation { db, failed })
}

/// redb's storage: the shared file, noting every I/O error.
#[derive(Debug)]
struct Backend {
    file: Arc<File>,
    failed: Arc<AtomicBool>,
    /// Set once redb's open (and any repair) is done: only a later durable
    /// commit shows that writes work again (a repair may fit in old pages).
    opened: Arc<AtomicBool>,
    episode: Arc<Episode>,
}

impl Backend {
    fn note<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.failed.store(true, Ordering::Release);
            if !self.episode.logged.swap(true, Ordering::AcqRel) {
                let advice = match e.kind() {
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                        "free space on its filesystem"
                    }
                    io::ErrorKind::ReadOnlyFilesystem => "make its filesystem writable again",
                    _ => "fix the filesystem or disk",
                };
                tracing::error!(
                    path = %self.episode.path.display(),
                    database = %self.episode.what,
                    error = %e,
                    "I/O error on the {} database: requests that write to it fail until you {advice}; \
                     no restart is needed, it is reopened by itself once writes succeed again",
                    self.episode.what
                );
            }
        }
        result
    }
}

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        self.note(self.file.metadata().map(|m| m.len()))
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.note(self.file.read_exact_at(&mut buf, offset))?;
        Ok(buf)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.note(self.file.set_len(len))
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.note(self.file.sync_data())?;
        // A durable commit: whatever failed before works again.
        if self.opened.load(Ordering::Acquire) && self.episode.logged.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                path = %self.episode.path.display(),
                database = %self.episode.what,
                "database writes succeed again"
            );
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if self.episode.full.load(Ordering::Acquire) {
            return self.note(Err(io::Error::from_raw_os_error(28)));
        }
        self.note(self.file.write_all_at(data, offset))
    }
}

/// Whether `e` means the disk (or a quota) is full: callers report it as
/// "resource exhausted".
pub fn is_storage_full(e: &redb::Error) -> bool {
    let io = match e {
        redb::Error::Io(io) => io,
        _ => return false,
    };
    matches!(
        io.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use redb::TableDefinition;

    use super::*;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(db: &RecoveringDb, k: &str, v: u64) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(T)?.insert(k, v)?;
        txn.commit()?;
        Ok(())
    }

    fn get(db: &RecoveringDb, k: &str) -> Option<u64> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        t.get(k).unwrap().map(|v| v.value())
    }

    #[test]
    fn a_second_open_of_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let _db = RecoveringDb::open(&path, "test").unwrap();
        assert!(matches!(
            RecoveringDb::open(&path, "test"),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
    }

    #[test]
    fn closed_until_used_keeps_data_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = RecoveringDb::open(&path, "test").unwrap();
        put(&db, "a", 1).unwrap();
        db.close_until_used();
        assert!(db.current.read().unwrap().is_none());
        // Still locked while closed.
        assert!(matches!(
            RecoveringDb::open(&path, "test"),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
        // The next transaction opens it again, with what was committed.
        assert_eq!(get(&db, "a"), Some(1));
        put(&db, "b", 2).unwrap();
        db.close_until_used();
        db.close_until_used();
        assert_eq!(get(&db, "b"), Some(2));
    }

    #[test]
    fn reopens_after_an_io_error_keeping_committed_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = RecoveringDb::open(dir.path().join("db.redb"), "test").unwrap();
        put(&db, "a", 1).unwrap();
        db.episode.full.store(true, Ordering::Release);
        let err = put(&db, "b", 2).unwrap_err();
        assert!(is_storage_full(&err), "{err:?}");
        assert!(db.episode.logged.load(Ordering::Acquire));
        // Still full: failing again (the reopen itself fails or its commit
        // does) is fine; nothing was committed.
        assert!(put(&db, "b", 2).is_err());
        db.episode.full.store(false, Ordering::Release);
        // Space is back: the next transaction runs on a reopened database.
        put(&db, "b", 2).unwrap();
        assert_eq!(get(&db, "a"), Some(1));
        assert_eq!(get(&db, "b"), Some(2));
        assert!(!db.episode.logged.load(Ordering::Acquire));
    }

    #[test]
    fn storage_full_is_recognised() {
        let e = redb::Error::Io(io::Error::from_raw_os_error(28));
        assert!(is_storage_full(&e));
        assert!(!is_storage_full(&redb::Error::PreviousIo));
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
