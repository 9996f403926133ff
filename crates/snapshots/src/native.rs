//! The native snapshotter: every snapshot is a full copy of its parent.
//!
//! This is containerd's `native` snapshotter for berth: it needs no special
//! filesystem or kernel feature beyond bind mounts, at the cost of copying.
//! Layout under the root:
//!
//! ```text
//! root/metadata.redb         snapshot records (see crate::metastore)
//! root/snapshots/<id>/       the snapshot's complete tree
//! ```
//!
//! Preparing on a parent copies the parent's tree (see below); committing
//! copies nothing (the directory keeps its id). A view of a parent has no
//! directory of its own: it is a read-only bind mount of the parent's tree.
//! Mounts are `bind` with `rbind,rw` (active) or `rbind,ro` (views).
//!
//! The copy keeps file types (including device nodes, fifos and sockets,
//! made with mknod), modes, owners, times and hard links within the tree;
//! extended attributes are copied where the filesystem takes them. File
//! data is reflinked (the `FICLONE` ioctl: Btrfs, XFS with reflink, bcachefs,
//! ...) so that only metadata is copied, and otherwise copied with
//! copy_file_range(2).
//!
//! Usage of a snapshot is that of its whole tree: parents' files are in it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::metastore::{MetaStore, Snapshot};
use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage, tree};

/// Snapshots as full directory copies under one root directory.
#[derive(Debug)]
pub struct NativeSnapshotter {
    root: PathBuf,
    ms: MetaStore,
}

impl NativeSnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`.
    ///
    /// [`Error::Unavailable`] if another snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>) -> Result<NativeSnapshotter> {
        let root = root.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        let ms = MetaStore::open(root.join("metadata.redb"))?;
        let snapshots = root.join("snapshots");
        match DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&snapshots, e)),
        }
        info!(root = %root.display(), "native snapshotter ready");
        Ok(NativeSnapshotter { root, ms })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A snapshot's tree.
    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount> {
        let (source, rw) = match (s.kind, s.parent_ids.first()) {
            (Kind::View, Some(&parent)) => (self.snapshot_dir(parent), "ro"),
            (Kind::View, None) => (self.snapshot_dir(s.id), "ro"),
            _ => (self.snapshot_dir(s.id), "rw"),
        };
        vec![Mount {
            kind: "bind".into(),
            source: source.to_string_lossy().into_owned(),
            target: String::new(),
            options: vec!["rbind".into(), rw.into()],
        }]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        // Held throughout, copy included: it orders this against other
        // writers and against cleanup (see the overlay driver).
        let mut tx = self.ms.write()?;
        let s = tx.create(kind, key, parent, labels)?;
        // A view of a parent reads the parent's tree: nothing to make.
        if kind == Kind::Active || s.parent_ids.is_empty() {
            let snapshots = self.snapshots_dir();
            let td = tree::temp_dir(&snapshots, "new-")?;
            let path = self.snapshot_dir(s.id);
            let made = self.populate(&td, &s).and_then(|()| {
                if path.exists() {
                    // Left by a transaction that never committed (a crash).
                    warn!(path = %path.display(), "replacing stale snapshot directory");
                    tree::remove_all(&path)?;
                }
                fs::rename(&td, &path).map_err(|e| Error::io(&path, e))?;
                tree::fsync_dir(&snapshots)
            });
            if let Err(e) = made {
                for dir in [&td, &path] {
                    if let Err(re) = tree::remove_all(dir) {
                        warn!(path = %dir.display(), error = %re, "cannot remove snapshot directory");
                    }
                }
                return Err(e);
            }
            if let Err(e) = tx.commit() {
                if let Err(re) = tree::remove_all(&path) {
                    warn!(path = %path.display(), error = %re, "cannot remove snapshot directory");
                }
                return Err(e);
            }
        } else {
            tx.commit()?;
        }
        debug!(key, id = s.id, %kind, parent, "created snapshot");
        Ok(self.mounts_of(&s))
    }

    /// Fills the new snapshot directory: a copy of the parent, or empty.
    fn populate(&self, td: &Path, s: &Snapshot) -> Result<()> {
        match s.parent_ids.first() {
            Some(&pid) => {
                let stats = tree::copy_tree(&self.snapshot_dir(pid), td)?;
                debug!(
                    parent = pid,
                    reflinked = stats.reflinked,
                    copied = stats.copied,
                    hardlinked = stats.linked,
                    "copied parent tree"
                );
                Ok(())
            }
            // mkdtemp made it 0700.
            None => fs::set_permissions(td, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(td, e)),
        }
    }
}

impl Snapshotter for NativeSnapshotter {
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
        let (id, info, usage) = self.ms.read()?.info(key)?;
        if info.kind == Kind::Active {
            return tree::disk_usage(&self.snapshot_dir(id));
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
            tree::disk_usage(&self.snapshot_dir(id))?
        } else {
            Usage::default()
        };
        tx.commit_active(key, name, usage, labels)?;
        tx.commit()?;
        debug!(
            key,
            name,
            id,
            size = usage.size,
            inodes = usage.inodes,
            "committed snapshot"
        );
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut tx = self.ms.write()?;
        let (id, kind) = tx.remove(key)?;
        tx.commit()?;
        let dir = self.snapshot_dir(id);
        if let Err(e) = tree::remove_all(&dir) {
            warn!(key, path = %dir.display(), error = %e, "cannot remove snapshot directory; cleanup will retry");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_a_parent_bind_the_parent_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let sn = NativeSnapshotter::new(dir.path()).unwrap();
        let root = dir.path().join("snapshots");
        let m = sn.prepare("a", None, Labels::new()).unwrap();
        assert_eq!(m[0].kind, "bind");
        assert_eq!(m[0].source, root.join("1").to_str().unwrap());
        assert_eq!(m[0].options, ["rbind", "rw"]);
        sn.commit("A", "a", Labels::new()).unwrap();
        let m = sn.view("v", Some("A"), Labels::new()).unwrap();
        assert_eq!(m[0].source, root.join("1").to_str().unwrap());
        assert_eq!(m[0].options, ["rbind", "ro"]);
        // No directory of its own.
        assert!(!root.join("2").exists());
        sn.remove("v").unwrap();
        let m = sn.view("v2", None, Labels::new()).unwrap();
        assert_eq!(m[0].source, root.join("3").to_str().unwrap());
    }

    #[test]
    fn prepare_copies_the_parent_tree() {
        let dir = tempfile::tempdir().unwrap();
        let sn = NativeSnapshotter::new(dir.path()).unwrap();
        let root = dir.path().join("snapshots");
        sn.prepare("a", None, Labels::new()).unwrap();
        fs::create_dir(root.join("1/etc")).unwrap();
        fs::write(root.join("1/etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        sn.commit("A", "a", Labels::new()).unwrap();
        sn.prepare("b", Some("A"), Labels::new()).unwrap();
        assert_eq!(
            fs::read(root.join("2/etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        fs::remove_file(root.join("2/etc/hosts")).unwrap();
        assert!(root.join("1/etc/hosts").exists());
        let u = sn.usage("b").unwrap();
        assert_eq!(u.inodes, 2);
        assert_eq!(sn.usage("A").unwrap().inodes, 3);
    }
}
