//! The overlayfs snapshotter: each snapshot stores only its own changes.
//!
//! This is containerd's `overlayfs` snapshotter for berth. Layout under the
//! root:
//!
//! ```text
//! root/metadata.redb          snapshot records (see crate::metastore)
//! root/snapshots/<id>/fs      the snapshot's files: its changes on its parents
//! root/snapshots/<id>/work    overlayfs' work directory (active snapshots only)
//! ```
//!
//! Mounts, by kind and number of parents:
//!
//! | snapshot | mount |
//! |---|---|
//! | active, no parent | `bind` of its `fs`, `rw,rbind` |
//! | active, parents P1 (nearest) … Pn | `overlay`: `upperdir=<id>/fs,workdir=<id>/work,lowerdir=P1/fs:…:Pn/fs` |
//! | view, no parent | `bind` of its (empty) `fs`, `ro,rbind` |
//! | view, one parent | `bind` of the parent's `fs`, `ro,rbind` |
//! | view, parents P1 … Pn (n ≥ 2) | `overlay` with `lowerdir` only (read-only by nature) |
//!
//! `index=off` is added where the kernel has the option, as containerd does:
//! overlayfs' inode index would tie a lower directory to the first upper
//! directory it was mounted with.
//!
//! # How deep a chain can be
//!
//! Two limits apply to the lower directories of one overlay mount:
//!
//! - overlayfs stacks at most **500** lower layers (`OVL_MAX_STACK`).
//! - mount(2) takes at most one page (4096 bytes) of options. Given as
//!   absolute paths, each layer costs `len(root) + 15 + digits(id)` bytes
//!   (`<root>/snapshots/<id>/fs:`), about 70 under containerd-style roots
//!   such as `/var/lib/berth/io.containerd.snapshotter.v1.overlayfs`: some
//!   55 layers. Longer strings are mounted by [`mount::mount_all`] with
//!   lowerdirs relative to `<root>/snapshots`, as containerd does, so each
//!   layer costs only `digits(id) + 4` bytes (`<id>/fs:`); the upper and work
//!   directories stay absolute (about `2 × len(root) + 70` bytes).
//!
//! Ids are short because they are numbers from a sequence. Under that same
//! 52-byte root the deepest mountable chain is therefore 500 layers while
//! ids are below 1,000, about 485 below 10,000, 430 below 100,000 and 390
//! below 1,000,000 (ids only grow: one per prepare or view). Deeper chains
//! are created fine but fail to mount, with an error that says why.
//!
//! [`mount::mount_all`]: crate::mount::mount_all

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tracing::{info, warn};

use crate::driver::{self, Driver, Layout};
use crate::metastore::Snapshot;
use crate::mount::{mount_all, unmount_all};
use crate::{Error, Kind, Mount, Result, tree};

/// Where the kernel shows whether overlayfs has the `index` option.
const INDEX_PARAMETER: &str = "/sys/module/overlay/parameters/index";

/// Snapshots as overlayfs layers under one root directory.
pub type OverlaySnapshotter = Driver<OverlayLayout>;

/// The overlay driver's layout: `<root>/snapshots/<id>/{fs,work}`.
#[derive(Debug)]
pub struct OverlayLayout {
    root: PathBuf,
    /// Whether to mount with `index=off`.
    index_off: bool,
}

impl OverlaySnapshotter {
    /// Opens (creating if needed) the snapshotter rooted at `root`.
    ///
    /// Checks first that overlayfs works there: the kernel must have it
    /// (`/proc/filesystems`), the backing filesystem must report file types
    /// in directory entries (`d_type`; XFS needs `ftype=1`), and a real
    /// overlay mount in a scratch directory under `root` must succeed (which
    /// also needs `CAP_SYS_ADMIN`, and fails when `root` is itself on
    /// overlayfs). If not, [`Error::FailedPrecondition`] says what is missing.
    /// [`Error::Unavailable`] if another snapshotter has `root` open.
    pub fn new(root: impl AsRef<Path>) -> Result<OverlaySnapshotter> {
        let root = root.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(&root, e))?;
        check_support(&root)?;
        let ms = driver::open_root(&root)?;
        // What a killed unpack left staged is garbage (the root is ours now).
        let staging = driver::staging_dir(&root);
        if staging.exists()
            && let Err(e) = tree::remove_all(&staging)
        {
            warn!(dir = %staging.display(), error = %e, "cannot clear the staging directory");
        }
        let index_off = Path::new(INDEX_PARAMETER).exists();
        info!(root = %root.display(), index_off, "overlay snapshotter ready");
        Ok(Driver {
            layout: OverlayLayout { root, index_off },
            ms,
        })
    }
}

impl OverlayLayout {
    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// A snapshot's own files: the overlay upper directory.
    fn fs_path(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    fn work_path(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("work")
    }
}

impl Layout for OverlayLayout {
    fn root(&self) -> &Path {
        &self.root
    }

    fn own_files(&self, id: u64) -> PathBuf {
        self.fs_path(id)
    }

    fn mounts_of(&self, s: &Snapshot) -> Vec<Mount> {
        let path = |id: u64| self.fs_path(id).to_string_lossy().into_owned();
        let bind = |source: String, rw: &str| Mount {
            kind: "bind".into(),
            source,
            target: String::new(),
            options: vec![rw.into(), "rbind".into()],
        };
        match (s.kind, s.parent_ids.as_slice()) {
            // Overlay needs at least one lower (two without upper): with
            // fewer layers a bind mount does the same job.
            (Kind::Active, []) => return vec![bind(path(s.id), "rw")],
            (_, []) => return vec![bind(path(s.id), "ro")],
            (Kind::View, [only]) => return vec![bind(path(*only), "ro")],
            _ => {}
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_owned());
        }
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", self.work_path(s.id).display()));
            options.push(format!("upperdir={}", path(s.id)));
        }
        let lower: Vec<String> = s.parent_ids.iter().map(|&id| path(id)).collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }

    fn whiteouts(&self) -> crate::Whiteouts {
        crate::Whiteouts::Overlay
    }

    fn stages_layers(&self) -> bool {
        // A layer is its own upper directory: it needs nothing of its parents.
        true
    }

    fn needs_dir(&self, _s: &Snapshot) -> bool {
        true
    }

    /// Makes `fs` (and `work` for an active snapshot) in the new directory.
    fn populate(&self, td: &Path, s: &Snapshot) -> Result<()> {
        let fs_dir = td.join("fs");
        DirBuilder::new()
            .mode(0o755)
            .create(&fs_dir)
            .map_err(|e| Error::io(&fs_dir, e))?;
        match s.parent_ids.first() {
            // The merged root is the upper directory: give it the parent's
            // root's owner and mode, or the mount would show ours.
            Some(&pid) => {
                let parent_fs = self.fs_path(pid);
                let md = fs::metadata(&parent_fs).map_err(|e| Error::io(&parent_fs, e))?;
                std::os::unix::fs::lchown(&fs_dir, Some(md.uid()), Some(md.gid()))
                    .map_err(|e| Error::io(&fs_dir, e))?;
                fs::set_permissions(&fs_dir, fs::Permissions::from_mode(md.mode() & 0o7777))
                    .map_err(|e| Error::io(&fs_dir, e))?;
            }
            // Not subject to the umask.
            None => fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(&fs_dir, e))?,
        }
        if s.kind == Kind::Active {
            let work = td.join("work");
            DirBuilder::new()
                .mode(0o711)
                .create(&work)
                .map_err(|e| Error::io(&work, e))?;
        }
        Ok(())
    }
}

/// Checks that overlayfs works on `root` (see [`OverlaySnapshotter::new`]).
fn check_support(root: &Path) -> Result<()> {
    let listed = fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    let probe = tree::temp_dir(root, "overlay-probe-")?;
    let result = probe_in(&probe);
    if let Err(e) = tree::remove_all(&probe) {
        warn!(path = %probe.display(), error = %e, "cannot remove overlay probe directory");
    }
    match result {
        Ok(()) => Ok(()),
        Err(Probe::NoDType) => Err(Error::FailedPrecondition(format!(
            "overlayfs needs a backing filesystem with d_type support, and {} has none \
             (for XFS, reformat with ftype=1)",
            root.display()
        ))),
        Err(Probe::Io(e)) => Err(e),
        Err(Probe::Mount(e)) => {
            let why = if !listed {
                "the kernel has no overlay filesystem (it is not in /proc/filesystems; \
                 is the overlay module available? try `modprobe overlay`)"
                    .to_owned()
            } else if !nix::unistd::geteuid().is_root() {
                "mounting needs CAP_SYS_ADMIN (run as root)".to_owned()
            } else {
                format!(
                    "the kernel has overlayfs, but {} cannot hold its upper directories \
                     (is it itself on overlayfs, or without xattr support?)",
                    root.display()
                )
            };
            Err(Error::FailedPrecondition(format!(
                "overlayfs is not usable on {}: {why}; a test mount failed: {e}",
                root.display()
            )))
        }
    }
}

enum Probe {
    NoDType,
    Io(Error),
    Mount(Error),
}

/// Checks d_type and mounts a two-layer overlay in the scratch dir `dir`.
fn probe_in(dir: &Path) -> std::result::Result<(), Probe> {
    for sub in ["lower1", "lower2", "upper", "work", "merged"] {
        fs::create_dir(dir.join(sub)).map_err(|e| Probe::Io(Error::io(dir.join(sub), e)))?;
    }
    let mut d = Dir::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| Probe::Io(Error::io(dir, e.into())))?;
    let typed = d
        .iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_bytes() == b"lower1")
        .any(|e| e.file_type() == Some(Type::Directory));
    if !typed {
        return Err(Probe::NoDType);
    }
    let p = |s: &str| dir.join(s).to_string_lossy().into_owned();
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}:{}", p("lower2"), p("lower1")),
            format!("upperdir={}", p("upper")),
            format!("workdir={}", p("work")),
        ],
    };
    let merged = dir.join("merged");
    mount_all(std::slice::from_ref(&m), &merged).map_err(Probe::Mount)?;
    unmount_all(&merged).map_err(Probe::Mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::MetaStore;

    fn snapshot(kind: Kind, id: u64, parents: &[u64]) -> Snapshot {
        Snapshot {
            id,
            kind,
            parent_ids: parents.to_vec(),
        }
    }

    /// A snapshotter value for mount-shape tests, without opening anything.
    fn shapes(index_off: bool) -> (OverlaySnapshotter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ms = MetaStore::open(dir.path().join("m.redb")).unwrap();
        let o = Driver {
            layout: OverlayLayout {
                root: PathBuf::from("/r"),
                index_off,
            },
            ms,
        };
        (o, dir)
    }

    #[test]
    fn mounts_follow_containerd_shapes() {
        let (o, _d) = shapes(true);
        let m = o.layout.mounts_of(&snapshot(Kind::Active, 1, &[]));
        assert_eq!(
            (m[0].kind.as_str(), m[0].source.as_str()),
            ("bind", "/r/snapshots/1/fs")
        );
        assert_eq!(m[0].options, ["rw", "rbind"]);

        let m = o.layout.mounts_of(&snapshot(Kind::View, 2, &[]));
        assert_eq!(m[0].options, ["ro", "rbind"]);

        let m = o.layout.mounts_of(&snapshot(Kind::View, 3, &[1]));
        assert_eq!(
            (m[0].kind.as_str(), m[0].source.as_str()),
            ("bind", "/r/snapshots/1/fs")
        );
        assert_eq!(m[0].options, ["ro", "rbind"]);

        let m = o.layout.mounts_of(&snapshot(Kind::Active, 4, &[3, 1]));
        assert_eq!(
            (m[0].kind.as_str(), m[0].source.as_str()),
            ("overlay", "overlay")
        );
        assert_eq!(
            m[0].options,
            [
                "index=off",
                "workdir=/r/snapshots/4/work",
                "upperdir=/r/snapshots/4/fs",
                "lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs"
            ]
        );

        let (o, _d) = shapes(false);
        let m = o.layout.mounts_of(&snapshot(Kind::View, 5, &[3, 1]));
        assert_eq!(
            m[0].options,
            ["lowerdir=/r/snapshots/3/fs:/r/snapshots/1/fs"]
        );
    }
}
