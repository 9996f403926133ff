//! Seccomp for CRI containers: which profile a security context asks for
//! (`seccomp`, else the deprecated `seccomp_profile_path`), and the spec
//! option that applies it.
//!
//! - `Unconfined` (and no profile at all): no filter, as containerd 1.6
//!   does by default.
//! - `Localhost`: the OCI `LinuxSeccomp` JSON of the named file (Docker's
//!   profile format reads the same; fields OCI lacks are ignored).
//! - `RuntimeDefault`: berth's own default filter (see [`runtime_default`]).
//!   It allows what is not listed and refuses, with `EPERM`, the syscalls
//!   Docker's and containerd's default profile refuse, taking into account
//!   the capabilities the container holds the same way (`mount` with
//!   `CAP_SYS_ADMIN`, `settimeofday` with `CAP_SYS_TIME`...). containerd's
//!   default is an allow list instead; a syscall neither names (a new
//!   one) is allowed here and refused there.
//!
//! A privileged container gets no filter whatever it asks for.

use std::path::PathBuf;

use berth_api::runtime::v1 as cri;
use berth_spec::SpecOpt;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

use crate::error::{CriError, Result};

/// The profile a container (or a sandbox) runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Profile {
    /// No filter.
    Unconfined,
    /// berth's default filter.
    RuntimeDefault,
    /// The OCI seccomp JSON at this path.
    Localhost(PathBuf),
}

/// The profile of a security context: the deprecated path when set (as
/// containerd 1.6 gives it priority), else the typed profile, else none.
pub(crate) fn profile_of(path: &str, typed: Option<&cri::SecurityProfile>) -> Result<Profile> {
    if !path.is_empty() {
        return profile_of_path(path);
    }
    let Some(sp) = typed else {
        return Ok(Profile::Unconfined);
    };
    match cri::security_profile::ProfileType::try_from(sp.profile_type) {
        Ok(cri::security_profile::ProfileType::RuntimeDefault) => Ok(Profile::RuntimeDefault),
        Ok(cri::security_profile::ProfileType::Unconfined) => Ok(Profile::Unconfined),
        Ok(cri::security_profile::ProfileType::Localhost) => {
            if sp.localhost_ref.is_empty() {
                return Err(CriError::InvalidArgument(
                    "seccomp profile type Localhost without a localhost_ref".into(),
                ));
            }
            Ok(Profile::Localhost(PathBuf::from(&sp.localhost_ref)))
        }
        Err(_) => Err(CriError::InvalidArgument(format!(
            "unknown seccomp profile type {}",
            sp.profile_type
        ))),
    }
}

/// `runtime/default` (or `docker/default`), `unconfined`, `localhost/<path>`.
fn profile_of_path(path: &str) -> Result<Profile> {
    match path {
        "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
        "unconfined" => Ok(Profile::Unconfined),
        _ => match path.strip_prefix("localhost/") {
            Some(file) if !file.is_empty() => Ok(Profile::Localhost(PathBuf::from(file))),
            _ => Err(CriError::InvalidArgument(format!(
                "unsupported seccomp profile {path:?}"
            ))),
        },
    }
}

/// The spec option applying `profile` (none for a privileged container or
/// an unconfined one). A localhost profile is read now, so a missing or
/// malformed file fails the create call.
pub(crate) fn with_profile(profile: &Profile, privileged: bool) -> Result<Option<SpecOpt>> {
    if privileged {
        return Ok(None);
    }
    match profile {
        Profile::Unconfined => Ok(None),
        Profile::Localhost(path) => {
            let text = std::fs::read(path).map_err(|e| {
                CriError::InvalidArgument(format!(
                    "cannot load seccomp profile {}: {e}",
                    path.display()
                ))
            })?;
            let seccomp: LinuxSeccomp = serde_json::from_slice(&text).map_err(|e| {
                CriError::InvalidArgument(format!(
                    "seccomp profile {} is not a valid profile: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(Box::new(move |s| {
                s.linux_mut()
                    .get_or_insert_with(Default::default)
                    .set_seccomp(Some(seccomp));
                Ok(())
            })))
        }
        Profile::RuntimeDefault => Ok(Some(Box::new(|s| {
            let caps: Vec<String> = s
                .process()
                .as_ref()
                .and_then(|p| p.capabilities().as_ref())
                .and_then(|c| c.bounding().as_ref())
                .map(|b| {
                    b.iter()
                        .filter_map(|c| {
                            serde_json::to_value(c)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let seccomp = runtime_default(&caps);
            s.linux_mut()
                .get_or_insert_with(Default::default)
                .set_seccomp(Some(seccomp));
            Ok(())
        }))),
    }
}

/// `EPERM`, what refused syscalls return.
const EPERM: u32 = 1;
/// `ENOSYS`, what `clone3` returns without `CAP_SYS_ADMIN` (so the C
/// library falls back to `clone`, whose flags the filter can see).
const ENOSYS: u32 = 38;

/// Syscalls refused whatever the container's capabilities.
const ALWAYS_REFUSED: &[&str] = &[
    "add_key",
    "create_module",
    "get_kernel_syms",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "nfsservctl",
    "query_module",
    "request_key",
    "_sysctl",
    "sysfs",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// Syscalls refused unless the container holds the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "setns",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    (
        "CAP_SYS_TIME",
        &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
    ),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "move_pages", "set_mempolicy"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYSLOG", &["syslog"]),
];

/// `clone`'s namespace flags (`CLONE_NEWNS`, `NEWCGROUP`, `NEWUTS`,
/// `NEWIPC`, `NEWUSER`, `NEWPID`, `NEWNET`): refused without
/// `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// berth's default filter for a container holding `caps` (names like
/// `CAP_SYS_ADMIN`).
pub(crate) fn runtime_default(caps: &[String]) -> LinuxSeccomp {
    let holds = |cap: &str| caps.iter().any(|c| c == cap);
    let refuse = |names: Vec<String>, errno: u32| {
        let mut s = LinuxSyscall::default();
        s.set_names(names);
        s.set_action(LinuxSeccompAction::ScmpActErrno);
        s.set_errno_ret(Some(errno));
        s
    };
    let mut refused: Vec<String> = ALWAYS_REFUSED.iter().map(|s| s.to_string()).collect();
    for (cap, names) in BY_CAPABILITY {
        if !holds(cap) {
            refused.extend(names.iter().map(|s| s.to_string()));
        }
    }
    if !holds("CAP_SYS_ADMIN") && !holds("CAP_SYS_BOOT") {
        refused.extend(["swapon".to_string(), "swapoff".to_string()]);
    }
    let mut syscalls = vec![refuse(refused, EPERM)];
    if !holds("CAP_SYS_ADMIN") {
        syscalls.push(refuse(vec!["clone3".into()], ENOSYS));
        for flag in CLONE_NAMESPACE_FLAGS {
            // Built from its fields only: cannot fail.
            if let Ok(arg) = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(*flag)
                .value_two(*flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
            {
                let mut s = refuse(vec!["clone".into()], EPERM);
                s.set_args(Some(vec![arg]));
                syscalls.push(s);
            }
        }
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(LinuxSeccompAction::ScmpActAllow);
    seccomp.set_architectures(Some(architectures()));
    seccomp.set_syscalls(Some(syscalls));
    seccomp
}

/// The host's architectures a filter covers (native plus compat ones).
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecated_path_wins_and_is_parsed() {
        let typed = cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        };
        assert_eq!(
            profile_of("runtime/default", Some(&typed)).ok(),
            Some(Profile::RuntimeDefault)
        );
        assert_eq!(
            profile_of("localhost//x.json", None).ok(),
            Some(Profile::Localhost(PathBuf::from("/x.json")))
        );
        assert_eq!(profile_of("", None).ok(), Some(Profile::Unconfined));
        assert!(profile_of("bogus", None).is_err());
        assert_eq!(profile_of("", Some(&typed)).ok(), Some(Profile::Unconfined));
    }

    #[test]
    fn default_filter_follows_capabilities() {
        let names = |s: &LinuxSeccomp| -> Vec<String> {
            s.syscalls()
                .iter()
                .flatten()
                .flat_map(|c| c.names().clone())
                .collect()
        };
        let plain = runtime_default(&[]);
        assert!(names(&plain).contains(&"mount".to_string()));
        assert!(names(&plain).contains(&"clone".to_string()));
        let admin = runtime_default(&["CAP_SYS_ADMIN".to_string()]);
        assert!(!names(&admin).contains(&"mount".to_string()));
        assert!(!names(&admin).contains(&"clone".to_string()));
        assert!(names(&admin).contains(&"kexec_load".to_string()));
    }

    #[test]
    fn privileged_gets_no_filter() {
        assert!(
            with_profile(&Profile::RuntimeDefault, true)
                .ok()
                .flatten()
                .is_none()
        );
    }

    #[test]
    fn localhost_profile_is_read_as_oci_json() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO","comment":"ignored"}]}"#,
        )?;
        let opt = with_profile(&Profile::Localhost(path), false)?.ok_or("no option")?;
        let mut spec = oci_spec::runtime::Spec::default();
        opt(&mut spec)?;
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .ok_or("no seccomp")?;
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(with_profile(&Profile::Localhost(dir.path().join("none")), false).is_err());
        Ok(())
    }
}
