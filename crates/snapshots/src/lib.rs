//! Snapshotter trait and drivers (overlayfs, native) for berth.
//!
//! This crate's scope is laid out in the workspace's ARCHITECTURE.md; its
//! interfaces arrive with the issue that builds this subsystem. Until then it
//! deliberately exports nothing, so nothing can depend on a placeholder.
