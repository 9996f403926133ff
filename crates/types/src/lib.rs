//! berth's shared vocabulary: the small types every other crate speaks.
//!
//! - [`digest`]: content digests (`sha256:…`, `sha512:…`), validated, and
//!   the streaming [`Digester`] that computes them.
//! - [`descriptor`]: the OCI content [`Descriptor`] (media type, digest,
//!   size, annotations, platform), serde as the OCI JSON.
//! - [`media`]: OCI and Docker schema 2 media types, one set, and what each
//!   is (manifest, index, config, layer, non-distributable).
//! - [`mod@reference`]: image references parsed and normalised like Docker's
//!   and containerd's (`busybox` → `docker.io/library/busybox:latest`).
//! - [`platform`]: platforms (`linux/arm64/v8`), normalisation, and the
//!   [`Matcher`] that ranks an index's manifests for a host.
//! - [`errdefs`]: containerd's error [`Category`] and the [`ErrorCategory`]
//!   trait every library error of berth implements, so the RPC boundary
//!   (`berth-api`) maps categories to gRPC and ttrpc codes in one place.
//!
//! No async, no I/O, no protobuf: a crate that only needs to name an image
//! or a blob depends on this one and on serde, sha2 and thiserror.
//!
//! # Example
//!
//! ```
//! use berth_types::{Category, Descriptor, Digest, ErrorCategory, Matcher, Platform, Reference};
//! use berth_types::media;
//!
//! let r: Reference = "busybox".parse()?;
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//!
//! let config = Descriptor::of(media::OCI_CONFIG, b"{}");
//! assert_eq!(config.digest, Digest::of(b"{}"));
//!
//! let arm64 = Matcher::only(&Platform::parse("linux/arm64")?);
//! assert!(arm64.matches(&Platform::parse("linux/arm/v7")?));
//!
//! let err = Digest::parse("sha256:abc").unwrap_err();
//! assert_eq!(err.category(), Category::InvalidArgument);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod descriptor;
pub mod digest;
pub mod errdefs;
pub mod media;
pub mod platform;
pub mod reference;

pub use descriptor::Descriptor;
pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use errdefs::{Category, ErrorCategory};
pub use platform::{Matcher, Platform, PlatformError};
pub use reference::{Reference, ReferenceError};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
