//! Moving a process into a cgroup given by its path, as containerd's
//! `[cgroup] path` setting moves the daemon: on a v1 (or hybrid) host the
//! same path under every v1 hierarchy the process belongs to, created when
//! missing; on a v2 host one directory of the unified hierarchy.

use std::path::{Path, PathBuf};

use super::{Mode, parse_proc_cgroup};

/// Why a process could not be moved.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {message}")]
pub struct PlaceError {
    /// The directory involved.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

fn fail(path: &Path, message: impl std::fmt::Display) -> PlaceError {
    PlaceError {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The cgroup mounts of this process: (mount point, filesystem type, super options).
fn cgroup_mounts() -> Vec<(PathBuf, String, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let superopts = post.nth(1)?;
            fstype.starts_with("cgroup").then(|| {
                (
                    PathBuf::from(mount_point),
                    fstype.to_string(),
                    superopts.split(',').map(str::to_string).collect(),
                )
            })
        })
        .collect()
}

/// Moves `pid` into the cgroup `path` (e.g. `/berthd`), creating it where
/// missing. Returns the cgroup directories it was written into.
pub fn place(pid: u32, path: &str) -> Result<Vec<PathBuf>, PlaceError> {
    let relative = path.trim_start_matches('/');
    let mounts = cgroup_mounts();
    let mut dirs = Vec::new();
    if super::mode() == Mode::Unified {
        let root = mounts
            .iter()
            .find(|(_, t, _)| t == "cgroup2")
            .map_or_else(|| PathBuf::from(super::DEFAULT_ROOT), |(m, _, _)| m.clone());
        dirs.push(root.join(relative));
    } else {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| fail(Path::new("/proc/self/cgroup"), e))?;
        for line in parse_proc_cgroup(&own)
            .into_iter()
            .filter(|l| l.hierarchy != 0)
        {
            let mount = mounts.iter().find(|(_, t, opts)| {
                t == "cgroup" && line.controllers.iter().all(|c| opts.contains(c))
            });
            if let Some((m, _, _)) = mount {
                dirs.push(m.join(relative));
            }
        }
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        fill_cpuset(dir)?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| fail(dir, e))?;
    }
    Ok(dirs)
}

/// A new v1 cpuset cgroup starts with no CPUs and memory nodes, and takes
/// no process until they are set: copy them from the nearest ancestor
/// that has them (downward), as containerd's cgroup library does.
fn fill_cpuset(dir: &Path) -> Result<(), PlaceError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let here = dir.join(file);
        let Ok(current) = std::fs::read_to_string(&here) else {
            return Ok(()); // not a cpuset hierarchy
        };
        if !current.trim().is_empty() {
            continue;
        }
        // Ancestors up to the first one with a value, then set downwards.
        let mut chain = vec![dir.to_path_buf()];
        let mut value = String::new();
        let mut cur = dir.parent();
        while let Some(p) = cur {
            match std::fs::read_to_string(p.join(file)) {
                Ok(v) if !v.trim().is_empty() => {
                    value = v.trim().to_string();
                    break;
                }
                Ok(_) => chain.push(p.to_path_buf()),
                Err(_) => break,
            }
            cur = p.parent();
        }
        for d in chain.iter().rev() {
            std::fs::write(d.join(file), &value).map_err(|e| fail(d, e))?;
        }
    }
    Ok(())
}
