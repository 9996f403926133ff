//! What containers leave on the host outside a test's temporary root, and
//! its removal.
//!
//! A container's runc state lives under a root per namespace (containerd's
//! shims use `/run/containerd/runc/<namespace>`), and `ctr` and the Go
//! client put a container in the cgroup `/<namespace>/<id>`. Deleting the
//! container removes its own directory in both places but not the
//! namespace's: runc makes the parent and only ever removes the leaf (as
//! with containerd). A test that picked a namespace of its own removes
//! those parents once its containers are gone, with
//! [`remove_namespace_dirs`]. Namespaces several tests share (`default`,
//! `k8s.io`, `moby`, any fixed name) are never removed: another test's runc
//! may be making a child in them right then.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where containerd's shims keep runc state, one directory per namespace.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Namespaces named so far by [`unique_namespace`] in this process.
static NAMED: AtomicUsize = AtomicUsize::new(0);

/// A namespace name no other test uses: `<prefix>-<pid>-<n>`, with `n`
/// counting the names this process made (so tests sharing a process, as
/// under `cargo test`, differ too). The test owns it and every
/// `<name>-<suffix>` derived from it: they may be removed from the host
/// with [`remove_namespace_family`] when its containers are gone.
pub fn unique_namespace(prefix: &str) -> String {
    let n = NAMED.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The namespaces a test owns: named by [`OwnedNamespaces::own`], their
/// directories on the host removed by [`OwnedNamespaces::remove`], which
/// the owning fixture calls once its daemon and containers are stopped.
#[derive(Debug, Default)]
pub struct OwnedNamespaces(std::sync::Mutex<Vec<String>>);

impl OwnedNamespaces {
    /// A new [`unique_namespace`] of `prefix`, now owned.
    pub fn own(&self, prefix: &str) -> String {
        let name = unique_namespace(prefix);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.clone());
        name
    }

    /// [`remove_namespace_family`] of every namespace owned.
    pub fn remove(&mut self) {
        let names = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for namespace in names.drain(..) {
            remove_namespace_family(&namespace);
        }
    }
}

/// The directories of the cgroup `path` (relative to the root, such as
/// `<namespace>` or `<namespace>/<id>`) on this host: `/sys/fs/cgroup/<hierarchy>/<path>`
/// for every cgroup v1 hierarchy (each real directory under the cgroup
/// root, not the symlinks such as `cpu` -> `cpu,cpuacct`) and the v2
/// `unified` one of a hybrid setup, or `/sys/fs/cgroup/<path>` when the
/// cgroup root is a v2 hierarchy itself. Listed whether or not they exist.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(path)];
    }
    let mut hierarchies: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|h| h.file_type().is_ok_and(|t| t.is_dir()))
        .map(|h| h.path())
        .collect();
    hierarchies.sort();
    hierarchies.into_iter().map(|h| h.join(path)).collect()
}

/// The per-namespace directories of `namespace` on this host:
/// `/run/containerd/runc/<namespace>` and its cgroup parents
/// ([`cgroup_dirs`] of `<namespace>`). Listed whether or not they exist.
pub fn namespace_dirs(namespace: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(RUNC_ROOT).join(namespace)];
    dirs.extend(cgroup_dirs(namespace));
    dirs
}

/// Whether `name` is one path component a directory of it may be made
/// from (not empty, `.`, `..` or containing `/`).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// `rmdir dir`. Returns whether it is still there because it is not empty
/// or busy (a cgroup with processes); a missing directory is fine, any
/// other failure is printed.
fn rmdir(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => false,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DirectoryNotEmpty | ErrorKind::ResourceBusy
            ) =>
        {
            true
        }
        Err(e) => {
            eprintln!("removing {}: {e}", dir.display());
            false
        }
    }
}

/// Removes the per-namespace directories of `namespace` (see
/// [`namespace_dirs`]) where they are empty, with `rmdir` only: a cgroup
/// can only be removed empty, and one that is not means something of the
/// test still runs, which must stay visible. Missing, non-empty and busy
/// directories are left quietly; any other failure is printed, never a
/// panic. Call it only for a namespace the test owns (see
/// [`unique_namespace`]), after the daemon and its containers stopped.
pub fn remove_namespace_dirs(namespace: &str) {
    if !plain_name(namespace) {
        return;
    }
    for dir in namespace_dirs(namespace) {
        rmdir(&dir);
    }
}

/// Removes the leaf cgroups `/<namespace>/<id>` of container `id` (see
/// [`cgroup_dirs`]) where they are empty, with `rmdir` only, and returns
/// those still there: not empty or busy, so a process of the container
/// still runs. For a container the test named, in a namespace it may
/// share with others (the namespace's own directories are left), after
/// its daemon stopped: runc removes a container's cgroup when deleting
/// it, but not one a `runc create` killed halfway made (runc had not yet
/// saved the state that names it).
pub fn remove_container_cgroups(namespace: &str, id: &str) -> Vec<PathBuf> {
    if !plain_name(namespace) || !plain_name(id) {
        return Vec::new();
    }
    cgroup_dirs(&format!("{namespace}/{id}"))
        .into_iter()
        .filter(|dir| rmdir(dir))
        .collect()
}

/// [`remove_namespace_dirs`] for `namespace` and every `<namespace>-<suffix>`
/// found on the host (the names a test derives from one it owns, such as
/// `<namespace>-import`).
pub fn remove_namespace_family(namespace: &str) {
    if !plain_name(namespace) {
        return;
    }
    let derived = format!("{namespace}-");
    let mut names = vec![namespace.to_string()];
    let mut parents = vec![PathBuf::from(RUNC_ROOT)];
    parents.extend(
        cgroup_dirs(namespace)
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf)),
    );
    for parent in parents {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&derived) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names {
        remove_namespace_dirs(&name);
    }
}
