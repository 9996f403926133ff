//! Users given by name (`runAsUsername`, an image's `USER nobody`): looked
//! up in the container's own `/etc/passwd` and `/etc/group`, its root
//! filesystem mounted read-only on a temporary directory for the lookup,
//! as containerd's `WithUser` does.

use std::path::Path;

use berth_api::containerd::types::Mount;
use berth_runtime::user::ResolvedUser;

use crate::error::{CriError, Result};

/// `m` mounted read-only: an overlay's upper directory becomes its top
/// lower one (so the container's own mount is undisturbed).
fn readonly(m: &Mount) -> berth_snapshots::Mount {
    let mut options: Vec<String> = Vec::new();
    if m.r#type == "overlay" {
        let (mut upper, mut lower) = (None, None);
        for o in &m.options {
            if let Some(u) = o.strip_prefix("upperdir=") {
                upper = Some(u.to_string());
            } else if let Some(l) = o.strip_prefix("lowerdir=") {
                lower = Some(l.to_string());
            } else if !o.starts_with("workdir=") && o != "rw" {
                options.push(o.clone());
            }
        }
        let lowers: Vec<String> = upper.into_iter().chain(lower).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
    } else {
        options.extend(m.options.iter().filter(|o| o.as_str() != "rw").cloned());
    }
    options.push("ro".to_string());
    berth_snapshots::Mount {
        kind: m.r#type.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options,
    }
}

/// Resolves `user` (`name`, `name:group`, `uid:group`) in the root
/// filesystem `mounts` describe; `scratch` is a directory to mount on.
pub(crate) fn resolve(user: &str, mounts: &[Mount], scratch: &Path) -> Result<ResolvedUser> {
    std::fs::create_dir_all(scratch)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", scratch.display())))?;
    let mounts: Vec<berth_snapshots::Mount> = mounts.iter().map(readonly).collect();
    let guard = berth_snapshots::mount::MountGuard::mount(&mounts, scratch).map_err(|e| {
        CriError::Internal(format!(
            "mounting the root filesystem to look up user {user:?}: {e}"
        ))
    })?;
    let resolved = berth_runtime::user::resolve(user, guard.target());
    if let Err(e) = guard.unmount() {
        tracing::warn!(error = %e, "unmounting after a user lookup");
    }
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

    #[test]
    fn an_overlay_is_mounted_from_its_layers_only() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l1:/l2".into(),
            ],
        };
        assert_eq!(readonly(&m).options, vec!["lowerdir=/u:/l1:/l2", "ro"]);
    }
}
