//! berth's snapshotters: layered filesystems for images and containers.
//!
//! This is containerd's `core/snapshots` for berth. A [`Snapshotter`] keeps a
//! set of *snapshots*, each a filesystem state that is either a change set on
//! top of a *parent* snapshot or (with no parent) on top of an empty
//! directory. Snapshots are not mounted by the snapshotter: it hands out
//! [`Mount`]s, plain descriptions of mount(2) calls, and the caller (the
//! layer applier, the shim) performs them, e.g. with [`mount::mount_all`].
//!
//! Drivers: [`overlay::OverlaySnapshotter`] (overlayfs: each snapshot stores
//! only its own changes, stacked as lower directories) and
//! [`native::NativeSnapshotter`] (works on any filesystem: each snapshot is a
//! full copy of its parent, reflinked where the filesystem can). Both keep
//! their records in a [`metastore::MetaStore`], an embedded redb file, as do
//! [`btrfs::BtrfsSnapshotter`] (a Btrfs subvolume per snapshot) and
//! [`blockfile::BlockfileSnapshotter`] (a filesystem image file per
//! snapshot, mounted through a loop device) and
//! [`erofs::ErofsSnapshotter`] (committed layers as EROFS images under
//! overlayfs).
//!
//! # The three kinds
//!
//! - **Active** ([`Kind::Active`]): writable, created by
//!   [`prepare`](Snapshotter::prepare). Identified by a *key*, chosen by the
//!   caller.
//! - **View** ([`Kind::View`]): read-only, created by
//!   [`view`](Snapshotter::view); also identified by a key. A cheap way to
//!   look at a committed snapshot. A view can never be committed.
//! - **Committed** ([`Kind::Committed`]): immutable, created only by
//!   [`commit`](Snapshotter::commit)ting an active snapshot, and identified by
//!   a *name*. Only committed snapshots can be parents.
//!
//! Keys and names share one namespace: an active snapshot `x` and a
//! committed snapshot `x` cannot exist together. Active snapshots never turn
//! into committed ones in place from the caller's point of view: commit
//! *replaces* key by name, and the key is free again afterwards.
//!
//! # Walking through the lifecycle: unpacking an image, running a container
//!
//! An image has layers L1 (the base) and L2. To unpack L1, the puller asks
//! for a writable snapshot with no parent, under a key it picks for this one
//! job (containerd uses `extract-<random> <chain id>`):
//!
//! ```text
//! mounts = prepare("extract-1 sha256:c1", parent: None, labels)
//! ```
//!
//! It mounts `mounts` on a temporary directory, which is empty, unpacks the
//! L1 tar into it, unmounts, and *commits* the result under the layer's chain
//! ID:
//!
//! ```text
//! commit(name: "sha256:c1", key: "extract-1 sha256:c1", labels)
//! ```
//!
//! `extract-1 sha256:c1` is gone; `sha256:c1` is committed. L2 goes the same
//! way, with the committed L1 as parent: mounting the prepared snapshot
//! shows L1's files, and whatever the unpacker changes (including deletions,
//! through whiteouts) is recorded as L2's changes only:
//!
//! ```text
//! mounts = prepare("extract-2 sha256:c2", parent: Some("sha256:c1"), labels)
//! ... mount, apply L2, unmount ...
//! commit("sha256:c2", "extract-2 sha256:c2", labels)
//! ```
//!
//! To run a container, prepare an active snapshot on the image's top chain
//! ID, keyed by the container ID, and hand its mounts to the runtime as the
//! root filesystem. When the container is deleted, [`remove`] its key; or, to
//! turn the container's changes into a new image layer, commit it under a
//! new name. To only *read* an image (to diff it, to copy files out),
//! [`view`](Snapshotter::view) it instead.
//!
//! A committed snapshot cannot be removed while other snapshots (committed,
//! active or views) descend from it: remove from the top down.
//!
//! [`remove`]: Snapshotter::remove
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> berth_snapshots::Result<()> {
//! use berth_snapshots::overlay::OverlaySnapshotter;
//! use berth_snapshots::{Kind, Labels, Snapshotter, mount::MountGuard};
//!
//! let sn = OverlaySnapshotter::new("/var/lib/berth/snapshots/overlayfs")?;
//! let mounts = sn.prepare("extract-1", None, Labels::new())?;
//! {
//!     let mnt = MountGuard::mount(&mounts, "/run/berth/tmpmounts/1")?;
//!     std::fs::write(mnt.target().join("hello"), "world")
//!         .map_err(|e| berth_snapshots::Error::io(mnt.target(), e))?;
//! } // unmounted here
//! sn.commit("layer-1", "extract-1", Labels::new())?;
//! assert_eq!(sn.stat("layer-1")?.kind, Kind::Committed);
//! let view = sn.view("look", Some("layer-1"), Labels::new())?;
//! # let _ = view;
//! # Ok(())
//! # }
//! ```
//!
//! # Threads and crashes
//!
//! Every method is synchronous and may do blocking file I/O (a native
//! prepare copies a whole tree); from async code, call it through
//! `spawn_blocking`. Snapshotters are `Send + Sync`. Metadata changes are
//! redb transactions, one writer at a time, durable when the call returns;
//! the drivers order their directory operations around them so that a crash
//! at any point leaves each snapshot either as it was or as the call would
//! have left it (see [`metastore`]). Leftover directories are reclaimed by
//! [`Snapshotter::cleanup`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub mod apply;
pub mod blockfile;
pub mod btrfs;
pub mod driver;
pub mod erofs;
pub mod error;
mod loopdev;
pub mod metastore;
pub mod mount;
pub mod native;
pub mod overlay;
#[cfg(feature = "grpc")]
pub mod proxy;
#[cfg(feature = "testsuite")]
pub mod testsuite;
mod tree;

pub use apply::{DirectApply, Whiteouts};
pub use error::{Error, Result};

/// Labels on a snapshot: string keys to string values, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// What a snapshot is: writable, read-only, or immutable and usable as a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only snapshot made by [`Snapshotter::view`]; never committed.
    View,
    /// A writable snapshot made by [`Snapshotter::prepare`].
    Active,
    /// An immutable snapshot made by [`Snapshotter::commit`]; may be a parent.
    Committed,
}

impl Kind {
    /// The lower-case name containerd's filters and JSON use (`active`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// Prints like containerd's `Kind.String()`: `View`, `Active`, `Committed`.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::View => "View",
            Kind::Active => "Active",
            Kind::Committed => "Committed",
        })
    }
}

/// Parses a kind name, case-insensitively (`view`, `Active`, `COMMITTED`).
impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "view" => Ok(Kind::View),
            "active" => Ok(Kind::Active),
            "committed" => Ok(Kind::Committed),
            _ => Err(Error::InvalidArgument(format!(
                "unknown snapshot kind {s:?}"
            ))),
        }
    }
}

/// What the snapshotter knows about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Active, view or committed.
    pub kind: Kind,
    /// The snapshot's key (active, view) or name (committed).
    pub name: String,
    /// The committed snapshot this one descends from, if any.
    pub parent: Option<String>,
    /// Labels (GC references, `containerd.io/snapshot/...` properties).
    pub labels: Labels,
    /// When the snapshot was created (for a committed one: committed).
    pub created: SystemTime,
    /// When the snapshot or its labels last changed.
    pub updated: SystemTime,
}

impl Info {
    /// An `Info` with only the name set, e.g. as the argument of [`Snapshotter::update`].
    pub fn new(name: impl Into<String>) -> Info {
        Info {
            kind: Kind::Active,
            name: name.into(),
            parent: None,
            labels: Labels::new(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
        }
    }
}

/// Disk resources a snapshot uses by itself, excluding its parents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes allocated on disk (blocks × 512, hard links counted once).
    pub size: u64,
    /// Inodes in use (files, directories, links, ...).
    pub inodes: u64,
}

impl Usage {
    /// Adds `other` to this usage (an upper bound when inodes are shared).
    pub fn add(&mut self, other: Usage) {
        self.size += other.size;
        self.inodes += other.inodes;
    }
}

/// One mount(2) call, described as data (containerd's `containerd.types.Mount`).
///
/// Snapshotters return these; [`mount::mount_all`] performs them. `options`
/// mixes flags (`ro`, `rbind`, `nosuid`, ...) with filesystem data
/// (`lowerdir=...`), as in `mount -o`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mount {
    /// The filesystem type (`type` on the wire): `overlay`, `bind`, ...
    pub kind: String,
    /// What to mount: a directory for binds, a name (`overlay`) otherwise.
    pub source: String,
    /// Where to mount it, relative to the mount root; usually empty (the root).
    pub target: String,
    /// Mount flags and filesystem options.
    pub options: Vec<String>,
}

/// Keeps snapshots: creates, mounts, commits, walks and removes them.
///
/// See the [crate documentation](crate) for the model. In short: keys name
/// active snapshots and views, names name committed ones, all in one
/// namespace; a parent is always committed; [`Snapshotter::commit`] turns an
/// active snapshot into a committed one; a snapshot with children cannot be
/// removed.
///
/// Errors are [`Error`] categories as listed on each method, plus
/// [`Error::Io`] and [`Error::Db`] when the disk fails.
pub trait Snapshotter: Send + Sync {
    /// The [`Info`] of the snapshot `key` (a key or a name, of any kind).
    ///
    /// For existence checks, parent resolution, and to tell kinds apart.
    /// [`Error::NotFound`] if there is no such snapshot.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Changes the mutable fields of snapshot `info.name`: only its labels.
    ///
    /// With no `fieldpaths`, or with `"labels"`, the labels are replaced by
    /// `info.labels`. A path `"labels.KEY"` sets that one label from
    /// `info.labels`, or removes it if it is absent there or empty. Any other
    /// path (`"parent"`, `"kind"`, ...) is [`Error::InvalidArgument`]; other
    /// fields of `info` are ignored. `updated` becomes now. Returns the new
    /// `Info`; [`Error::NotFound`] if there is no such snapshot.
    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info>;

    /// The disk usage of snapshot `key`, excluding its parents.
    ///
    /// For an active snapshot it is measured now, by walking its files (the
    /// time this takes grows with their number); for a committed one it was
    /// measured at commit. [`Error::NotFound`] if there is no such snapshot.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// The mounts of active snapshot or view `key`, as `prepare`/`view`
    /// returned them.
    ///
    /// [`Error::NotFound`] if there is no such snapshot,
    /// [`Error::FailedPrecondition`] if it is committed.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Creates the active snapshot `key` on top of the committed snapshot
    /// `parent` (or of an empty directory), and returns how to mount it.
    ///
    /// After mounting, the mount point shows the parent's files; changes
    /// made through it are the new snapshot's. Then either
    /// [`commit`](Snapshotter::commit) it or [`remove`](Snapshotter::remove) it.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty key or a parent that
    /// is not committed, [`Error::AlreadyExists`] if `key` is taken,
    /// [`Error::NotFound`] if `parent` does not exist.
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// Like [`prepare`](Snapshotter::prepare), but the snapshot is a
    /// read-only view of `parent`: its mounts are read-only and it can never
    /// be committed. Remove it when done.
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// Turns the active snapshot `key` into the committed snapshot `name`,
    /// with the same parent and contents and with `labels` (labels of the
    /// active snapshot are not carried over). `key` no longer exists after.
    ///
    /// Unmount the snapshot first. Errors: [`Error::AlreadyExists`] if `name`
    /// is taken, [`Error::NotFound`] if `key` does not exist,
    /// [`Error::FailedPrecondition`] if it is a view or committed,
    /// [`Error::InvalidArgument`] for an empty name.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// Removes the snapshot `key` (of any kind) and its files.
    ///
    /// [`Error::NotFound`] if there is no such snapshot,
    /// [`Error::FailedPrecondition`] if other snapshots have it as parent.
    fn remove(&self, key: &str) -> Result<()>;

    /// Calls `f` with the `Info` of every snapshot, in no particular order;
    /// stops at, and returns, the first error `f` returns.
    ///
    /// Filtering is the caller's (the daemon applies containerd's filter
    /// language). `f` may call other methods of this snapshotter, including
    /// ones that change it: it sees the snapshots as they were when the walk
    /// began.
    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()>;

    /// Removes directories that no snapshot refers to any more: left by a
    /// crash, or by a removal whose file deletion failed.
    fn cleanup(&self) -> Result<()>;

    /// The driver's [`DirectApply`] capability, if it has one: layers are
    /// then written into its snapshots without mounts (see [`apply`]).
    /// `None` by default.
    fn direct_apply(&self) -> Option<&dyn DirectApply> {
        None
    }
}

/// The labels, among `labels`, that a snapshot passes on to what is made
/// from it: those starting with `containerd.io/snapshot/`, and
/// `containerd.io/snapshot.ref`.
///
/// Callers (the image unpacker, the daemon) use this as containerd's
/// `FilterInheritedLabels` does; the snapshotters themselves store labels
/// exactly as given.
pub fn inherited_labels(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| {
            k.starts_with("containerd.io/snapshot/") || *k == "containerd.io/snapshot.ref"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Reports a skipped unit test: printed, and recorded where `cargo xtask
/// test` collects skips (`BERTH_SKIP_LOG`) so CI shows it.
#[cfg(test)]
pub(crate) fn test_skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP: berth-snapshots {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_print_and_parse_like_containerd() {
        for k in [Kind::View, Kind::Active, Kind::Committed] {
            assert_eq!(k.to_string().parse::<Kind>().unwrap(), k);
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert_eq!(Kind::Committed.to_string(), "Committed");
        assert_eq!("ACTIVE".parse::<Kind>().unwrap(), Kind::Active);
        assert!("unknown".parse::<Kind>().unwrap_err().is_invalid_argument());
    }

    #[test]
    fn usage_adds_up() {
        let mut u = Usage {
            size: 10,
            inodes: 1,
        };
        u.add(Usage { size: 5, inodes: 2 });
        assert_eq!(
            u,
            Usage {
                size: 15,
                inodes: 3
            }
        );
    }

    #[test]
    fn info_new_sets_only_the_name() {
        let i = Info::new("x");
        assert_eq!(i.name, "x");
        assert!(i.parent.is_none() && i.labels.is_empty());
    }

    #[test]
    fn inherited_labels_keep_snapshot_labels_only() {
        let labels: Labels = [
            ("containerd.io/snapshot/overlay.upperdir", "a"),
            ("containerd.io/snapshot.ref", "b"),
            ("containerd.io/gc.root", "c"),
            ("other", "d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let kept = inherited_labels(&labels);
        assert_eq!(
            kept.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "containerd.io/snapshot.ref",
                "containerd.io/snapshot/overlay.upperdir"
            ]
        );
    }

    #[test]
    fn mount_is_plain_data() {
        let m = Mount {
            kind: "bind".into(),
            source: "/a".into(),
            target: String::new(),
            options: vec!["ro".into(), "rbind".into()],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Mount>(&json).unwrap(), m);
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
