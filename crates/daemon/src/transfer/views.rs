//! The content store as berth-transfer sees it: berth-metadata's
//! namespaced, leased view ([`NamespacedContent`]) with the transfer's
//! extras (labelling what it stored, reading an ingest while it is
//! written). The snapshotters' view is berth-metadata's
//! [`NamespacedSnapshotter`](berth_metadata::NamespacedSnapshotter), used
//! as is (see [`crate::snapshotters::Snapshotters::view`]).

use std::sync::Arc;

use berth_content::{Digest, Ingester, Labels, Provider, ReaderAt, Store, Writer};
use berth_metadata::NamespacedContent;
use berth_transfer::ContentStore;

/// What berthd's services need of the content plugin: berth-content's
/// traits, and berth-transfer's reading of an ingest in progress (the
/// local store has both). Only the plugin builder names the store itself.
pub(crate) trait ContentBackend: Store + ContentStore {}

impl<T: Store + ContentStore + ?Sized> ContentBackend for T {}

/// The shared content plugin, as the services hold it.
pub(crate) type Backend = Arc<dyn ContentBackend>;

/// Namespace `ns`'s view of the content store, writing into `lease`, as a
/// transfer's [`ContentStore`].
#[derive(Debug, Clone)]
pub(crate) struct TransferContent(pub(crate) NamespacedContent<dyn ContentBackend>);

impl TransferContent {
    /// `store` as namespace `ns` sees it, recorded in `db`, held by `lease`.
    pub(crate) fn new(
        store: Backend,
        db: berth_metadata::Db,
        ns: &str,
        lease: Option<String>,
    ) -> TransferContent {
        // The transfer labels each blob right after committing it.
        TransferContent(
            NamespacedContent::new(store, db, ns)
                .with_lease(lease)
                .relabelled_after_commit(),
        )
    }
}

impl Provider for TransferContent {
    fn reader_at(&self, digest: &Digest) -> berth_content::Result<Box<dyn ReaderAt>> {
        self.0.reader_at(digest)
    }
}

impl Ingester for TransferContent {
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> berth_content::Result<Box<dyn Writer>> {
        self.0.writer(ref_, total, expected)
    }
}

impl ContentStore for TransferContent {
    /// Adds the blob to the namespace (held by the lease), or adds the
    /// labels (and the lease) if the namespace has it already.
    fn add_labels(&self, digest: &Digest, size: u64, labels: Labels) -> berth_content::Result<()> {
        self.0.add_labels(digest, size, labels)
    }

    fn ingest_file(&self, ref_: &str) -> Option<std::fs::File> {
        self.0.backend().ingest_file(&self.0.backend_ref(ref_))
    }
}
