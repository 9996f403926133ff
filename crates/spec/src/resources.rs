//! Options on the resources a container gets: CPU and its cgroup.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxCpu, LinuxResources};

use super::{SpecError, SpecOpt};

fn edit_cpu(
    spec: &mut oci_spec::runtime::Spec,
    edit: impl FnOnce(&mut LinuxCpu),
) -> Result<(), SpecError> {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    edit(&mut cpu);
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    Ok(())
}

/// The CFS period ctr's `--cpus` uses, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Limits the container to `cpus` CPUs' worth of time (`1.5`): a CFS quota
/// over a 100 ms period, as `ctr run --cpus`.
pub fn with_cpus(cpus: f64) -> SpecOpt {
    Box::new(move |spec| {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(SpecError::Invalid(format!(
                "cpus {cpus} must be a positive number"
            )));
        }
        #[allow(clippy::cast_possible_truncation)]
        let quota = (cpus * CPU_PERIOD as f64) as i64;
        edit_cpu(spec, |cpu| {
            cpu.set_quota(Some(quota));
            cpu.set_period(Some(CPU_PERIOD));
        })
    })
}

/// Sets the CPU shares (relative weight; cgroup v1 `cpu.shares`).
pub fn with_cpu_shares(shares: u64) -> SpecOpt {
    Box::new(move |spec| {
        edit_cpu(spec, |cpu| {
            cpu.set_shares(Some(shares));
        })
    })
}

/// Pins the container to CPUs and memory nodes (`0-1,3`); empty leaves one
/// unset.
pub fn with_cpuset(cpus: String, mems: String) -> SpecOpt {
    Box::new(move |spec| {
        edit_cpu(spec, |cpu| {
            if !cpus.is_empty() {
                cpu.set_cpus(Some(cpus));
            }
            if !mems.is_empty() {
                cpu.set_mems(Some(mems));
            }
        })
    })
}

/// Puts the container in cgroup `path` (instead of `/<namespace>/<id>`).
pub fn with_cgroups_path(path: impl Into<PathBuf>) -> SpecOpt {
    let path = path.into();
    Box::new(move |spec| {
        spec.linux_mut()
            .get_or_insert_with(Default::default)
            .set_cgroups_path(Some(path));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;

    #[test]
    fn cpu_options_land_in_the_resources() {
        let s = generate(
            "c",
            "default",
            vec![
                with_cpus(1.5),
                with_cpu_shares(512),
                with_cpuset("0".into(), String::new()),
                with_cgroups_path("/custom/c"),
            ],
        )
        .unwrap();
        let linux = s.linux().as_ref().unwrap();
        let cpu = linux.resources().as_ref().unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(150_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        assert!(cpu.mems().is_none());
        assert_eq!(
            linux
                .cgroups_path()
                .as_ref()
                .map(|p| p.display().to_string()),
            Some("/custom/c".to_string())
        );
        assert!(generate("c", "d", vec![with_cpus(0.0)]).is_err());
    }
}
