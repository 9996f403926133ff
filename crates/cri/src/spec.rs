//! OCI specs of pause and application containers: berth's spec options
//! (`berth_spec`) plus the few settings only the CRI asks for.

use std::collections::HashMap;

use berth_api::runtime::v1 as cri;
use berth_spec::{self as spec, SpecError, SpecOpt};
use oci_spec::runtime::{LinuxNamespaceType, MountBuilder};
use serde_json::Value;

/// Type URL containerd gives an OCI runtime spec.
pub(crate) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an exec's process.
pub(crate) const PROCESS_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Type URL of resources in a task update.
pub(crate) const RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// containerd's oom_score_adj of pause containers.
pub(crate) const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// The daemon's own oom_score_adj (the floor with `restrict_oom_score_adj`).
pub(crate) fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `adj`, raised to the daemon's own when `restrict` (containerd's
/// `restrict_oom_score_adj`).
pub(crate) fn clamp_oom(adj: i64, restrict: bool) -> i64 {
    if restrict {
        adj.max(own_oom_score_adj())
    } else {
        adj
    }
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Sets `oom_score_adj`.
pub(crate) fn with_oom_score_adj(adj: i64) -> SpecOpt {
    Box::new(move |s| {
        let p = s.process_mut().get_or_insert_with(Default::default);
        p.set_oom_score_adj(Some(i32::try_from(adj).unwrap_or(0)));
        Ok(())
    })
}

/// No hostname (a process in the host's UTS namespace may not set one).
pub(crate) fn without_hostname() -> SpecOpt {
    Box::new(|s| {
        s.set_hostname(None);
        Ok(())
    })
}

/// Sets sysctls.
pub(crate) fn with_sysctls(sysctls: HashMap<String, String>) -> SpecOpt {
    Box::new(move |s| {
        if sysctls.is_empty() {
            return Ok(());
        }
        let linux = s.linux_mut().get_or_insert_with(Default::default);
        let mut all = linux.sysctl().clone().unwrap_or_default();
        all.extend(sysctls);
        linux.set_sysctl(Some(all));
        Ok(())
    })
}

/// Adds annotations.
pub(crate) fn with_annotations(annotations: HashMap<String, String>) -> SpecOpt {
    Box::new(move |s| {
        let mut all = s.annotations().clone().unwrap_or_default();
        all.extend(annotations);
        s.set_annotations(Some(all));
        Ok(())
    })
}

/// Sets `noNewPrivileges`.
pub(crate) fn with_no_new_privs(on: bool) -> SpecOpt {
    Box::new(move |s| {
        let p = s.process_mut().get_or_insert_with(Default::default);
        p.set_no_new_privileges(Some(on));
        Ok(())
    })
}

/// The CRI's container resources (CFS quota and period, shares, memory,
/// cpusets, unified cgroup v2 values).
pub(crate) fn with_resources(r: cri::LinuxContainerResources) -> SpecOpt {
    Box::new(move |s| {
        let linux = s.linux_mut().get_or_insert_with(Default::default);
        let mut res = linux.resources().clone().unwrap_or_default();
        let mut cpu = res.cpu().clone().unwrap_or_default();
        if r.cpu_period > 0 {
            cpu.set_period(u64::try_from(r.cpu_period).ok());
        }
        if r.cpu_quota > 0 {
            cpu.set_quota(Some(r.cpu_quota));
        }
        if r.cpu_shares > 0 {
            cpu.set_shares(u64::try_from(r.cpu_shares).ok());
        }
        if !r.cpuset_cpus.is_empty() {
            cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        }
        if !r.cpuset_mems.is_empty() {
            cpu.set_mems(Some(r.cpuset_mems.clone()));
        }
        res.set_cpu(Some(cpu));
        if r.memory_limit_in_bytes > 0 {
            let mut mem = (*res.memory()).unwrap_or_default();
            mem.set_limit(Some(r.memory_limit_in_bytes));
            if r.memory_swap_limit_in_bytes > 0 {
                mem.set_swap(Some(r.memory_swap_limit_in_bytes));
            }
            res.set_memory(Some(mem));
        }
        if !r.unified.is_empty() {
            res.set_unified(Some(r.unified.clone().into_iter().collect()));
        }
        linux.set_resources(Some(res));
        Ok(())
    })
}

/// Replaces the masked paths.
pub(crate) fn with_masked_paths(paths: Vec<String>) -> SpecOpt {
    Box::new(move |s| {
        s.linux_mut()
            .get_or_insert_with(Default::default)
            .set_masked_paths(Some(paths));
        Ok(())
    })
}

/// Replaces the read-only paths.
pub(crate) fn with_readonly_paths(paths: Vec<String>) -> SpecOpt {
    Box::new(move |s| {
        s.linux_mut()
            .get_or_insert_with(Default::default)
            .set_readonly_paths(Some(paths));
        Ok(())
    })
}

/// Sets the propagation of the container's root mount.
pub(crate) fn with_rootfs_propagation(propagation: &'static str) -> SpecOpt {
    Box::new(move |s| {
        s.linux_mut()
            .get_or_insert_with(Default::default)
            .set_rootfs_propagation(Some(propagation.to_string()));
        Ok(())
    })
}

/// Fails unless the mount holding `path` is shared (`shared`), or shared
/// or a slave (not `shared`): else a propagated bind mount of it would
/// silently not propagate.
pub(crate) fn ensure_propagates(path: &str, shared: bool) -> crate::error::Result<()> {
    let real = std::fs::canonicalize(path).map_err(|e| {
        crate::error::CriError::InvalidArgument(format!("resolving mount source {path:?}: {e}"))
    })?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        crate::error::CriError::Internal(format!("reading /proc/self/mountinfo: {e}"))
    })?;
    // The last listed mount whose mount point is the longest prefix of the
    // path: the one the path lives on.
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        let point = unescape_mountinfo(point);
        if !real.starts_with(&point) {
            continue;
        }
        let optional: Vec<String> = fields
            .iter()
            .skip(6)
            .take_while(|f| **f != "-")
            .map(|f| f.to_string())
            .collect();
        let len = point.len();
        if best.as_ref().is_none_or(|(l, _, _)| len >= *l) {
            best = Some((len, point, optional));
        }
    }
    let Some((_, point, optional)) = best else {
        return Err(crate::error::CriError::InvalidArgument(format!(
            "no mount holds {path:?}"
        )));
    };
    let is_shared = optional.iter().any(|o| o.starts_with("shared:"));
    let is_slave = optional.iter().any(|o| o.starts_with("master:"));
    if is_shared || (!shared && is_slave) {
        return Ok(());
    }
    Err(crate::error::CriError::InvalidArgument(format!(
        "path {path:?} is mounted on {point:?} but it is not a {} mount",
        if shared { "shared" } else { "shared or slave" }
    )))
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |b: u8| u32::from(b - b'0');
            let v = digit(bytes[i + 1]) * 64 + digit(bytes[i + 2]) * 8 + digit(bytes[i + 3]);
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A bind mount of `host` at `container`.
pub(crate) fn bind(
    host: &str,
    container: &str,
    readonly: bool,
    propagation: &str,
) -> Result<oci_spec::runtime::Mount, SpecError> {
    let mut options = vec!["rbind".to_string(), propagation.to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    Ok(MountBuilder::default()
        .destination(container)
        .typ("bind")
        .source(host)
        .options(options)
        .build()?)
}

/// The namespace settings a pod asks for.
pub(crate) fn namespace_modes(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// Whether the pod uses the host's network.
pub(crate) fn host_network(config: &cri::PodSandboxConfig) -> bool {
    namespace_modes(config).network == cri::NamespaceMode::Node as i32
}

/// The cgroup path of container `id` in a pod with `parent`
/// (cgroupfs layout; `/k8s.io/<id>` when the pod names no parent).
pub(crate) fn cgroup_path(parent: &str, id: &str) -> String {
    if parent.is_empty() {
        format!("/k8s.io/{id}")
    } else {
        format!("{}/{id}", parent.trim_end_matches('/'))
    }
}

/// Whether the memory cgroup of the container `record` describes (its
/// spec's `cgroupsPath`, cgroupfs layout, v1 or v2) saw an OOM kill.
pub(crate) fn oom_killed(
    record: &berth_api::containerd::services::containers::v1::Container,
) -> bool {
    let Some(spec) = record.spec.as_ref() else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<Value>(&spec.value) else {
        return false;
    };
    let Some(path) = spec["linux"]["cgroupsPath"].as_str() else {
        return false;
    };
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.contains(':') {
        // No cgroup of its own, or a systemd unit (no cgroupfs path).
        return false;
    }
    let root = std::path::Path::new("/sys/fs/cgroup");
    [
        root.join("memory").join(path).join("memory.oom_control"),
        root.join(path).join("memory.events"),
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .any(|text| {
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    })
}

/// Joins or shares the pod's namespaces: network, IPC and UTS of the pause
/// process (`pid`), its PID namespace when the pod shares one.
pub(crate) fn with_pod_namespaces(
    modes: &cri::NamespaceOption,
    container_modes: &cri::NamespaceOption,
    pid: u32,
) -> Vec<SpecOpt> {
    let mut opts: Vec<SpecOpt> = Vec::new();
    let ns = |name: &str| format!("/proc/{pid}/ns/{name}");
    if modes.network == cri::NamespaceMode::Node as i32 {
        opts.push(spec::with_host_namespace(LinuxNamespaceType::Network));
        opts.push(spec::with_host_namespace(LinuxNamespaceType::Uts));
    } else {
        opts.push(spec::with_namespace_path(
            LinuxNamespaceType::Network,
            ns("net"),
        ));
        opts.push(spec::with_namespace_path(
            LinuxNamespaceType::Uts,
            ns("uts"),
        ));
    }
    if modes.ipc == cri::NamespaceMode::Node as i32 {
        opts.push(spec::with_host_namespace(LinuxNamespaceType::Ipc));
    } else {
        opts.push(spec::with_namespace_path(
            LinuxNamespaceType::Ipc,
            ns("ipc"),
        ));
    }
    // The kubelet gives each container its PID mode; in a pod on the
    // host's PID namespace, joining the pause's is the host's anyway.
    let pid_mode = container_modes.pid;
    if pid_mode == cri::NamespaceMode::Node as i32 {
        opts.push(spec::with_host_namespace(LinuxNamespaceType::Pid));
    } else if pid_mode == cri::NamespaceMode::Pod as i32 {
        opts.push(spec::with_namespace_path(
            LinuxNamespaceType::Pid,
            ns("pid"),
        ));
    }
    opts
}

/// `resolv.conf` text of a pod's DNS settings.
pub(crate) fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn the_root_mount_is_found_for_any_path() {
        // `/` is always mounted: the answer is about its propagation, not
        // a failure to find the mount.
        match ensure_propagates("/", false) {
            Ok(()) => {}
            Err(e) => assert!(e.to_string().contains("not a shared or slave mount"), "{e}"),
        }
        assert!(ensure_propagates("/no/such/path/berth", true).is_err());
    }

    #[test]
    fn a_record_without_spec_saw_no_oom() {
        assert!(!oom_killed(&Default::default()));
    }

    #[test]
    fn resolv_conf_as_containerd_writes_it() {
        let dns = cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.local".into(), "local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search svc.local local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        assert_eq!(cgroup_path("", "x"), "/k8s.io/x");
        assert_eq!(cgroup_path("/kubepods/", "x"), "/kubepods/x");
        assert!(clamp_oom(-1000, true) >= own_oom_score_adj());
        assert_eq!(clamp_oom(-1000, false), -1000);
    }
}
