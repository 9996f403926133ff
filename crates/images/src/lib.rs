//! Image references, manifests, platforms and layer apply/diff for berth.
//!
//! - [`archive`]: applying tar layers into a directory, contained in it.
//!
//! References, media types, manifests, platform matching and image-graph
//! handlers arrive with the rest of the images issue.

pub mod archive;
