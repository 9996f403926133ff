//! Running containers: OCI runtime specs, and (next) the shim manager and
//! berth's shim.
//!
//! - [`spec`]: containerd's default Linux spec and composable options.
//! - [`manager`]: starting, connecting to and reconnecting to shims.

pub mod manager;
pub mod spec;
