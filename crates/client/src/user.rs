//! Looking a user up in a container's root filesystem, as containerd's
//! `WithUser` does: the snapshot's mounts, made read-only, mounted on a
//! temporary directory for the lookup of `/etc/passwd` and `/etc/group`.

use berth_api::containerd::types::Mount;
use berth_spec::user::ResolvedUser;

use crate::error::{Error, Result};

/// `m` mounted read-only for a lookup (see
/// [`berth_spec::user::readonly_mount`]).
pub fn readonly_mount(m: &Mount) -> berth_snapshots::Mount {
    berth_spec::user::readonly_mount(m)
}

/// Resolves `user` (`uid`, `name`, `uid:gid`, `name:group`) through the
/// files of the root filesystem `mounts` describe (needs the privilege to
/// mount).
pub fn resolve_in_mounts(user: &str, mounts: &[Mount]) -> Result<ResolvedUser> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::io("creating a mount point for the user lookup", e))?;
    berth_spec::user::resolve_in_mounts(user, mounts, dir.path())
        .map_err(|e| Error::InvalidArgument(format!("user {user:?}: {e}")))
}
