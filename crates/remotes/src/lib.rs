//! Registry v2 resolver, fetcher and pusher for berth.
//!
//! This is containerd's `remotes` + `remotes/docker` for berth: how images
//! get from a registry (the [OCI distribution spec], Docker's registry v2 API)
//! into the content store and back.
//!
//! - [`Resolver`]: turns a reference (`host/repo:tag`, `host/repo@digest`)
//!   into the [`Descriptor`] of its root manifest or index, and hands out a
//!   [`Fetcher`] and a [`Pusher`] bound to that reference's repository.
//! - [`Fetcher`]: streams a blob or manifest by descriptor, from any offset
//!   ([`Fetcher::fetch_from`]), so an interrupted download resumes where the
//!   content store's ingest stopped.
//! - [`Pusher`]: uploads a blob (existence check, upload session, monolithic
//!   `PUT`) or a manifest (`PUT` under the reference's tag).
//!
//! The implementation is [`registry::Registry`]: anonymous, basic and bearer
//! token auth ([`auth`]), containerd's `hosts.toml` mirrors and TLS settings
//! ([`hosts`]), one pooled HTTP client per TLS configuration and a limit on
//! concurrent blob downloads per host.
//!
//! References are strings parsed with `berth_types::Reference` (Docker's
//! grammar and normalisation: `busybox` is `docker.io/library/busybox`).
//! [`Descriptor`] and [`Digest`] are `berth-types`' (one type for every
//! berth crate); media types are in `berth_types::media`.
//!
//! # Example
//!
//! ```no_run
//! # async fn pull() -> berth_remotes::Result<()> {
//! use berth_remotes::registry::{Registry, RegistryOptions};
//! use berth_remotes::{Fetcher, Resolver};
//! use futures::StreamExt;
//!
//! let registry = Registry::new(RegistryOptions::default().with_hosts_dir("/etc/berth/certs.d"))?;
//! let (name, desc) = registry.resolve("localhost:5000/library/busybox:latest").await?;
//! let fetcher = registry.fetcher(&name)?;
//! let mut stream = fetcher.fetch(&desc).await?;
//! while let Some(chunk) = stream.next().await {
//!     let _bytes = chunk?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [OCI distribution spec]: https://github.com/opencontainers/distribution-spec/blob/main/spec.md

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;

pub mod auth;
pub mod error;
pub mod hosts;
mod reference;
pub mod registry;
mod tls;

pub use berth_types::{Descriptor, Digest};
pub use error::{Error, RegistryError, RegistryErrors, Result};

/// The largest manifest accepted from a registry: 4 MiB, containerd's limit
/// too (a real manifest is a few KiB; the limit bounds memory).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Whether `media_type` is a manifest or index, i.e. served from
/// `/manifests/` rather than `/blobs/`.
pub fn is_manifest_type(media_type: &str) -> bool {
    berth_types::media::is_manifest(media_type) || berth_types::media::is_index(media_type)
}

/// A stream of content bytes; an error ends it. Turn it into an `AsyncRead`
/// with `tokio_util::io::StreamReader` if needed.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// The data of one push: read to its end, it must be exactly the descriptor's
/// bytes.
pub type PushReader = Box<dyn AsyncRead + Send + Unpin>;

/// How a push ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The data was uploaded.
    Uploaded,
    /// The registry had the content already; nothing was sent.
    Exists,
}

/// Finds what a reference points at, and hands out fetchers and pushers for
/// its repository (containerd's `remotes.Resolver`).
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Resolves `reference` (`host/repo:tag`, `host/repo@digest` or both) to
    /// the name to use from now on (the reference itself) and the descriptor
    /// of its root manifest or index.
    ///
    /// Errors: [`Error::InvalidArgument`] for a reference without a tag or
    /// digest, [`Error::NotFound`] if no host has it, [`Error::Unauthorized`]
    /// if the registry wants credentials that were not given or were refused.
    async fn resolve(&self, reference: &str) -> Result<(String, Descriptor)>;

    /// A fetcher for the repository of `reference` (its tag or digest does
    /// not matter).
    fn fetcher(&self, reference: &str) -> Result<Box<dyn Fetcher>>;

    /// A pusher for the repository of `reference`; manifests are pushed
    /// under its tag, if it has one.
    fn pusher(&self, reference: &str) -> Result<Box<dyn Pusher>>;
}

/// Reads content from one repository (containerd's `remotes.Fetcher`).
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// Streams the content `desc` from its start.
    async fn fetch(&self, desc: &Descriptor) -> Result<ByteStream> {
        self.fetch_from(desc, 0).await
    }

    /// Streams the content `desc` from byte `offset` on, for resuming an
    /// interrupted download: the stream yields `desc.size - offset` bytes.
    ///
    /// Manifests (by media type, see [`is_manifest_type`]) are read whole
    /// and checked against `desc.size` and `desc.digest` before anything is
    /// yielded; blobs are streamed and checked for size only (the content
    /// store verifies their digest as it ingests them).
    ///
    /// Errors: [`Error::InvalidArgument`] if `offset > desc.size`,
    /// [`Error::NotFound`] if no host has it, [`Error::SizeMismatch`] and
    /// [`Error::DigestMismatch`] for content that is not what `desc` says.
    async fn fetch_from(&self, desc: &Descriptor, offset: u64) -> Result<ByteStream>;
}

/// Writes content to one repository (containerd's `remotes.Pusher`).
///
/// Push blobs before the manifests that name them, and an index's manifests
/// before the index: a registry refuses a manifest whose blobs it lacks.
/// Like containerd, every manifest is put under the reference's tag when it
/// has one, so the root pushed last is what the tag ends up naming.
#[async_trait]
pub trait Pusher: Send + Sync {
    /// Uploads `desc`, reading its bytes from `reader`, unless the registry
    /// has it already ([`Pushed::Exists`]; `reader` is then not read).
    async fn push(&self, desc: &Descriptor, reader: PushReader) -> Result<Pushed>;

    /// [`Pusher::push`] of data held in memory.
    async fn push_bytes(&self, desc: &Descriptor, data: Bytes) -> Result<Pushed> {
        self.push(desc, Box::new(std::io::Cursor::new(data))).await
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
