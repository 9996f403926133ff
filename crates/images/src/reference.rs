//! Image references: `busybox` → `docker.io/library/busybox:latest`.
//!
//! The parser lives in `berth-types` (the vocabulary every berth crate
//! shares) and is re-exported here; see [`Reference`] for the grammar and
//! the normalisation (Docker's, as containerd's `ParseDockerRef` does it).
//! `benches/reference.rs` measures it.

pub use berth_types::reference::*;
