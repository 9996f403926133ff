//! Layer archives: applying tar layers to directories.

pub mod apply;

pub use apply::{ApplyError, ApplyStats, Compression, Whiteouts, apply};
