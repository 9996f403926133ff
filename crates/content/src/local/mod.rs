//! The local content store: blobs as files under one root directory.
//!
//! # Layout
//!
//! The same as containerd's local store:
//!
//! ```text
//! <root>/blobs/<algorithm>/<hex>       committed blobs, read-only files
//! <root>/ingest/<sha256 of ref>/       one directory per ingest
//!     ref                              the ref, verbatim
//!     data                             the bytes written so far
//!     startedat, updatedat             RFC 3339 timestamps
//!     total                            expected size, if known
//!     expected                         expected digest, if known (berth only)
//!     lock                             flock(2)ed by the writer holding the ref
//! <root>/labels/<algorithm>/<hex>      labels of a blob, JSON (berth only)
//! ```
//!
//! An ingest directory is named by the hash of its ref, never by the ref
//! itself, so a ref such as `../../etc` is just a name: nothing a client
//! sends becomes a path.
//!
//! # Labels
//!
//! In the daemon, labels live in the metadata DB and never reach this store.
//! Used on its own, the store keeps them in a small JSON sidecar per blob
//! (containerd's local store keeps them only when given a label store). The
//! sidecar is written atomically; updates are serialised within a process
//! but not across processes.
//!
//! # Durability
//!
//! `commit` fsyncs the data, renames it into `blobs/` and fsyncs that
//! directory, so a committed blob survives a crash. Ingests are not synced
//! while written: after a crash a resumed writer re-hashes whatever data the
//! disk kept and continues from there.

mod hash;
mod lock;
mod reader;
mod writeback;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

pub use reader::LocalReader;
pub use writer::LocalWriter;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::{Info, IngestManager, Ingester, Labels, Manager, Provider, ReaderAt, Status, Writer};
use lock::IngestLock;

/// A content store in a directory of the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    labels: PathBuf,
    /// Serialises read-modify-write of label sidecars.
    labels_mu: Mutex<()>,
}

/// How long an ingest nobody writes to is kept (containerd's expiry of an
/// ingest that no lease holds); [`LocalStore::abort_expired`] removes older ones.
pub const INGEST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl LocalStore {
    /// Aborts every ingest last written more than `max_age` before `now`
    /// that no writer holds (a failed or abandoned download that would
    /// otherwise stay on disk for ever); returns their refs. The garbage
    /// collector calls it with [`INGEST_EXPIRY`].
    pub fn abort_expired(
        &self,
        max_age: std::time::Duration,
        now: SystemTime,
    ) -> Result<Vec<String>> {
        let dir = &self.inner.ingest;
        let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut aborted = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(Some(rec)) = read_record(&path) else {
                continue;
            };
            let age = now.duration_since(rec.updated_at).unwrap_or_default();
            if age <= max_age {
                continue;
            }
            // A writer holding it is alive, however old its last write.
            let Ok(lock) = IngestLock::try_acquire(&path, &rec.ref_) else {
                continue;
            };
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(ref_ = %rec.ref_, age = ?age, "aborted expired ingest");
                    aborted.push(rec.ref_);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(ref_ = %rec.ref_, error = %e, "cannot abort expired ingest")
                }
            }
            drop(lock);
        }
        Ok(aborted)
    }

    /// Opens the store at `root`, creating its directories if needed.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore> {
        let root = root.as_ref().to_owned();
        let inner = Inner {
            blobs: root.join("blobs"),
            ingest: root.join("ingest"),
            labels: root.join("labels"),
            root,
            labels_mu: Mutex::new(()),
        };
        for dir in [&inner.blobs, &inner.ingest] {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        tracing::debug!(root = %inner.root.display(), "opened local content store");
        Ok(LocalStore {
            inner: Arc::new(inner),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blob_path(digest)
    }

    /// The directory of the ingest for `ref_` (named by the ref's sha256).
    pub fn ingest_dir(&self, ref_: &str) -> PathBuf {
        self.inner
            .ingest
            .join(Algorithm::Sha256.digest(ref_.as_bytes()).hex())
    }

    /// Opens blob `digest` for reading, as a concrete [`LocalReader`].
    pub fn open_reader(&self, digest: &Digest) -> Result<LocalReader> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| not_found_or_io(e, &path, digest))?;
        let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        Ok(LocalReader::new(file, size, path))
    }

    /// Opens or resumes the ingest `ref_`, as a concrete [`LocalWriter`];
    /// see [`Ingester::writer`].
    pub fn open_writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<LocalWriter> {
        if ref_.is_empty() {
            return Err(Error::InvalidArgument("ref must not be empty".into()));
        }
        if let Some(expected) = expected
            && fs::symlink_metadata(self.blob_path(expected)).is_ok()
        {
            return Err(Error::AlreadyExists(format!("content {expected}")));
        }
        let dir = self.ingest_dir(ref_);
        let lock = IngestLock::acquire(&dir, ref_)?;

        match read_record(&dir) {
            Ok(Some(rec)) => match rec.conflict(ref_, total, expected) {
                None => return self.resume(lock, dir, rec, total, expected),
                Some(why) => {
                    tracing::info!(ref_, reason = %why, "not resuming ingest, starting over");
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(ref_, error = %e, "unreadable ingest, starting over");
            }
        }
        self.create_ingest(lock, dir, ref_, total, expected)
    }

    fn resume(
        &self,
        lock: IngestLock,
        dir: PathBuf,
        rec: Record,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<LocalWriter> {
        // Fill in what this writer knows and the recorded ingest did not.
        if rec.total.is_none()
            && let Some(total) = total
        {
            files::write_atomic(&dir.join(files::TOTAL), total.to_string().as_bytes())?;
        }
        if rec.expected.is_none()
            && let Some(expected) = expected
        {
            files::write_atomic(&dir.join(files::EXPECTED), expected.as_str().as_bytes())?;
        }
        let total = rec.total.or(total);
        let expected = rec.expected.or_else(|| expected.cloned());

        let data = dir.join(files::DATA);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(|e| Error::io(&data, e))?;
        // Rebuild the running hash from what is on disk (containerd does the
        // same); this also leaves the file positioned at its end.
        let alg = expected
            .as_ref()
            .map_or(Algorithm::CANONICAL, Digest::algorithm);
        let (digester, offset) = writer::hash_file(&mut file, &data, alg)?;
        tracing::debug!(ref_ = %rec.ref_, offset, "resuming ingest");
        Ok(LocalWriter {
            store: Arc::clone(&self.inner),
            lock,
            dir,
            file,
            ref_: rec.ref_,
            offset,
            total,
            expected,
            hash: hash::RunningHash::new(digester, offset),
            written_back: offset,
            started_at: rec.started_at,
            updated_at: rec.updated_at,
            done: false,
            poisoned: false,
        })
    }

    fn create_ingest(
        &self,
        lock: IngestLock,
        dir: PathBuf,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<LocalWriter> {
        // `ref` goes last: an ingest without it is incomplete and ignored,
        // and one whose `ref` was cut short by a crash belongs to no ref and
        // is started over. So these files need no atomic replacement.
        for name in [files::REF, files::TOTAL, files::EXPECTED] {
            files::remove_if_present(&dir.join(name))?;
        }
        let now = SystemTime::now();
        let stamp = humantime::format_rfc3339_nanos(now).to_string();
        files::write(&dir.join(files::STARTED_AT), stamp.as_bytes())?;
        files::write(&dir.join(files::UPDATED_AT), stamp.as_bytes())?;
        if let Some(total) = total {
            files::write(&dir.join(files::TOTAL), total.to_string().as_bytes())?;
        }
        if let Some(expected) = expected {
            files::write(&dir.join(files::EXPECTED), expected.as_str().as_bytes())?;
        }
        let data = dir.join(files::DATA);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data)
            .map_err(|e| Error::io(&data, e))?;
        files::write(&dir.join(files::REF), ref_.as_bytes())?;
        tracing::debug!(ref_, ?total, ?expected, "started ingest");

        let alg = expected.map_or(Algorithm::CANONICAL, Digest::algorithm);
        let mut hash = hash::RunningHash::new(alg.digester(), 0);
        if total.is_some_and(|t| t >= hash::PIPELINE_AFTER) {
            // Known to be large: hash on the helper thread from the start.
            hash.pipeline();
        }
        Ok(LocalWriter {
            store: Arc::clone(&self.inner),
            lock,
            dir,
            file,
            ref_: ref_.to_owned(),
            offset: 0,
            total,
            expected: expected.cloned(),
            hash,
            written_back: 0,
            started_at: now,
            updated_at: now,
            done: false,
            poisoned: false,
        })
    }

    fn info_from(&self, digest: Digest, meta: &fs::Metadata) -> Result<Info> {
        let created_at = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let (labels, labels_at) = self.inner.read_labels(&digest)?;
        Ok(Info {
            digest,
            size: meta.len(),
            created_at,
            updated_at: labels_at.map_or(created_at, |t| t.max(created_at)),
            labels,
        })
    }
}

impl Inner {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn labels_path(&self, digest: &Digest) -> PathBuf {
        self.labels
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Creates `blobs/<alg>` if missing, durably.
    fn ensure_blob_dir(&self, alg: Algorithm) -> Result<()> {
        let dir = self.blobs.join(alg.as_str());
        match fs::create_dir(&dir) {
            Ok(()) => files::sync_dir(&self.blobs),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    /// The labels of `digest` and when they were last set (none: never).
    fn read_labels(&self, digest: &Digest) -> Result<(Labels, Option<SystemTime>)> {
        let path = self.labels_path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Labels::new(), None)),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let modified = file.metadata().and_then(|m| m.modified()).ok();
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| Error::io(&path, e))?;
        let labels = serde_json::from_slice(&text)
            .map_err(|e| Error::io(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok((labels, modified))
    }

    /// Replaces the labels of `digest`.
    fn set_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        let _serialised = self
            .labels_mu
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.write_labels(digest, labels)
    }

    fn write_labels(&self, digest: &Digest, labels: &Labels) -> Result<()> {
        let path = self.labels_path(digest);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_vec(labels)
            .map_err(|e| Error::io(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        files::write_atomic(&path, &text)
    }
}

impl Provider for LocalStore {
    fn reader_at(&self, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        Ok(Box::new(self.open_reader(digest)?))
    }
}

impl Ingester for LocalStore {
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn Writer>> {
        Ok(Box::new(self.open_writer(ref_, total, expected)?))
    }
}

impl Manager for LocalStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let path = self.blob_path(digest);
        let meta = fs::metadata(&path).map_err(|e| not_found_or_io(e, &path, digest))?;
        self.info_from(digest.clone(), &meta)
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info> {
        let digest = &info.digest;
        let path = self.blob_path(digest);
        fs::metadata(&path).map_err(|e| not_found_or_io(e, &path, digest))?;

        let _serialised = self
            .inner
            .labels_mu
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let labels = if fieldpaths.is_empty() {
            info.labels.clone()
        } else {
            let mut labels = self.inner.read_labels(digest)?.0;
            for &field in fieldpaths {
                if field == "labels" {
                    labels.clone_from(&info.labels);
                } else if let Some(key) = field.strip_prefix("labels.") {
                    match info.labels.get(key) {
                        Some(value) if !value.is_empty() => {
                            labels.insert(key.to_owned(), value.clone());
                        }
                        _ => {
                            labels.remove(key);
                        }
                    }
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {field:?} field on content info {digest:?}"
                    )));
                }
            }
            labels
        };
        // Written even when empty: the sidecar's mtime is Info::updated_at.
        self.inner.write_labels(digest, &labels)?;
        drop(_serialised);
        self.info(digest)
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        for alg in Algorithm::ALL {
            let dir = self.inner.blobs.join(alg.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| Digest::from_hex(alg, hex).ok())
                else {
                    tracing::warn!(path = %entry.path().display(), "not a blob, skipped");
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted while walking.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(entry.path(), e)),
                };
                if !meta.is_file() {
                    continue;
                }
                f(self.info_from(digest, &meta)?)?;
            }
        }
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| not_found_or_io(e, &path, digest))?;
        files::remove_if_present(&self.inner.labels_path(digest))?;
        tracing::debug!(%digest, "deleted blob");
        Ok(())
    }
}

impl IngestManager for LocalStore {
    fn status(&self, ref_: &str) -> Result<Status> {
        let not_found = || Error::NotFound(format!("ingest ref {ref_:?}"));
        match read_record(&self.ingest_dir(ref_))? {
            Some(rec) if rec.ref_ == ref_ => rec.status().ok_or_else(not_found),
            _ => Err(not_found()),
        }
    }

    fn list_statuses(&self) -> Result<Vec<Status>> {
        let dir = &self.inner.ingest;
        let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            match read_record(&entry.path()) {
                Ok(Some(rec)) => all.extend(rec.status()),
                // Committed or aborted while listing, or not yet complete.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e,
                        "unreadable ingest, skipped");
                }
            }
        }
        Ok(all)
    }

    fn abort(&self, ref_: &str) -> Result<()> {
        let dir = self.ingest_dir(ref_);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::debug!(ref_, "aborted ingest");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("ingest ref {ref_:?}")))
            }
            Err(e) => Err(Error::io(&dir, e)),
        }
    }
}

/// An ingest as recorded on disk.
#[derive(Debug)]
struct Record {
    ref_: String,
    /// Size of `data`; `None` if it is missing.
    offset: Option<u64>,
    total: Option<u64>,
    expected: Option<Digest>,
    started_at: SystemTime,
    updated_at: SystemTime,
}

impl Record {
    /// Why a writer opened with these arguments cannot continue this ingest.
    fn conflict(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Option<String> {
        if self.ref_ != ref_ {
            // A corrupt ingest, or a sha256 collision between two refs.
            return Some(format!("ingest belongs to ref {:?}", self.ref_));
        }
        if let (Some(have), Some(want)) = (self.total, total)
            && have != want
        {
            return Some(format!("recorded total {have} differs from {want}"));
        }
        if let (Some(have), Some(want)) = (&self.expected, expected)
            && have != want
        {
            return Some(format!(
                "recorded expected digest {have} differs from {want}"
            ));
        }
        None
    }

    fn status(self) -> Option<Status> {
        Some(Status {
            offset: self.offset?,
            ref_: self.ref_,
            total: self.total,
            expected: self.expected,
            started_at: self.started_at,
            updated_at: self.updated_at,
        })
    }
}

/// Reads the ingest in `dir`; `None` if there is none or it is incomplete.
fn read_record(dir: &Path) -> Result<Option<Record>> {
    let Some(ref_) = files::read_optional(&dir.join(files::REF))? else {
        return Ok(None);
    };
    let data = dir.join(files::DATA);
    let data_meta = match fs::metadata(&data) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&data, e)),
    };
    let started_at = files::read_timestamp(&dir.join(files::STARTED_AT))?;
    let mut updated_at = files::read_timestamp(&dir.join(files::UPDATED_AT))?;
    // `updatedat` is written on close only; the data's mtime may be newer.
    if let Some(modified) = data_meta.as_ref().and_then(|m| m.modified().ok()) {
        updated_at = updated_at.max(modified);
    }
    let total = match files::read_optional(&dir.join(files::TOTAL))? {
        Some(text) => Some(text.trim().parse::<u64>().map_err(|e| {
            Error::io(
                dir.join(files::TOTAL),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?),
        None => None,
    };
    let expected = match files::read_optional(&dir.join(files::EXPECTED))? {
        Some(text) => Some(Digest::parse(text.trim())?),
        None => None,
    };
    Ok(Some(Record {
        ref_,
        offset: data_meta.map(|m| m.len()),
        total,
        expected,
        started_at,
        updated_at,
    }))
}

fn not_found_or_io(e: io::Error, path: &Path, digest: &Digest) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(format!("content {digest}"))
    } else {
        Error::io(path, e)
    }
}

/// Small files of the ingest layout, and how they are written.
mod files {
    use std::fs::{self, File};
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::SystemTime;

    use crate::error::{Error, Result};

    pub(super) const REF: &str = "ref";
    pub(super) const DATA: &str = "data";
    pub(super) const STARTED_AT: &str = "startedat";
    pub(super) const UPDATED_AT: &str = "updatedat";
    pub(super) const TOTAL: &str = "total";
    pub(super) const EXPECTED: &str = "expected";

    /// Writes `path`, which readers may see half-written.
    pub(super) fn write(path: &Path, contents: &[u8]) -> Result<()> {
        fs::write(path, contents).map_err(|e| Error::io(path, e))
    }

    /// Writes `path` whole or not at all: a temporary file, then rename.
    pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        let written = File::create(&tmp).and_then(|mut f| f.write_all(contents));
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        Ok(())
    }

    pub(crate) fn write_timestamp(path: &Path, t: SystemTime) -> Result<()> {
        write_atomic(
            path,
            humantime::format_rfc3339_nanos(t).to_string().as_bytes(),
        )
    }

    pub(super) fn read_timestamp(path: &Path) -> Result<SystemTime> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        humantime::parse_rfc3339(text.trim())
            .map_err(|e| Error::io(path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// The contents of `path`, or `None` if it does not exist.
    pub(super) fn read_optional(path: &Path) -> Result<Option<String>> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub(super) fn remove_if_present(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
            _ => Ok(()),
        }
    }

    /// fsyncs directory `dir`, making renames and creations in it durable.
    pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (LocalStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (LocalStore::open(dir.path()).unwrap(), dir)
    }

    #[test]
    fn open_creates_the_layout() {
        let (_store, dir) = store();
        assert!(dir.path().join("blobs").is_dir());
        assert!(dir.path().join("ingest").is_dir());
    }

    #[test]
    fn expired_ingests_are_aborted_unless_held() {
        let (store, _dir) = store();
        let mut old = store.open_writer("ns/old", None, None).unwrap();
        old.write(b"partial").unwrap();
        drop(old);
        let mut held = store.open_writer("ns/held", None, None).unwrap();
        held.write(b"partial").unwrap();
        let now = SystemTime::now();
        // Young: kept.
        assert!(store.abort_expired(INGEST_EXPIRY, now).unwrap().is_empty());
        let later = now + INGEST_EXPIRY + std::time::Duration::from_secs(60);
        assert_eq!(
            store.abort_expired(INGEST_EXPIRY, later).unwrap(),
            vec!["ns/old".to_string()]
        );
        let refs: Vec<String> = store
            .list_statuses()
            .unwrap()
            .into_iter()
            .map(|s| s.ref_)
            .collect();
        assert_eq!(refs, vec!["ns/held".to_string()]);
        drop(held);
    }

    #[test]
    fn ingest_dir_is_the_sha256_of_the_ref() {
        let (store, dir) = store();
        assert_eq!(
            store.ingest_dir("abc"),
            dir.path()
                .join("ingest/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn conflicting_arguments_are_named() {
        let rec = Record {
            ref_: "r".into(),
            offset: Some(1),
            total: Some(10),
            expected: Some(Digest::of(b"a")),
            started_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(rec.conflict("r", None, None), None);
        assert_eq!(rec.conflict("r", Some(10), Some(&Digest::of(b"a"))), None);
        assert!(
            rec.conflict("s", None, None)
                .unwrap()
                .contains("belongs to ref \"r\"")
        );
        assert!(
            rec.conflict("r", Some(11), None)
                .unwrap()
                .contains("total 10 differs from 11")
        );
        assert!(
            rec.conflict("r", None, Some(&Digest::of(b"b")))
                .unwrap()
                .contains("expected digest")
        );
    }

    #[test]
    fn ingest_without_ref_file_is_incomplete() {
        let (store, _dir) = store();
        drop(store.open_writer("half-made", None, None).unwrap());
        let dir = store.ingest_dir("half-made");
        assert!(read_record(&dir).unwrap().is_some());
        fs::remove_file(dir.join(files::REF)).unwrap();
        assert!(read_record(&dir).unwrap().is_none());
        assert!(store.status("half-made").unwrap_err().is_not_found());
        assert!(store.list_statuses().unwrap().is_empty());
    }

    #[test]
    fn other_expected_digest_starts_over() {
        let (store, _dir) = store();
        let mut w = store
            .open_writer("e", None, Some(&Digest::of(b"one")))
            .unwrap();
        w.write(b"on").unwrap();
        drop(w);
        let w = store
            .open_writer("e", None, Some(&Digest::of(b"two")))
            .unwrap();
        let status = w.status().unwrap();
        assert_eq!(status.offset, 0);
        assert_eq!(status.expected, Some(Digest::of(b"two")));
    }

    #[test]
    fn resume_fills_in_what_was_not_recorded() {
        let (store, _dir) = store();
        drop(store.open_writer("fill", None, None).unwrap());
        let digest = Digest::of(b"x");
        drop(store.open_writer("fill", Some(1), Some(&digest)).unwrap());
        let status = store.status("fill").unwrap();
        assert_eq!((status.total, status.expected), (Some(1), Some(digest)));
    }

    #[test]
    fn write_atomic_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        files::write_atomic(&path, b"one").unwrap();
        files::write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/f");
        assert!(matches!(
            files::write_atomic(&missing, b"x"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        files::write_timestamp(&path, t).unwrap();
        assert_eq!(files::read_timestamp(&path).unwrap(), t);
    }

    #[test]
    fn walk_skips_strays() {
        let (store, dir) = store();
        let digest = Digest::of(b"real");
        let mut w = store.open_writer("real", None, None).unwrap();
        w.write(b"real").unwrap();
        w.commit(0, Some(&digest), Labels::new()).unwrap();
        fs::write(dir.path().join("blobs/sha256/not-a-digest"), "x").unwrap();
        fs::create_dir_all(dir.path().join("blobs/md5")).unwrap();
        let all: Vec<Digest> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.digest)
            .collect();
        assert_eq!(all, [digest]);
    }
}
