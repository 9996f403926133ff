//! Layer archives: applying tar layers to directories, and computing a
//! layer from two directory trees.

pub mod apply;
pub mod diff;
mod guard;

pub use apply::{ApplyError, ApplyStats, Compression, Whiteouts, apply};
pub use diff::{DiffError, DiffStats, write_diff, write_layer};
