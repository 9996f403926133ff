//! runc's `Options.shim_cgroup`: the task options containerd hands a shim's
//! `start` on stdin may name a cgroup the long-lived shim must run in (so
//! its memory and CPU are accounted with the pod's, as the CRI plugin asks).

use std::io::Read;
use std::path::Path;

use berth_api::containerd::runc::v1::Options as RuncOptions;
use prost::Message;

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Reads the task options from stdin (empty when none were given) and
/// returns the shim cgroup they name, if any.
pub(crate) fn from_stdin() -> Result<Option<String>, String> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| format!("reading the task options on stdin: {e}"))?;
    if data.is_empty() {
        return Ok(None);
    }
    let any = prost_types::Any::decode(data.as_slice())
        .map_err(|e| format!("the task options on stdin are not a protobuf Any: {e}"))?;
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return Ok(None);
    }
    let options = RuncOptions::decode(any.value.as_slice())
        .map_err(|e| format!("decoding runc options: {e}"))?;
    Ok(Some(options.shim_cgroup).filter(|c| !c.is_empty()))
}

/// Moves process `pid` into cgroup `path`: on cgroup v2 the unified
/// hierarchy's `path`, which must exist; on v1 every hierarchy that has
/// `path` (containerd loads a static v1 path the same way).
pub(crate) fn join(pid: u32, path: &str) -> Result<(), String> {
    let root = Path::new(CGROUP_ROOT);
    let relative = path.trim_start_matches('/');
    let write = |dir: &Path| {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("failed to join cgroup {path} ({}): {e}", dir.display()))
    };
    if root.join("cgroup.controllers").exists() {
        return write(&root.join(relative));
    }
    let hierarchies =
        std::fs::read_dir(root).map_err(|e| format!("failed to load cgroup {path}: {e}"))?;
    for h in hierarchies.flatten() {
        // cpu,cpuacct has symlinks (cpu, cpuacct) to it; unified is v2's.
        let is_dir = h.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || h.file_name() == "unified" {
            continue;
        }
        let dir = h.path().join(relative);
        if dir.is_dir() {
            write(&dir)?;
        }
    }
    Ok(())
}
