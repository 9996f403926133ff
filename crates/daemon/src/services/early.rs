//! Early apply: a layer blob committed through Content.Write is unpacked
//! into a staging directory at once, so that the later Diff.Apply onto an
//! empty snapshot is a few renames.
//!
//! Clients that pull client-side (Debian's `ctr` 1.6 `images pull`, `ctr
//! images import`) first write every blob of the image through
//! Content.Write, and only then unpack the layers one by one (Snapshots
//! Prepare, Diff.Apply, Snapshots Commit). Unpacking waits for the whole
//! download, and the download for nothing: decompressing each layer while
//! the others still stream in puts the two side by side.
//!
//! What is staged, and when it is used:
//! - a blob of at least [`MIN_SIZE`] that starts with the gzip or zstd
//!   magic, committed through Content.Write (not blobs that were already
//!   there), while less than [`BUDGET`] bytes are staged or waiting;
//! - on [`WORKERS`] threads, in commit order; a layer Diff.Apply wants
//!   before a worker reached it is taken off the queue and applied as
//!   always; one a worker is on is waited for;
//! - staged with the same [`apply`] as Diff.Apply, into
//!   `<root>/io.containerd.differ.v1.walking/early/`, which is wiped when
//!   the daemon starts;
//! - used only when the result is exactly what a direct apply would make:
//!   the Apply asks for the compression the blob has, with no options; the
//!   target (an overlay upper directory or a bind mount's source) is an
//!   empty directory on the staging directory's filesystem; the layer has
//!   no whiteouts (on an empty directory they could only hide the layer's
//!   own entries, and their form depends on the target); and the blob is
//!   still in the content store. Then each top-level entry is renamed into
//!   the target, and the diffID and size computed while staging are
//!   Apply's answer. In every other case the staged tree is dropped and
//!   Diff.Apply unpacks the blob itself, with its own errors;
//! - dropped if no Apply takes it within [`TTL`].
//!
//! `BERTH_EARLY_APPLY=off` in berthd's environment turns it off (to measure
//! without it, or where the disk has no room for a second copy of layers
//! that are never unpacked); `BERTH_EARLY_APPLY=<n>` sets the number of
//! workers.
//!
//! The blob's digest was verified when it was committed; the diffID is
//! computed from the uncompressed stream while staging, as Apply computes
//! it. Nothing is fsynced, as Apply itself does not.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use berth_content::{Digest, ReadCursor, Store};
use berth_images::archive::{ApplyStats, Compression, Whiteouts, apply};

/// Smallest blob worth staging.
const MIN_SIZE: u64 = 256 << 10;
/// Most compressed bytes staged or waiting at once; blobs beyond it are
/// applied as always.
const BUDGET: u64 = 4 << 30;
/// Layers staged at once. The layers of one image finish downloading
/// close together (clients fetch them concurrently), so staging is mostly
/// done while the client unpacks; two workers beside the Apply calls keep
/// two cores busy (measured: one worker cut `ctr pull`'s unpack phase by
/// ~20%, two by ~40%, on two cores).
const WORKERS: usize = 2;
/// How long a staged layer waits for its Diff.Apply.
const TTL: Duration = Duration::from_secs(600);

/// One blob's early apply.
#[derive(Debug)]
enum Job {
    /// Waiting for the worker.
    Queued,
    /// Being unpacked now.
    Running,
    /// Unpacked into `path`.
    Ready {
        path: PathBuf,
        compression: Compression,
        stats: ApplyStats,
        at: Instant,
    },
    /// Unpacking failed (Apply will report why, if asked).
    Failed,
}

#[derive(Debug, Default)]
struct Jobs {
    map: HashMap<Digest, (Job, u64)>,
    /// Compressed bytes of every job in `map`.
    bytes: u64,
    /// Names staging directories.
    seq: u64,
}

impl Jobs {
    fn remove(&mut self, digest: &Digest) -> Option<Job> {
        let (job, size) = self.map.remove(digest)?;
        self.bytes = self.bytes.saturating_sub(size);
        Some(job)
    }
}

/// The early-apply stager of one daemon root; see the module docs.
pub(crate) struct EarlyApply {
    dir: PathBuf,
    /// The shared store itself, not a namespace's view: what is staged is
    /// the blob a Write just committed, and Diff.Apply checks the caller's
    /// namespace before it takes a staged tree.
    store: Arc<dyn Store>,
    jobs: Mutex<Jobs>,
    changed: Condvar,
    to_worker: Mutex<Option<Sender<Digest>>>,
    /// Worker threads (0 when `BERTH_EARLY_APPLY=off`).
    workers: usize,
}

impl std::fmt::Debug for EarlyApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyApply")
            .field("dir", &self.dir)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// The stager of each staging directory, so that the Content and Diff
/// services of one daemon share one.
static SHARED: LazyLock<Mutex<HashMap<PathBuf, Arc<EarlyApply>>>> = LazyLock::new(Default::default);

/// Worker threads: `BERTH_EARLY_APPLY` (`off` or a number), else
/// [`WORKERS`].
fn workers_from_env() -> usize {
    match std::env::var("BERTH_EARLY_APPLY") {
        Ok(v) if v == "off" => 0,
        Ok(v) => v.parse().unwrap_or(WORKERS),
        Err(_) => WORKERS,
    }
}

/// The staging directory under the daemon's `root`.
pub(crate) fn staging_dir(root: &Path) -> PathBuf {
    root.join("io.containerd.differ.v1.walking").join("early")
}

impl EarlyApply {
    /// The stager staging under `dir` from `store` (made, with `dir` wiped,
    /// on first use).
    pub(crate) fn shared(dir: PathBuf, store: Arc<dyn Store>) -> Arc<EarlyApply> {
        let mut all = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(dir.clone())
            .or_insert_with(|| {
                if let Err(e) = fs::remove_dir_all(&dir)
                    && e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %dir.display(), error = %e, "cannot empty the early-apply directory");
                    }
                Arc::new(EarlyApply {
                    dir,
                    store,
                    jobs: Mutex::default(),
                    changed: Condvar::new(),
                    to_worker: Mutex::new(None),
                    workers: workers_from_env(),
                })
            })
            .clone()
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers blob `digest` (`size` bytes), just committed: queued for
    /// staging if it looks like a compressed layer. Blocking (reads the
    /// blob's first bytes).
    pub(crate) fn offer(self: &Arc<Self>, digest: &Digest, size: u64) {
        if self.workers == 0 || size < MIN_SIZE || self.compression_of(digest).is_none() {
            return;
        }
        {
            let mut jobs = self.jobs();
            if jobs.map.contains_key(digest) || jobs.bytes + size > BUDGET {
                return;
            }
            jobs.map.insert(digest.clone(), (Job::Queued, size));
            jobs.bytes += size;
        }
        let mut tx = self
            .to_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tx.is_none() {
            let (sender, inbox) = mpsc::channel();
            let inbox = Arc::new(Mutex::new(inbox));
            for _ in 0..self.workers {
                let me = Arc::clone(self);
                let inbox = Arc::clone(&inbox);
                if let Err(e) = std::thread::Builder::new()
                    .name("berth-early-apply".into())
                    .spawn(move || me.worker(&inbox))
                {
                    tracing::warn!(error = %e, "cannot start an early-apply thread");
                }
            }
            *tx = Some(sender);
        }
        if let Some(sender) = tx.as_ref()
            && sender.send(digest.clone()).is_err()
        {
            self.jobs().remove(digest);
        }
    }

    /// The compression the blob's first bytes announce, if any.
    fn compression_of(&self, digest: &Digest) -> Option<Compression> {
        let reader = self.store.reader_at(digest).ok()?;
        let mut magic = [0_u8; 4];
        reader.read_exact_at(&mut magic, 0).ok()?;
        match magic {
            [0x1f, 0x8b, 8, _] => Some(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd] => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The worker: stages queued blobs one at a time; drops stale ones.
    fn worker(&self, inbox: &Mutex<Receiver<Digest>>) {
        loop {
            let next = inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(TTL / 4);
            match next {
                Ok(digest) => self.stage(&digest),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.drop_stale();
        }
    }

    fn stage(&self, digest: &Digest) {
        let seq = {
            let mut jobs = self.jobs();
            match jobs.map.get_mut(digest) {
                Some((job @ Job::Queued, _)) => *job = Job::Running,
                // Taken by an Apply meanwhile.
                _ => return,
            }
            jobs.seq += 1;
            jobs.seq
        };
        let path = self.dir.join(format!("{}-{seq}", digest.hex()));
        let started = Instant::now();
        // A panic must not leave the job Running: its Apply would wait forever.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.unpack(digest, &path)))
                .unwrap_or_else(|_| Err("the early unpack panicked".to_string()));
        let job = match outcome {
            Ok((compression, stats)) => {
                tracing::debug!(%digest, diff_id = %stats.diff_id, ms = started.elapsed().as_millis(), "staged layer early");
                Job::Ready {
                    path,
                    compression,
                    stats,
                    at: Instant::now(),
                }
            }
            Err(e) => {
                tracing::debug!(%digest, error = %e, "early apply failed; Apply will unpack it");
                remove_tree(&path);
                Job::Failed
            }
        };
        let mut jobs = self.jobs();
        if let Some((j, _)) = jobs.map.get_mut(digest) {
            *j = job;
        }
        drop(jobs);
        self.changed.notify_all();
    }

    fn unpack(&self, digest: &Digest, path: &Path) -> Result<(Compression, ApplyStats), String> {
        let compression = self
            .compression_of(digest)
            .ok_or_else(|| "blob gone or not compressed".to_string())?;
        fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader = self.store.reader_at(digest).map_err(|e| e.to_string())?;
        let stats = apply(
            path,
            ReadCursor::new(&*reader),
            compression,
            Whiteouts::Remove,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok((compression, stats))
    }

    /// Removes staged layers no Apply took within [`TTL`].
    fn drop_stale(&self) {
        let stale: Vec<PathBuf> = {
            let mut jobs = self.jobs();
            let old: Vec<Digest> = jobs
                .map
                .iter()
                .filter(|(_, (j, _))| {
                    matches!(j, Job::Ready { at, .. } if at.elapsed() > TTL)
                        || matches!(j, Job::Failed)
                })
                .map(|(d, _)| d.clone())
                .collect();
            old.iter()
                .filter_map(|d| match jobs.remove(d) {
                    Some(Job::Ready { path, .. }) => Some(path),
                    _ => None,
                })
                .collect()
        };
        for p in stale {
            remove_tree(&p);
        }
    }

    /// Applies blob `digest`, as `compression`, onto directory `target`
    /// from its staged tree, if there is one that fits (waiting for one
    /// being staged). `Ok(None)`: none; the caller applies it itself.
    /// Blocking.
    pub(crate) fn take(
        &self,
        digest: &Digest,
        compression: Compression,
        target: &Path,
    ) -> io::Result<Option<ApplyStats>> {
        let (path, staged_as, stats) = {
            let mut jobs = self.jobs();
            loop {
                match jobs.map.get(digest) {
                    None => return Ok(None),
                    Some((Job::Running, _)) => {
                        jobs = self
                            .changed
                            .wait(jobs)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Some(_) => break,
                }
            }
            match jobs.remove(digest) {
                Some(Job::Ready {
                    path,
                    compression,
                    stats,
                    ..
                }) => (path, compression, stats),
                // Queued (now taken off the queue) or failed.
                _ => return Ok(None),
            }
        };
        let fits = staged_as == compression
            && stats.whiteouts == 0
            && self.store.info(digest).is_ok()
            && is_empty_dir_on(target, &path)?;
        if !fits {
            remove_tree(&path);
            return Ok(None);
        }
        let from = File::open(&path)?;
        let to = File::open(target)?;
        for entry in fs::read_dir(&path)? {
            let name = entry?.file_name();
            nix::fcntl::renameat2(
                &from,
                name.as_os_str(),
                &to,
                name.as_os_str(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(io::Error::from)?;
        }
        fs::remove_dir(&path)?;
        tracing::debug!(%digest, target = %target.display(), "applied layer from its early unpack");
        Ok(Some(stats))
    }
}

/// Whether `target` is an empty directory on the filesystem of `staged`.
fn is_empty_dir_on(target: &Path, staged: &Path) -> io::Result<bool> {
    let (t, s) = (fs::metadata(target)?, fs::metadata(staged)?);
    if !t.is_dir() || t.dev() != s.dev() {
        return Ok(false);
    }
    Ok(fs::read_dir(target)?.next().is_none())
}

fn remove_tree(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a staged layer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_content::local::LocalStore;
    use berth_content::{Ingester as _, Labels};
    use std::io::Write as _;

    /// A gzip layer of `files` (name, bytes), each 0644, plus `extra`
    /// entries' names as empty files.
    fn layer(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    fn commit(store: &LocalStore, blob: &[u8]) -> Digest {
        let d = Digest::of(blob);
        let mut w = store.writer(d.as_ref(), None, Some(&d)).unwrap();
        w.write_all(blob).unwrap();
        w.commit(blob.len() as u64, Some(&d), Labels::new())
            .unwrap();
        d
    }

    struct Env {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: Arc<LocalStore>,
        early: Arc<EarlyApply>,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = Arc::new(LocalStore::open(root.join("content")).unwrap());
        let early = EarlyApply::shared(staging_dir(&root), store.clone());
        Env {
            _dir: dir,
            root,
            store,
            early,
        }
    }

    /// Waits until the worker is done with `d`.
    fn settled(env: &Env, d: &Digest) {
        while matches!(
            env.early.jobs().map.get(d),
            Some((Job::Queued | Job::Running, _))
        ) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn target(env: &Env, name: &str) -> PathBuf {
        let t = env.root.join(name);
        fs::create_dir(&t).unwrap();
        t
    }

    #[test]
    fn a_staged_layer_is_what_a_direct_apply_makes() {
        let env = env();
        let files = [
            ("a/big", noise(600 << 10, 1)),
            ("a/b/small", b"small".to_vec()),
            ("top", noise(10, 2)),
        ];
        let blob = layer(&files);
        assert!(blob.len() as u64 >= MIN_SIZE);
        let d = commit(&env.store, &blob);
        env.early.offer(&d, blob.len() as u64);
        settled(&env, &d);
        let early = target(&env, "early");
        let stats = env
            .early
            .take(&d, Compression::Gzip, &early)
            .unwrap()
            .expect("the staged layer is used");
        let direct = target(&env, "direct");
        let want = apply(
            &direct,
            &blob[..],
            Compression::Gzip,
            Whiteouts::Remove,
            None,
        )
        .unwrap();
        assert_eq!(stats, want);
        for (name, data) in &files {
            assert_eq!(&fs::read(early.join(name)).unwrap(), data, "{name}");
            let (a, b) = (
                fs::metadata(early.join(name)).unwrap(),
                fs::metadata(direct.join(name)).unwrap(),
            );
            assert_eq!((a.mode(), a.mtime()), (b.mode(), b.mtime()), "{name}");
        }
        // Taken once; nothing left staged.
        assert!(
            env.early
                .take(&d, Compression::Gzip, &target(&env, "again"))
                .unwrap()
                .is_none()
        );
        assert_eq!(fs::read_dir(staging_dir(&env.root)).unwrap().count(), 0);
    }

    #[test]
    fn layers_that_do_not_fit_are_left_to_apply() {
        let env = env();
        // Whiteouts: never used.
        let wh = layer(&[("x/big", noise(600 << 10, 3)), ("x/.wh.gone", Vec::new())]);
        let d = commit(&env.store, &wh);
        env.early.offer(&d, wh.len() as u64);
        settled(&env, &d);
        assert!(
            env.early
                .take(&d, Compression::Gzip, &target(&env, "t1"))
                .unwrap()
                .is_none()
        );
        // A target that is not empty, or another compression asked for.
        let plain = layer(&[("y/big", noise(600 << 10, 4))]);
        let d = commit(&env.store, &plain);
        env.early.offer(&d, plain.len() as u64);
        settled(&env, &d);
        let busy = target(&env, "t2");
        fs::write(busy.join("there"), b"").unwrap();
        assert!(
            env.early
                .take(&d, Compression::Gzip, &busy)
                .unwrap()
                .is_none()
        );
        assert!(!busy.join("y").exists());
        env.early.offer(&d, plain.len() as u64);
        assert!(
            env.early
                .take(&d, Compression::Zstd, &target(&env, "t3"))
                .unwrap()
                .is_none()
        );
        // Not compressed, or small: never staged.
        let raw = noise(600 << 10, 5);
        let d = commit(&env.store, &raw);
        env.early.offer(&d, raw.len() as u64);
        assert!(env.early.jobs().map.is_empty());
        // Whatever was staged is gone once taken or refused.
        while !env.early.jobs().map.is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(fs::read_dir(staging_dir(&env.root)).unwrap().count(), 0);
    }
}
