//! Performing [`Mount`]s: mount(2) and umount(2) for what snapshotters return.
//!
//! This is containerd's `mount.All` / `UnmountAll` for berth: the image
//! unpacker, the shim and the conformance suite mount snapshots with it.
//!
//! Options are split as `mount -o` does: flag names (`ro`, `rw`, `bind`,
//! `rbind`, `nosuid`, `nodev`, `noexec`, `private`, ...) become mount flags,
//! anything else is passed on as filesystem data (`lowerdir=...`). A
//! read-only bind mount is a bind followed by a read-only remount, because
//! the kernel ignores `MS_RDONLY` on the bind itself.
//!
//! A mount with the `loop` option mounts its source file through a loop
//! device attached for it (with autoclear, so the device is released with
//! the mount), as containerd's does: the blockfile snapshotter's mounts.
//!
//! # Long overlay option strings
//!
//! mount(2) copies at most one page (4096 bytes on x86-64 and arm64) of
//! filesystem data, so an overlay with many lower directories given by
//! absolute paths does not fit. Like containerd, [`mount_all`] then rewrites
//! the `lowerdir` paths relative to their longest common directory and does
//! the mount with that directory as working directory, from a helper thread
//! that first unshares its filesystem context (`unshare(CLONE_FS)`), so the
//! process's working directory never changes. The snapshotters' layout
//! (`<root>/snapshots/<id>/fs`, with short numeric ids) makes the relative
//! form `<id>/fs`: see [`crate::overlay`] for the depth this allows.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use tracing::{debug, warn};

use crate::{Error, Mount, Result};

/// The most bytes of mount data the kernel takes (one page, with its NUL).
pub fn max_mount_data() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => usize::try_from(n).unwrap_or(4096),
        _ => 4096,
    }
}

/// Mounts `mounts` on `root`, in order; each on `root/<mount.target>`.
///
/// A target is resolved inside `root` as if `root` were `/` (`openat2`
/// with `RESOLVE_IN_ROOT`): a symlink in the tree (say `tmp/x -> /etc`)
/// can never put a mount on the host's path. On failure the mounts already
/// made are unmounted again, and the error names the failing mount.
pub fn mount_all(mounts: &[Mount], root: impl AsRef<Path>) -> Result<()> {
    let root = root.as_ref();
    let mut done: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let result = mount_in_root(m, root);
        match result {
            Ok(target) => done.push(target),
            Err(e) => {
                for target in done.iter().rev() {
                    if let Err(ue) = unmount(target, MntFlags::MNT_DETACH) {
                        warn!(target = %target.display(), error = %ue, "cannot undo mount");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Performs `m` on `root` (no target) or on its target resolved inside
/// `root`; returns the real path it is mounted on.
fn mount_in_root(m: &Mount, root: &Path) -> Result<PathBuf> {
    let rel = relative_target(&m.target)?;
    if rel.as_os_str().is_empty() {
        mount_one(m, root, root)?;
        return Ok(root.to_path_buf());
    }
    let (fd, real) = open_in_root(root, rel)?;
    // The mount goes on the directory the descriptor holds, never on a
    // path resolved again (which a symlink swapped in could redirect).
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount_one(m, &via_fd, &real)?;
    Ok(real)
}

/// Opens `rel` inside `root` (symlinks resolved as if `root` were `/`),
/// as an `O_PATH` descriptor, with the real path it names.
fn open_in_root(root: &Path, rel: &Path) -> Result<(OwnedFd, PathBuf)> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(root, e.into()))?;
    let fd = rustix::fs::openat2(
        &root_fd,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| Error::io(root.join(rel), e.into()))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Error::io(root.join(rel), e))?;
    Ok((fd, real))
}

/// Unmounts everything mounted on `target`, top first, until it is no longer
/// a mount point. A busy mount is retried for about a second.
pub fn unmount_all(target: impl AsRef<Path>) -> Result<()> {
    let target = target.as_ref();
    // Each mount stacked on the target goes one umount at a time; the bound
    // only guards against a kernel that keeps reporting success.
    for _ in 0..1024 {
        match unmount_retrying(target) {
            Ok(()) => continue,
            // Not (or no longer) a mount point: done.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(umount_error(target, e)),
        }
    }
    Err(umount_error(target, Errno::ELOOP))
}

/// Mounts on a directory and unmounts it again when dropped.
///
/// Dropping unmounts with [`unmount_all`], falling back to a lazy detach if
/// the mount is busy; use [`MountGuard::unmount`] to see errors.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    armed: bool,
}

impl MountGuard {
    /// Mounts `mounts` on `target` (see [`mount_all`]).
    pub fn mount(mounts: &[Mount], target: impl AsRef<Path>) -> Result<MountGuard> {
        let target = target.as_ref().to_path_buf();
        mount_all(mounts, &target)?;
        Ok(MountGuard {
            target,
            armed: true,
        })
    }

    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (the guard then still tries on drop).
    pub fn unmount(mut self) -> Result<()> {
        unmount_all(&self.target)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = unmount_all(&self.target) {
            warn!(target = %self.target.display(), error = %e, "unmount failed, detaching");
            for _ in 0..64 {
                if unmount(&self.target, MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
    }
}

/// Flags and data parsed from a mount's options.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    flags: MsFlags,
    /// Propagation changes (private, shared, ...), applied in a second call.
    propagation: MsFlags,
    data: Vec<String>,
}

/// Splits options into flags and filesystem data, as mount(8) does.
fn parse_options(options: &[String]) -> Parsed {
    let mut p = Parsed {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        // (clear?, flag)
        let (clear, flag) = match opt.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let base = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                p.propagation |= base;
                if opt.starts_with('r') {
                    p.propagation |= MsFlags::MS_REC;
                }
                continue;
            }
            _ => {
                p.data.push(opt.clone());
                continue;
            }
        };
        if clear {
            p.flags.remove(flag);
        } else {
            p.flags.insert(flag);
        }
    }
    p
}

/// `target` relative to the mount root, refusing `..` (which
/// `RESOLVE_IN_ROOT` would clamp silently: a caller asking for it is wrong).
fn relative_target(target: &str) -> Result<&Path> {
    let rel = Path::new(target);
    if rel
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(Error::InvalidArgument(format!(
            "mount target {target:?} leaves the mount root"
        )));
    }
    Ok(rel.strip_prefix("/").unwrap_or(rel))
}

/// Performs one mount on `target` (`real` names it in errors, and takes
/// the flag changes that apply to the new mount rather than to what is
/// under it).
fn mount_one(m: &Mount, target: &Path, real: &Path) -> Result<()> {
    let mut p = parse_options(&m.options);
    // `loop`: mount a loop device attached to the source file instead
    // (autoclear: it detaches when this mount goes).
    let looped = if p.data.iter().any(|d| d == "loop") {
        p.data.retain(|d| d != "loop");
        let dev =
            crate::loopdev::attach(Path::new(&m.source), p.flags.contains(MsFlags::MS_RDONLY))?;
        Some(dev)
    } else {
        None
    };
    let source = looped
        .as_ref()
        .map_or(m.source.as_str(), |d| d.path().to_str().unwrap_or_default());
    let fstype = if m.kind.is_empty() {
        "none"
    } else {
        m.kind.as_str()
    };
    let err = |e: Errno| Error::Mount {
        fstype: fstype.to_owned(),
        target: real.to_path_buf(),
        source: io::Error::from(e),
    };
    let data = p.data.join(",");
    debug!(fstype, source = %m.source, target = %real.display(), options = ?m.options, "mount");

    // A plain remount without new data only changes flags below.
    if !p.flags.contains(MsFlags::MS_REMOUNT) || !data.is_empty() {
        if fstype == "overlay" && data.len() >= max_mount_data() {
            mount_overlay_compact(&m.source, target, p.flags, &data, &p.data)?;
        } else {
            nix::mount::mount(
                Some(source),
                target,
                Some(fstype),
                p.flags,
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(err)?;
        }
    }
    // Later changes apply to the new mount: its real path leads to it,
    // whereas the descriptor still holds the directory beneath.
    if !p.propagation.is_empty() {
        nix::mount::mount(
            None::<&str>,
            real,
            None::<&str>,
            p.propagation,
            None::<&str>,
        )
        .map_err(err)?;
    }
    // The kernel ignores MS_RDONLY on a bind: make it read-only by remounting.
    if p.flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        nix::mount::mount(
            None::<&str>,
            real,
            None::<&str>,
            p.flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Mounts an overlay whose data is too long, with `lowerdir` paths made
/// relative to their common directory (see the module docs).
fn mount_overlay_compact(
    source: &str,
    target: &Path,
    flags: MsFlags,
    data: &str,
    options: &[String],
) -> Result<()> {
    let Some((dir, compact)) = compact_lowerdir(options) else {
        return Err(Error::InvalidArgument(format!(
            "overlay mount data is {} bytes, more than the kernel's {}, and its lowerdirs \
             share no directory to shorten them against",
            data.len(),
            max_mount_data() - 1
        )));
    };
    if compact.len() >= max_mount_data() {
        return Err(Error::InvalidArgument(format!(
            "overlay mount data is {} bytes even with lowerdirs relative to {}; the kernel \
             takes at most {}: the chain has too many layers",
            compact.len(),
            dir.display(),
            max_mount_data() - 1
        )));
    }
    // The helper thread changes its working directory; the target must not
    // depend on it.
    let target = std::path::absolute(target).map_err(|e| Error::io(target, e))?;
    debug!(dir = %dir.display(), bytes = compact.len(), "mounting overlay with relative lowerdirs");
    let result = thread::scope(|s| {
        s.spawn(|| -> nix::Result<()> {
            // Give this thread its own cwd, so chdir does not move the
            // process's (see unshare(2), CLONE_FS).
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(&dir)?;
            nix::mount::mount(
                Some(source),
                &target,
                Some("overlay"),
                flags,
                Some(compact.as_str()),
            )
        })
        .join()
    });
    match result {
        Ok(r) => r.map_err(|e| Error::Mount {
            fstype: "overlay".into(),
            target: target.clone(),
            source: io::Error::from(e),
        }),
        Err(_) => Err(Error::Mount {
            fstype: "overlay".into(),
            target,
            source: io::Error::other("mount helper thread panicked"),
        }),
    }
}

/// Rewrites the `lowerdir=` option relative to the lower directories'
/// longest common parent; returns that directory and the new data string.
/// `None` if there is no lowerdir or nothing in common but `/`.
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, String)> {
    let lower = options.iter().find_map(|o| o.strip_prefix("lowerdir="))?;
    let dirs: Vec<&Path> = lower.split(':').map(Path::new).collect();
    let first = dirs.first()?;
    if !first.is_absolute() {
        return None;
    }
    // The common prefix, by whole components, of the lowerdirs' parents.
    let mut common: PathBuf = first.parent()?.to_path_buf();
    for d in &dirs[1..] {
        while !d.starts_with(&common) {
            common = common.parent()?.to_path_buf();
        }
    }
    // Relative to `/` is no shorter: only compact below the root.
    common.parent()?;
    let relative: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(&common)
                .map(|r| r.to_string_lossy().into_owned())
                // Every dir starts with `common` by construction.
                .unwrap_or_default()
        })
        .collect();
    let data = options
        .iter()
        .filter(|o| !is_flag(o))
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={}", relative.join(":"))
            } else {
                o.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    Some((common, data))
}

/// Whether `opt` is a mount flag rather than filesystem data.
fn is_flag(opt: &str) -> bool {
    parse_options(&[opt.to_owned()]).data.is_empty()
}

fn unmount(target: &Path, flags: MntFlags) -> nix::Result<()> {
    nix::mount::umount2(target, flags)
}

/// umount2 without flags, retrying while the mount is busy.
fn unmount_retrying(target: &Path) -> std::result::Result<(), Errno> {
    let mut tries = 0;
    loop {
        match unmount(target, MntFlags::empty()) {
            Err(Errno::EBUSY) if tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn umount_error(target: &Path, e: Errno) -> Error {
    Error::Mount {
        fstype: "umount".into(),
        target: target.to_path_buf(),
        source: io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&opts(&[
            "ro",
            "rbind",
            "nosuid",
            "index=off",
            "lowerdir=/a:/b",
        ]));
        assert_eq!(
            p.flags,
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID
        );
        assert_eq!(p.data, ["index=off", "lowerdir=/a:/b"]);
        assert!(p.propagation.is_empty());

        let p = parse_options(&opts(&["ro", "rw", "rprivate"]));
        assert!(p.flags.is_empty());
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(
            parse_options(&opts(&["slave"])).propagation,
            MsFlags::MS_SLAVE
        );
    }

    #[test]
    fn lowerdirs_compact_to_their_common_parent() {
        let o = opts(&[
            "index=off",
            "workdir=/r/snapshots/9/work",
            "upperdir=/r/snapshots/9/fs",
            "lowerdir=/r/snapshots/8/fs:/r/snapshots/7/fs:/r/snapshots/1/fs",
            "ro",
        ]);
        let (dir, data) = compact_lowerdir(&o).unwrap();
        assert_eq!(dir, Path::new("/r/snapshots"));
        assert_eq!(
            data,
            "index=off,workdir=/r/snapshots/9/work,upperdir=/r/snapshots/9/fs,\
             lowerdir=8/fs:7/fs:1/fs"
        );
        // Common directory only by whole components.
        let o = opts(&["lowerdir=/r/snap1/fs:/r/snap2/fs"]);
        assert_eq!(compact_lowerdir(&o).unwrap().0, Path::new("/r"));
        // Nothing to gain.
        assert!(compact_lowerdir(&opts(&["lowerdir=/a/x:/b/y"])).is_none());
        assert!(compact_lowerdir(&opts(&["lowerdir=rel/x:rel/y"])).is_none());
        assert!(compact_lowerdir(&opts(&["upperdir=/a"])).is_none());
    }

    #[test]
    fn targets_stay_under_the_root() {
        assert_eq!(relative_target("").unwrap(), Path::new(""));
        assert_eq!(relative_target("/proc").unwrap(), Path::new("proc"));
        assert_eq!(relative_target("a/b").unwrap(), Path::new("a/b"));
        assert!(relative_target("../etc").unwrap_err().is_invalid_argument());
    }

    #[test]
    fn a_symlinked_target_is_resolved_inside_the_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (root, host, src) = (
            dir.path().join("root"),
            dir.path().join("host-target"),
            dir.path().join("src"),
        );
        for d in [&root.join("tmp"), &root.join("inside"), &host, &src] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(src.join("marker"), b"x").unwrap();
        // An absolute link out of the tree, and one whose target exists
        // inside it when read as if the root were `/`.
        std::os::unix::fs::symlink(&host, root.join("tmp/x")).unwrap();
        std::os::unix::fs::symlink("/inside", root.join("tmp/y")).unwrap();
        let bind = |target: &str| Mount {
            kind: "bind".into(),
            source: src.display().to_string(),
            target: target.into(),
            options: vec!["rbind".into()],
        };
        // The escape through tmp/x lands nowhere: host-target's name inside
        // the root does not exist.
        let escaped = mount_all(&[bind("tmp/x")], &root);
        let host_marked = host.join("marker").exists();
        if escaped.is_ok() {
            let _ = unmount(&host, MntFlags::MNT_DETACH);
        }
        assert!(
            escaped.is_err(),
            "mounted through a symlink out of the root"
        );
        assert!(!host_marked);
        // tmp/y resolves to root/inside.
        mount_all(&[bind("tmp/y")], &root).unwrap();
        let inside = root.join("inside/marker").exists();
        let _ = unmount(&root.join("inside"), MntFlags::MNT_DETACH);
        assert!(inside);
        assert!(!host.join("marker").exists());
    }

    #[test]
    fn page_limit_is_sane() {
        assert!(max_mount_data() >= 4096);
    }

    #[test]
    fn unmounting_a_plain_directory_is_a_no_op() {
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip("umount(2) needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        unmount_all(dir.path()).unwrap();
        unmount_all(dir.path().join("missing")).unwrap();
    }
}
