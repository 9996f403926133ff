//! An optional capability of a driver: letting a layer be written into an
//! active snapshot without mounting it, and (where a layer's changes do not
//! depend on its parents) applying layers before their snapshot exists, in
//! parallel.
//!
//! Unpackers ask [`Snapshotter::direct_apply`](crate::Snapshotter::direct_apply);
//! a driver that answers `None` (the default: proxies, third-party drivers)
//! is written the plain way, through its mounts.

use std::path::{Path, PathBuf};

use crate::Result;

/// How a driver's writable directory records that a lower layer's file was
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Whiteouts {
    /// The directory holds the whole file system: delete the file.
    Remove,
    /// The directory is an overlayfs upper directory: a 0/0 character
    /// device, or the `trusted.overlay.opaque` attribute on a directory.
    Overlay,
}

/// A driver that can be written without mounts (see the module docs).
pub trait DirectApply: Send + Sync {
    /// How deletions are recorded in [`DirectApply::writable_dir`]s.
    fn whiteouts(&self) -> Whiteouts;

    /// The directory holding active snapshot `key`'s changes, to be written
    /// in place of mounting it. [`crate::Error::NotFound`] if there is no
    /// such snapshot, [`crate::Error::FailedPrecondition`] if it is not active.
    fn writable_dir(&self, key: &str) -> Result<PathBuf>;

    /// A directory (on the snapshots' file system) in which a layer's
    /// changes may be made before its snapshot exists, then moved in with
    /// [`DirectApply::adopt`]; `None` (the default) if a layer's changes
    /// depend on its parents. The driver empties it when it starts.
    fn staging_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Makes `staged`, a directory under [`DirectApply::staging_dir`], the
    /// changes of active snapshot `key`, which must have none yet.
    fn adopt(&self, key: &str, staged: &Path) -> Result<()> {
        let _ = staged;
        Err(crate::Error::FailedPrecondition(format!(
            "{key}: this snapshotter cannot adopt staged layers"
        )))
    }
}
