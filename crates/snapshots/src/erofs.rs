//! The EROFS snapshotter: committed layers are EROFS images, stacked
//! under overlayfs.
//!
//! This is containerd 2.1's `erofs` snapshotter for berth, without its
//! EROFS differ: layers are applied the plain way (mount, apply the tar,
//! unmount), and `commit` turns the snapshot's upper directory into an
//! EROFS image with `mkfs.erofs` (erofs-utils), as containerd's does when
//! no EROFS differ made the image. Layout under the root, as containerd's:
//!
//! ```text
//! root/metadata.redb                 snapshot records (see crate::metastore)
//! root/snapshots/<id>/fs             upper directory; for a committed layer,
//!                                    where its image is mounted (read-only)
//! root/snapshots/<id>/work           overlayfs work directory (active only)
//! root/snapshots/<id>/layer.erofs    the committed layer's EROFS image
//! root/snapshots/<id>/.erofslayer    marks the directory as an EROFS layer
//! ```
//!
//! Mounts, as containerd's: without a parent, a bind mount of `fs`
//! (`rw`/`ro`, `rbind`); a view of one parent, the parent's image itself
//! (`erofs`, `ro,loop`); otherwise an overlay whose `lowerdir`s are the
//! parents' `fs` directories, `upperdir`/`workdir` for active snapshots.
//!
//! Unlike berth's other drivers (and like containerd's), this one mounts
//! something itself: a parent's image on its `fs` directory, the first time
//! a mount list needs it as a lower directory (or again after a reboot).
//! Those mounts stay while the snapshot exists; `remove` and `cleanup`
//! unmount them, and dropping the snapshotter detaches them lazily.
//!
//! Usage: an active snapshot's upper directory, measured now; a committed
//! one's image file, measured at commit.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use tracing::{debug, info, warn};

use crate::metastore::{MetaStore, Snapshot};
use crate::{Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage, tree};

/// statfs(2)'s `f_type` for EROFS.
const EROFS_SUPER_MAGIC: i64 = 0xe0f5_e1e2;
/// `ENOTBLK`: a kernel without file-backed EROFS mounts wants a device.
const ENOTBLK: i32 = 15;

/// Snapshots as EROFS layer images under overlayfs.
#[derive(Debug)]
pub struct ErofsSnapshotter {
    root: PathBuf,
    ms: MetaStore,
    /// The `fs` directories this process mounted an image on.
    mounted: Mutex<BTreeSet<PathBuf>>,
}

impl ErofsSnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`.
    ///
    /// [`Error::FailedPrecondition`] if the kernel has no EROFS;
    /// [`Error::Unavailable`] if another snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>) -> Result<ErofsSnapshotter> {
        let root = root.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        let known = fs::read_to_string("/proc/filesystems")
            .map_err(|e| Error::io("/proc/filesystems", e))?
            .lines()
            .any(|l| l.split_whitespace().last() == Some("erofs"));
        if !known {
            return Err(Error::FailedPrecondition(
                "EROFS unsupported, please `modprobe erofs`".into(),
            ));
        }
        let ms = MetaStore::open(root.join("metadata.redb"))?;
        let snapshots = root.join("snapshots");
        match DirBuilder::new().mode(0o700).create(&snapshots) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&snapshots, e)),
        }
        info!(root = %root.display(), "erofs snapshotter ready");
        Ok(ErofsSnapshotter {
            root,
            ms,
            mounted: Mutex::new(BTreeSet::new()),
        })
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn upper(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn layer_blob(&self, id: u64) -> PathBuf {
        self.dir(id).join("layer.erofs")
    }

    /// Mounts committed layer `id`'s image on its `fs` directory unless it
    /// is mounted there already; returns the directory.
    fn lower(&self, id: u64) -> Result<PathBuf> {
        let fs_dir = self.upper(id);
        if is_erofs(&fs_dir) {
            return Ok(fs_dir);
        }
        let blob = self.layer_blob(id);
        if !blob.exists() {
            return Err(Error::FailedPrecondition(format!(
                "{}: no EROFS layer image (was the snapshot committed by this snapshotter?)",
                blob.display()
            )));
        }
        let mut m = Mount {
            kind: "erofs".into(),
            source: blob.to_string_lossy().into_owned(),
            target: String::new(),
            options: vec!["ro".into()],
        };
        if let Err(e) = crate::mount::mount_all(std::slice::from_ref(&m), &fs_dir) {
            let not_blk =
                matches!(&e, Error::Mount { source, .. } if source.raw_os_error() == Some(ENOTBLK));
            if !not_blk {
                return Err(e);
            }
            m.options.push("loop".into());
            crate::mount::mount_all(std::slice::from_ref(&m), &fs_dir)?;
        }
        debug!(id, path = %fs_dir.display(), "mounted EROFS layer");
        if let Ok(mut mounted) = self.mounted.lock() {
            mounted.insert(fs_dir.clone());
        }
        Ok(fs_dir)
    }

    fn mounts_of(&self, s: &Snapshot) -> Result<Vec<Mount>> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        if s.parent_ids.is_empty() {
            let rw = if s.kind == Kind::View { "ro" } else { "rw" };
            return Ok(vec![Mount {
                kind: "bind".into(),
                source: path(self.upper(s.id)),
                target: String::new(),
                options: vec![rw.into(), "rbind".into()],
            }]);
        }
        let mut options = Vec::new();
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", path(self.dir(s.id).join("work"))));
            options.push(format!("upperdir={}", path(self.upper(s.id))));
        } else if let [parent] = s.parent_ids[..] {
            return Ok(vec![Mount {
                kind: "erofs".into(),
                source: path(self.layer_blob(parent)),
                target: String::new(),
                options: vec!["ro".into(), "loop".into()],
            }]);
        }
        let lowers = s
            .parent_ids
            .iter()
            .map(|&id| self.lower(id).map(path))
            .collect::<Result<Vec<_>>>()?;
        options.push(format!("lowerdir={}", lowers.join(":")));
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }])
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let mut tx = self.ms.write()?;
        let s = tx.create(kind, key, parent, labels)?;
        let snapshots = self.root.join("snapshots");
        let td = tree::temp_dir(&snapshots, "new-")?;
        let path = self.dir(s.id);
        let made = (|| {
            let fs_dir = td.join("fs");
            DirBuilder::new()
                .mode(0o755)
                .create(&fs_dir)
                .map_err(|e| Error::io(&fs_dir, e))?;
            if kind == Kind::Active {
                let work = td.join("work");
                DirBuilder::new()
                    .mode(0o711)
                    .create(&work)
                    .map_err(|e| Error::io(&work, e))?;
            }
            let marker = td.join(".erofslayer");
            fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))?;
            if let Some(&pid) = s.parent_ids.first() {
                let md =
                    fs::metadata(self.upper(pid)).map_err(|e| Error::io(self.upper(pid), e))?;
                std::os::unix::fs::lchown(&fs_dir, Some(md.uid()), Some(md.gid()))
                    .map_err(|e| Error::io(&fs_dir, e))?;
            }
            if path.exists() {
                warn!(path = %path.display(), "replacing stale snapshot directory");
                remove_dir(&path)?;
            }
            fs::rename(&td, &path).map_err(|e| Error::io(&path, e))?;
            tree::fsync_dir(&snapshots)?;
            self.mounts_of(&s)
        })();
        let mounts = made.and_then(|m| tx.commit().map(|()| m));
        match &mounts {
            Ok(_) => debug!(key, id = s.id, %kind, parent, "created snapshot"),
            Err(_) => {
                for dir in [&td, &path] {
                    let _ = remove_dir(dir);
                }
            }
        }
        mounts
    }
}

impl Snapshotter for ErofsSnapshotter {
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
            return tree::disk_usage(&self.upper(id));
        }
        Ok(usage)
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
        let mut usage = Usage::default();
        if info.kind == Kind::Active {
            let blob = self.layer_blob(id);
            if !blob.exists() {
                convert(&self.upper(id), &blob)?;
                clear_dir(&self.upper(id));
            }
            usage = tree::disk_usage(&blob)?;
        }
        tx.commit_active(key, name, usage, labels)?;
        tx.commit()?;
        debug!(key, name, id, size = usage.size, "committed snapshot");
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let mut tx = self.ms.write()?;
        let (id, kind) = tx.remove(key)?;
        tx.commit()?;
        if let Err(e) = self
            .unmount_layer(&self.upper(id))
            .and_then(|()| remove_dir(&self.dir(id)))
        {
            warn!(key, id, error = %e, "cannot remove snapshot directory; cleanup will retry");
        }
        debug!(key, id, %kind, "removed snapshot");
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        let infos = self.ms.infos()?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> Result<()> {
        let tx = self.ms.write()?;
        let ids = tx.ids()?;
        let snapshots = self.root.join("snapshots");
        let entries = fs::read_dir(&snapshots).map_err(|e| Error::io(&snapshots, e))?;
        for entry in entries.flatten() {
            let live = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| ids.contains(&id));
            if live {
                continue;
            }
            let path = entry.path();
            match self
                .unmount_layer(&path.join("fs"))
                .and_then(|()| remove_dir(&path))
            {
                Ok(()) => info!(path = %path.display(), "removed unreferenced snapshot directory"),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove unreferenced snapshot directory")
                }
            }
        }
        drop(tx);
        Ok(())
    }
}

impl ErofsSnapshotter {
    /// Closes the record store until the next call uses it (see
    /// [`MetaStore::close_until_used`]), for a driver that may stay unused.
    pub fn close_until_used(&self) -> Result<()> {
        self.ms.close_until_used()
    }

    /// Unmounts a layer image from `fs_dir` if one is mounted there.
    fn unmount_layer(&self, fs_dir: &Path) -> Result<()> {
        if let Ok(mut mounted) = self.mounted.lock() {
            mounted.remove(fs_dir);
        }
        if is_erofs(fs_dir) {
            crate::mount::unmount_all(fs_dir)?;
        }
        Ok(())
    }
}

impl Drop for ErofsSnapshotter {
    /// Detaches (lazily: a container may still use them) the layer images
    /// this process mounted, so a closed snapshotter leaves no mounts.
    fn drop(&mut self) {
        let mounted = self
            .mounted
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for dir in mounted {
            if is_erofs(&dir) {
                let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Whether an EROFS filesystem is mounted on `dir`.
fn is_erofs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|st| {
        // f_type is i64 on x86-64 and arm64, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let t = i64::from(st.filesystem_type().0);
        t == EROFS_SUPER_MAGIC
    })
}

/// Makes the EROFS image `blob` of directory `dir` (`mkfs.erofs`), through
/// a temporary file so a crash never leaves a partial image under its name.
fn convert(dir: &Path, blob: &Path) -> Result<()> {
    let tmp = blob.with_extension("erofs.tmp");
    let _ = fs::remove_file(&tmp);
    let out = Command::new("mkfs.erofs")
        .args(["--quiet", "-Enoinline_data"])
        .arg(&tmp)
        .arg(dir)
        .output()
        .map_err(|e| {
            Error::io(
                "mkfs.erofs",
                io::Error::new(e.kind(), format!("{e} (install erofs-utils)")),
            )
        })?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(
            blob,
            io::Error::other(format!(
                "mkfs.erofs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        ));
    }
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, blob).map_err(|e| Error::io(blob, e))?;
    if let Some(parent) = blob.parent() {
        tree::fsync_dir(parent)?;
    }
    Ok(())
}

/// Empties the converted upper directory (kept itself: children copy its owner).
fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tree::remove_all(&p)
            } else {
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))
            };
            if let Err(e) = r {
                warn!(path = %p.display(), error = %e, "cannot remove converted file");
            }
        }
    }
}

/// Removes a snapshot directory (a missing one is fine).
fn remove_dir(dir: &Path) -> Result<()> {
    tree::remove_all(dir)
}
