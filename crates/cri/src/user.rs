//! Users given by name (`runAsUsername`, an image's `USER nobody`): looked
//! up in the container's own `/etc/passwd` and `/etc/group`, its root
//! filesystem mounted read-only on a temporary directory for the lookup,
//! as containerd's `WithUser` does.

use std::path::Path;

use berth_api::containerd::types::Mount;
use berth_spec::user::ResolvedUser;

use crate::error::{CriError, Result};

/// Resolves `user` (`name`, `name:group`, `uid:group`) in the root
/// filesystem `mounts` describe; `scratch` is a directory to mount on.
pub(crate) fn resolve(user: &str, mounts: &[Mount], scratch: &Path) -> Result<ResolvedUser> {
    std::fs::create_dir_all(scratch)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", scratch.display())))?;
    let resolved = berth_spec::user::resolve_in_mounts(user, mounts, scratch);
    let _ = std::fs::remove_dir(scratch);
    resolved.map_err(|e| CriError::InvalidArgument(format!("user {user:?}: {e}")))
}

/// Whether `user` names a user or group rather than giving numbers.
pub(crate) fn is_named(user: &str) -> bool {
    !user.is_empty()
        && user
            .split(':')
            .any(|p| !p.is_empty() && p.parse::<u32>().is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert!(!is_named(""));
        assert!(!is_named("1000"));
        assert!(!is_named("1000:1000"));
        assert!(is_named("nobody"));
        assert!(is_named("1000:staff"));
    }
}
