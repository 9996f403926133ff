//! Platforms (`linux/amd64`, `linux/arm/v7`) and choosing among them.
//!
//! [`Platform`] and [`Matcher`] live in `berth-types` (the vocabulary every
//! berth crate shares) and are re-exported here; they follow containerd's
//! `platforms` package.

pub use berth_types::platform::*;
