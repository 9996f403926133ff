//! berth's content store: immutable blobs addressed by their digest, written
//! through resumable, verified ingests.
//!
//! This is containerd's `core/content` for berth. The store is split into
//! small traits by what a caller needs, composed into [`Store`]:
//!
//! - [`Provider`]: read a blob by digest ([`ReaderAt`], positional reads).
//! - [`Ingester`]: open a [`Writer`] for a *ref*, the client-chosen name of
//!   one upload (`manifest-sha256:...`, `layer-sha256:...`).
//! - [`Manager`]: [`Info`] about committed blobs, their labels, walk, delete.
//! - [`IngestManager`]: the [`Status`] of uploads in progress, and abort.
//!
//! The filesystem driver is [`local::LocalStore`]; the daemon wraps it with
//! the metadata DB for namespaces, leases and labels.
//!
//! # The life of a blob
//!
//! 1. `writer(ref, total, expected)` opens the ingest for `ref`, creating it
//!    or, if an earlier writer left it unfinished, *resuming* it: the writer
//!    starts at the ingest's current offset. Only one writer per ref exists
//!    at a time; a second one gets [`Error::Unavailable`].
//! 2. `write` appends bytes and feeds the running digest.
//! 3. `commit(size, expected, labels)` checks the size and digest and moves
//!    the data, atomically, to its address. After that the blob is immutable
//!    and readable by digest, and the ingest is gone. A mismatch fails with
//!    [`Error::FailedPrecondition`] and leaves the ingest in place, to be
//!    resumed or restarted with `truncate(0)`. If the blob exists already,
//!    commit fails with [`Error::AlreadyExists`] and drops the ingest.
//!
//! Dropping or closing a writer without committing keeps the ingest for a
//! later writer; [`IngestManager::abort`] throws it away.
//!
//! # Example
//!
//! ```
//! # fn main() -> berth_content::Result<()> {
//! # let dir = tempfile::tempdir().expect("tempdir");
//! use berth_content::local::LocalStore;
//! use berth_content::{Digest, Ingester, Labels, Manager, Provider, ReaderAt};
//!
//! let store = LocalStore::open(dir.path())?;
//! let data = b"hello, berth";
//! let digest = Digest::of(data);
//!
//! let mut w = store.writer("greeting", Some(data.len() as u64), Some(&digest))?;
//! w.write(data)?;
//! w.commit(data.len() as u64, Some(&digest), Labels::new())?;
//!
//! assert_eq!(store.info(&digest)?.size, data.len() as u64);
//! let r = store.reader_at(&digest)?;
//! let mut buf = vec![0; 5];
//! r.read_exact_at(&mut buf, 7)?;
//! assert_eq!(&buf, b"berth");
//! # Ok(())
//! # }
//! ```
//!
//! # Threads
//!
//! Every method is synchronous and does blocking file I/O; from async code,
//! call it through `spawn_blocking`. Stores are `Send + Sync`; a writer is
//! `Send` and can move between threads, but is used by one at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::SystemTime;

pub mod digest;
pub mod error;
pub mod local;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use digest::{Algorithm, Digest, Digester};
pub use error::{Error, Result};

/// Labels on a blob: string keys to string values, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// What the store knows about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's address.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed.
    pub created_at: SystemTime,
    /// When it or its labels last changed.
    pub updated_at: SystemTime,
    /// Its labels (GC references, source, ...).
    pub labels: Labels,
}

impl Info {
    /// An `Info` with only the digest set, e.g. as the argument of [`Manager::update`].
    pub fn new(digest: Digest) -> Info {
        Info {
            digest,
            size: 0,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            labels: Labels::new(),
        }
    }
}

/// The state of one ingest (an upload in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The ref the ingest was opened with.
    pub ref_: String,
    /// How many bytes have been written so far.
    pub offset: u64,
    /// The size the blob is expected to have, if the writer was told.
    pub total: Option<u64>,
    /// The digest the blob is expected to have, if the writer was told.
    pub expected: Option<Digest>,
    /// When the ingest was created.
    pub started_at: SystemTime,
    /// When data was last written.
    pub updated_at: SystemTime,
}

/// Positional read access to one blob.
///
/// Reads do not move any cursor, so one reader can serve many concurrent
/// reads. Wrap it in a [`ReadCursor`] for `std::io::Read`.
pub trait ReaderAt: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read,
    /// 0 at or past the end. Like `pread(2)`, a read may return fewer bytes.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// The blob's size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`, failing with [`Error::InvalidArgument`] if
    /// the blob ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(Error::InvalidArgument(format!(
                    "read of {} bytes at offset {offset} is past the end of a {}-byte blob",
                    buf.len(),
                    self.size()
                )));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// Reads blobs by digest.
pub trait Provider: Send + Sync {
    /// Opens the blob `digest` for reading; [`Error::NotFound`] if it is absent.
    fn reader_at(&self, digest: &Digest) -> Result<Box<dyn ReaderAt>>;
}

/// Writes blobs: one resumable [`Writer`] per ref.
pub trait Ingester: Send + Sync {
    /// Opens, or resumes, the ingest named `ref_`.
    ///
    /// `total` is the blob's size if known, `expected` its digest if known
    /// (the writer then hashes with that digest's algorithm, and `commit`
    /// checks against it when given no digest of its own).
    ///
    /// If an ingest for `ref_` exists, the writer continues it at its current
    /// offset, unless its recorded total or expected digest differ from the
    /// ones given: then it is a different upload and starts again from zero.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty ref,
    /// [`Error::AlreadyExists`] if `expected` is already in the store,
    /// [`Error::Unavailable`] if another writer holds `ref_`.
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn Writer>>;
}

/// Inspects, relabels, lists and removes committed blobs.
pub trait Manager: Send + Sync {
    /// The [`Info`] of blob `digest`; [`Error::NotFound`] if it is absent.
    fn info(&self, digest: &Digest) -> Result<Info>;

    /// Changes the mutable fields of blob `info.digest`: only its labels.
    ///
    /// With no `fieldpaths`, or with `"labels"`, the labels are replaced by
    /// `info.labels`. A path `"labels.KEY"` sets that one label from
    /// `info.labels`, or removes it if it is absent there or empty. Any other
    /// path is [`Error::InvalidArgument`]. Returns the updated `Info`.
    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info>;

    /// Calls `f` with the `Info` of every blob, in no particular order; stops
    /// at, and returns, the first error `f` returns. Filtering is the
    /// caller's (the daemon applies containerd's filter language).
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()>;

    /// Removes blob `digest`; [`Error::NotFound`] if it is absent. Open
    /// readers keep reading the removed data.
    fn delete(&self, digest: &Digest) -> Result<()>;

    /// The `Info` of every blob (a [`Manager::walk`] collected).
    fn list(&self) -> Result<Vec<Info>> {
        let mut all = Vec::new();
        self.walk(&mut |info| {
            all.push(info);
            Ok(())
        })?;
        Ok(all)
    }
}

/// Inspects and cancels ingests.
pub trait IngestManager: Send + Sync {
    /// The status of the ingest `ref_`; [`Error::NotFound`] if there is none.
    fn status(&self, ref_: &str) -> Result<Status>;

    /// The status of every ingest, in no particular order.
    fn list_statuses(&self) -> Result<Vec<Status>>;

    /// Removes the ingest `ref_` and its data, even while a writer holds it
    /// (that writer's commit then fails); [`Error::NotFound`] if there is none.
    fn abort(&self, ref_: &str) -> Result<()>;
}

/// A complete content store.
pub trait Store: Provider + Ingester + Manager + IngestManager {}

impl<T: Provider + Ingester + Manager + IngestManager + ?Sized> Store for T {}

/// One open ingest: appends data, tracks its digest, commits it as a blob.
///
/// Holding a writer holds the lock on its ref. Dropping it, or
/// [`Writer::close`], releases the lock and keeps the data written so far for
/// a later writer to resume. [`Writer::commit`] consumes the writer whatever
/// its outcome.
pub trait Writer: Send + fmt::Debug {
    /// Appends all of `data` to the ingest.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// The digest of the data written so far.
    fn digest(&self) -> Digest;

    /// The ingest's status: ref, offset, total, expected, times.
    fn status(&self) -> Result<Status>;

    /// Cuts the ingest back to `size` bytes; only 0 (start over) is supported.
    fn truncate(&mut self, size: u64) -> Result<()>;

    /// Makes the data the blob it claims to be.
    ///
    /// `size` is checked against the bytes written unless it is 0; the digest
    /// against `expected`, or if that is `None` against the writer's own
    /// expected digest, if any. Errors: [`Error::FailedPrecondition`] on a
    /// mismatch (`unexpected commit digest sha256:..., expected sha256:...`),
    /// leaving the ingest to resume; [`Error::AlreadyExists`] if the blob is
    /// in the store already, removing the ingest. `labels` are set on the new
    /// blob.
    fn commit(self: Box<Self>, size: u64, expected: Option<&Digest>, labels: Labels) -> Result<()>;

    /// Flushes the data to disk and releases the ref, keeping the ingest.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Lets a writer be the target of `std::io::copy` and friends.
impl io::Write for dyn Writer + '_ {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Writer::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `std::io::Read` + `Seek` over a [`ReaderAt`], starting at offset 0.
#[derive(Debug)]
pub struct ReadCursor<'a> {
    reader: &'a dyn ReaderAt,
    offset: u64,
}

impl<'a> ReadCursor<'a> {
    /// A cursor at the start of `reader`.
    pub fn new(reader: &'a dyn ReaderAt) -> ReadCursor<'a> {
        ReadCursor { reader, offset: 0 }
    }
}

impl io::Read for ReadCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .reader
            .read_at(buf, self.offset)
            .map_err(io::Error::other)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl io::Seek for ReadCursor<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.reader.size().checked_add_signed(d),
            io::SeekFrom::Current(d) => self.offset.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            ));
        };
        self.offset = target;
        Ok(target)
    }
}

/// Reads the whole blob `digest` into memory (for manifests and configs, not layers).
pub fn read_blob(provider: &dyn Provider, digest: &Digest) -> Result<Vec<u8>> {
    let reader = provider.reader_at(digest)?;
    let size = usize::try_from(reader.size()).map_err(|_| {
        Error::InvalidArgument(format!("blob {digest} is too large to read into memory"))
    })?;
    let mut buf = vec![0; size];
    reader.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Stores `data` as blob `expected` through ingest `ref_`, like containerd's
/// `content.WriteBlob`.
///
/// Succeeds if the blob is already present. Resumes an unfinished ingest of
/// the same ref, and starts over once if the resumed data turns out not to
/// be a prefix of `data`.
pub fn write_blob(
    ingester: &dyn Ingester,
    ref_: &str,
    data: &[u8],
    expected: &Digest,
    labels: Labels,
) -> Result<()> {
    let size = data.len() as u64;
    let mut restart = false;
    loop {
        let mut w = match ingester.writer(ref_, Some(size), Some(expected)) {
            Err(Error::AlreadyExists(_)) => return Ok(()),
            other => other?,
        };
        let offset = w.status()?.offset;
        let start = if restart || offset > size {
            w.truncate(0)?;
            0
        } else {
            offset
        };
        // `start <= size == data.len()`, so this never cuts past the end.
        let skip = usize::try_from(start).map_or(data.len(), |s| s.min(data.len()));
        w.write(&data[skip..])?;
        match w.commit(size, Some(expected), labels.clone()) {
            Ok(()) | Err(Error::AlreadyExists(_)) => return Ok(()),
            Err(Error::FailedPrecondition(msg)) if start > 0 && !restart => {
                tracing::info!(ref_, %msg, "resumed ingest did not match, starting over");
                restart = true;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    /// A blob in memory that returns at most 3 bytes per read, like a short `pread`.
    #[derive(Debug)]
    struct Short(Vec<u8>);

    impl ReaderAt for Short {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
            let start = usize::try_from(offset).unwrap().min(self.0.len());
            let n = buf.len().min(3).min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }

        fn size(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[test]
    fn read_exact_at_loops_over_short_reads() {
        let r = Short(b"0123456789".to_vec());
        let mut buf = [0; 7];
        r.read_exact_at(&mut buf, 2).unwrap();
        assert_eq!(&buf, b"2345678");
        let err = r.read_exact_at(&mut buf, 4).unwrap_err();
        assert!(
            err.to_string().contains("past the end of a 10-byte blob"),
            "{err}"
        );
    }

    #[test]
    fn read_cursor_reads_and_seeks() {
        let r = Short(b"0123456789".to_vec());
        let mut c = ReadCursor::new(&r);
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        assert_eq!(all, "0123456789");
        assert_eq!(c.seek(SeekFrom::Start(3)).unwrap(), 3);
        assert_eq!(c.seek(SeekFrom::Current(2)).unwrap(), 5);
        assert_eq!(c.seek(SeekFrom::End(-1)).unwrap(), 9);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"9");
        assert!(c.seek(SeekFrom::End(-11)).is_err());
    }

    #[test]
    fn info_new_sets_only_the_digest() {
        let info = Info::new(Digest::of(b""));
        assert_eq!(info.size, 0);
        assert!(info.labels.is_empty());
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
