//! File trees on disk: measuring their usage, copying them whole, and the
//! directory plumbing (temporary directories, fsync) the drivers share.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tracing::{debug, info, warn};

use crate::{Error, Result, Usage};

/// The unit `st_blocks` counts in, whatever the filesystem's block size.
const BLOCK_UNIT: u64 = 512;

/// Measures the tree at `root` (itself included): bytes allocated on disk
/// and inodes, counting each hard-linked inode once.
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let md = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += md.blocks() * BLOCK_UNIT;
        }
        if md.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                let entry = entry.map_err(|e| Error::io(&path, e))?;
                todo.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// Measures what tree `child` adds to or changes in tree `parent` (roots
/// excluded): the files, directories and links that are new or differ,
/// each hard-linked inode counted once. This is containerd's
/// `fs.DiffUsage`, used by drivers whose snapshots are full copies (Btrfs)
/// to report a snapshot's own usage.
///
/// Entries "differ" as containerd's change walk decides: mode, owner or
/// device number changed, `security.capability` changed, or (not for
/// directories) size or mtime changed; where both mtimes have whole
/// seconds only, the contents (or link targets) are compared.
pub(crate) fn diff_usage(parent: &Path, child: &Path) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = child.join(&rel);
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let rel = rel.join(entry.file_name());
            let path = child.join(&rel);
            let md = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let old = parent.join(&rel);
            let changed = match fs::symlink_metadata(&old) {
                Ok(old_md) => !same_file(&old, &old_md, &path, &md)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(Error::io(&old, e)),
            };
            if changed && seen.insert((md.dev(), md.ino())) {
                usage.inodes += 1;
                usage.size += md.blocks() * BLOCK_UNIT;
            }
            if md.is_dir() {
                todo.push(rel);
            }
        }
    }
    Ok(usage)
}

/// Whether `b` is unchanged from `a` by containerd's rules (see [`diff_usage`]).
fn same_file(a: &Path, am: &Metadata, b: &Path, bm: &Metadata) -> Result<bool> {
    if am.mode() != bm.mode()
        || am.uid() != bm.uid()
        || am.gid() != bm.gid()
        || am.rdev() != bm.rdev()
    {
        return Ok(false);
    }
    let cap = |p: &Path| -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0_u8; 256];
        match rustix::fs::lgetxattr(p, "security.capability", &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
            Err(e) => Err(Error::io(p, e.into())),
        }
    };
    if cap(a)? != cap(b)? {
        return Ok(false);
    }
    if am.is_dir() {
        return Ok(true);
    }
    if am.size() != bm.size() || am.mtime() != bm.mtime() {
        return Ok(false);
    }
    if am.mtime_nsec() != 0 || bm.mtime_nsec() != 0 {
        return Ok(am.mtime_nsec() == bm.mtime_nsec());
    }
    // Whole-second times may be truncated ones: look at the contents.
    if am.file_type().is_symlink() {
        let ta = fs::read_link(a).map_err(|e| Error::io(a, e))?;
        let tb = fs::read_link(b).map_err(|e| Error::io(b, e))?;
        return Ok(ta == tb);
    }
    if am.size() == 0 || !am.is_file() {
        return Ok(true);
    }
    let ca = fs::read(a).map_err(|e| Error::io(a, e))?;
    let cb = fs::read(b).map_err(|e| Error::io(b, e))?;
    Ok(ca == cb)
}

/// Creates a fresh directory `parent/<prefix>XXXXXX` and returns its path.
pub(crate) fn temp_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let template = parent.join(format!("{prefix}XXXXXX"));
    nix::unistd::mkdtemp(&template).map_err(|e| Error::io(&template, e.into()))
}

/// Flushes directory `dir`'s entries (a rename into it, say) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Removes `path` and everything below it; a missing path is fine.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes the entries of `dir` whose names are not ids in `ids`.
pub(crate) fn remove_unreferenced(dir: &Path, ids: &BTreeSet<u64>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(path = %dir.display(), error = %e, "cannot list snapshot directories");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let referenced = name
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|id| ids.contains(&id));
        if referenced {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_all(&path)
        } else {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))
        };
        match result {
            Ok(()) => info!(path = %path.display(), "removed unreferenced snapshot directory"),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot remove unreferenced snapshot directory")
            }
        }
    }
}

/// What [`copy_tree`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyStats {
    /// Regular files whose data was shared with the source (FICLONE).
    pub(crate) reflinked: u64,
    /// Regular files whose data was copied.
    pub(crate) copied: u64,
    /// Entries made as hard links to an earlier copy (source had nlink > 1).
    pub(crate) linked: u64,
}

/// Copies the contents of directory `src` into the existing, empty
/// directory `dst`, then gives `dst` the attributes of `src`.
///
/// Keeps file types (regular, directory, symlink, fifo, socket, device
/// nodes via mknod), modes (with setuid/setgid/sticky), owners, times, and
/// hard links within the tree; extended attributes are copied where the
/// destination takes them (failures are logged, not fatal). File data is
/// shared by reflink (`FICLONE`) where the filesystem supports it, and
/// copied otherwise.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    enum Step {
        /// Copy the entries of a source directory into a destination one.
        Enter(PathBuf, PathBuf),
        /// All entries are in: set the directory's own attributes.
        Finish(PathBuf, PathBuf, Box<Metadata>),
    }

    let mut copier = Copier {
        reflink: true,
        links: HashMap::new(),
        stats: CopyStats::default(),
    };
    let root_md = fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    let mut steps = vec![
        Step::Finish(src.to_path_buf(), dst.to_path_buf(), Box::new(root_md)),
        Step::Enter(src.to_path_buf(), dst.to_path_buf()),
    ];
    while let Some(step) = steps.pop() {
        match step {
            Step::Enter(from, to) => {
                for entry in fs::read_dir(&from).map_err(|e| Error::io(&from, e))? {
                    let entry = entry.map_err(|e| Error::io(&from, e))?;
                    let s = entry.path();
                    let d = to.join(entry.file_name());
                    let md = fs::symlink_metadata(&s).map_err(|e| Error::io(&s, e))?;
                    if md.is_dir() {
                        fs::create_dir(&d).map_err(|e| Error::io(&d, e))?;
                        steps.push(Step::Finish(s.clone(), d.clone(), Box::new(md)));
                        steps.push(Step::Enter(s, d));
                    } else {
                        copier.entry(&s, &d, &md)?;
                    }
                }
            }
            // Last, so that a read-only directory is filled first and its
            // times are not bumped by what is created in it.
            Step::Finish(from, to, md) => set_attributes(&from, &to, &md)?,
        }
    }
    Ok(copier.stats)
}

struct Copier {
    /// Whether to try FICLONE; off after the first "not supported here".
    reflink: bool,
    /// Source `(dev, ino)` of multiply-linked files → their first copy.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

impl Copier {
    /// Copies one non-directory entry.
    fn entry(&mut self, src: &Path, dst: &Path, md: &Metadata) -> Result<()> {
        let ft = md.file_type();
        if !ft.is_dir()
            && md.nlink() > 1
            && let Some(first) = self.links.get(&(md.dev(), md.ino()))
        {
            fs::hard_link(first, dst).map_err(|e| Error::io(dst, e))?;
            self.stats.linked += 1;
            return Ok(());
        }
        if ft.is_file() {
            self.file(src, dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(|e| Error::io(src, e))?;
            std::os::unix::fs::symlink(&target, dst).map_err(|e| Error::io(dst, e))?;
        } else {
            let kind = if ft.is_fifo() {
                SFlag::S_IFIFO
            } else if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_socket() {
                SFlag::S_IFSOCK
            } else {
                return Err(Error::io(
                    src,
                    io::Error::new(io::ErrorKind::Unsupported, "unknown file type"),
                ));
            };
            mknod(dst, kind, Mode::from_bits_truncate(0o600), md.rdev())
                .map_err(|e| Error::io(dst, e.into()))?;
        }
        set_attributes(src, dst, md)?;
        if md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
        Ok(())
    }

    /// Copies a regular file's data: a reflink if possible, bytes otherwise.
    fn file(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let mut from = File::open(src).map_err(|e| Error::io(src, e))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| Error::io(dst, e))?;
        if self.reflink {
            match rustix::fs::ioctl_ficlone(&to, &from) {
                Ok(()) => {
                    self.stats.reflinked += 1;
                    return Ok(());
                }
                Err(e) => {
                    // Not supported by this filesystem (or across these two):
                    // stop asking for the rest of this tree.
                    debug!(error = %e, "reflink not available, copying file data");
                    self.reflink = false;
                }
            }
        }
        // std's copy uses copy_file_range(2), which shares or offloads data
        // where the filesystem can.
        io::copy(&mut from, &mut to).map_err(|e| Error::io(dst, e))?;
        self.stats.copied += 1;
        Ok(())
    }
}

/// Gives `dst` the owner, extended attributes, mode and times of `src` (`md`).
fn set_attributes(src: &Path, dst: &Path, md: &Metadata) -> Result<()> {
    // Owner first: chown clears setuid/setgid bits and file capabilities.
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))
        .map_err(|e| Error::io(dst, e))?;
    copy_xattrs(src, dst);
    if !md.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| Error::io(dst, e))?;
    }
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io(dst, e.into()))?;
    Ok(())
}

/// Copies the extended attributes of `src` to `dst`, best effort: some
/// cannot be set everywhere (`user.*` on symlinks, `security.*` without
/// privileges, any on filesystems without xattrs).
fn copy_xattrs(src: &Path, dst: &Path) {
    let names = match list_xattrs(src) {
        Ok(names) => names,
        Err(e) => {
            if e.raw_os_error() != Some(rustix::io::Errno::NOTSUP.raw_os_error()) {
                debug!(path = %src.display(), error = %e, "cannot list xattrs");
            }
            return;
        }
    };
    for name in names {
        let result = get_xattr(src, &name).and_then(|value| {
            rustix::fs::lsetxattr(
                dst,
                name.as_slice(),
                &value,
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(io::Error::from)
        });
        if let Err(e) = result {
            debug!(
                path = %dst.display(),
                xattr = %String::from_utf8_lossy(&name),
                error = %e,
                "cannot copy xattr"
            );
        }
    }
}

/// The names of the extended attributes of `path` (not following symlinks).
fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        buf.resize(size, 0);
        match rustix::fs::llistxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                break;
            }
            // The list grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of extended attribute `name` of `path` (not following symlinks).
fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    loop {
        let size = rustix::fs::lgetxattr_query(path, name)?;
        let mut value = vec![0; size];
        match rustix::fs::lgetxattr(path, name, &mut value) {
            Ok(n) => {
                value.truncate(n);
                return Ok(value);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_inodes_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), vec![1u8; 10_000]).unwrap();
        fs::hard_link(root.join("d/f"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("sym")).unwrap();
        let u = disk_usage(&root).unwrap();
        // root, d, f (twice linked, once counted), sym
        assert_eq!(u.inodes, 4);
        assert!(u.size >= 10_000, "{u:?}");
    }

    #[test]
    fn copy_keeps_types_modes_links_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir_all(src.join("sub/deep")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("sub/deep/file"), b"data").unwrap();
        fs::set_permissions(
            src.join("sub/deep/file"),
            fs::Permissions::from_mode(0o4751),
        )
        .unwrap();
        fs::hard_link(src.join("sub/deep/file"), src.join("hard")).unwrap();
        std::os::unix::fs::symlink("sub/deep/file", src.join("sym")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        // Read-only directory: must still be filled before its mode is set.
        fs::write(src.join("sub/ro-file"), b"x").unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o711)).unwrap();
        let old = TimeSpec::new(1_000_000_000, 5);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join("sub/deep"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!(stats.reflinked + stats.copied, 2);
        assert_eq!(stats.linked, 1);

        assert_eq!(fs::read(dst.join("hard")).unwrap(), b"data");
        let f = fs::metadata(dst.join("sub/deep/file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!(f.ino(), fs::metadata(dst.join("hard")).unwrap().ino());
        assert_eq!(
            fs::read_link(dst.join("sym")).unwrap(),
            Path::new("sub/deep/file")
        );
        assert!(
            fs::symlink_metadata(dst.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(
            fs::metadata(dst.join("fifo")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::metadata(dst.join("sub")).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o711);
        assert_eq!(fs::read(dst.join("sub/ro-file")).unwrap(), b"x");
        let deep = fs::metadata(dst.join("sub/deep")).unwrap();
        assert_eq!((deep.mtime(), deep.mtime_nsec()), (1_000_000_000, 5));
        // Let the tempdir clean up.
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dst.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn copy_keeps_user_xattrs_where_supported() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let set = rustix::fs::lsetxattr(
            src.join("f"),
            "user.berth",
            b"yes",
            rustix::fs::XattrFlags::empty(),
        );
        if set.is_err() {
            crate::test_skip(&format!("{} has no user xattrs", dir.path().display()));
            return;
        }
        copy_tree(&src, &dst).unwrap();
        assert_eq!(get_xattr(&dst.join("f"), b"user.berth").unwrap(), b"yes");
        assert_eq!(
            list_xattrs(&dst.join("f")).unwrap(),
            vec![b"user.berth".to_vec()]
        );
    }

    #[test]
    fn temp_dirs_are_unique_and_removable() {
        let dir = tempfile::tempdir().unwrap();
        let a = temp_dir(dir.path(), "new-").unwrap();
        let b = temp_dir(dir.path(), "new-").unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("new-"));
        fsync_dir(dir.path()).unwrap();
        remove_all(&a).unwrap();
        remove_all(&a).unwrap();
        assert!(!a.exists() && b.exists());
    }

    #[test]
    fn cleanup_keeps_only_referenced_ids() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1", "2", "new-abc", "x"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        fs::write(dir.path().join("stray"), b"").unwrap();
        remove_unreferenced(dir.path(), &[1].into_iter().collect());
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1"]);
    }
}
