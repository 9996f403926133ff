//! The content store's metadata: which namespaces hold which blobs, with
//! their sizes, times and labels (containerd's `core/metadata/content.go`).
//!
//! Blobs themselves live once, shared by all namespaces, in the local
//! content store (`berth-content`), which this crate knows nothing about.
//! What a namespace sees is its records here: a client in namespace `a`
//! can read, label and delete only the blobs `a` has a record for, even if
//! the same bytes were pulled by namespace `b` too.
//!
//! [`NamespacedContent`](crate::NamespacedContent) drives both halves: it
//! commits a blob into the shared store, then records it here
//! ([`ContentStore::record`]: the record, the blob in the client's lease,
//! the ingest out of it, in one transaction). Deleting a record never deletes the file, not even the
//! last one: the garbage collector ([`Db::collect_garbage`]) reports digests
//! that no namespace holds any more, and the daemon deletes their files
//! outside any transaction.
//!
//! # Encoding
//!
//! A record is stored in the `content` table under `(namespace, digest)` as
//! a JSON object: `{"size": 1234, "created": <ns>, "updated": <ns>,
//! "labels": {..}}`, times in nanoseconds since the Unix epoch, `labels`
//! omitted when empty, unknown fields ignored on reading.

use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::db::Db;
use crate::digests;
use crate::error::{DbContext, Error, Result};
use crate::gc::Node;
use crate::labels::{self, Labels};
use crate::leases;
use crate::namespaces;
use crate::schema::{self, end_of};
use crate::timestamp;

/// A namespace's record of one content blob (containerd's `content.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRecord {
    /// The blob's digest, `sha256:<64 hex>` or `sha512:<128 hex>`.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: i64,
    /// When this namespace first recorded the blob.
    pub created_at: SystemTime,
    /// When the record last changed (its labels), or `created_at`.
    pub updated_at: SystemTime,
    /// The record's labels; `containerd.io/gc.*` labels steer garbage collection.
    pub labels: Labels,
}

/// Reads and writes content records. Obtain one with [`Db::content`].
///
/// Every method is one short transaction. Namespaces are not validated on
/// reads: a namespace that does not exist simply holds no content.
#[derive(Debug, Clone)]
pub struct ContentStore {
    db: Db,
}

/// The stored form of a [`ContentRecord`] (the digest is the key).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredContent {
    #[serde(default)]
    pub(crate) size: i64,
    #[serde(default)]
    pub(crate) created: i64,
    #[serde(default)]
    pub(crate) updated: i64,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub(crate) labels: Labels,
}

impl StoredContent {
    /// Decodes a stored record; [`Error::DataLoss`] naming it if that fails.
    pub(crate) fn decode(ns: &str, digest: &str, bytes: &[u8]) -> Result<StoredContent> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::DataLoss(format!(
                "content record {digest} in namespace {ns:?}: cannot decode: {e}"
            ))
        })
    }

    fn encode(&self) -> Vec<u8> {
        // Serialising string maps and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn into_record(self, digest: &str) -> ContentRecord {
        ContentRecord {
            digest: digest.to_owned(),
            size: self.size,
            created_at: timestamp::from_nanos(self.created),
            updated_at: timestamp::from_nanos(self.updated),
            labels: self.labels,
        }
    }
}

impl ContentStore {
    /// A content store over `db`.
    pub(crate) fn new(db: Db) -> ContentStore {
        ContentStore { db }
    }

    /// Records that namespace `ns` holds blob `digest` of `size` bytes, with `labels`.
    ///
    /// Call it after the blob was committed to the shared store. Creates the
    /// namespace if it does not exist. With `lease`, the blob is added to
    /// that lease's resources in the same transaction, so it is protected
    /// from garbage collection from the moment it is visible.
    ///
    /// [`Error::InvalidArgument`] for a malformed namespace, digest, negative
    /// size or oversized label; [`Error::AlreadyExists`] if `ns` already
    /// holds the blob; [`Error::NotFound`] if the lease does not exist (then
    /// nothing is recorded). Labels with empty values are dropped.
    pub fn add(
        &self,
        ns: &str,
        digest: &str,
        size: i64,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<ContentRecord> {
        digests::validate(digest)?;
        if size < 0 {
            return Err(Error::InvalidArgument(format!(
                "content {digest}: size {size} is negative"
            )));
        }
        let labels = collect_labels(labels)?;
        let now = timestamp::to_nanos(SystemTime::now());
        let stored = StoredContent {
            size,
            created: now,
            updated: now,
            labels,
        };
        let bytes = stored.encode();

        self.db.update(|txn| {
            namespaces::create_if_missing(txn, ns)?;
            let mut table = open_content(txn)?;
            if table.get((ns, digest)).context("read content")?.is_some() {
                return Err(Error::AlreadyExists(format!("content {digest}")));
            }
            table
                .insert((ns, digest), bytes.as_slice())
                .context("insert content")?;
            if let Some(lease) = lease {
                leases::add_resource_in(txn, &self.db, ns, lease, leases::CONTENT, digest)?;
            }
            self.db.track(Node::content(ns, digest));
            Ok(())
        })?;

        debug!(namespace = ns, digest, size, lease, "added content");
        Ok(stored.into_record(digest))
    }

    /// Records that namespace `ns` holds blob `digest` (as
    /// [`ContentStore::add`]) or, if it does already, keeps its record,
    /// setting the keys of `labels` on it when `relabel` is set; adds the
    /// blob to `lease` and drops ingest `ingest` from that lease (containerd's
    /// commit: the lease holds the blob now, not its upload). One
    /// transaction, so a namespace's writer costs one durable write at commit.
    ///
    /// Returns whether the record is new. Errors as [`ContentStore::add`].
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        ns: &str,
        digest: &str,
        size: i64,
        labels: Labels,
        relabel: bool,
        lease: Option<&str>,
        ingest: Option<&str>,
    ) -> Result<bool> {
        self.record_in(ns, digest, size, labels, relabel, lease, ingest, true)
    }

    /// [`ContentStore::record`] without waiting for the disk: visible at
    /// once, durable with the next durable write (for a caller that makes
    /// one right after, as a transfer's relabelling does); a crash before
    /// that loses the record, not the blob.
    #[allow(clippy::too_many_arguments)]
    pub fn record_lazily(
        &self,
        ns: &str,
        digest: &str,
        size: i64,
        labels: Labels,
        relabel: bool,
        lease: Option<&str>,
        ingest: Option<&str>,
    ) -> Result<bool> {
        self.record_in(ns, digest, size, labels, relabel, lease, ingest, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_in(
        &self,
        ns: &str,
        digest: &str,
        size: i64,
        labels: Labels,
        relabel: bool,
        lease: Option<&str>,
        ingest: Option<&str>,
        durable: bool,
    ) -> Result<bool> {
        digests::validate(digest)?;
        if size < 0 {
            return Err(Error::InvalidArgument(format!(
                "content {digest}: size {size} is negative"
            )));
        }
        let labels = collect_labels(labels)?;
        let now = timestamp::to_nanos(SystemTime::now());
        let write = |txn: &WriteTransaction| {
            namespaces::create_if_missing(txn, ns)?;
            let mut table = open_content(txn)?;
            let existing = match table.get((ns, digest)).context("read content")? {
                Some(bytes) => Some(StoredContent::decode(ns, digest, bytes.value())?),
                None => None,
            };
            let new = existing.is_none();
            let stored = match existing {
                None => Some(StoredContent {
                    size,
                    created: now,
                    updated: now,
                    labels,
                }),
                Some(mut stored) if relabel && !labels.is_empty() => {
                    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                    stored.labels = apply_label_paths(stored.labels, labels, &paths)?;
                    stored.updated = now;
                    Some(stored)
                }
                Some(_) => None,
            };
            if let Some(stored) = stored {
                table
                    .insert((ns, digest), stored.encode().as_slice())
                    .context("insert content")?;
                self.db.track(Node::content(ns, digest));
            }
            if let Some(lease) = lease {
                leases::add_resource_in(txn, &self.db, ns, lease, leases::CONTENT, digest)?;
                if let Some(reference) = ingest {
                    txn.open_table(schema::LEASE_RESOURCES)
                        .context("open table lease_resources")?
                        .remove((ns, lease, leases::INGESTS, reference))
                        .context("remove lease resource")?;
                }
            }
            Ok(new)
        };
        let new = if durable {
            self.db.update(write)?
        } else {
            self.db.update_lazily(write)?
        };
        debug!(namespace = ns, digest, size, lease, new, "recorded content");
        Ok(new)
    }

    /// Returns namespace `ns`'s record of `digest`; [`Error::NotFound`] if it has none.
    pub fn info(&self, ns: &str, digest: &str) -> Result<ContentRecord> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::CONTENT)
                .context("open table content")?;
            let Some(bytes) = table.get((ns, digest)).context("read content")? else {
                return Err(not_found(digest));
            };
            Ok(StoredContent::decode(ns, digest, bytes.value())?.into_record(digest))
        })
    }

    /// Changes the labels of namespace `ns`'s record of `digest` and returns the result.
    ///
    /// containerd's field paths: `labels` replaces all labels with `labels`;
    /// `labels.<key>` sets that one label to its value in `labels`, or
    /// removes it if `labels` has no (or an empty) value for it; no paths at
    /// all replaces all labels. Any other path is [`Error::InvalidArgument`]
    /// (size, digest and times cannot be changed). [`Error::NotFound`] if
    /// `ns` holds no such blob. `updated_at` becomes now.
    pub fn update(
        &self,
        ns: &str,
        digest: &str,
        labels: Labels,
        fieldpaths: &[String],
    ) -> Result<ContentRecord> {
        let now = timestamp::to_nanos(SystemTime::now());

        let stored = self.db.update(|txn| {
            let mut table = open_content(txn)?;
            let mut stored = match table.get((ns, digest)).context("read content")? {
                Some(bytes) => StoredContent::decode(ns, digest, bytes.value())?,
                None => return Err(not_found(digest)),
            };
            if let Some(path) = fieldpaths
                .iter()
                .find(|p| *p != "labels" && !p.starts_with("labels."))
            {
                return Err(Error::InvalidArgument(format!(
                    "cannot update {path:?} field on content info {digest:?}"
                )));
            }
            stored.labels = apply_label_paths(stored.labels, labels, fieldpaths)?;
            stored.updated = now;
            table
                .insert((ns, digest), stored.encode().as_slice())
                .context("update content")?;
            // New labels may reference other blobs or snapshots.
            self.db.track(Node::content(ns, digest));
            Ok(stored)
        })?;

        debug!(namespace = ns, digest, "updated content labels");
        Ok(stored.into_record(digest))
    }

    /// Returns all of namespace `ns`'s content records, sorted by digest.
    ///
    /// Filtering (containerd's filter expressions) is the caller's job.
    pub fn list(&self, ns: &str) -> Result<Vec<ContentRecord>> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::CONTENT)
                .context("open table content")?;
            let end = end_of(ns);
            let mut out = Vec::new();
            for entry in table
                .range((ns, "")..(end.as_str(), ""))
                .context("scan content")?
            {
                let (k, v) = entry.context("read content")?;
                let digest = k.value().1;
                out.push(StoredContent::decode(ns, digest, v.value())?.into_record(digest));
            }
            Ok(out)
        })
    }

    /// Deletes namespace `ns`'s record of `digest`.
    ///
    /// Returns whether another namespace still holds the blob. The file is
    /// not deleted here, even when this was the last record: the next
    /// garbage collection reports the digest in
    /// [`GcReport::removed_content`](crate::gc::GcReport::removed_content)
    /// unless a namespace added it again meanwhile. [`Error::NotFound`] if
    /// `ns` holds no such blob.
    pub fn delete(&self, ns: &str, digest: &str) -> Result<bool> {
        let elsewhere = self.db.update(|txn| {
            let mut table = open_content(txn)?;
            if table
                .remove((ns, digest))
                .context("remove content")?
                .is_none()
            {
                return Err(not_found(digest));
            }
            self.db.mark_dirty();
            let elsewhere = held_anywhere(&table, digest)?;
            if !elsewhere {
                txn.open_table(schema::RELEASED_CONTENT)
                    .context("open table released_content")?
                    .insert(digest, ())
                    .context("record released content")?;
            }
            Ok(elsewhere)
        })?;
        debug!(namespace = ns, digest, elsewhere, "deleted content");
        Ok(elsewhere)
    }

    /// Whether any namespace holds a record of `digest`.
    ///
    /// For deduplication: a blob the shared store has already may be
    /// recorded in another namespace without uploading it again, if the
    /// caller's policy allows (containerd requires the writer to prove it has
    /// the data). Also lets a caller re-check a digest just before deleting
    /// its file.
    pub fn exists_anywhere(&self, digest: &str) -> Result<bool> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::CONTENT)
                .context("open table content")?;
            held_anywhere(&table, digest)
        })
    }
}

fn open_content(
    txn: &WriteTransaction,
) -> Result<redb::Table<'_, (&'static str, &'static str), &'static [u8]>> {
    txn.open_table(schema::CONTENT)
        .context("open table content")
}

fn not_found(digest: &str) -> Error {
    Error::NotFound(format!("content digest {digest}"))
}

/// Validates labels (with containerd's `info.Labels: ` prefix) and drops empty values.
pub(crate) fn collect_labels(labels: Labels) -> Result<Labels> {
    let mut out = Labels::new();
    for (k, v) in labels {
        labels::validate(&k, &v).map_err(prefix_labels)?;
        if !v.is_empty() {
            out.insert(k, v);
        }
    }
    Ok(out)
}

fn prefix_labels(e: Error) -> Error {
    match e {
        Error::InvalidArgument(msg) => Error::InvalidArgument(format!("info.Labels: {msg}")),
        other => other,
    }
}

/// Applies an update's field paths (already checked to be label paths) to `current`.
pub(crate) fn apply_label_paths(
    mut current: Labels,
    mut given: Labels,
    paths: &[String],
) -> Result<Labels> {
    if paths.is_empty() || paths.iter().any(|p| p == "labels") {
        // Replacing all labels; `labels.<k>` paths besides it change nothing more.
        return collect_labels(given);
    }
    for path in paths {
        let key = path.strip_prefix("labels.").unwrap_or(path);
        match given.remove(key).filter(|v| !v.is_empty()) {
            Some(value) => {
                labels::validate(key, &value).map_err(prefix_labels)?;
                current.insert(key.to_owned(), value);
            }
            None => {
                current.remove(key);
            }
        }
    }
    Ok(current)
}

/// Whether any namespace has a record of `digest` in the content `table`.
///
/// Costs two lookups per namespace that holds content, however many
/// records each holds.
pub(crate) fn held_anywhere(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    digest: &str,
) -> Result<bool> {
    held_by_any(table, &namespaces_holding_any(table)?, digest)
}

/// The namespaces that hold at least one content record, sorted.
///
/// Seeks from one namespace's keys to the next: one lookup per namespace.
pub(crate) fn namespaces_holding_any(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let from = out.last().map(|ns| end_of(ns)).unwrap_or_default();
        let mut range = table
            .range((from.as_str(), "")..)
            .context("scan content namespaces")?;
        let Some(entry) = range.next() else {
            return Ok(out);
        };
        let (k, _) = entry.context("read content key")?;
        out.push(k.value().0.to_owned());
    }
}

/// Whether one of `namespaces` has a record of `digest` in the content `table`.
pub(crate) fn held_by_any(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    namespaces: &[String],
    digest: &str,
) -> Result<bool> {
    for ns in namespaces {
        if table
            .get((ns.as_str(), digest))
            .context("read content")?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> String {
        format!("sha256:{:064x}", n)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        (dir, db)
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn add_then_info_and_list() {
        let (_dir, db) = open();
        let cs = db.content();
        let added = cs
            .add(
                "default",
                &digest(1),
                42,
                labels(&[("a", "1"), ("empty", "")]),
                None,
            )
            .unwrap();
        assert_eq!(added.digest, digest(1));
        assert_eq!(added.size, 42);
        assert_eq!(added.created_at, added.updated_at);
        assert_eq!(added.labels, labels(&[("a", "1")]));
        assert_eq!(cs.info("default", &digest(1)).unwrap(), added);
        cs.add("default", &digest(0), 1, Labels::new(), None)
            .unwrap();
        let listed: Vec<String> = cs
            .list("default")
            .unwrap()
            .into_iter()
            .map(|r| r.digest)
            .collect();
        assert_eq!(listed, vec![digest(0), digest(1)]);
        assert!(cs.list("other").unwrap().is_empty());
    }

    #[test]
    fn add_creates_the_namespace() {
        let (_dir, db) = open();
        assert!(!db.namespaces().exists("fresh").unwrap());
        db.content()
            .add("fresh", &digest(1), 1, Labels::new(), None)
            .unwrap();
        assert!(db.namespaces().exists("fresh").unwrap());
        // ... and the namespace cannot be deleted while it holds the blob.
        let err = db.namespaces().delete("fresh").unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    }

    #[test]
    fn add_twice_is_already_exists() {
        let (_dir, db) = open();
        let cs = db.content();
        cs.add("default", &digest(1), 1, Labels::new(), None)
            .unwrap();
        let err = cs
            .add("default", &digest(1), 1, Labels::new(), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("content {}: already exists", digest(1))
        );
        // Another namespace may record the same blob.
        cs.add("other", &digest(1), 1, Labels::new(), None).unwrap();
    }

    #[test]
    fn add_validates() {
        let (_dir, db) = open();
        let cs = db.content();
        let cases = [
            cs.add("default", "sha256:abc", 1, Labels::new(), None),
            cs.add("bad/ns", &digest(1), 1, Labels::new(), None),
            cs.add("default", &digest(1), -1, Labels::new(), None),
            cs.add(
                "default",
                &digest(1),
                1,
                labels(&[("k", &"v".repeat(labels::MAX_SIZE))]),
                None,
            ),
        ];
        for res in cases {
            assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
        }
        let err = cs
            .add(
                "default",
                &digest(1),
                1,
                labels(&[("k", &"v".repeat(labels::MAX_SIZE))]),
                None,
            )
            .unwrap_err();
        assert!(err.to_string().starts_with("info.Labels: "), "{err}");
        assert!(cs.list("default").unwrap().is_empty());
        assert!(!db.namespaces().exists("default").unwrap());
    }

    #[test]
    fn add_with_lease_records_the_resource() {
        let (_dir, db) = open();
        db.leases()
            .create("default", "pull", Labels::new())
            .unwrap();
        db.content()
            .add("default", &digest(7), 1, Labels::new(), Some("pull"))
            .unwrap();
        let resources = db.leases().list_resources("default", "pull").unwrap();
        assert_eq!(
            resources,
            vec![crate::leases::Resource {
                id: digest(7),
                kind: "content".to_owned()
            }]
        );
    }

    #[test]
    fn add_with_missing_lease_records_nothing() {
        let (_dir, db) = open();
        let err = db
            .content()
            .add("default", &digest(7), 1, Labels::new(), Some("nope"))
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(matches!(
            db.content().info("default", &digest(7)),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn missing_content_is_not_found() {
        let (_dir, db) = open();
        let cs = db.content();
        let err = cs.info("default", &digest(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("content digest {}: not found", digest(1))
        );
        assert!(matches!(
            cs.update("default", &digest(1), Labels::new(), &[]),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            cs.delete("default", &digest(1)),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn update_follows_containerd_field_paths() {
        let (_dir, db) = open();
        let cs = db.content();
        let d = digest(1);
        let added = cs
            .add("default", &d, 1, labels(&[("a", "1"), ("b", "2")]), None)
            .unwrap();

        // labels.<k>: set one, remove one absent from the given labels.
        let r = cs
            .update(
                "default",
                &d,
                labels(&[("c", "3"), ("a", "ignored")]),
                &paths(&["labels.c", "labels.b"]),
            )
            .unwrap();
        assert_eq!(r.labels, labels(&[("a", "1"), ("c", "3")]));
        assert!(r.updated_at >= added.updated_at);
        assert_eq!(r.created_at, added.created_at);
        assert_eq!(cs.info("default", &d).unwrap(), r);

        // labels: replace all.
        let r = cs
            .update("default", &d, labels(&[("x", "9")]), &paths(&["labels"]))
            .unwrap();
        assert_eq!(r.labels, labels(&[("x", "9")]));

        // No paths: replace all too.
        let r = cs
            .update("default", &d, labels(&[("y", "8")]), &[])
            .unwrap();
        assert_eq!(r.labels, labels(&[("y", "8")]));

        // Anything else is refused and changes nothing.
        let err = cs
            .update("default", &d, Labels::new(), &paths(&["size"]))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains("cannot update \"size\" field"),
            "{err}"
        );
        assert_eq!(
            cs.info("default", &d).unwrap().labels,
            labels(&[("y", "8")])
        );

        let huge = "v".repeat(labels::MAX_SIZE);
        let err = cs
            .update(
                "default",
                &d,
                labels(&[("k", &huge)]),
                &paths(&["labels.k"]),
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn delete_reports_other_namespaces() {
        let (_dir, db) = open();
        let cs = db.content();
        let d = digest(3);
        for ns in ["a", "a.b", "b"] {
            cs.add(ns, &d, 1, Labels::new(), None).unwrap();
        }
        assert!(cs.exists_anywhere(&d).unwrap());
        assert!(cs.delete("a", &d).unwrap());
        assert!(cs.delete("b", &d).unwrap());
        assert!(cs.exists_anywhere(&d).unwrap());
        assert!(!cs.delete("a.b", &d).unwrap());
        assert!(!cs.exists_anywhere(&d).unwrap());
        assert!(matches!(cs.info("a", &d), Err(Error::NotFound(_))));
        // Namespaces emptied of content can go.
        db.namespaces().delete("a").unwrap();
    }

    #[test]
    fn exists_anywhere_skips_other_digests() {
        let (_dir, db) = open();
        let cs = db.content();
        cs.add("a", &digest(1), 1, Labels::new(), None).unwrap();
        cs.add("b", &digest(2), 1, Labels::new(), None).unwrap();
        assert!(cs.exists_anywhere(&digest(2)).unwrap());
        assert!(!cs.exists_anywhere(&digest(3)).unwrap());
        assert!(!cs.exists_anywhere("not a digest").unwrap());
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let added = {
            let db = Db::open(&path).unwrap();
            db.content()
                .add("default", &digest(1), 5, labels(&[("a", "1")]), None)
                .unwrap()
        };
        let db = Db::open(&path).unwrap();
        assert_eq!(db.content().info("default", &digest(1)).unwrap(), added);
    }

    #[test]
    fn encoding_is_documented_json() {
        let (_dir, db) = open();
        db.content()
            .add("default", &digest(1), 5, labels(&[("a", "1")]), None)
            .unwrap();
        db.content()
            .add("default", &digest(2), 6, Labels::new(), None)
            .unwrap();
        let raw: Vec<serde_json::Value> = db
            .view(|txn| {
                let t = txn.open_table(schema::CONTENT).context("open")?;
                let mut out = Vec::new();
                for e in t.iter().context("iter")? {
                    let (_, v) = e.context("read")?;
                    out.push(serde_json::from_slice(v.value()).expect("json"));
                }
                Ok(out)
            })
            .unwrap();
        assert_eq!(raw[0]["size"], 5);
        assert_eq!(raw[0]["labels"]["a"], "1");
        assert!(raw[0]["created"].is_i64());
        assert!(raw[1].get("labels").is_none());
    }

    #[test]
    fn undecodable_record_is_data_loss() {
        let (_dir, db) = open();
        db.update(|txn| {
            open_content(txn)?
                .insert(("default", digest(1).as_str()), b"not json".as_slice())
                .context("insert")?;
            Ok(())
        })
        .unwrap();
        let err = db.content().info("default", &digest(1)).unwrap_err();
        assert!(matches!(err, Error::DataLoss(_)), "{err}");
    }
}
