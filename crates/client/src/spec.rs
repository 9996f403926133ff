//! OCI runtime spec options in the style of containerd's `oci.With*`
//! functions: [`berth_spec`]'s options re-exported, plus the ones
//! that take the client's own types.
//!
//! Options are plain closures over the spec ([`SpecOpt`]); write your own
//! next to these.

pub use berth_spec::{
    DEFAULT_PATH, SpecError, SpecOpt, default_spec, generate, namespace_type, with_capabilities,
    with_cgroups_path, with_cpu_shares, with_cpus, with_cpuset, with_cwd, with_env,
    with_host_namespace, with_hostname, with_memory_limit, with_mounts, with_namespace_path,
    with_privileged, with_process_args, with_readonly_rootfs, with_tty, with_user,
};
/// The OCI spec types, for options of your own.
pub use oci_spec;
pub use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use crate::image::ImageConfig;

/// Type URL containerd clients give an OCI runtime spec in a container record.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an exec process's spec.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The process defaults of an image config (env appended to the defaults,
/// args = entrypoint + cmd, working directory), as containerd's
/// `WithImageConfig` applies them. The image's user is not set here: it
/// may be a name, looked up in the image's own files; the container
/// builder does that ([`crate::ContainerBuilder::image_config`]).
pub fn with_image_config(config: &ImageConfig) -> SpecOpt {
    berth_spec::with_image_config(berth_spec::ImageProcess {
        env: config.env.clone(),
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        working_dir: config.working_dir.clone(),
        user: String::new(),
    })
}

/// Shares the host's network namespace (and its `/etc/hosts` and
/// `/etc/resolv.conf`), as containerd's `WithHostNamespace(network)` plus
/// `WithHostHostsFile`/`WithHostResolvconf`.
pub fn with_host_network() -> SpecOpt {
    with_host_namespace(LinuxNamespaceType::Network)
}

/// Shares the host's PID namespace.
pub fn with_host_pid() -> SpecOpt {
    with_host_namespace(LinuxNamespaceType::Pid)
}

/// A bind mount of host path `source` on `destination` (read-only if asked).
pub fn bind_mount(
    source: impl Into<std::path::PathBuf>,
    destination: impl Into<std::path::PathBuf>,
    readonly: bool,
) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind".to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    Ok(oci_spec::runtime::MountBuilder::default()
        .typ("bind")
        .source(source.into())
        .destination(destination.into())
        .options(options)
        .build()?)
}

/// Adds annotations to the spec.
pub fn with_annotations<I, K, V>(annotations: I) -> SpecOpt
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let added: Vec<(String, String)> = annotations
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    Box::new(move |spec: &mut Spec| {
        let mut all = spec.annotations().clone().unwrap_or_default();
        all.extend(added);
        spec.set_annotations(Some(all));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_then_args() -> Result<(), SpecError> {
        let config = ImageConfig {
            env: vec!["A=1".into()],
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "true".into()],
            working_dir: "/w".into(),
            user: "nobody".into(),
        };
        let spec = generate(
            "c",
            "ns",
            vec![
                with_image_config(&config),
                with_host_pid(),
                with_annotations([("k", "v")]),
            ],
        )?;
        let p = spec.process().clone().unwrap_or_default();
        assert_eq!(
            p.args().clone().unwrap_or_default(),
            ["/bin/sh", "-c", "true"]
        );
        assert!(
            p.env()
                .clone()
                .unwrap_or_default()
                .contains(&"A=1".to_string())
        );
        assert_eq!(p.cwd().display().to_string(), "/w");
        let namespaces = spec
            .linux()
            .clone()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        assert!(
            namespaces
                .iter()
                .all(|n| n.typ() != LinuxNamespaceType::Pid)
        );
        assert_eq!(
            spec.annotations()
                .clone()
                .unwrap_or_default()
                .get("k")
                .map(String::as_str),
            Some("v")
        );
        Ok(())
    }
}
