//! Running containers: OCI runtime specs, the shim manager and berth's shim.
//!
//! - [`cgroups`]: cgroup v1 statistics of a container, for task metrics.
//! - [`spec`]: containerd's default Linux spec and composable options.
//! - [`manager`]: starting, connecting to and reconnecting to shims.
//! - [`shim`]: berth's shim `containerd-shim-berth-v2` (runc, shim v2 ttrpc).

pub mod cgroups;
pub mod manager;
pub mod shim;
pub mod spec;
