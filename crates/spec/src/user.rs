//! Resolving an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) to
//! numeric ids through the root filesystem's `/etc/passwd` and
//! `/etc/group`, as containerd's `WithUser` and `WithAdditionalGIDs` do.
//!
//! The files are opened with `RESOLVE_IN_ROOT`, so a symlinked
//! `/etc/passwd` in an image cannot make berth read a host file.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::SpecError;

/// The ids a process runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` that list the user as a
    /// member (the user's own primary group excluded), in file order.
    pub additional_gids: Vec<u32>,
}

/// One `/etc/passwd` entry (the fields berth needs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// runc refuses ids above `i32::MAX`; containerd treats such a number as a
/// name, and so does berth.
fn id(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|v| i32::try_from(*v).is_ok())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: (*f.first()?).to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `rel` (e.g. `etc/passwd`) inside `root`; `Ok(None)` when missing.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let fail = |e: std::io::Error| {
        SpecError::Invalid(format!(
            "reading /{rel} of the root filesystem at {}: {e}",
            root.display()
        ))
    };
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(fail(e.into())),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(fail)?;
    Ok(Some(text))
}

/// Resolves `user` as containerd does for an image config or `--user`:
///
/// - `""`: root (`0:0`);
/// - `uid`: that uid, with the primary group of its `/etc/passwd` entry, or
///   gid 0 when it has none;
/// - `name`: the `/etc/passwd` entry of that name (an error if absent);
/// - `user:group`: each part numeric, or a name looked up in `/etc/passwd`
///   and `/etc/group` (an error if absent).
///
/// Supplementary groups are then those `/etc/group` lists the user in.
pub fn resolve(user: &str, root: &Path) -> Result<ResolvedUser, SpecError> {
    let passwd = read_in_root(root, "etc/passwd")?.map(|t| parse_passwd(&t));
    let group = read_in_root(root, "etc/group")?.map(|t| parse_group(&t));
    resolve_with(user, passwd.as_deref(), group.as_deref())
}

fn resolve_with(
    user: &str,
    passwd: Option<&[PasswdEntry]>,
    group: Option<&[GroupEntry]>,
) -> Result<ResolvedUser, SpecError> {
    let by_name = |name: &str| -> Result<&PasswdEntry, SpecError> {
        passwd
            .unwrap_or_default()
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                SpecError::Invalid(format!(
                    "user {name:?} not found in the image's /etc/passwd"
                ))
            })
    };
    let (uid, gid) = match user.split_once(':') {
        _ if user.is_empty() => (0, 0),
        None => match id(user) {
            Some(uid) => {
                let gid = passwd
                    .unwrap_or_default()
                    .iter()
                    .find(|e| e.uid == uid)
                    .map_or(0, |e| e.gid);
                (uid, gid)
            }
            None => {
                let e = by_name(user)?;
                (e.uid, e.gid)
            }
        },
        Some((u, g)) => {
            let uid = match id(u) {
                Some(uid) => uid,
                None => by_name(u)?.uid,
            };
            let gid = match id(g) {
                Some(gid) => gid,
                None => group
                    .unwrap_or_default()
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        SpecError::Invalid(format!(
                            "group {g:?} not found in the image's /etc/group"
                        ))
                    })?,
            };
            (uid, gid)
        }
    };
    // Supplementary groups go by the user's name, found from its uid.
    let name = passwd
        .unwrap_or_default()
        .iter()
        .find(|e| e.uid == uid)
        .map(|e| e.name.clone());
    let additional_gids = match name {
        Some(name) => group
            .unwrap_or_default()
            .iter()
            .filter(|g| g.name != name && g.members.contains(&name))
            .map(|g| g.gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// `m` mounted read-only for a lookup (feature `mounts`): an overlay's upper directory becomes
/// its top lower one, so the container's own mount stays undisturbed.
#[cfg(feature = "mounts")]
pub fn readonly_mount(m: &berth_api::containerd::types::Mount) -> berth_snapshots::Mount {
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

/// Resolves `user` through the files of the root filesystem `mounts`
/// describe, mounted read-only on the empty directory `scratch` for the
/// lookup (as containerd's `WithUser` does; needs the privilege to mount).
/// A failed unmount is logged: the lookup's answer stands. Feature `mounts`.
#[cfg(feature = "mounts")]
pub fn resolve_in_mounts(
    user: &str,
    mounts: &[berth_api::containerd::types::Mount],
    scratch: &Path,
) -> Result<ResolvedUser, SpecError> {
    let mounts: Vec<berth_snapshots::Mount> = mounts.iter().map(readonly_mount).collect();
    let guard = berth_snapshots::mount::MountGuard::mount(&mounts, scratch).map_err(|e| {
        SpecError::Invalid(format!(
            "mounting the root filesystem to look up user {user:?}: {e}"
        ))
    })?;
    let resolved = resolve(user, guard.target());
    if let Err(e) = guard.unmount() {
        tracing::warn!(error = %e, "unmounting after a user lookup");
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        nobody:x:65534:65534:nobody:/:/bin/false\n\
        www-data:x:33:33::/var/www:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        www-data:x:33:\n\
        app:x:1000:app\n\
        audio:x:29:app,www-data\n\
        video:x:44:app\n\
        users:x:100:\n";

    fn resolve(user: &str) -> Result<ResolvedUser, SpecError> {
        let (p, g) = (parse_passwd(PASSWD), parse_group(GROUP));
        resolve_with(user, Some(&p), Some(&g))
    }

    #[test]
    fn names_and_numbers_resolve_as_containerd_does() {
        let u = resolve("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        // The user's own group is not a supplementary one.
        assert_eq!(u.additional_gids, vec![29, 44]);
        let u = resolve("www-data").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (33, 33, vec![29]));
        // A uid takes its passwd entry's group, or 0 without one.
        assert_eq!((resolve("65534").unwrap().gid), 65534);
        let u = resolve("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![]));
        // user:group, each a number or a name.
        let u = resolve("app:users").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 100));
        let u = resolve("1002:1003").unwrap();
        assert_eq!((u.uid, u.gid), (1002, 1003));
        let u = resolve("nobody:29").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 29));
        assert_eq!(resolve("").unwrap(), ResolvedUser::default());
    }

    #[test]
    fn unknown_names_are_errors_that_say_where_they_looked() {
        let e = resolve("ghost").unwrap_err().to_string();
        assert!(e.contains("\"ghost\"") && e.contains("/etc/passwd"), "{e}");
        let e = resolve("app:ghosts").unwrap_err().to_string();
        assert!(e.contains("\"ghosts\"") && e.contains("/etc/group"), "{e}");
        // A name with no /etc/passwd at all is an error too; a uid is not.
        assert!(resolve_with("app", None, None).is_err());
        assert_eq!(resolve_with("7", None, None).unwrap().uid, 7);
    }

    #[test]
    fn files_are_read_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // A host-side file the image's absolute symlink points at by name.
        let outside = t.path().join("outside-passwd");
        std::fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        // Inside the root the link's target does not exist: no passwd.
        let e = super::resolve("evil", &root).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(root.join("etc/group"), GROUP).unwrap();
        let u = super::resolve("app", &root).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (1000, 1000, vec![29, 44])
        );
    }

    #[test]
    fn an_overlay_is_looked_up_through_its_layers_read_only() {
        let m = berth_api::containerd::types::Mount {
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
        assert_eq!(
            readonly_mount(&m).options,
            ["index=off", "lowerdir=/u:/l1:/l2", "ro"]
        );
        let bind = berth_api::containerd::types::Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        assert_eq!(readonly_mount(&bind).options, ["rbind", "ro"]);
    }
}
