//! Running containers: OCI runtime specs, and (next) the shim manager and
//! berth's shim.
//!
//! - [`spec`]: containerd's default Linux spec and composable options.

pub mod spec;
