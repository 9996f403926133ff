//! Looking a user up in a container's root filesystem, as containerd's
//! `WithUser` does: the snapshot's mounts, made read-only, mounted on a
//! temporary directory for the lookup of `/etc/passwd` and `/etc/group`.

use berth_api::containerd::types::Mount;
use berth_runtime::user::ResolvedUser;

use crate::error::{Error, Result};

/// `m` made read-only for a look inside, as containerd's read-only
/// temporary mounts do: an overlay's upper directory becomes its top lower
/// one (no `upperdir`/`workdir`, so the task's own overlay mount is
/// undisturbed); anything else gets `ro`.
pub fn readonly_mount(m: &Mount) -> berth_snapshots::Mount {
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

/// Resolves `user` (`uid`, `name`, `uid:gid`, `name:group`) through the
/// files of the root filesystem `mounts` describe (needs the privilege to
/// mount).
pub fn resolve_in_mounts(user: &str, mounts: &[Mount]) -> Result<ResolvedUser> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::io("creating a mount point for the user lookup", e))?;
    let mounts: Vec<berth_snapshots::Mount> = mounts.iter().map(readonly_mount).collect();
    let mount_err = |what: &str, e: berth_snapshots::Error| Error::Io {
        context: format!("{what} the root filesystem to look up user {user:?}"),
        source: std::io::Error::other(e.to_string()),
    };
    let guard = berth_snapshots::mount::MountGuard::mount(&mounts, dir.path())
        .map_err(|e| mount_err("mounting", e))?;
    let resolved = berth_runtime::user::resolve(user, guard.target());
    guard.unmount().map_err(|e| mount_err("unmounting", e))?;
    resolved.map_err(|e| Error::InvalidArgument(format!("user {user:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_upper_becomes_a_lower() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l1:/l2".into(),
                "index=off".into(),
            ],
        };
        let ro = readonly_mount(&m);
        assert_eq!(ro.options, ["index=off", "lowerdir=/u:/l1:/l2", "ro"]);
        let bind = Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        assert_eq!(readonly_mount(&bind).options, ["rbind", "ro"]);
    }
}
