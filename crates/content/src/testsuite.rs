//! The conformance suite every content store driver passes (feature `testsuite`).
//!
//! Each function checks one behaviour of the [`Store`] contract on an empty
//! store. A driver runs them all from its integration test with
//! [`content_suite!`](crate::content_suite):
//!
//! ```no_run
//! berth_content::content_suite!(|| {
//!     let dir = tempfile::tempdir().unwrap();
//!     (berth_content::local::LocalStore::open(dir.path()).unwrap(), dir)
//! });
//! ```
//!
//! The factory returns the store and a guard kept alive for the test (a
//! temporary directory, say). The functions panic on failure, like tests.

// The suite asserts like a test does.
#![allow(clippy::unwrap_used)]

use std::io;

use crate::{
    Algorithm, Digest, Error, Info, Labels, ReadCursor, Store, Writer, read_blob, write_blob,
};

/// Expands to a `content_suite` module with one `#[test]` per suite function,
/// each on a fresh store from `$factory` (a closure returning `(store, guard)`).
#[macro_export]
macro_rules! content_suite {
    ($factory:expr) => {
        $crate::content_suite!(@tests $factory;
            round_trip, zero_length_blob, commit_digest_mismatch_keeps_ingest,
            commit_size_mismatch_keeps_ingest, resume_after_drop, resume_after_close,
            one_writer_per_ref, abort_removes_ingest, delete, walk, already_exists,
            sha512, commit_rehashes_for_other_algorithm, labels, statuses, empty_ref_rejected,
            truncate_only_to_zero, changed_total_starts_over, write_blob_resumes,
            io_adapters, large_blob);
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        mod content_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let (store, _guard) = ($factory)();
                    $crate::testsuite::$name(&store);
                }
            )*
        }
    };
}

/// Deterministic test data of `len` bytes, different for each `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn write_all(store: &dyn Store, ref_: &str, bytes: &[u8]) -> Box<dyn Writer> {
    let mut w = store.writer(ref_, Some(bytes.len() as u64), None).unwrap();
    for chunk in bytes.chunks(4096) {
        w.write(chunk).unwrap();
    }
    w
}

fn commit(store: &dyn Store, ref_: &str, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let w = write_all(store, ref_, bytes);
    assert_eq!(w.digest(), digest);
    w.commit(bytes.len() as u64, Some(&digest), Labels::new())
        .unwrap();
    digest
}

/// Write in pieces, commit, then read back by digest: info, reads, no ingest left.
pub fn round_trip(store: &dyn Store) {
    let bytes = data(100_000, 1);
    let digest = Digest::of(&bytes);
    let mut w = store
        .writer("round-trip", Some(bytes.len() as u64), Some(&digest))
        .unwrap();
    w.write(&bytes[..1000]).unwrap();
    assert_eq!(w.digest(), Digest::of(&bytes[..1000]));
    w.write(&bytes[1000..]).unwrap();
    let status = w.status().unwrap();
    assert_eq!(status.ref_, "round-trip");
    assert_eq!(status.offset, bytes.len() as u64);
    assert_eq!(status.total, Some(bytes.len() as u64));
    assert_eq!(status.expected.as_ref(), Some(&digest));
    w.commit(bytes.len() as u64, Some(&digest), Labels::new())
        .unwrap();

    let info = store.info(&digest).unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(info.size, bytes.len() as u64);
    assert!(info.labels.is_empty());
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);

    let r = store.reader_at(&digest).unwrap();
    assert_eq!(r.size(), bytes.len() as u64);
    let mut buf = vec![0; 10];
    r.read_exact_at(&mut buf, 5000).unwrap();
    assert_eq!(buf, bytes[5000..5010]);
    assert_eq!(r.read_at(&mut buf, bytes.len() as u64).unwrap(), 0);
    let err = r
        .read_exact_at(&mut buf, bytes.len() as u64 - 5)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // The ingest is gone once committed.
    assert!(store.status("round-trip").unwrap_err().is_not_found());
    assert!(store.list_statuses().unwrap().is_empty());
}

/// The empty blob can be stored and read.
pub fn zero_length_blob(store: &dyn Store) {
    let digest = commit(store, "empty", b"");
    assert_eq!(store.info(&digest).unwrap().size, 0);
    assert_eq!(read_blob(store, &digest).unwrap(), b"");
}

/// A wrong digest fails the commit, stores nothing, and leaves the ingest to resume or restart.
pub fn commit_digest_mismatch_keeps_ingest(store: &dyn Store) {
    let bytes = data(10_000, 2);
    let wrong = Digest::of(b"something else");
    let w = write_all(store, "mismatch", &bytes);
    let err = w.commit(0, Some(&wrong), Labels::new()).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let want = format!(
        "unexpected commit digest {}, expected {wrong}",
        Digest::of(&bytes)
    );
    assert!(err.to_string().contains(&want), "{err}");

    // Nothing committed, under either digest.
    assert!(store.info(&wrong).unwrap_err().is_not_found());
    assert!(store.info(&Digest::of(&bytes)).unwrap_err().is_not_found());
    assert!(store.list().unwrap().is_empty());

    // The ingest is still there and resumes where it was.
    assert_eq!(store.status("mismatch").unwrap().offset, bytes.len() as u64);
    let mut w = store.writer("mismatch", None, None).unwrap();
    assert_eq!(w.status().unwrap().offset, bytes.len() as u64);
    assert_eq!(w.digest(), Digest::of(&bytes));
    // Start over with the right data.
    let good = data(5_000, 3);
    w.truncate(0).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    w.write(&good).unwrap();
    w.commit(good.len() as u64, Some(&Digest::of(&good)), Labels::new())
        .unwrap();
    assert_eq!(read_blob(store, &Digest::of(&good)).unwrap(), good);
}

/// A wrong size fails the commit and leaves the ingest to resume.
pub fn commit_size_mismatch_keeps_ingest(store: &dyn Store) {
    let bytes = data(1000, 4);
    let digest = Digest::of(&bytes);
    let w = write_all(store, "size", &bytes);
    let err = w.commit(999, Some(&digest), Labels::new()).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("unexpected commit size 1000, expected 999"),
        "{err}"
    );
    assert!(store.info(&digest).unwrap_err().is_not_found());
    let w = store.writer("size", None, None).unwrap();
    w.commit(1000, Some(&digest), Labels::new()).unwrap();
    assert!(store.info(&digest).is_ok());
}

/// Writes half a blob, drops or closes the writer, resumes and commits.
fn resume(store: &dyn Store, close: bool) {
    let bytes = data(300_000, 5);
    let digest = Digest::of(&bytes);
    let half = bytes.len() / 2;
    let mut w = store
        .writer("resume", Some(bytes.len() as u64), Some(&digest))
        .unwrap();
    w.write(&bytes[..half]).unwrap();
    if close {
        w.close().unwrap();
    } else {
        drop(w);
    }

    let status = store.status("resume").unwrap();
    assert_eq!(status.offset, half as u64);
    assert_eq!(status.total, Some(bytes.len() as u64));

    // Reopened without arguments: the ingest remembers total and expected.
    let mut w = store.writer("resume", None, None).unwrap();
    let status = w.status().unwrap();
    assert_eq!(status.offset, half as u64);
    assert_eq!(status.total, Some(bytes.len() as u64));
    assert_eq!(status.expected.as_ref(), Some(&digest));
    assert_eq!(w.digest(), Digest::of(&bytes[..half]));
    w.write(&bytes[half..]).unwrap();
    assert_eq!(w.digest(), digest);
    w.commit(bytes.len() as u64, None, Labels::new()).unwrap();
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);
}

/// A writer dropped midway leaves an ingest that a new writer continues.
pub fn resume_after_drop(store: &dyn Store) {
    resume(store, false);
}

/// A writer closed midway leaves an ingest that a new writer continues.
pub fn resume_after_close(store: &dyn Store) {
    resume(store, true);
}

/// A second writer on a held ref is `Unavailable`; other refs are not affected.
pub fn one_writer_per_ref(store: &dyn Store) {
    let mut first = store.writer("busy", None, None).unwrap();
    first.write(b"abc").unwrap();
    let err = store.writer("busy", None, None).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("ref busy locked"), "{err}");
    // Other refs are unaffected.
    drop(store.writer("other", None, None).unwrap());
    drop(first);
    let w = store.writer("busy", None, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 3);
}

/// `abort` removes the ingest and its data; a second abort is `NotFound`.
pub fn abort_removes_ingest(store: &dyn Store) {
    let mut w = store.writer("aborted", Some(10), None).unwrap();
    w.write(b"01234").unwrap();
    drop(w);
    store.abort("aborted").unwrap();
    assert!(store.status("aborted").unwrap_err().is_not_found());
    assert!(store.list_statuses().unwrap().is_empty());
    assert!(store.abort("aborted").unwrap_err().is_not_found());
    let w = store.writer("aborted", None, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    assert_eq!(w.status().unwrap().total, None);
}

/// `delete` removes a blob; a second delete is `NotFound`; the blob can be stored again.
pub fn delete(store: &dyn Store) {
    let digest = commit(store, "to-delete", b"short-lived");
    store.delete(&digest).unwrap();
    assert!(store.info(&digest).unwrap_err().is_not_found());
    assert!(store.reader_at(&digest).unwrap_err().is_not_found());
    assert!(store.delete(&digest).unwrap_err().is_not_found());
    assert!(store.list().unwrap().is_empty());
    // And it can be stored again.
    assert_eq!(commit(store, "again", b"short-lived"), digest);
}

/// `walk` visits every blob (not ingests) and stops at the callback's first error.
pub fn walk(store: &dyn Store) {
    let mut want: Vec<Digest> = (0..5)
        .map(|i| commit(store, &format!("walk-{i}"), &data(100 + i, i as u64)))
        .collect();
    let w = store.writer("in-progress", None, None).unwrap();
    let mut seen: Vec<Digest> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "ingests are not blobs");
    drop(w);

    for info in store.list().unwrap() {
        assert_eq!(info.size, store.info(&info.digest).unwrap().size);
    }

    // The callback's error stops the walk and comes back.
    let mut calls = 0;
    let err = store
        .walk(&mut |_| {
            calls += 1;
            Err(Error::FailedPrecondition("stop".into()))
        })
        .unwrap_err();
    assert_eq!(calls, 1);
    assert!(err.to_string().contains("stop"), "{err}");
}

/// Committing, or opening a writer for, a present blob is `AlreadyExists`.
pub fn already_exists(store: &dyn Store) {
    let bytes = b"twice".as_slice();
    let digest = commit(store, "first", bytes);

    // Without an expected digest the writer opens; commit finds the blob.
    let mut w = store.writer("second", None, None).unwrap();
    w.write(bytes).unwrap();
    let err = w.commit(0, None, Labels::new()).unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert!(store.status("second").unwrap_err().is_not_found());

    // With one, the writer itself refuses.
    let err = store.writer("third", None, Some(&digest)).unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert!(store.status("third").unwrap_err().is_not_found());
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);
}

/// Blobs can be addressed by sha512.
pub fn sha512(store: &dyn Store) {
    let bytes = data(70_000, 6);
    let digest = Algorithm::Sha512.digest(&bytes);
    let mut w = store.writer("sha512", None, Some(&digest)).unwrap();
    w.write(&bytes).unwrap();
    assert_eq!(w.digest(), digest);
    w.commit(0, None, Labels::new()).unwrap();
    let info = store.info(&digest).unwrap();
    assert_eq!(info.digest.algorithm(), Algorithm::Sha512);
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);
    assert!(store.list().unwrap().iter().any(|i| i.digest == digest));
}

/// A commit may ask for another algorithm than the writer hashed with.
pub fn commit_rehashes_for_other_algorithm(store: &dyn Store) {
    let bytes = data(10_000, 7);
    let w = write_all(store, "late-sha512", &bytes);
    let digest = Algorithm::Sha512.digest(&bytes);
    w.commit(0, Some(&digest), Labels::new()).unwrap();
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);
}

/// Labels set at commit, changed by `update` (whole or per key), and gone with the blob.
pub fn labels(store: &dyn Store) {
    let bytes = b"labelled";
    let digest = Digest::of(bytes);
    let mut w = store.writer("labels", None, None).unwrap();
    w.write(bytes).unwrap();
    let labels: Labels = [("a", "1"), ("b", "2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    w.commit(0, Some(&digest), labels.clone()).unwrap();
    let info = store.info(&digest).unwrap();
    assert_eq!(info.labels, labels);
    assert!(info.updated_at >= info.created_at);

    // One label set, one removed; the rest untouched.
    let mut change = Info::new(digest.clone());
    change.labels.insert("c".into(), "3".into());
    let info = store.update(change, &["labels.c", "labels.a"]).unwrap();
    let keys: Vec<&str> = info.labels.keys().map(String::as_str).collect();
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(store.info(&digest).unwrap().labels, info.labels);

    // "labels" replaces them all; so do no field paths.
    let mut change = Info::new(digest.clone());
    change.labels.insert("only".into(), "x".into());
    let info = store.update(change.clone(), &["labels"]).unwrap();
    assert_eq!(info.labels, change.labels);
    let info = store.update(Info::new(digest.clone()), &[]).unwrap();
    assert!(info.labels.is_empty());
    assert!(store.info(&digest).unwrap().labels.is_empty());

    let err = store
        .update(Info::new(digest.clone()), &["size"])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = store
        .update(Info::new(Digest::of(b"absent")), &[])
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    store.delete(&digest).unwrap();
    assert_eq!(commit(store, "relabel", bytes), digest);
    assert!(
        store.info(&digest).unwrap().labels.is_empty(),
        "labels die with the blob"
    );
}

/// `status` and `list_statuses` report ref, offset, total, expected and times.
pub fn statuses(store: &dyn Store) {
    let expected = Digest::of(b"xyz");
    let mut a = store.writer("ref-a", Some(3), Some(&expected)).unwrap();
    a.write(b"xy").unwrap();
    let b = store.writer("ref-b", None, None).unwrap();
    drop(a);

    let mut all = store.list_statuses().unwrap();
    all.sort_by(|x, y| x.ref_.cmp(&y.ref_));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].ref_, "ref-a");
    assert_eq!(all[0].offset, 2);
    assert_eq!(all[0].total, Some(3));
    assert_eq!(all[0].expected.as_ref(), Some(&expected));
    assert!(all[0].updated_at >= all[0].started_at);
    assert_eq!(all[1].ref_, "ref-b");
    assert_eq!(
        (all[1].offset, all[1].total, &all[1].expected),
        (0, None, &None)
    );
    assert_eq!(store.status("ref-a").unwrap(), all[0]);
    assert!(store.status("ref-c").unwrap_err().is_not_found());
    drop(b);
}

/// An empty ref is `InvalidArgument`.
pub fn empty_ref_rejected(store: &dyn Store) {
    let err = store.writer("", None, None).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

/// `truncate(0)` starts over; other sizes are `InvalidArgument`.
pub fn truncate_only_to_zero(store: &dyn Store) {
    let mut w = store.writer("truncate", None, None).unwrap();
    w.write(b"abcdef").unwrap();
    let err = w.truncate(3).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    w.truncate(0).unwrap();
    w.write(b"xyz").unwrap();
    assert_eq!(w.digest(), Digest::of(b"xyz"));
    w.commit(3, Some(&Digest::of(b"xyz")), Labels::new())
        .unwrap();
}

/// Reopening a ref with a different total starts a new ingest.
pub fn changed_total_starts_over(store: &dyn Store) {
    let mut w = store.writer("changed", Some(10), None).unwrap();
    w.write(b"01234").unwrap();
    drop(w);
    // Same ref, different size: a different upload.
    let w = store.writer("changed", Some(20), None).unwrap();
    let status = w.status().unwrap();
    assert_eq!((status.offset, status.total), (0, Some(20)));
}

/// [`write_blob`] resumes a matching ingest, restarts a wrong one, and accepts a present blob.
pub fn write_blob_resumes(store: &dyn Store) {
    let bytes = data(50_000, 8);
    let digest = Digest::of(&bytes);
    // A partial ingest of the right data is continued...
    let mut w = store.writer("wb", None, None).unwrap();
    w.write(&bytes[..20_000]).unwrap();
    drop(w);
    write_blob(store, "wb", &bytes, &digest, Labels::new()).unwrap();
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);
    // ...a present blob is success...
    write_blob(store, "wb", &bytes, &digest, Labels::new()).unwrap();
    // ...and a partial ingest of other data is started over.
    let other = data(30_000, 9);
    let mut w = store.writer("wb2", None, None).unwrap();
    w.write(&bytes[..10_000]).unwrap();
    drop(w);
    write_blob(store, "wb2", &other, &Digest::of(&other), Labels::new()).unwrap();
    assert_eq!(read_blob(store, &Digest::of(&other)).unwrap(), other);
    assert!(store.list_statuses().unwrap().is_empty());
}

/// `std::io` adapters: `io::copy` into a writer, `ReadCursor` reads and seeks.
pub fn io_adapters(store: &dyn Store) {
    let bytes = data(200_000, 10);
    let digest = Digest::of(&bytes);
    let mut w = store.writer("io", None, None).unwrap();
    io::copy(&mut bytes.as_slice(), &mut *w).unwrap();
    w.commit(0, Some(&digest), Labels::new()).unwrap();

    let r = store.reader_at(&digest).unwrap();
    let mut cursor = ReadCursor::new(&*r);
    let mut back = Vec::new();
    io::Read::read_to_end(&mut cursor, &mut back).unwrap();
    assert_eq!(back, bytes);
    io::Seek::seek(&mut cursor, io::SeekFrom::End(-4)).unwrap();
    let mut tail = Vec::new();
    io::Read::read_to_end(&mut cursor, &mut tail).unwrap();
    assert_eq!(tail, bytes[bytes.len() - 4..]);
    assert!(io::Seek::seek(&mut cursor, io::SeekFrom::Current(-1_000_000)).is_err());
}

/// A blob of several megabytes, written in odd-sized pieces and resumed
/// midway: large enough for drivers that switch strategy with size (the
/// local store hashes such blobs on a helper thread).
pub fn large_blob(store: &dyn Store) {
    let bytes = data(6 << 20, 11);
    let digest = Digest::of(&bytes);
    let split = (3 << 20) + 12_345;
    // Total unknown: the writer only learns the blob is large as it goes.
    let mut w = store.writer("large", None, None).unwrap();
    for piece in bytes[..split].chunks(700_001) {
        w.write(piece).unwrap();
    }
    assert_eq!(w.digest(), Digest::of(&bytes[..split]));
    drop(w);
    // Total known up front.
    let mut w = store
        .writer("large", Some(bytes.len() as u64), Some(&digest))
        .unwrap();
    assert_eq!(w.status().unwrap().offset, split as u64);
    for piece in bytes[split..].chunks(1 << 20) {
        w.write(piece).unwrap();
    }
    assert_eq!(w.digest(), digest);
    w.commit(bytes.len() as u64, Some(&digest), Labels::new())
        .unwrap();
    assert_eq!(read_blob(store, &digest).unwrap(), bytes);

    // A mismatch found by a large writer is reported like any other.
    let mut w = store
        .writer("large-bad", Some(bytes.len() as u64), None)
        .unwrap();
    w.write(&bytes).unwrap();
    let wrong = Digest::of(b"wrong");
    let err = w.commit(0, Some(&wrong), Labels::new()).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
}
