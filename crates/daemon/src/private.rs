//! Keeping berthd's directories private to root.
//!
//! Plugins create their directories under root and state with well-known
//! names (the metadata DB, blobs, bundles with `config.json`): like
//! containerd, berthd leaves them traversable at most (0711), never
//! listable or readable by other users.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Permission bits that let other users list or read a directory.
const READABLE_BY_OTHERS: u32 = 0o066;

/// Removes group and other read/write bits from every directory directly
/// under `dir` (0755 becomes 0711), leaving the search bit so a plugin's own
/// choice of a deeper private directory still works.
pub(crate) fn restrict_children(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = md.permissions().mode() & 0o7777;
        if !md.is_dir() || mode & READABLE_BY_OTHERS == 0 {
            continue;
        }
        let tightened = mode & !READABLE_BY_OTHERS;
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(tightened)) {
            Ok(()) => {
                tracing::debug!(dir = %path.display(), from = format!("{mode:o}"), to = format!("{tightened:o}"), "made plugin directory private")
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot make plugin directory private")
            }
        }
    }
}

/// Creates `dir` and any missing parents with mode 0700 (scratch space for
/// mounts, created before any request so it never appears world-readable).
pub(crate) fn create_private_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)));
    if let Err(e) = made {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create private directory");
    }
}
