//! Running containers: OCI runtime specs, and (next) the shim manager and
//! berth's shim.
//!
//! - [`spec`]: containerd's default Linux spec and composable options.
//! - [`manager`]: starting, connecting to and reconnecting to shims.
//! - [`cgroups`]: a container's cgroup (v1 or v2) read into containerd's
//!   cgroup statistics messages, for a shim's `Stats` answer.

pub mod cgroups;
pub mod manager;
pub mod spec;
