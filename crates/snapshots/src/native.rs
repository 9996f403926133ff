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

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use crate::driver::{self, Driver, Layout};
use crate::metastore::Snapshot;
use crate::{Error, Kind, Mount, Result, tree};

/// Snapshots as full directory copies under one root directory.
pub type NativeSnapshotter = Driver<NativeLayout>;

/// The native driver's layout: `<root>/snapshots/<id>` is the whole tree.
#[derive(Debug)]
pub struct NativeLayout {
    root: PathBuf,
}

impl NativeSnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`.
    ///
    /// [`Error::Unavailable`] if another snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>) -> Result<NativeSnapshotter> {
        let root = root.as_ref().to_path_buf();
        let ms = driver::open_root(&root)?;
        info!(root = %root.display(), "native snapshotter ready");
        Ok(Driver {
            layout: NativeLayout { root },
            ms,
        })
    }
}

impl NativeLayout {
    /// A snapshot's tree.
    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }
}

impl Layout for NativeLayout {
    fn root(&self) -> &Path {
        &self.root
    }

    fn own_files(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id)
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

    /// A view of a parent reads the parent's tree: nothing to make.
    fn needs_dir(&self, s: &Snapshot) -> bool {
        s.kind == Kind::Active || s.parent_ids.is_empty()
    }

    /// A copy of the parent, or empty.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Labels, Snapshotter};

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
