//! The option types of containerd 1.x's legacy `io.containerd.runtime.v1.linux`
//! runtime (`containerd.linux.runc.RuncOptions` on the container,
//! `containerd.linux.runc.CreateOptions` on the task), turned into the runc
//! shim's `containerd.runc.v1.Options`, which berth's shim reads.

use berth_api::containerd::linux::runc::{CreateOptions, RuncOptions};
use berth_api::containerd::runc::v1::Options;
use prost::Message;

/// Type URL of the legacy runtime options.
const RUNC_OPTIONS_URL: &str = "containerd.linux.runc.RuncOptions";
/// Type URL of the legacy task create options.
const CREATE_OPTIONS_URL: &str = "containerd.linux.runc.CreateOptions";
/// Type URL of the runc shim's options.
const OPTIONS_URL: &str = "containerd.runc.v1.Options";

/// Whether `any` holds the message named `url` (with or without a host prefix).
fn is(any: &prost_types::Any, url: &str) -> bool {
    any.type_url == url || any.type_url.ends_with(&format!("/{url}"))
}

/// The options a task is created with: the task's own, else the
/// container's (as containerd picks them); legacy runctypes options (from
/// either, both merged as the v1 Linux runtime merged them) become runc's.
pub fn task_options(
    task: Option<prost_types::Any>,
    runtime: Option<prost_types::Any>,
) -> Result<Option<prost_types::Any>, prost::DecodeError> {
    let legacy_runtime = runtime.as_ref().filter(|a| is(a, RUNC_OPTIONS_URL));
    let legacy_task = task.as_ref().filter(|a| is(a, CREATE_OPTIONS_URL));
    if legacy_runtime.is_none() && legacy_task.is_none() {
        return Ok(task.or(runtime));
    }
    let mut out = Options::default();
    if let Some(r) = legacy_runtime {
        let r = RuncOptions::decode(r.value.as_slice())?;
        out.binary_name = r.runtime;
        out.root = r.runtime_root;
        out.criu_path = r.criu_path;
        out.systemd_cgroup = r.systemd_cgroup;
    }
    if let Some(t) = legacy_task {
        let t = CreateOptions::decode(t.value.as_slice())?;
        out.no_pivot_root = t.no_pivot_root;
        out.no_new_keyring = t.no_new_keyring;
        out.shim_cgroup = t.shim_cgroup;
        out.io_uid = t.io_uid;
        out.io_gid = t.io_gid;
        out.criu_image_path = t.criu_image_path;
        out.criu_work_path = t.criu_work_path;
    }
    Ok(Some(prost_types::Any {
        type_url: OPTIONS_URL.to_string(),
        value: out.encode_to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_runtime_and_task_options_merge_into_runc_options() {
        let runtime = prost_types::Any {
            type_url: format!("types.containerd.io/{RUNC_OPTIONS_URL}"),
            value: RuncOptions {
                runtime: "/usr/sbin/runc".into(),
                runtime_root: "/run/x".into(),
                criu_path: String::new(),
                systemd_cgroup: false,
            }
            .encode_to_vec(),
        };
        let task = prost_types::Any {
            type_url: CREATE_OPTIONS_URL.into(),
            value: CreateOptions {
                no_new_keyring: true,
                io_uid: 7,
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let out = task_options(Some(task), Some(runtime)).unwrap().unwrap();
        assert_eq!(out.type_url, OPTIONS_URL);
        let o = Options::decode(out.value.as_slice()).unwrap();
        assert_eq!(o.binary_name, "/usr/sbin/runc");
        assert_eq!(o.root, "/run/x");
        assert!(o.no_new_keyring);
        assert_eq!(o.io_uid, 7);
    }

    #[test]
    fn other_options_pass_through_task_first() {
        let a = prost_types::Any {
            type_url: OPTIONS_URL.into(),
            value: vec![],
        };
        let b = prost_types::Any {
            type_url: "other".into(),
            value: vec![1],
        };
        assert_eq!(
            task_options(Some(a.clone()), Some(b.clone())).unwrap(),
            Some(a)
        );
        assert_eq!(task_options(None, Some(b.clone())).unwrap(), Some(b));
    }
}
