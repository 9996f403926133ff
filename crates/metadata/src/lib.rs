//! berth's metadata store: one embedded, transactional database ([redb]) that
//! holds everything berth knows about namespaces and the objects inside them.
//!
//! This is containerd's `core/metadata` for berth. containerd keeps its
//! metadata in one bolt file with a bucket per namespace; berth keeps it in one
//! redb file with a table per object kind, keyed by `(namespace, ...)` (see
//! [`schema`] for the layout). Object kinds arrive one store at a time:
//!
//! - [`namespaces`]: the namespaces themselves and their labels.
//! - [`content`]: each namespace's records of the shared content blobs.
//! - [`leases`]: leases and the resources they hold.
//! - [`gc`]: garbage collection over all of them ([`Db::collect_garbage`]).
//! - [`snapshots`]: each namespace's view of each snapshotter.
//! - [`images`]: image names and their targets.
//! - [`containers`]: container records (spec, runtime, snapshot).
//!
//! On top of the records, the namespaced, leased views that implement the
//! library traits, as containerd's metadata package does:
//!
//! - [`content_view`]: [`NamespacedContent`], berth-content's
//!   [`Provider`](berth_content::Provider), [`Ingester`](berth_content::Ingester),
//!   [`Manager`](berth_content::Manager) and
//!   [`IngestManager`](berth_content::IngestManager) over any content store.
//! - [`snapshot_view`]: [`MetaSnapshotter`] (one driver and the DB) and its
//!   per-namespace [`NamespacedSnapshotter`], a
//!   [`Snapshotter`](berth_snapshots::Snapshotter).
//!
//! Shared validation lives in [`identifiers`] (names and ids), [`labels`]
//! and [`digests`].
//!
//! # Example
//!
//! ```
//! # fn main() -> berth_metadata::Result<()> {
//! # let dir = tempfile::tempdir().expect("tempdir");
//! use berth_metadata::Db;
//!
//! let db = Db::open(dir.path().join("meta.db"))?;
//! let namespaces = db.namespaces();
//! namespaces.create("default", [("owner", "ops")])?;
//! namespaces.set_label("default", "tier", "prod")?;
//! assert_eq!(namespaces.list()?, vec!["default"]);
//! assert_eq!(namespaces.get("default")?.labels["tier"], "prod");
//! namespaces.delete("default")?;
//! # Ok(())
//! # }
//! ```
//!
//! # Transactions
//!
//! Every store method runs as one short redb transaction, durable once it
//! returns. Readers see consistent snapshots and never wait for the writer;
//! writers take turns. The methods are synchronous: from async code, call
//! them via `spawn_blocking` (they do no network I/O and finish quickly).
//!
//! Garbage collection marks in a read transaction and sweeps in short
//! write transactions; blob files are deleted by the caller afterwards, so
//! writers never wait for file deletion (see [`gc`]).
//!
//! Errors are containerd's categories ([`Error::NotFound`],
//! [`Error::AlreadyExists`], ...) plus storage failures; turning them into
//! gRPC codes is the RPC layer's job.

mod container_codec;
pub mod containers;
pub mod content;
pub mod content_view;
mod db;
pub mod digests;
pub mod error;
pub mod gc;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod leases;
pub mod namespaces;
pub mod schema;
pub mod snapshot_view;
pub mod snapshots;
mod timestamp;

pub use containers::{AnyValue, ContainerRecord, ContainerStore, Runtime};
pub use content::{ContentRecord, ContentStore};
pub use content_view::{NamespacedContent, NamespacedWriter};
pub use db::{Db, MutationCallback};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use images::{ImageRecord, ImageStore, Target};
pub use labels::Labels;
pub use leases::{Lease, LeaseStore, Resource};
pub use namespaces::{Namespace, Namespaces};
pub use schema::SCHEMA_VERSION;
pub use snapshot_view::{MetaSnapshotter, NamespacedSnapshotter, SnapshotObserver};
pub use snapshots::{PendingCommit, SnapshotKind, SnapshotRecord, SnapshotStore};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
