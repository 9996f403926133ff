//! Running containers: OCI runtime specs, the shim manager and berth's shim.
//!
//! - [`spec`]: containerd's default Linux spec and composable options.
//! - [`user`]: an image's `User` resolved through its `/etc/passwd` and
//!   `/etc/group`.
//! - [`manager`]: starting, connecting to and reconnecting to shims.
//! - [`shim`]: berth's shim `containerd-shim-berth-v2` (runc, shim v2 ttrpc).
//! - [`cgroups`]: a container's cgroup (v1 or v2) read into containerd's
//!   cgroup statistics messages, for a shim's `Stats` answer.
//! - [`spawn`]: short-lived helper processes started with `posix_spawn`,
//!   without forking the caller.

pub mod cgroups;
pub mod manager;
pub mod shim;
pub mod spawn;
pub mod spec;
pub mod user;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
