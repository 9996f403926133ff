//! The Btrfs snapshotter: every snapshot is a Btrfs subvolume.
//!
//! This is containerd's `btrfs` snapshotter for berth. The root must be on a
//! Btrfs filesystem; [`BtrfsSnapshotter::new`] refuses (with
//! [`Error::FailedPrecondition`], which berthd turns into a skipped plugin)
//! anywhere else. Layout under the root, as containerd's:
//!
//! ```text
//! root/metadata.redb     snapshot records (see crate::metastore)
//! root/active/<id>       a writable subvolume per active snapshot
//! root/view/<id>         a read-only snapshot of the parent per view
//! root/snapshots/<id>    a read-only subvolume per committed snapshot
//! ```
//!
//! `prepare` on a parent makes a writable Btrfs snapshot of the parent's
//! subvolume (copy-on-write: nothing is copied), without a parent an empty
//! subvolume; `view` makes a read-only snapshot; `commit` snapshots the
//! active subvolume read-only into `snapshots/` and deletes the active one.
//! Subvolumes are made and deleted with the ioctls of `linux/btrfs.h`
//! directly (see `ioctl.rs`).
//!
//! Mounts are containerd's: type `btrfs`, source the block device the root
//! is mounted from (the `source` column of `/proc/self/mountinfo`), options
//! `subvolid=<id>`, plus `ro` for views.
//!
//! Usage, as containerd reports it: for an active snapshot with a parent,
//! what differs from the parent (new or changed files, see containerd's
//! `fs.DiffUsage`), measured now; without a parent, its whole tree; for a
//! committed snapshot, the same measured once at commit; views report zero.
//!
//! Crashes: a subvolume is made under its final name before its record
//! commits, so a crash leaves a subvolume no record (of that kind) refers
//! to; a later operation that takes the same id replaces it, and
//! [`Snapshotter::cleanup`] deletes it. Removal deletes the record first.

mod ioctl;

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::metastore::{MetaStore, Snapshot};
use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage, tree};

/// Snapshots as Btrfs subvolumes under one root directory on Btrfs.
#[derive(Debug)]
pub struct BtrfsSnapshotter {
    root: PathBuf,
    /// The block device the root's filesystem is mounted from.
    device: String,
    ms: MetaStore,
}

/// The directory holding subvolumes of `kind` (containerd's names).
fn kind_dir(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "snapshots",
    }
}

impl BtrfsSnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`, which
    /// must be on Btrfs.
    ///
    /// [`Error::FailedPrecondition`] if `root` is on another filesystem;
    /// [`Error::Unavailable`] if another snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>) -> Result<BtrfsSnapshotter> {
        let root = root.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&root, e))?;
        let st = nix::sys::statfs::statfs(&root).map_err(|e| Error::io(&root, e.into()))?;
        // f_type is i64 on x86-64 and arm64, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let fs_type = i64::from(st.filesystem_type().0);
        let mnt = lookup_mount(&root)?;
        if fs_type != ioctl::SUPER_MAGIC {
            return Err(Error::FailedPrecondition(format!(
                "path {} ({}) must be a btrfs filesystem to be used with the btrfs snapshotter \
                 (set root_path in [plugins.\"io.containerd.snapshotter.v1.btrfs\"] to a directory on btrfs)",
                root.display(),
                mnt.fs_type
            )));
        }
        for kind in [Kind::Active, Kind::View, Kind::Committed] {
            let dir = root.join(kind_dir(kind));
            match DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        let ms = MetaStore::open(root.join("metadata.redb"))?;
        info!(root = %root.display(), device = %mnt.source, "btrfs snapshotter ready");
        Ok(BtrfsSnapshotter {
            root,
            device: mnt.source,
            ms,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The block device mounts name as their source.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind_dir(kind))
    }

    fn subvol(&self, kind: Kind, id: u64) -> PathBuf {
        self.dir(kind).join(id.to_string())
    }

    fn mounts_of(&self, s: &Snapshot) -> Result<Vec<Mount>> {
        let sid = ioctl::subvol_id(&self.subvol(s.kind, s.id))?;
        let mut options = vec![format!("subvolid={sid}")];
        if s.kind != Kind::Active {
            options.push("ro".into());
        }
        Ok(vec![Mount {
            kind: "btrfs".into(),
            source: self.device.clone(),
            target: String::new(),
            options,
        }])
    }

    /// What active snapshot `id` (on committed `parent`) uses by itself.
    fn active_usage(&self, id: u64, parent: Option<u64>) -> Result<Usage> {
        let own = self.subvol(Kind::Active, id);
        match parent {
            Some(pid) => tree::diff_usage(&self.subvol(Kind::Committed, pid), &own),
            None => tree::disk_usage(&own),
        }
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
        let dir = self.dir(kind);
        let name = s.id.to_string();
        // The id was taken by a transaction that never committed (a crash).
        delete_stale(&dir, &name)?;
        match s.parent_ids.first() {
            None => ioctl::subvol_create(&dir, &name)?,
            Some(&pid) => ioctl::snapshot(
                &self.subvol(Kind::Committed, pid),
                &dir,
                &name,
                kind == Kind::View,
            )?,
        }
        let mounts = self.mounts_of(&s).and_then(|m| tx.commit().map(|()| m));
        match &mounts {
            Ok(_) => debug!(key, id = s.id, %kind, parent, "created snapshot"),
            Err(_) => {
                if let Err(e) = delete_subvolume(&dir, &name) {
                    warn!(path = %dir.join(&name).display(), error = %e, "cannot delete subvolume");
                }
            }
        }
        mounts
    }
}

impl Snapshotter for BtrfsSnapshotter {
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
        let (id, info, usage) = tx.info(key)?;
        if info.kind != Kind::Active {
            return Ok(usage);
        }
        let parent = match &info.parent {
            Some(p) => Some(tx.info(p)?.0),
            None => None,
        };
        drop(tx);
        self.active_usage(id, parent)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.ms.read()?.snapshot(key)?;
        self.mounts_of(&s)
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
            let parent = match &info.parent {
                Some(p) => Some(tx.info(p)?.0),
                None => None,
            };
            self.active_usage(id, parent)?
        } else {
            Usage::default()
        };
        tx.commit_active(key, name, usage, labels)?;
        let snapshots = self.dir(Kind::Committed);
        let target = id.to_string();
        delete_stale(&snapshots, &target)?;
        ioctl::snapshot(&self.subvol(Kind::Active, id), &snapshots, &target, true)?;
        if let Err(e) = tx.commit() {
            if let Err(de) = delete_subvolume(&snapshots, &target) {
                warn!(path = %snapshots.join(&target).display(), error = %de, "cannot delete subvolume");
            }
            return Err(e);
        }
        // The committed record refers to snapshots/<id> now; the active
        // subvolume left by a failure here is cleanup's.
        if let Err(e) = delete_subvolume(&self.dir(Kind::Active), &target) {
            warn!(key, id, error = %e, "cannot delete the committed active subvolume; cleanup will retry");
        }
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
        if let Err(e) = delete_subvolume(&self.dir(kind), &id.to_string()) {
            warn!(key, id, error = %e, "cannot delete subvolume; cleanup will retry");
        }
        debug!(key, id, %kind, "removed snapshot");
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        // Collected first, so `f` can call back into the snapshotter.
        let infos = self.ms.read()?.infos()?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<()> {
        // Holding the write transaction keeps creations out meanwhile.
        let tx = self.ms.write()?;
        let kinds: BTreeMap<u64, Kind> = tx.kinds()?;
        for kind in [Kind::Active, Kind::View, Kind::Committed] {
            let dir = self.dir(kind);
            let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let live = name
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| kinds.get(&id))
                    .is_some_and(|k| *k == kind);
                if live {
                    continue;
                }
                match delete_subvolume(&dir, name) {
                    Ok(()) => {
                        info!(path = %dir.join(name).display(), "removed unreferenced subvolume")
                    }
                    Err(e) => {
                        warn!(path = %dir.join(name).display(), error = %e, "cannot remove unreferenced subvolume")
                    }
                }
            }
        }
        drop(tx);
        Ok(())
    }
}

/// Deletes `dir/name` if a crashed operation left it there.
fn delete_stale(dir: &Path, name: &str) -> Result<()> {
    if dir.join(name).symlink_metadata().is_ok() {
        warn!(path = %dir.join(name).display(), "replacing stale subvolume");
        delete_subvolume(dir, name)?;
    }
    Ok(())
}

/// Deletes subvolume `dir/name` with the subvolumes nested in it (a
/// container may make some); a plain directory or file is removed as such,
/// a missing one is fine.
fn delete_subvolume(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    let md = match fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if !md.is_dir() {
        return fs::remove_file(&path).map_err(|e| Error::io(&path, e));
    }
    if md.ino() != ioctl::FIRST_FREE_OBJECTID {
        return tree::remove_all(&path);
    }
    delete_nested(&path, md.dev())?;
    ioctl::subvol_delete(dir, name)
}

/// Deletes the subvolumes found below `path` (on device `dev`; a nested
/// subvolume has a device number of its own and inode 256).
fn delete_nested(path: &Path, dev: u64) -> Result<()> {
    let Ok(entries) = fs::read_dir(path) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = entry.path();
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.ino() == ioctl::FIRST_FREE_OBJECTID && md.dev() != dev {
            let name = entry.file_name();
            delete_subvolume(path, &name.to_string_lossy())?;
        } else {
            delete_nested(&p, dev)?;
        }
    }
    Ok(())
}

/// One line of `/proc/self/mountinfo`, the fields the driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    mount_point: PathBuf,
    fs_type: String,
    source: String,
}

/// The mount `path` is on: the longest mount point above it (containerd's
/// `mount.Lookup`).
fn lookup_mount(path: &Path) -> Result<MountInfo> {
    let path = fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    parse_mountinfo(&text)
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .ok_or_else(|| Error::FailedPrecondition(format!("no mount found for {}", path.display())))
}

/// Parses mountinfo lines: `id parent maj:min root mount_point options
/// [optional fields...] - fstype source super_options`.
fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: (*fields.get(dash + 1)?).to_owned(),
                source: unescape(fields.get(dash + 2)?),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..=i + 3].iter().all(u8::is_ascii_digit) {
            let v = b[i + 1..=i + 3]
                .iter()
                .fold(0_u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let text = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    40 22 7:3 / /var/tmp/a\\040b rw - btrfs /dev/loop3 rw,subvolid=5\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, Path::new("/var/tmp/a b"));
        assert_eq!(m[1].fs_type, "btrfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[0].source, "/dev/sda1");
    }

    #[test]
    fn a_root_off_btrfs_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        // The test machine's /tmp is not Btrfs; if it were, there is nothing to check.
        let st = nix::sys::statfs::statfs(dir.path()).unwrap();
        #[allow(clippy::useless_conversion)]
        if i64::from(st.filesystem_type().0) == ioctl::SUPER_MAGIC {
            crate::test_skip("/tmp is on btrfs");
            return;
        }
        let e = BtrfsSnapshotter::new(dir.path().join("b")).unwrap_err();
        assert!(e.is_failed_precondition(), "{e}");
        assert!(e.to_string().contains("must be a btrfs filesystem"), "{e}");
    }
}
