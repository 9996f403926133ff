//! The local store's writer: appends to `ingest/<hash>/data`, hashing as it goes.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::hash::RunningHash;
use super::lock::{IngestLock, same_file};
use super::writeback;
use super::{Inner, files};
use crate::digest::{Algorithm, Digest, Digester};
use crate::error::{Error, Result};
use crate::{Labels, Status, Writer};

/// Size of the buffer used to re-hash data already on disk.
const REHASH_BUF: usize = 1 << 20;

/// An open ingest of a [`LocalStore`](super::LocalStore); holds its ref's lock.
#[derive(Debug)]
pub struct LocalWriter {
    pub(super) store: Arc<Inner>,
    pub(super) lock: IngestLock,
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) ref_: String,
    pub(super) offset: u64,
    pub(super) total: Option<u64>,
    pub(super) expected: Option<Digest>,
    pub(super) hash: RunningHash,
    /// Offset up to which write-out to disk has been started.
    pub(super) written_back: u64,
    pub(super) started_at: SystemTime,
    pub(super) updated_at: SystemTime,
    /// Set once committed or closed: `Drop` then has nothing left to do.
    pub(super) done: bool,
    /// Set when a failed write left digest and data out of step.
    pub(super) poisoned: bool,
}

impl LocalWriter {
    fn data_path(&self) -> PathBuf {
        self.dir.join(files::DATA)
    }

    /// Commits the ingest as a blob; see [`Writer::commit`].
    pub fn commit(mut self, size: u64, expected: Option<&Digest>, labels: Labels) -> Result<()> {
        self.done = true;
        let data = self.data_path();
        // Let the disk take the last few megabytes while the hash catches up;
        // the fsync below then has little left to wait for.
        if self.offset > self.written_back {
            writeback::start(
                &self.file,
                self.written_back,
                self.offset - self.written_back,
            );
        }
        let actual = self.file.metadata().map_err(|e| Error::io(&data, e))?.len();
        if self.poisoned || actual != self.offset {
            return Err(Error::FailedPrecondition(format!(
                "ingest {:?} holds {actual} bytes but its writer accounts for {}; \
                 reopen the ingest to resume from what it holds",
                self.ref_, self.offset
            )));
        }
        if size > 0 && size != actual {
            return Err(Error::FailedPrecondition(format!(
                "unexpected commit size {actual}, expected {size}"
            )));
        }

        let expected = expected.or(self.expected.as_ref());
        let digest = match expected {
            // The writer hashed with another algorithm than the one asked for
            // now: hash the data again.
            Some(e) if e.algorithm() != self.hash.algorithm() => {
                hash_file(&mut self.file, &data, e.algorithm())?.0.digest()
            }
            _ => self.hash.digest(),
        };
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::FailedPrecondition(format!(
                "unexpected commit digest {digest}, expected {expected}"
            )));
        }

        let target = self.store.blob_path(&digest);
        self.store.ensure_blob_dir(digest.algorithm())?;
        if fs::symlink_metadata(&target).is_ok() {
            self.remove_ingest();
            return Err(Error::AlreadyExists(format!("content {digest}")));
        }

        // Stamp the commit time (Info::created_at) on the file.
        if let Err(e) = self.file.set_modified(SystemTime::now()) {
            tracing::warn!(ref_ = %self.ref_, error = %e, "cannot set blob commit time");
        }
        self.file.sync_all().map_err(|e| Error::io(&data, e))?;

        // An abort may have removed our ingest, and a new writer in another
        // process may have created a fresh one at the same path: never commit
        // its data under our digest.
        if !self.lock.is_current()? || !same_file(&self.file, &data)? {
            return Err(Error::NotFound(format!(
                "ingest ref {:?} (aborted while being written)",
                self.ref_
            )));
        }
        fs::rename(&data, &target).map_err(|e| Error::io(&data, e))?;
        // Blobs are immutable: drop the write bits, as containerd does. Only
        // now, so that an ingest left by a failed commit stays writable.
        match self.file.metadata() {
            Ok(m) => {
                let mode = m.permissions().mode() & 0o7777 & !0o333;
                if let Err(e) = self.file.set_permissions(fs::Permissions::from_mode(mode)) {
                    tracing::warn!(%digest, error = %e, "cannot make blob read-only");
                }
            }
            Err(e) => tracing::warn!(%digest, error = %e, "cannot stat blob"),
        }
        // Make the rename (and the mode) durable.
        if let Some(dir) = target.parent() {
            files::sync_dir(dir)?;
        }
        tracing::debug!(ref_ = %self.ref_, %digest, size = actual, "committed blob");

        if !labels.is_empty()
            && let Err(e) = self.store.set_labels(&digest, &labels)
        {
            tracing::error!(%digest, error = %e, "committed blob but cannot store its labels");
        }
        self.remove_ingest();
        Ok(())
    }

    /// Flushes the data and releases the ref; see [`Writer::close`].
    pub fn close(mut self) -> Result<()> {
        self.done = true;
        let data = self.data_path();
        self.file.sync_data().map_err(|e| Error::io(&data, e))?;
        files::write_timestamp(&self.dir.join(files::UPDATED_AT), self.updated_at)
    }

    fn remove_ingest(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(ref_ = %self.ref_, path = %self.dir.display(), error = %e,
                "cannot remove ingest directory");
        }
    }
}

impl Writer for LocalWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        // Hash first: on a large blob this hands the bytes to the hashing
        // thread, which then works while the file is written.
        self.hash.update(data);
        if let Err(e) = self.file.write_all(data) {
            // Part of `data` may have reached the file: rebuild offset and
            // digest from what it holds, so they stay true to the data.
            let data_path = self.data_path();
            match hash_file(&mut self.file, &data_path, self.hash.algorithm()) {
                Ok((digester, offset)) => {
                    self.hash = RunningHash::new(digester, offset);
                    self.offset = offset;
                }
                Err(again) => {
                    // Digest and data may now disagree: never commit them.
                    tracing::warn!(ref_ = %self.ref_, error = %again,
                        "cannot re-read ingest after a failed write");
                    self.poisoned = true;
                }
            }
            return Err(Error::io(data_path, e));
        }
        self.offset += data.len() as u64;
        if self.offset - self.written_back >= writeback::STEP {
            writeback::start(
                &self.file,
                self.written_back,
                self.offset - self.written_back,
            );
            self.written_back = self.offset;
        }
        self.updated_at = SystemTime::now();
        Ok(())
    }

    fn digest(&self) -> Digest {
        self.hash.digest()
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            ref_: self.ref_.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        })
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        if size != 0 {
            return Err(Error::InvalidArgument(format!(
                "truncate ingest {:?} to {size} bytes: only 0 is supported",
                self.ref_
            )));
        }
        let data = self.data_path();
        self.file.set_len(0).map_err(|e| Error::io(&data, e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&data, e))?;
        self.hash.reset();
        self.offset = 0;
        self.written_back = 0;
        self.updated_at = SystemTime::now();
        Ok(())
    }

    fn commit(self: Box<Self>, size: u64, expected: Option<&Digest>, labels: Labels) -> Result<()> {
        LocalWriter::commit(*self, size, expected, labels)
    }

    fn close(self: Box<Self>) -> Result<()> {
        LocalWriter::close(*self)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped mid-ingest: keep the data for a later writer (no fsync: a
        // resumed writer re-hashes whatever the disk holds).
        if let Err(e) = files::write_timestamp(&self.dir.join(files::UPDATED_AT), self.updated_at) {
            tracing::debug!(ref_ = %self.ref_, error = %e, "cannot record ingest update time");
        }
    }
}

/// Hashes `file` from its start to its end, leaving its position at the end.
/// Returns the running hasher and the number of bytes hashed.
pub(super) fn hash_file(file: &mut File, path: &Path, alg: Algorithm) -> Result<(Digester, u64)> {
    let mut digester = alg.digester();
    let mut buf = vec![0; REHASH_BUF];
    let mut total = 0u64;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                digester.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok((digester, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;

    #[test]
    fn hash_file_hashes_from_the_start_and_ends_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..=255).cycle().take(REHASH_BUF + 17).collect();
        fs::write(&path, &bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        file.seek(SeekFrom::Start(5)).unwrap();
        let (digester, n) = hash_file(&mut file, &path, Algorithm::Sha512).unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(digester.digest(), Algorithm::Sha512.digest(&bytes));
        assert_eq!(file.stream_position().unwrap(), n);
    }

    #[test]
    fn drop_records_the_update_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut w = store.open_writer("t", None, None).unwrap();
        let updated = dir
            .path()
            .join("ingest")
            .join(Digest::of(b"t").hex())
            .join("updatedat");
        let before = fs::read_to_string(&updated).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        w.write(b"x").unwrap();
        drop(w);
        assert_ne!(fs::read_to_string(&updated).unwrap(), before);
    }

    #[test]
    fn commit_refuses_data_the_writer_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut w = store.open_writer("tampered", None, None).unwrap();
        w.write(b"abc").unwrap();
        // Someone appends behind the writer's back.
        let data = store.ingest_dir("tampered").join(files::DATA);
        fs::OpenOptions::new()
            .append(true)
            .open(&data)
            .unwrap()
            .write_all(b"def")
            .unwrap();
        let err = w.commit(0, None, Labels::new()).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
        assert!(err.to_string().contains("holds 6 bytes"), "{err}");
        // Reopened, the writer accounts for what is there.
        let w = store.open_writer("tampered", None, None).unwrap();
        assert_eq!(w.digest(), Digest::of(b"abcdef"));
    }

    #[test]
    fn commit_uses_the_writers_expected_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut w = store
            .open_writer("exp", None, Some(&Digest::of(b"right")))
            .unwrap();
        w.write(b"wrong").unwrap();
        let err = w.commit(0, None, Labels::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("expected {}", Digest::of(b"right"))),
            "{err}"
        );
    }
}
