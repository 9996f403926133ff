//! Pull, unpack, push, import and export of container images as a library:
//! containerd's `core/unpack` and `transfer/local` for berth, with no
//! daemon and no gRPC.
//!
//! - [`Puller`] resolves a reference with [`berth_remotes`], fetches the
//!   manifests, config and layers into any [`ContentStore`] (resuming
//!   earlier ingests) and, given an [`Unpacker`], applies the layers into a
//!   [`berth_snapshots::Snapshotter`] while they download.
//! - [`Unpacker`] unpacks an image that is already in a content store.
//! - [`push()`] sends an image to a registry, children first.
//! - [`convert`] rewrites an image in a store: Docker media types to OCI,
//!   layers uncompressed, an index cut to some platforms.
//! - [`fetch_object`] and [`push_object`] move one object by reference
//!   and digest (ctr's `content fetch-object` / `push-object`).
//! - [`archive`] reads OCI layouts and `docker save` archives into a store
//!   and writes images out as an OCI layout.
//!
//! Fast paths are capabilities, not guesses: a store that can show an
//! ingest while it is written ([`ContentStore::ingest_file`]) gets layers
//! applied as they download, and a snapshotter that declares
//! [`berth_snapshots::DirectApply`] is written without mounts (and in
//! parallel when it offers a staging directory). Any other snapshotter is
//! driven the plain way: prepare, mount, apply, unmount, commit.
//!
//! Errors carry a [`Category`], so a server maps them to its status codes
//! in one place. Progress goes to a callback ([`Progress`]).
//!
//! See `examples/pull_unpack.rs` for a complete pull-and-unpack without a
//! daemon.
//!
#![doc = include_str!("../README.md")]

pub mod archive;
mod blob;
mod content;
pub mod convert;
mod error;
mod object;
mod progress;
mod pull;
mod push;
mod unpack;

pub use content::ContentStore;
pub use error::{Category, Error, ErrorCategory, Result};
pub use object::{fetch_object, push_object};
pub use progress::{Progress, ProgressEvent};
pub use pull::{DEFAULT_STALL_TIMEOUT, PullOptions, Pulled, Puller};
pub use push::push;
pub use unpack::{Unpacked, Unpacker};

/// Runs blocking work (file system, stores, snapshotters) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task: {e}")))?
}
