//! Options on what a container may do: capabilities, privileged mode,
//! a read-only root, and namespaces joined by path.

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxDeviceCgroupBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType,
};

use super::{SpecError, SpecOpt, process_mut};

/// Capability names in the kernel's numbering (`CAP_CHOWN` is 0).
const KERNEL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Parses `CAP_NET_ADMIN` or `NET_ADMIN` (any case), as ctr takes them.
fn capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let short = upper.strip_prefix("CAP_").unwrap_or(&upper);
    short
        .parse::<Capability>()
        .map_err(|_| SpecError::Invalid(format!("unknown capability {name:?}")))
}

/// Every capability the calling process holds (its effective set), as
/// containerd's privileged mode grants "all current capabilities": a
/// capability the caller lacks could not be given to a container anyway
/// (runc would fail with EPERM), e.g. on hosts that withhold one from root.
fn all_capabilities() -> std::collections::HashSet<Capability> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    KERNEL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| effective & (1 << bit) != 0)
        .filter_map(|(_, n)| n.parse::<Capability>().ok())
        .collect()
}

fn edit_capabilities(
    spec: &mut oci_spec::runtime::Spec,
    edit: impl Fn(&mut std::collections::HashSet<Capability>),
) -> Result<(), SpecError> {
    let p = process_mut(spec);
    let mut caps: LinuxCapabilities = p.capabilities().clone().unwrap_or_default();
    let set = |get: Option<std::collections::HashSet<Capability>>| {
        let mut s = get.unwrap_or_default();
        edit(&mut s);
        Some(s)
    };
    caps.set_bounding(set(caps.bounding().clone()));
    caps.set_effective(set(caps.effective().clone()));
    caps.set_permitted(set(caps.permitted().clone()));
    p.set_capabilities(Some(caps));
    Ok(())
}

/// Adds and drops capabilities (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL`
/// drops or adds every one), in the bounding, effective and permitted sets.
pub fn with_capabilities(add: Vec<String>, drop: Vec<String>) -> SpecOpt {
    Box::new(move |spec| {
        let parse = |names: &[String]| -> Result<Vec<Capability>, SpecError> {
            names
                .iter()
                .filter(|n| !n.eq_ignore_ascii_case("ALL"))
                .map(|n| capability(n))
                .collect()
        };
        let (adds, drops) = (parse(&add)?, parse(&drop)?);
        let drop_all = drop.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
        let add_all = add.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
        edit_capabilities(spec, |set| {
            if drop_all {
                set.clear();
            }
            for c in &drops {
                set.remove(c);
            }
            if add_all {
                set.extend(all_capabilities());
            }
            set.extend(adds.iter().copied());
        })
    })
}

/// containerd's privileged mode as `ctr run --privileged` applies it: every
/// capability, no masked or read-only paths, writable `/sys`, and every
/// device allowed in the device cgroup.
pub fn with_privileged() -> SpecOpt {
    Box::new(|spec| {
        edit_capabilities(spec, |set| set.extend(all_capabilities()))?;
        if let Some(mounts) = spec.mounts_mut() {
            for m in mounts.iter_mut() {
                if m.destination().as_os_str() == "/sys" {
                    let options = m
                        .options()
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|o| o != "ro")
                        .chain(std::iter::once("rw".to_string()))
                        .collect();
                    m.set_options(Some(options));
                }
            }
        }
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()?,
        ]));
        linux.set_resources(Some(resources));
        Ok(())
    })
}

/// Mounts the root filesystem read-only.
pub fn with_readonly_rootfs() -> SpecOpt {
    Box::new(|spec| {
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        Ok(())
    })
}

/// Joins the namespace at `path` (`/proc/<pid>/ns/net`, a bind-mounted
/// namespace file) instead of creating one of that type.
pub fn with_namespace_path(typ: LinuxNamespaceType, path: impl Into<String>) -> SpecOpt {
    let path = path.into();
    Box::new(move |spec| {
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|n| n.typ() != typ);
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .path(path)
                .build()?,
        );
        linux.set_namespaces(Some(namespaces));
        Ok(())
    })
}

/// Parses a namespace type as ctr's `--with-ns` names it (`network`,
/// `pid`, `ipc`, `uts`, `mount`, `user`, `cgroup`; `net` too).
pub fn namespace_type(name: &str) -> Result<LinuxNamespaceType, SpecError> {
    Ok(match name {
        "network" | "net" => LinuxNamespaceType::Network,
        "pid" => LinuxNamespaceType::Pid,
        "ipc" => LinuxNamespaceType::Ipc,
        "uts" => LinuxNamespaceType::Uts,
        "mount" | "mnt" => LinuxNamespaceType::Mount,
        "user" => LinuxNamespaceType::User,
        "cgroup" => LinuxNamespaceType::Cgroup,
        other => {
            return Err(SpecError::Invalid(format!(
                "unknown namespace type {other:?} (network, pid, ipc, uts, mount, user, cgroup)"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;

    #[test]
    fn capabilities_add_and_drop_in_every_set() {
        let s = generate(
            "c",
            "default",
            vec![with_capabilities(
                vec!["NET_ADMIN".into()],
                vec!["cap_chown".into()],
            )],
        )
        .unwrap();
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.clone().unwrap();
            assert!(set.contains(&Capability::NetAdmin));
            assert!(!set.contains(&Capability::Chown));
            assert!(set.contains(&Capability::Kill), "others stay");
        }
        let s = generate(
            "c",
            "default",
            vec![with_capabilities(vec!["kill".into()], vec!["ALL".into()])],
        )
        .unwrap();
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.bounding().clone().unwrap().len(), 1);
        assert!(
            generate(
                "c",
                "d",
                vec![with_capabilities(vec!["FLY".into()], vec![])]
            )
            .is_err()
        );
    }

    #[test]
    fn privileged_lifts_masks_and_device_rules() {
        let s = generate("c", "default", vec![with_privileged()]).unwrap();
        let linux = s.linux().as_ref().unwrap();
        assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(devices.len(), 1);
        assert!(devices[0].allow());
        let sys = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().as_os_str() == "/sys")
            .unwrap();
        assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_string()));
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert!(
            caps.bounding()
                .clone()
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
    }

    #[test]
    fn namespace_paths_replace_new_namespaces() {
        let s = generate(
            "c",
            "default",
            vec![
                with_namespace_path(namespace_type("network").unwrap(), "/proc/1/ns/net"),
                with_readonly_rootfs(),
            ],
        )
        .unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net: Vec<_> = ns
            .iter()
            .filter(|n| n.typ() == LinuxNamespaceType::Network)
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(
            net[0].path().as_ref().map(|p| p.display().to_string()),
            Some("/proc/1/ns/net".to_string())
        );
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
        assert!(namespace_type("time-travel").is_err());
    }
}
