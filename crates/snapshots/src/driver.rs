//! What the built-in drivers share: one directory per snapshot id under
//! `<root>/snapshots`, records in a [`MetaStore`], and the crash-safe order
//! of directory work around each metadata transaction (see
//! [`crate::metastore`]). A driver only says how snapshots are laid out and
//! mounted ([`Layout`]); [`Driver`] is the [`Snapshotter`].

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::metastore::{MetaStore, Snapshot};
use crate::{
    DirectApply, Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage, Whiteouts, tree,
};

/// How a directory-per-snapshot driver lays out and mounts its snapshots.
pub trait Layout: Send + Sync + std::fmt::Debug {
    /// The driver's root directory.
    fn root(&self) -> &Path;

    /// The directory holding snapshot `id`'s own files (measured for usage).
    fn own_files(&self, id: u64) -> PathBuf;

    /// How to mount active snapshot or view `s`.
    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount>;

    /// Whether `s` needs a directory of its own (a view may reuse its parent's).
    fn needs_dir(&self, s: &Snapshot) -> bool;

    /// Fills `td`, the new snapshot's directory under a temporary name.
    fn populate(&self, td: &Path, s: &Snapshot) -> Result<()>;

    /// How deletions are recorded in a snapshot's own files.
    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Remove
    }

    /// Whether a layer's changes are independent of its parents (so they
    /// may be staged and adopted, see [`DirectApply::staging_dir`]).
    fn stages_layers(&self) -> bool {
        false
    }
}

/// The staging directory of a driver whose layers can be staged.
pub(crate) fn staging_dir(root: &Path) -> PathBuf {
    root.join("berth-staging")
}

/// A [`Snapshotter`] over a [`Layout`]: the overlay and native drivers.
#[derive(Debug)]
pub struct Driver<L: Layout> {
    pub(crate) layout: L,
    pub(crate) ms: MetaStore,
}

/// Creates `root` and `root/snapshots` and opens `root/metadata.redb`.
pub(crate) fn open_root(root: &Path) -> Result<MetaStore> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| Error::io(root, e))?;
    let ms = MetaStore::open(root.join("metadata.redb"))?;
    let snapshots = root.join("snapshots");
    match DirBuilder::new().mode(0o700).create(&snapshots) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&snapshots, e)),
    }
    Ok(ms)
}

impl<L: Layout> Driver<L> {
    /// Closes the record store until the next call uses it (see
    /// [`MetaStore::close_until_used`]), for a driver that may stay unused.
    pub fn close_until_used(&self) -> Result<()> {
        self.ms.close_until_used()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.layout.root().join("snapshots")
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        // The write transaction is held throughout: it orders this against
        // other writers and against cleanup, which would otherwise see the
        // temporary directory as garbage.
        let mut tx = self.ms.write()?;
        let s = tx.create(kind, key, parent, labels)?;
        if !self.layout.needs_dir(&s) {
            tx.commit()?;
            debug!(key, id = s.id, %kind, parent, "created snapshot");
            return Ok(self.layout.mounts_of(&s));
        }
        let snapshots = self.snapshots_dir();
        let td = tree::temp_dir(&snapshots, "new-")?;
        let path = self.snapshot_dir(s.id);
        let made = self.layout.populate(&td, &s).and_then(|()| {
            if path.exists() {
                // The id was taken by a transaction that never committed (a
                // crash): nothing refers to what it left.
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
        debug!(key, id = s.id, %kind, parent, "created snapshot");
        Ok(self.layout.mounts_of(&s))
    }
}

impl<L: Layout> Snapshotter for Driver<L> {
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
            return tree::disk_usage(&self.layout.own_files(id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.ms.read()?.snapshot(key)?;
        Ok(self.layout.mounts_of(&s))
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
        // Measured once, now: committed snapshots never change.
        let usage = if info.kind == Kind::Active {
            tree::disk_usage(&self.layout.own_files(id))?
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
        // The record is gone for good; a directory left behind by a failure
        // (or a crash) here is cleanup's.
        let dir = self.snapshot_dir(id);
        if let Err(e) = tree::remove_all(&dir) {
            warn!(key, path = %dir.display(), error = %e, "cannot remove snapshot directory; cleanup will retry");
        }
        debug!(key, id, %kind, "removed snapshot");
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        // Collected first, so `f` can call back into the snapshotter.
        let infos = self.ms.infos()?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<()> {
        // Holding the write transaction keeps creations (and their temporary
        // directories) out while deciding what is garbage.
        let tx = self.ms.write()?;
        let ids = tx.ids()?;
        tree::remove_unreferenced(&self.snapshots_dir(), &ids);
        drop(tx);
        Ok(())
    }

    fn direct_apply(&self) -> Option<&dyn DirectApply> {
        Some(self)
    }
}

impl<L: Layout> Driver<L> {
    /// The own-files directory of active snapshot `key`.
    fn active_dir(&self, key: &str) -> Result<PathBuf> {
        let s = self.ms.read()?.snapshot(key)?;
        if s.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "{key} is a {}, not an active snapshot",
                s.kind
            )));
        }
        Ok(self.layout.own_files(s.id))
    }
}

impl<L: Layout> DirectApply for Driver<L> {
    fn whiteouts(&self) -> Whiteouts {
        self.layout.whiteouts()
    }

    fn writable_dir(&self, key: &str) -> Result<PathBuf> {
        self.active_dir(key)
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.layout
            .stages_layers()
            .then(|| staging_dir(self.layout.root()))
    }

    fn adopt(&self, key: &str, staged: &Path) -> Result<()> {
        if !self.layout.stages_layers() {
            return Err(Error::FailedPrecondition(format!(
                "{key}: this snapshotter's layers depend on their parents; nothing can be staged"
            )));
        }
        let dir = self.active_dir(key)?;
        // The fresh snapshot's directory is empty: replace it.
        fs::remove_dir(&dir)
            .and_then(|()| fs::rename(staged, &dir))
            .map_err(|e| Error::io(&dir, e))
    }
}
