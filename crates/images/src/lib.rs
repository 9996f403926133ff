//! Image references, manifests, platforms and layer apply/diff for berth.
//!
//! This is containerd's `core/images` (and `reference`, `platforms`) for
//! berth:
//!
//! - [`mod@reference`]: image names, parsed and normalised like Docker's
//!   (`busybox` → `docker.io/library/busybox:latest`).
//! - [`media`]: OCI and Docker schema 2 media types and what they are
//!   (manifest, index, config, layer; compression; non-distributable).
//! - [`manifest`]: descriptors, manifests, indexes and image configs, parsed
//!   with size limits checked first; chain IDs.
//! - [`platform`]: platforms (`linux/arm64/v8`), normalisation, and matchers
//!   that choose among an index's manifests.
//! - [`handlers`]: walking an image's graph of blobs through any
//!   [`handlers::ReadBlob`] (every content store `Provider` is one), and
//!   resolving an image to its config and layers for a platform.
//! - [`archive`]: applying tar layers into a directory, contained in it.
//!
//! Errors of everything but [`archive`] are one [`Error`]; every error
//! type implements [`berth_types::ErrorCategory`].
//!
//! Digests, descriptors, media types, references and platforms are
//! `berth-types`' (the vocabulary every berth crate shares); [`mod@reference`],
//! [`platform`], [`media`] and [`manifest`] re-export them, so
//! `berth_images::Descriptor` and `berth_types::Descriptor` are one type.
//!
//! # Example
//!
//! ```
//! use berth_images::platform::{Matcher, Platform};
//! use berth_images::reference::Reference;
//!
//! let r: Reference = "busybox".parse()?;
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//! assert_eq!(r.familiar(), "busybox:latest");
//!
//! let arm64 = Matcher::only(&Platform::parse("linux/arm64")?);
//! assert!(arm64.matches(&Platform::parse("linux/arm/v7")?));
//! # Ok::<(), berth_images::Error>(())
//! ```

pub mod archive;
pub mod error;
pub mod handlers;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;

pub use error::{Error, Result};
pub use manifest::{Descriptor, ImageConfig, Index, Manifest};
pub use platform::{Matcher, Platform};
pub use reference::Reference;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
