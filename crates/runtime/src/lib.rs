//! Running containers from the daemon's side: starting, connecting to and
//! reconnecting to shims, and reading a container's cgroup.
//!
//! - [`manager`]: the shim manager (containerd's shim v2 protocol: the shim
//!   binary's `start` and `delete`, its ttrpc task API).
//! - [`address`]: where a shim's socket is, computed alike by the shim
//!   (`berth-shim`) and the manager.
//! - [`cgroups`]: a container's cgroup (v1 or v2) read into containerd's
//!   cgroup statistics messages, for a shim's `Stats` answer.
//! - [`spawn`]: short-lived helper processes started with `posix_spawn`,
//!   without forking the caller.
//! - [`task`]: a task's handle, the typed calls of its shim's task API
//!   (the ttrpc connection stays inside this crate).
//!
//! OCI runtime specs are built by `berth-spec`; berth's shim is
//! `berth-shim`.

pub mod address;
pub mod cgroups;
pub mod manager;
pub mod spawn;
pub mod task;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
