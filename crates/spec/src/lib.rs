//! OCI runtime specs: containerd's default spec and composable options,
//! and an image's `User` resolved through its own files ([`user`]). What a
//! client needs to describe a container, without the daemon's parts.
//!
//! [`generate`] starts from [`default_spec`], which is in substance the one
//! containerd builds on Linux (`oci.populateDefaultUnixSpec`): the same
//! mounts, masked and read-only paths, capabilities, rlimits, namespaces and
//! a deny-all device cgroup, then applies [`SpecOpt`]s in order. Options are
//! plain closures, so callers compose their own next to the ones here.
//!
//! ```
//! use berth_spec::{generate, with_env, with_process_args, with_tty};
//!
//! let spec = generate("web", "default", vec![
//!     with_process_args(["sh", "-c", "echo hi"]),
//!     with_env(["GREETING=hello"]),
//!     with_tty(true),
//! ])?;
//! let process = spec.process().as_ref().unwrap();
//! assert_eq!(process.args().as_ref().unwrap()[0], "sh");
//! assert_eq!(process.terminal(), Some(true));
//! # Ok::<(), berth_spec::SpecError>(())
//! ```

use std::path::PathBuf;

mod resources;
mod security;
pub mod user;

pub use resources::{with_cgroups_path, with_cpu_shares, with_cpus, with_cpuset};
pub use security::{
    namespace_type, with_capabilities, with_namespace_path, with_privileged, with_readonly_rootfs,
};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The `PATH` containers get unless their image says otherwise.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI runtime spec version berth writes.
pub const OCI_VERSION: &str = "1.1.0";

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// oci-spec refused a value.
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    /// An option was given a value it cannot use.
    #[error("invalid spec option: {0}")]
    Invalid(String),
}

/// A change to a spec; options apply in order.
pub type SpecOpt = Box<dyn FnOnce(&mut Spec) -> Result<(), SpecError> + Send>;

/// containerd's default capability set.
fn default_capabilities() -> std::collections::HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .build()?)
}

fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
    ])
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SpecError> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// containerd's default Linux spec for container `id` in `namespace`.
pub fn default_spec(id: &str, namespace_name: &str) -> Result<Spec, SpecError> {
    let caps = default_capabilities();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps)
        .build()?;
    // containerd sets no inheritable or ambient capabilities; oci-spec's
    // defaults would add three, which then outlive any `--cap-drop`.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0_u32).gid(0_u32).build()?)
        .cwd("/")
        .env(vec![DEFAULT_PATH.to_owned()])
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024_u64)
                .soft(1024_u64)
                .build()?,
        ])
        .build()?;
    let linux = LinuxBuilder::default()
        .masked_paths(strings(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/proc/scsi",
        ]))
        .readonly_paths(strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]))
        // containerd's path.Join("/", namespace, id): no trailing slash
        // for an empty id (`ctr oci spec`).
        .cgroups_path(PathBuf::from(if id.is_empty() {
            format!("/{namespace_name}")
        } else {
            format!("/{namespace_name}/{id}")
        }))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()?,
                ])
                .build()?,
        )
        .namespaces(vec![
            namespace(LinuxNamespaceType::Pid)?,
            namespace(LinuxNamespaceType::Ipc)?,
            namespace(LinuxNamespaceType::Uts)?,
            namespace(LinuxNamespaceType::Mount)?,
            namespace(LinuxNamespaceType::Network)?,
        ])
        .build()?;
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .process(process)
        .mounts(default_mounts()?)
        .linux(linux)
        .build()?;
    // oci-spec's builders default a hostname ("youki") and `sh` as the
    // process; containerd's default spec has neither, so a container gets
    // no hostname unless asked and its args come from the image or the user.
    spec.set_hostname(None);
    if let Some(process) = spec.process_mut() {
        process.set_args(None);
    }
    spec.set_annotations(None);
    Ok(spec)
}

/// The default spec with `opts` applied in order.
pub fn generate(id: &str, namespace_name: &str, opts: Vec<SpecOpt>) -> Result<Spec, SpecError> {
    let mut spec = default_spec(id, namespace_name)?;
    for opt in opts {
        opt(&mut spec)?;
    }
    Ok(spec)
}

pub(crate) fn process_mut(spec: &mut Spec) -> &mut oci_spec::runtime::Process {
    spec.process_mut().get_or_insert_with(Default::default)
}

/// Replaces the process arguments.
pub fn with_process_args<I, S>(args: I) -> SpecOpt
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    Box::new(move |spec| {
        if args.is_empty() {
            return Err(SpecError::Invalid(
                "a process needs at least one argument".into(),
            ));
        }
        process_mut(spec).set_args(Some(args));
        Ok(())
    })
}

/// Sets (or replaces, by name) environment variables `NAME=value`.
pub fn with_env<I, S>(vars: I) -> SpecOpt
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let vars: Vec<String> = vars.into_iter().map(Into::into).collect();
    Box::new(move |spec| {
        let p = process_mut(spec);
        let mut env = p.env().clone().unwrap_or_default();
        for v in vars {
            let name = v.split('=').next().unwrap_or_default().to_owned();
            env.retain(|e| e.split('=').next() != Some(name.as_str()));
            env.push(v);
        }
        p.set_env(Some(env));
        Ok(())
    })
}

/// Gives the process a terminal (or not).
pub fn with_tty(tty: bool) -> SpecOpt {
    Box::new(move |spec| {
        process_mut(spec).set_terminal(Some(tty));
        Ok(())
    })
}

/// Sets the working directory.
pub fn with_cwd(cwd: impl Into<String>) -> SpecOpt {
    let cwd = cwd.into();
    Box::new(move |spec| {
        process_mut(spec).set_cwd(PathBuf::from(cwd));
        Ok(())
    })
}

/// Runs the process as `uid:gid`.
pub fn with_user(uid: u32, gid: u32) -> SpecOpt {
    Box::new(move |spec| {
        process_mut(spec).set_user(UserBuilder::default().uid(uid).gid(gid).build()?);
        Ok(())
    })
}

/// Adds mounts (after the defaults; a mount on an existing destination replaces it).
pub fn with_mounts(mounts: Vec<Mount>) -> SpecOpt {
    Box::new(move |spec| {
        let mut all = spec.mounts().clone().unwrap_or_default();
        for m in mounts {
            all.retain(|x| x.destination() != m.destination());
            all.push(m);
        }
        spec.set_mounts(Some(all));
        Ok(())
    })
}

/// Shares the host's namespace of `typ` (e.g. the network for `--net-host`).
pub fn with_host_namespace(typ: LinuxNamespaceType) -> SpecOpt {
    Box::new(move |spec| {
        if let Some(linux) = spec.linux_mut() {
            let ns: Vec<LinuxNamespace> = linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.typ() != typ)
                .collect();
            linux.set_namespaces(Some(ns));
        }
        if typ == LinuxNamespaceType::Network {
            // As containerd does: the host's resolver and hosts files.
            let binds = ["/etc/resolv.conf", "/etc/hosts"]
                .iter()
                .filter(|p| std::path::Path::new(p).exists())
                .map(|p| mount(p, "bind", p, &["rbind", "ro"]))
                .collect::<Result<Vec<_>, _>>()?;
            with_mounts(binds)(spec)?;
        }
        Ok(())
    })
}

/// Limits the container's memory to `bytes`.
pub fn with_memory_limit(bytes: i64) -> SpecOpt {
    Box::new(move |spec| {
        if bytes <= 0 {
            return Err(SpecError::Invalid(format!(
                "memory limit {bytes} must be positive"
            )));
        }
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_memory(Some(LinuxMemoryBuilder::default().limit(bytes).build()?));
        linux.set_resources(Some(resources));
        Ok(())
    })
}

/// Sets the hostname.
pub fn with_hostname(name: impl Into<String>) -> SpecOpt {
    let name = name.into();
    Box::new(move |spec| {
        spec.set_hostname(Some(name));
        Ok(())
    })
}

/// The parts of an image config a container starts from.
#[derive(Debug, Clone, Default)]
pub struct ImageProcess {
    /// `Env`.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`: `uid`, `name`, `uid:gid` or `name:group` (see
    /// [`crate::user::resolve`] for names).
    pub user: String,
}

/// Takes the process from an image config, as containerd's `WithImageConfig`:
/// env appended to the defaults, args = entrypoint + cmd, cwd, and a
/// numeric user (`uid:gid`, or `uid` with gid 0). A user given by name
/// needs the image's `/etc/passwd`: this option then fails; resolve it
/// with [`crate::user::resolve`] and apply [`with_resolved_user`] instead
/// (after this option).
pub fn with_image_config(image: ImageProcess) -> SpecOpt {
    Box::new(move |spec| {
        with_env(image.env)(spec)?;
        let args: Vec<String> = image.entrypoint.into_iter().chain(image.cmd).collect();
        if !args.is_empty() {
            process_mut(spec).set_args(Some(args));
        }
        if !image.working_dir.is_empty() {
            process_mut(spec).set_cwd(PathBuf::from(image.working_dir));
        }
        if !image.user.is_empty() {
            let (uid, gid) = image.user.split_once(':').unwrap_or((&image.user, "0"));
            let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
                return Err(SpecError::Invalid(format!(
                    "image user {:?} names a user or group: resolve it through the image's \
                     /etc/passwd (berth_spec::user::resolve) and apply with_resolved_user",
                    image.user
                )));
            };
            with_user(uid, gid)(spec)?;
        }
        Ok(())
    })
}

/// Runs the process as a user resolved through an image's files: uid,
/// gid and supplementary groups.
pub fn with_resolved_user(user: crate::user::ResolvedUser) -> SpecOpt {
    Box::new(move |spec| {
        let additional = (!user.additional_gids.is_empty()).then_some(user.additional_gids);
        process_mut(spec).set_user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(additional.unwrap_or_default())
                .build()?,
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_matches_containerd_in_substance() {
        let s = default_spec("c1", "default").unwrap();
        let json = serde_json::to_value(&s).unwrap();
        let caps = &json["process"]["capabilities"];
        assert!(
            caps.get("inheritable").is_none() && caps.get("ambient").is_none(),
            "{caps}"
        );
        assert_eq!(
            caps["bounding"].as_array().map(Vec::len),
            Some(14),
            "{caps}"
        );
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/default/c1");
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/run"
            ]
        );
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE"));
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(json["linux"]["namespaces"].as_array().unwrap().len(), 5);
        assert!(
            json["linux"]["maskedPaths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "/proc/kcore")
        );
    }

    #[test]
    fn options_compose_in_order() {
        let s = generate(
            "c",
            "ns",
            vec![
                with_image_config(ImageProcess {
                    env: vec!["A=1".into(), "PATH=/bin".into()],
                    entrypoint: vec!["/bin/sh".into()],
                    cmd: vec!["-c".into(), "true".into()],
                    working_dir: "/work".into(),
                    user: "1000:1001".into(),
                }),
                with_env(["A=2"]),
                with_host_namespace(LinuxNamespaceType::Network),
                with_memory_limit(64 << 20),
            ],
        )
        .unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/bin/sh", "-c", "true"])
        );
        assert_eq!(
            json["process"]["env"],
            serde_json::json!(["PATH=/bin", "A=2"])
        );
        assert_eq!(json["process"]["cwd"], "/work");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["user"]["gid"], 1001);
        assert!(
            !json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert!(with_process_args(Vec::<String>::new())(&mut s.clone()).is_err());
        assert!(
            generate(
                "c",
                "ns",
                vec![with_image_config(ImageProcess {
                    user: "daemon".into(),
                    ..Default::default()
                })]
            )
            .is_err()
        );
    }
}
