//! What a transfer needs from a content store: berth-content's
//! [`Provider`] and [`Ingester`], a way to label what it stored, and one
//! optional capability (reading an ingest while it is written).

use std::collections::BTreeMap;

use berth_content::local::LocalStore;
use berth_content::{Digest, Ingester, Manager, Provider};

/// A content store a transfer reads and writes blobs in.
///
/// Implemented for [`LocalStore`]; a server implements it for its own view
/// of a store (berthd's namespaced, leased one).
pub trait ContentStore: Provider + Ingester + Send + Sync {
    /// Records that blob `digest` (`size` bytes) is in the store and is the
    /// transfer's, adding `labels` to its labels (garbage-collection
    /// references, the uncompressed digest, the distribution source).
    fn add_labels(
        &self,
        digest: &Digest,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> berth_content::Result<()>;

    /// Optional capability: a file reading what ingest `ref_` has written
    /// so far, so a layer can be applied while it downloads. `None` (the
    /// default) means layers are applied once they are in the store.
    fn ingest_file(&self, ref_: &str) -> Option<std::fs::File> {
        let _ = ref_;
        None
    }
}

impl ContentStore for LocalStore {
    fn add_labels(
        &self,
        digest: &Digest,
        _size: u64,
        labels: BTreeMap<String, String>,
    ) -> berth_content::Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut info = berth_content::Info::new(digest.clone());
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        info.labels = labels.into_iter().collect();
        self.update(info, &paths).map(drop)
    }

    fn ingest_file(&self, ref_: &str) -> Option<std::fs::File> {
        // The local store writes an ingest's bytes to `<ingest dir>/data`.
        std::fs::File::open(self.ingest_dir(ref_).join("data")).ok()
    }
}
