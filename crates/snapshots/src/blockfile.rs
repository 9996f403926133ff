//! The blockfile snapshotter: every snapshot is a filesystem image file.
//!
//! This is containerd 2.x's `blockfile` snapshotter for berth. A snapshot
//! is a file holding a whole filesystem (ext4 unless configured otherwise),
//! mounted through a loop device. Layout under the root, as containerd's:
//!
//! ```text
//! root/metadata.redb      snapshot records (see crate::metastore)
//! root/scratch            the empty filesystem every parentless snapshot starts from
//! root/snapshots/<id>     a snapshot's image file
//! ```
//!
//! The scratch image is copied in from the configured `scratch_file` (made
//! with, say, `mkfs.ext4`) when the root has none yet, or every start with
//! `recreate_scratch`; without a scratch file the snapshotter cannot start
//! ([`Error::FailedPrecondition`], a skipped plugin in berthd, as in
//! containerd).
//!
//! `prepare` copies the parent's image (or the scratch image) to the new
//! snapshot's file: a reflink (`FICLONE`) where the filesystem shares
//! extents (Btrfs, XFS), else a copy that keeps holes (`SEEK_DATA` /
//! `SEEK_HOLE` with copy_file_range(2)). A view of a parent has no file: it
//! mounts the parent's read-only. `commit` copies nothing.
//!
//! Mounts are containerd's: type `fs_type` (`ext4`), source the image file,
//! options `mount_options` (default `loop`; `loop` is always added) then
//! `rw`, or `ro` for views. [`crate::mount::mount_all`] handles `loop` by
//! attaching a loop device with autoclear.
//!
//! Usage is containerd's approximation: an image's apparent size (one
//! inode), less its parent's; for a committed snapshot measured at commit.
//! (containerd's subtraction goes negative for views; berth reports zero.)

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::metastore::{MetaStore, Snapshot};
use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage, tree};

/// The blockfile snapshotter's settings: containerd's
/// `[plugins."io.containerd.snapshotter.v1.blockfile"]` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockfileConfig {
    /// `scratch_file`: the empty filesystem image to copy as `root/scratch`.
    pub scratch_file: Option<PathBuf>,
    /// `fs_type`: the filesystem type of the images (default `ext4`).
    pub fs_type: Option<String>,
    /// `mount_options`: base mount options (default `loop`; `loop` is
    /// always added).
    pub mount_options: Vec<String>,
    /// `recreate_scratch`: copy `scratch_file` again on every start.
    pub recreate_scratch: bool,
}

/// Snapshots as filesystem image files under one root directory.
#[derive(Debug)]
pub struct BlockfileSnapshotter {
    root: PathBuf,
    fs_type: String,
    options: Vec<String>,
    ms: MetaStore,
}

impl BlockfileSnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`.
    ///
    /// [`Error::FailedPrecondition`] if the root has no scratch image and
    /// `config` names no `scratch_file`; [`Error::Unavailable`] if another
    /// snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>, config: BlockfileConfig) -> Result<BlockfileSnapshotter> {
        let root = root.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        let scratch = root.join("scratch");
        if config.recreate_scratch || !scratch.exists() {
            let Some(src) = &config.scratch_file else {
                return Err(Error::FailedPrecondition(format!(
                    "no scratch file generator for {}: set scratch_file in \
                     [plugins.\"io.containerd.snapshotter.v1.blockfile\"] to an empty filesystem image \
                     (e.g. made by mkfs.ext4)",
                    root.display()
                )));
            };
            let tmp = root.join("scratch.new");
            let _ = fs::remove_file(&tmp);
            clone_file(src, &tmp)?;
            fs::rename(&tmp, &scratch).map_err(|e| Error::io(&scratch, e))?;
            tree::fsync_dir(&root)?;
            info!(from = %src.display(), "copied the scratch image");
        }
        let fs_type = config
            .fs_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "ext4".to_owned());
        let mut options = if config.mount_options.is_empty() {
            vec!["loop".to_owned()]
        } else {
            config.mount_options
        };
        if !options.iter().any(|o| o == "loop") {
            options.push("loop".to_owned());
        }
        let ms = MetaStore::open(root.join("metadata.redb"))?;
        let snapshots = root.join("snapshots");
        match DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&snapshots, e)),
        }
        info!(root = %root.display(), fs_type, "blockfile snapshotter ready");
        Ok(BlockfileSnapshotter {
            root,
            fs_type,
            options,
            ms,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn block_file(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    /// Whether `s` has an image of its own (a view of a parent has not).
    fn owns_file(s: &Snapshot) -> bool {
        s.parent_ids.is_empty() || s.kind == Kind::Active
    }

    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount> {
        let mut options = self.options.clone();
        options.push(if s.kind == Kind::View { "ro" } else { "rw" }.to_owned());
        let source = match s.parent_ids.first() {
            Some(&pid) if !Self::owns_file(s) => self.block_file(pid),
            _ => self.block_file(s.id),
        };
        vec![Mount {
            kind: self.fs_type.clone(),
            source: source.to_string_lossy().into_owned(),
            target: String::new(),
            options,
        }]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        // Held throughout: orders this against other writers and cleanup.
        let mut tx = self.ms.write()?;
        let s = tx.create(kind, key, parent, labels)?;
        if !Self::owns_file(&s) {
            tx.commit()?;
            debug!(key, id = s.id, %kind, parent, "created snapshot");
            return Ok(self.mounts_of(&s));
        }
        let src = match s.parent_ids.first() {
            Some(&pid) => self.block_file(pid),
            None => self.root.join("scratch"),
        };
        let dir = self.snapshots_dir();
        let tmp = dir.join(format!("new-{}", s.id));
        let path = self.block_file(s.id);
        let made = (|| {
            // Either left by a transaction that never committed (a crash).
            for stale in [&tmp, &path] {
                match fs::remove_file(stale) {
                    Ok(()) => warn!(path = %stale.display(), "replaced stale image"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(stale, e)),
                }
            }
            clone_file(&src, &tmp)?;
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            tree::fsync_dir(&dir)?;
            tx.commit()
        })();
        if let Err(e) = made {
            for f in [&tmp, &path] {
                let _ = fs::remove_file(f);
            }
            return Err(e);
        }
        debug!(key, id = s.id, %kind, parent, "created snapshot");
        Ok(self.mounts_of(&s))
    }

    fn file_size(&self, id: u64) -> Result<u64> {
        let path = self.block_file(id);
        Ok(fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len())
    }
}

impl Snapshotter for BlockfileSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.ms.read()?.info(key)?.1)
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info> {
        let mut tx = self.ms.write()?;
        let info = tx.update(&info, fieldpaths)?;
        tx.commit()?;
        Ok(info)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let tx = self.ms.read()?;
        let (id, info, mut usage) = tx.info(key)?;
        if info.kind == Kind::Active {
            usage = Usage {
                size: self.file_size(id)?,
                inodes: 1,
            };
        }
        if let Some(parent) = &info.parent {
            let (_, _, parent_usage) = tx.info(parent)?;
            usage.size = usage.size.saturating_sub(parent_usage.size);
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.ms.read()?.snapshot(key)?;
        Ok(self.mounts_of(&s))
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let mut tx = self.ms.write()?;
        let (id, info, _) = tx.info(key)?;
        let usage = if info.kind == Kind::Active {
            Usage {
                size: self.file_size(id)?,
                inodes: 1,
            }
        } else {
            Usage::default()
        };
        tx.commit_active(key, name, usage, labels)?;
        tx.commit()?;
        debug!(key, name, id, size = usage.size, "committed snapshot");
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut tx = self.ms.write()?;
        let (id, kind) = tx.remove(key)?;
        tx.commit()?;
        let path = self.block_file(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(key, path = %path.display(), error = %e, "cannot remove image; cleanup will retry")
            }
        }
        debug!(key, id, %kind, "removed snapshot");
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        let infos = self.ms.read()?.infos()?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<()> {
        let tx = self.ms.write()?;
        let ids = tx.ids()?;
        tree::remove_unreferenced(&self.snapshots_dir(), &ids);
        drop(tx);
        Ok(())
    }
}

/// Copies file `src` to the new file `dst` and syncs it: a reflink where
/// the filesystem can, else the data regions only (holes stay holes).
fn clone_file(src: &Path, dst: &Path) -> Result<()> {
    let from = File::open(src).map_err(|e| Error::io(src, e))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| Error::io(dst, e))?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_err() {
        copy_sparse(&from, &to).map_err(|e| Error::io(dst, e))?;
    }
    to.sync_all().map_err(|e| Error::io(dst, e))
}

/// Copies `from`'s data regions into `to` at the same offsets, leaving
/// holes unwritten (`SEEK_DATA`/`SEEK_HOLE`; a plain copy where the
/// filesystem has neither).
fn copy_sparse(from: &File, to: &File) -> io::Result<()> {
    use rustix::fs::SeekFrom;
    let size = from.metadata()?.len();
    to.set_len(size)?;
    let mut offset = 0_u64;
    while offset < size {
        let start = match rustix::fs::seek(from, SeekFrom::Data(offset)) {
            Ok(s) => s,
            // No data past `offset`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if offset == 0 => {
                return copy_range(from, to, 0, size);
            }
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(from, SeekFrom::Hole(start)) {
            Ok(e) => e,
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        copy_range(from, to, start, end)?;
        offset = end;
    }
    Ok(())
}

/// Copies bytes `[start, end)` of `from` to the same offsets of `to`.
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let (mut src_off, mut dst_off) = (start, start);
    while src_off < end {
        let len = usize::try_from(end - src_off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        let n = rustix::fs::copy_file_range(from, Some(&mut src_off), to, Some(&mut dst_off), len)?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_copies_keep_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(io::SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        clone_file(&src, &dst).unwrap();
        let (a, b) = (fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        assert_eq!(a, b);
        // Far less than 64 MiB allocated: the holes stayed holes.
        assert!(fs::metadata(&dst).unwrap().blocks() * 512 < 8 << 20);
    }

    #[test]
    fn without_a_scratch_file_the_snapshotter_says_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let e = BlockfileSnapshotter::new(dir.path(), BlockfileConfig::default()).unwrap_err();
        assert!(e.is_failed_precondition(), "{e}");
        assert!(e.to_string().contains("scratch_file"), "{e}");
    }

    #[test]
    fn mounts_follow_containerds_shape() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch.img");
        File::create(&scratch).unwrap().set_len(1 << 20).unwrap();
        let root = dir.path().join("root");
        let config = BlockfileConfig {
            scratch_file: Some(scratch),
            mount_options: vec!["noatime".into()],
            ..Default::default()
        };
        let sn = BlockfileSnapshotter::new(&root, config).unwrap();
        let m = sn.prepare("a", None, Labels::new()).unwrap();
        assert_eq!(m[0].kind, "ext4");
        assert_eq!(m[0].source, root.join("snapshots/1").to_str().unwrap());
        assert_eq!(m[0].options, ["noatime", "loop", "rw"]);
        assert_eq!(
            sn.usage("a").unwrap(),
            Usage {
                size: 1 << 20,
                inodes: 1
            }
        );
        sn.commit("A", "a", Labels::new()).unwrap();
        let v = sn.view("v", Some("A"), Labels::new()).unwrap();
        assert_eq!(v[0].source, root.join("snapshots/1").to_str().unwrap());
        assert_eq!(v[0].options, ["noatime", "loop", "ro"]);
        assert!(!root.join("snapshots/2").exists());
        sn.prepare("b", Some("A"), Labels::new()).unwrap();
        // Same size as the parent: containerd's usage is the difference.
        assert_eq!(sn.usage("b").unwrap(), Usage { size: 0, inodes: 1 });
        assert_eq!(
            sn.usage("A").unwrap(),
            Usage {
                size: 1 << 20,
                inodes: 1
            }
        );
    }
}
