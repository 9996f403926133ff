//! Garbage collection: finding the content and snapshot records nothing
//! references any more, and the leases that expired (containerd's
//! `core/metadata/gc.go` and `pkg/gc`, tricolor mark and sweep).
//!
//! # What is live
//!
//! Each namespace's **roots** are:
//! - every image: its target's digest (and its labels' references);
//! - every container: its snapshot (`snapshotter`, `snapshot_key`) and its labels' references;
//! - every resource of every lease that has not expired ([`LABEL_EXPIRE`]);
//! - every content or snapshot record labelled [`LABEL_ROOT`] (any value).
//!
//! From a live object the collector follows **references**, always within
//! the namespace:
//! - labels `containerd.io/gc.ref.content`, or that key followed by `.` or
//!   `/` and any name (`containerd.io/gc.ref.content.l.0`), whose value is a
//!   digest;
//! - labels `containerd.io/gc.ref.snapshot.<snapshotter>`, optionally
//!   followed by `/` and any name, whose value is a snapshot key of that
//!   snapshotter (as in containerd, the snapshotter name ends at the first
//!   `/`);
//! - a snapshot's parent.
//!
//! A lease labelled [`LABEL_FLAT`] holds its resources but not what their
//! labels reference (a snapshot's parents and an image's target still are).
//! Everything else is garbage: unreferenced content and snapshot records are
//! removed, expired leases deleted. References to records that do not exist
//! are ignored.
//!
//! # How it runs: no writer waits
//!
//! containerd holds its database's write lock through mark, sweep and file
//! deletion. berth splits the work so writers only ever wait for one short
//! transaction:
//!
//! 1. **Mark**, in one read transaction (redb readers never block
//!    writers): scan every object table once, build the reference graph in
//!    memory, walk it from the roots, and note the unreachable records with
//!    their stored bytes.
//! 2. **Sweep**, in short write transactions of at most 1024 candidates
//!    each: writes committed since the mark's snapshot were reported to the
//!    collector ([`crate::Db`] tracks the objects each write transaction
//!    creates or changes while a collection runs). Whatever those objects
//!    reach, read from the current state, is kept; so is any candidate whose
//!    stored bytes changed. The rest is removed. The last transaction also
//!    deletes the expired leases and computes the digests that **no
//!    namespace** records any more.
//! 3. The caller deletes those blob files ([`GcReport::removed_content`])
//!    after the sweep committed, outside any transaction.
//!
//! A record added or referenced after the mark therefore survives; it is
//! judged again by the next collection. Records deleted by
//! [`ContentStore::delete`](crate::content::ContentStore::delete) are
//! remembered (table `released_content`) until a collection reports their
//! digests.
//!
//! A record that cannot be decoded (say, an image record from an
//! incompatible build) could hide references; its namespace is then left
//! untouched by that collection and listed in
//! [`GcReport::skipped_namespaces`], and the problem is logged.
//!
//! Between the sweep's commit and the file deletion, a writer may record one
//! of the reported digests again without uploading it (deduplication). A
//! caller that does that should re-check
//! [`ContentStore::exists_anywhere`](crate::content::ContentStore::exists_anywhere)
//! just before deleting each file, and serialise that check and the
//! deletion with its own deduplicating adds of the same digest.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant, SystemTime};

use redb::ReadableTable;
use serde::Deserialize;
use tracing::{debug, warn};

use crate::content::{self, StoredContent};
use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::labels::Labels;
use crate::leases::{self, StoredLease};
use crate::schema::{self, end_of};

/// Label that makes a content or snapshot record a root (any value).
pub const LABEL_ROOT: &str = "containerd.io/gc.root";
/// Prefix of labels whose value is the digest of referenced content.
pub const LABEL_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels `…snapshot.<snapshotter>` whose value is a referenced snapshot key.
pub const LABEL_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// Label of a lease: an RFC 3339 time after which the lease holds nothing and is deleted.
pub const LABEL_EXPIRE: &str = "containerd.io/gc.expire";
/// Label of a lease that holds only its direct resources (any value).
pub const LABEL_FLAT: &str = "containerd.io/gc.flat";

/// The common prefix of reference labels, where their scan starts.
const LABEL_REF_PREFIX: &str = "containerd.io/gc.ref.";

/// What one garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Digests that no namespace records any more, sorted: the caller deletes
    /// their blob files (outside any transaction).
    pub removed_content: Vec<String>,
    /// The content records removed, as `(namespace, digest)`.
    pub removed_content_records: Vec<(String, String)>,
    /// The snapshot records removed, as `(namespace, snapshotter, key)`:
    /// the caller removes them from the snapshotter.
    pub removed_snapshots: Vec<(String, String, String)>,
    /// The expired leases deleted, as `(namespace, id)`.
    pub removed_leases: Vec<(String, String)>,
    /// Namespaces left untouched because one of their records could not be decoded.
    pub skipped_namespaces: Vec<String>,
    /// Unreachable records kept because they were written, or became
    /// referenced, after the mark; the next collection judges them again.
    pub kept_after_recheck: usize,
    /// Time spent marking (in the read transaction).
    pub mark_duration: Duration,
    /// Time spent sweeping, in all its write transactions (commits included).
    pub sweep_duration: Duration,
    /// How many write transactions the sweep took (candidates are removed
    /// at most 1024 per transaction, so writers can run in between).
    pub sweep_transactions: usize,
    /// The longest of the sweep's write transactions: the longest a writer
    /// could have waited for this collection.
    pub longest_sweep_transaction: Duration,
    /// Time of the whole collection.
    pub duration: Duration,
}

/// An object in the reference graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Node {
    /// A namespace's content record.
    Content {
        /// The namespace.
        ns: String,
        /// The blob's digest.
        digest: String,
    },
    /// A namespace's snapshot record.
    Snapshot {
        /// The namespace.
        ns: String,
        /// The snapshotter.
        snapshotter: String,
        /// The snapshot key.
        key: String,
    },
    /// An image record.
    Image {
        /// The namespace.
        ns: String,
        /// The image name.
        name: String,
    },
    /// A container record.
    Container {
        /// The namespace.
        ns: String,
        /// The container id.
        id: String,
    },
}

impl Node {
    /// Content record `digest` of namespace `ns`.
    pub(crate) fn content(ns: &str, digest: &str) -> Node {
        Node::Content {
            ns: ns.to_owned(),
            digest: digest.to_owned(),
        }
    }

    /// Snapshot record `key` of `snapshotter` in namespace `ns`.
    pub(crate) fn snapshot(ns: &str, snapshotter: &str, key: &str) -> Node {
        Node::Snapshot {
            ns: ns.to_owned(),
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        }
    }

    /// Image record `name` of namespace `ns`.
    pub(crate) fn image(ns: &str, name: &str) -> Node {
        Node::Image {
            ns: ns.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Container record `id` of namespace `ns`.
    pub(crate) fn container(ns: &str, id: &str) -> Node {
        Node::Container {
            ns: ns.to_owned(),
            id: id.to_owned(),
        }
    }

    fn namespace(&self) -> &str {
        match self {
            Node::Content { ns, .. }
            | Node::Snapshot { ns, .. }
            | Node::Image { ns, .. }
            | Node::Container { ns, .. } => ns,
        }
    }
}

/// A record's outgoing references.
#[derive(Debug, Clone, Default)]
struct Refs {
    /// Followed even from a flat lease: an image's target, a snapshot's
    /// parent, a container's snapshot.
    direct: Option<Node>,
    /// From `containerd.io/gc.ref.*` labels; not followed from a flat lease.
    labels: Vec<Node>,
}

/// The fields of an image record the collector reads (see [`crate::schema`]).
#[derive(Deserialize)]
struct ImageView {
    #[serde(default)]
    target: Option<TargetView>,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
struct TargetView {
    #[serde(default)]
    digest: String,
}

/// The fields of a snapshot record the collector reads.
#[derive(Deserialize)]
struct SnapshotView {
    #[serde(default)]
    parent: String,
    #[serde(default)]
    labels: Labels,
}

/// The references in `labels` (see the module docs), within namespace `ns`.
fn label_refs(ns: &str, labels: &Labels) -> Vec<Node> {
    let mut out = Vec::new();
    let from = (Bound::Included(LABEL_REF_PREFIX), Bound::Unbounded);
    for (key, value) in labels.range::<str, _>(from) {
        if !key.starts_with(LABEL_REF_PREFIX) {
            break;
        }
        if value.is_empty() {
            continue;
        }
        if let Some(rest) = key.strip_prefix(LABEL_REF_CONTENT) {
            // `…gc.ref.content`, `…gc.ref.content.<name>`, `…gc.ref.content/<name>`;
            // not `…gc.ref.contentfoo`.
            if rest.is_empty() || rest.starts_with('.') || rest.starts_with('/') {
                out.push(Node::content(ns, value));
            }
        } else if let Some(rest) = key.strip_prefix(LABEL_REF_SNAPSHOT) {
            let snapshotter = rest.split('/').next().unwrap_or_default();
            if !snapshotter.is_empty() {
                out.push(Node::snapshot(ns, snapshotter, value));
            }
        }
    }
    out
}

fn undecodable(what: &str, e: serde_json::Error) -> Error {
    Error::DataLoss(format!("{what}: cannot decode: {e}"))
}

/// A content record's references, and whether it is a root.
fn content_refs(ns: &str, digest: &str, bytes: &[u8]) -> Result<(Refs, bool)> {
    let stored = StoredContent::decode(ns, digest, bytes)?;
    let refs = Refs {
        direct: None,
        labels: label_refs(ns, &stored.labels),
    };
    Ok((refs, stored.labels.contains_key(LABEL_ROOT)))
}

/// A snapshot record's references, and whether it is a root.
fn snapshot_refs(ns: &str, snapshotter: &str, key: &str, bytes: &[u8]) -> Result<(Refs, bool)> {
    let view: SnapshotView = serde_json::from_slice(bytes).map_err(|e| {
        undecodable(
            &format!("snapshot {key:?} of {snapshotter:?} in namespace {ns:?}"),
            e,
        )
    })?;
    let refs = Refs {
        direct: (!view.parent.is_empty()).then(|| Node::snapshot(ns, snapshotter, &view.parent)),
        labels: label_refs(ns, &view.labels),
    };
    Ok((refs, view.labels.contains_key(LABEL_ROOT)))
}

/// An image record's references.
fn image_refs(ns: &str, name: &str, bytes: &[u8]) -> Result<Refs> {
    let view: ImageView = serde_json::from_slice(bytes)
        .map_err(|e| undecodable(&format!("image {name:?} in namespace {ns:?}"), e))?;
    Ok(Refs {
        direct: view
            .target
            .filter(|t| !t.digest.is_empty())
            .map(|t| Node::content(ns, &t.digest)),
        labels: label_refs(ns, &view.labels),
    })
}

/// A container record's references.
fn container_refs(ns: &str, id: &str, bytes: &[u8]) -> Result<Refs> {
    let view = crate::containers::ContainerRecord::decode(ns, id, bytes)?;
    let direct = (!view.snapshotter.is_empty() && !view.snapshot_key.is_empty())
        .then(|| Node::snapshot(ns, &view.snapshotter, &view.snapshot_key));
    Ok(Refs {
        direct,
        labels: label_refs(ns, &view.labels),
    })
}

/// Tricolor marking: everything reachable from `roots`, each `(node, flat)`.
///
/// `refs` returns a node's references, or `None` for a node with no record
/// (a dangling reference). A node reached both flat and not is expanded
/// both ways; the result holds nodes without the flag.
fn traverse(
    roots: Vec<(Node, bool)>,
    mut refs: impl FnMut(&Node) -> Result<Option<Refs>>,
) -> Result<HashSet<Node>> {
    let mut seen: HashSet<(Node, bool)> = HashSet::new();
    let mut reachable: HashSet<Node> = HashSet::new();
    let mut gray = roots;
    while let Some((node, flat)) = gray.pop() {
        if !seen.insert((node.clone(), flat)) {
            continue;
        }
        if let Some(r) = refs(&node)? {
            if let Some(direct) = r.direct {
                gray.push((direct, flat));
            }
            if !flat {
                gray.extend(r.labels.into_iter().map(|n| (n, false)));
            }
        }
        reachable.insert(node);
    }
    Ok(reachable)
}

/// Switches write tracking off when a collection ends, however it ends.
#[derive(Debug)]
struct Tracking {
    db: Db,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        self.db.stop_tracking();
    }
}

/// The outcome of the mark phase: what the sweep may remove.
#[derive(Debug)]
pub(crate) struct Marked {
    started: Instant,
    mark_duration: Duration,
    /// Unreachable content and snapshot records, with their stored bytes.
    candidates: Vec<(Node, Vec<u8>)>,
    /// Expired leases `(namespace, id)`, with their stored bytes.
    expired_leases: Vec<(String, String, Vec<u8>)>,
    /// Namespaces with an undecodable record: nothing in them is swept.
    skipped: BTreeSet<String>,
    /// Keeps writes tracked until the sweep (or the end of an abandoned collection).
    _tracking: Tracking,
}

/// Runs a whole collection: [`mark`] then [`sweep`].
pub(crate) fn collect(db: &Db, now: SystemTime) -> Result<GcReport> {
    let marked = mark(db, now)?;
    sweep(db, marked)
}

/// The mark phase, in one read transaction; starts tracking writes.
pub(crate) fn mark(db: &Db, now: SystemTime) -> Result<Marked> {
    let started = Instant::now();
    let txn = db.begin_tracked_read()?;
    let tracking = Tracking { db: db.clone() };

    let mut graph: HashMap<Node, Refs> = HashMap::new();
    let mut roots: Vec<(Node, bool)> = Vec::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    let mut records: Vec<(Node, Vec<u8>)> = Vec::new();
    let mut expired_leases = Vec::new();

    // Leases: live ones (and whether they are flat), expired ones.
    let mut live: HashMap<(String, String), bool> = HashMap::new();
    let table = txn
        .open_table(schema::LEASES)
        .context("open table leases")?;
    for entry in table.iter().context("scan leases")? {
        let (k, v) = entry.context("read lease")?;
        let (ns, id) = k.value();
        match StoredLease::decode(ns, id, v.value()) {
            Ok(lease) if leases::expired(&lease.labels, now) => {
                expired_leases.push((ns.to_owned(), id.to_owned(), v.value().to_vec()));
            }
            Ok(lease) => {
                let flat = lease.labels.contains_key(LABEL_FLAT);
                live.insert((ns.to_owned(), id.to_owned()), flat);
            }
            Err(e) => {
                // Cannot tell its labels: keep it, holding everything.
                warn!(error = %e, "garbage collection: keeping undecodable lease");
                live.insert((ns.to_owned(), id.to_owned()), false);
            }
        }
    }
    let table = txn
        .open_table(schema::LEASE_RESOURCES)
        .context("open table lease_resources")?;
    for entry in table.iter().context("scan lease resources")? {
        let (k, _) = entry.context("read lease resource")?;
        let (ns, lease, kind, id) = k.value();
        let Some(&flat) = live.get(&(ns.to_owned(), lease.to_owned())) else {
            continue; // expired (or a leftover row of a deleted lease)
        };
        if let Some(node) = leases::held_node(ns, kind, id) {
            roots.push((node, flat));
        }
    }

    // Images and containers: all roots.
    let table = txn
        .open_table(schema::IMAGES)
        .context("open table images")?;
    for entry in table.iter().context("scan images")? {
        let (k, v) = entry.context("read image")?;
        let (ns, name) = k.value();
        match image_refs(ns, name, v.value()) {
            Ok(refs) => {
                let node = Node::image(ns, name);
                graph.insert(node.clone(), refs);
                roots.push((node, false));
            }
            Err(e) => skip(&mut skipped, ns, &e),
        }
    }
    let table = txn
        .open_table(schema::CONTAINERS)
        .context("open table containers")?;
    for entry in table.iter().context("scan containers")? {
        let (k, v) = entry.context("read container")?;
        let (ns, id) = k.value();
        match container_refs(ns, id, v.value()) {
            Ok(refs) => {
                let node = Node::container(ns, id);
                graph.insert(node.clone(), refs);
                roots.push((node, false));
            }
            Err(e) => skip(&mut skipped, ns, &e),
        }
    }

    // Content and snapshots: every record is a candidate, gc.root ones are roots.
    let table = txn
        .open_table(schema::CONTENT)
        .context("open table content")?;
    for entry in table.iter().context("scan content")? {
        let (k, v) = entry.context("read content")?;
        let (ns, digest) = k.value();
        let node = Node::content(ns, digest);
        match content_refs(ns, digest, v.value()) {
            Ok((refs, root)) => {
                if root {
                    roots.push((node.clone(), false));
                }
                graph.insert(node.clone(), refs);
            }
            Err(e) => skip(&mut skipped, ns, &e),
        }
        records.push((node, v.value().to_vec()));
    }
    let table = txn
        .open_table(schema::SNAPSHOTS)
        .context("open table snapshots")?;
    for entry in table.iter().context("scan snapshots")? {
        let (k, v) = entry.context("read snapshot")?;
        let (ns, snapshotter, key) = k.value();
        let node = Node::snapshot(ns, snapshotter, key);
        match snapshot_refs(ns, snapshotter, key, v.value()) {
            Ok((refs, root)) => {
                if root {
                    roots.push((node.clone(), false));
                }
                graph.insert(node.clone(), refs);
            }
            Err(e) => skip(&mut skipped, ns, &e),
        }
        records.push((node, v.value().to_vec()));
    }
    drop(table);
    drop(txn);

    let reachable = traverse(roots, |node| Ok(graph.get(node).cloned()))?;
    let candidates: Vec<(Node, Vec<u8>)> = records
        .into_iter()
        .filter(|(node, _)| !reachable.contains(node) && !skipped.contains(node.namespace()))
        .collect();

    let mark_duration = started.elapsed();
    debug!(
        reachable = reachable.len(),
        candidates = candidates.len(),
        expired_leases = expired_leases.len(),
        ?mark_duration,
        "garbage collection: marked"
    );
    Ok(Marked {
        started,
        mark_duration,
        candidates,
        expired_leases,
        skipped,
        _tracking: tracking,
    })
}

/// Notes that namespace `ns` holds an undecodable record and must not be swept.
fn skip(skipped: &mut BTreeSet<String>, ns: &str, e: &Error) {
    warn!(namespace = ns, error = %e, "garbage collection: skipping namespace with an undecodable record");
    skipped.insert(ns.to_owned());
}

/// The tables the sweep reads and writes, opened once.
struct SweepTables<'txn> {
    content: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    snapshots: redb::Table<'txn, (&'static str, &'static str, &'static str), &'static [u8]>,
    images: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    containers: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl SweepTables<'_> {
    /// `node`'s references as of this transaction; `None` if it has no record.
    /// An undecodable record puts its namespace in `skipped`.
    fn refs(&self, node: &Node, skipped: &mut BTreeSet<String>) -> Result<Option<Refs>> {
        let decoded = match node {
            Node::Content { ns, digest } => {
                let Some(v) = self
                    .content
                    .get((ns.as_str(), digest.as_str()))
                    .context("read content")?
                else {
                    return Ok(None);
                };
                content_refs(ns, digest, v.value()).map(|(r, _)| r)
            }
            Node::Snapshot {
                ns,
                snapshotter,
                key,
            } => {
                let Some(v) = self
                    .snapshots
                    .get((ns.as_str(), snapshotter.as_str(), key.as_str()))
                    .context("read snapshot")?
                else {
                    return Ok(None);
                };
                snapshot_refs(ns, snapshotter, key, v.value()).map(|(r, _)| r)
            }
            Node::Image { ns, name } => {
                let Some(v) = self
                    .images
                    .get((ns.as_str(), name.as_str()))
                    .context("read image")?
                else {
                    return Ok(None);
                };
                image_refs(ns, name, v.value())
            }
            Node::Container { ns, id } => {
                let Some(v) = self
                    .containers
                    .get((ns.as_str(), id.as_str()))
                    .context("read container")?
                else {
                    return Ok(None);
                };
                container_refs(ns, id, v.value())
            }
        };
        match decoded {
            Ok(refs) => Ok(Some(refs)),
            Err(e) => {
                skip(skipped, node.namespace(), &e);
                Ok(None)
            }
        }
    }
}

/// The most candidates one sweep transaction removes; more are swept in
/// several transactions, so the write lock is never held for long however
/// much garbage there is.
const SWEEP_BATCH: usize = 1024;

/// The sweep phase: re-checks what was written since the mark, removes the
/// rest of the candidates and the expired leases, and lists the digests no
/// namespace holds any more.
///
/// Candidates are removed in write transactions of at most [`SWEEP_BATCH`];
/// each re-checks everything written since the mark, so writers may run
/// between them. The last one also deletes the expired leases, computes
/// [`GcReport::removed_content`] and stops write tracking.
pub(crate) fn sweep(db: &Db, marked: Marked) -> Result<GcReport> {
    let sweep_started = Instant::now();
    let Marked {
        started,
        mark_duration,
        candidates,
        mut expired_leases,
        mut skipped,
        _tracking,
    } = marked;

    let mut report = GcReport::default();
    let mut released: BTreeSet<String> = BTreeSet::new();
    let mut candidates = candidates.into_iter().peekable();
    loop {
        let batch: Vec<(Node, Vec<u8>)> = candidates.by_ref().take(SWEEP_BATCH).collect();
        let last = candidates.peek().is_none();
        let began = Instant::now();
        // Nothing to remove and nothing released: the transaction writes
        // nothing and is not committed (no fdatasync for an empty collection).
        let removes = !batch.is_empty() || (last && !expired_leases.is_empty());
        db.update_unobserved_if_written(|txn| {
            // Under the write lock: no write slips between this and the commit.
            let tracked = if last {
                db.take_tracked()
            } else {
                db.tracked_now()
            };
            sweep_batch(
                txn,
                tracked,
                batch,
                &mut report,
                &mut released,
                &mut skipped,
            )?;
            let mut released_any = false;
            if last {
                released_any = finish_sweep(
                    txn,
                    std::mem::take(&mut expired_leases),
                    std::mem::take(&mut released),
                    &mut report,
                )?;
            }
            Ok(((), removes || released_any))
        })?;
        report.sweep_transactions += 1;
        report.longest_sweep_transaction = report.longest_sweep_transaction.max(began.elapsed());
        if last {
            break;
        }
    }

    report.skipped_namespaces = skipped.into_iter().collect();
    report.mark_duration = mark_duration;
    report.sweep_duration = sweep_started.elapsed();
    report.duration = started.elapsed();
    // The caller logs collections at info level, with its file deletions.
    debug!(
        content = report.removed_content.len(),
        content_records = report.removed_content_records.len(),
        snapshots = report.removed_snapshots.len(),
        leases = report.removed_leases.len(),
        kept_after_recheck = report.kept_after_recheck,
        mark = ?report.mark_duration,
        sweep = ?report.sweep_duration,
        sweep_transactions = report.sweep_transactions,
        longest_sweep_transaction = ?report.longest_sweep_transaction,
        "garbage collected metadata"
    );
    Ok(report)
}

/// One sweep transaction's share of the candidates: keeps whatever the
/// objects written since the mark (`tracked`) reach now, and removes the
/// others unless their record changed. Removed digests go to `released`.
fn sweep_batch(
    txn: &redb::WriteTransaction,
    tracked: HashSet<Node>,
    batch: Vec<(Node, Vec<u8>)>,
    report: &mut GcReport,
    released: &mut BTreeSet<String>,
    skipped: &mut BTreeSet<String>,
) -> Result<()> {
    let tables = SweepTables {
        content: txn
            .open_table(schema::CONTENT)
            .context("open table content")?,
        snapshots: txn
            .open_table(schema::SNAPSHOTS)
            .context("open table snapshots")?,
        images: txn
            .open_table(schema::IMAGES)
            .context("open table images")?,
        containers: txn
            .open_table(schema::CONTAINERS)
            .context("open table containers")?,
    };
    let tracked_count = tracked.len();
    let written_since = traverse(tracked.into_iter().map(|n| (n, false)).collect(), |n| {
        tables.refs(n, skipped)
    })?;
    let SweepTables {
        mut content,
        mut snapshots,
        ..
    } = tables;

    let (before_records, before_snapshots) = (
        report.removed_content_records.len(),
        report.removed_snapshots.len(),
    );
    for (node, bytes) in batch {
        if written_since.contains(&node) || skipped.contains(node.namespace()) {
            report.kept_after_recheck += 1;
            continue;
        }
        match node {
            Node::Content { ns, digest } => {
                let key = (ns.as_str(), digest.as_str());
                match remove_unchanged(&mut content, key, &bytes)? {
                    Removal::Removed => {
                        released.insert(digest.clone());
                        report.removed_content_records.push((ns, digest));
                    }
                    Removal::Changed => report.kept_after_recheck += 1,
                    // Deleted meanwhile: `released_content` has it.
                    Removal::Gone => {}
                }
            }
            Node::Snapshot {
                ns,
                snapshotter,
                key,
            } => {
                let k = (ns.as_str(), snapshotter.as_str(), key.as_str());
                match remove_unchanged(&mut snapshots, k, &bytes)? {
                    Removal::Removed => report.removed_snapshots.push((ns, snapshotter, key)),
                    Removal::Changed => report.kept_after_recheck += 1,
                    Removal::Gone => {}
                }
            }
            Node::Image { .. } | Node::Container { .. } => {}
        }
    }
    debug!(
        tracked = tracked_count,
        content_records = report.removed_content_records.len() - before_records,
        snapshots = report.removed_snapshots.len() - before_snapshots,
        "garbage collection: swept a batch"
    );
    Ok(())
}

/// The last sweep transaction's extra work: deletes the expired leases that
/// were not re-created, and reports which of the `released` digests (plus
/// those [`crate::content::ContentStore::delete`] released) no namespace holds.
/// Returns whether the released-content table had entries (it was cleared).
fn finish_sweep(
    txn: &redb::WriteTransaction,
    expired_leases: Vec<(String, String, Vec<u8>)>,
    mut released: BTreeSet<String>,
    report: &mut GcReport,
) -> Result<bool> {
    let mut leases_table = txn
        .open_table(schema::LEASES)
        .context("open table leases")?;
    let mut resources = txn
        .open_table(schema::LEASE_RESOURCES)
        .context("open table lease_resources")?;
    for (ns, id, bytes) in expired_leases {
        let key = (ns.as_str(), id.as_str());
        // Re-created under the same id since the mark: not the expired one.
        if remove_unchanged(&mut leases_table, key, &bytes)? != Removal::Removed {
            continue;
        }
        let end = end_of(&id);
        resources
            .retain_in(
                (ns.as_str(), id.as_str(), "", "")..(ns.as_str(), end.as_str(), "", ""),
                |_, _| false,
            )
            .context("remove lease resources")?;
        report.removed_leases.push((ns, id));
    }

    // Digests whose last record went since the last collection.
    let mut released_table = txn
        .open_table(schema::RELEASED_CONTENT)
        .context("open table released_content")?;
    let mut released_any = false;
    for entry in released_table.iter().context("scan released content")? {
        let (k, _) = entry.context("read released content")?;
        released.insert(k.value().to_owned());
        released_any = true;
    }
    if released_any {
        released_table
            .retain(|_, _| false)
            .context("clear released content")?;
    }

    // Checked in this last transaction: a digest removed by an earlier
    // batch and recorded again since is not reported.
    let content = txn
        .open_table(schema::CONTENT)
        .context("open table content")?;
    let holders = content::namespaces_holding_any(&content)?;
    for digest in released {
        if !content::held_by_any(&content, &holders, &digest)? {
            report.removed_content.push(digest);
        }
    }
    Ok(released_any)
}

/// What [`remove_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// The record held the marked bytes and is gone now.
    Removed,
    /// The record changed since the mark and was left in place.
    Changed,
    /// There was no record.
    Gone,
}

/// Removes the record under `key` if it still holds exactly `bytes`, the
/// value the mark judged; a record written since is left (put back) as is.
///
/// One tree operation in the common case (unchanged), two when it changed.
fn remove_unchanged<'k, K: redb::Key + 'static>(
    table: &mut redb::Table<'_, K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
    bytes: &[u8],
) -> Result<Removal> {
    let key = key.borrow();
    let changed = match table.remove(key).context("remove record")? {
        None => return Ok(Removal::Gone),
        Some(old) if old.value() == bytes => None,
        Some(old) => Some(old.value().to_vec()),
    };
    match changed {
        None => Ok(Removal::Removed),
        Some(current) => {
            table
                .insert(key, current.as_slice())
                .context("restore record")?;
            Ok(Removal::Changed)
        }
    }
}

/// Helpers for tests of this crate that need image, container and snapshot
/// records before their stores exist.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Writes an image record targeting `digest`, tracked as a store would.
    pub(crate) fn put_image(db: &Db, ns: &str, name: &str, digest: &str, labels: &[(&str, &str)]) {
        let record = serde_json::json!({
            "name": name,
            "target": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": 1},
            "labels": labels.iter().copied().collect::<HashMap<_, _>>(),
        });
        put(db, schema::IMAGES, (ns, name), &record);
        db.track(Node::image(ns, name));
    }

    /// Writes a container record using snapshot `key` of `snapshotter`.
    pub(crate) fn put_container(db: &Db, ns: &str, id: &str, snapshotter: &str, key: &str) {
        let record = serde_json::json!({"snapshotter": snapshotter, "snapshot_key": key});
        put(db, schema::CONTAINERS, (ns, id), &record);
        db.track(Node::container(ns, id));
    }

    /// Writes a snapshot record with `parent` ("" for none) and `labels`.
    pub(crate) fn put_snapshot(
        db: &Db,
        ns: &str,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &[(&str, &str)],
    ) {
        let record = serde_json::json!({
            "kind": "committed",
            "parent": parent,
            "labels": labels.iter().copied().collect::<HashMap<_, _>>(),
        });
        let bytes = serde_json::to_vec(&record).expect("json");
        db.update(|txn| {
            txn.open_table(schema::SNAPSHOTS)
                .context("open")?
                .insert((ns, snapshotter, key), bytes.as_slice())
                .context("insert")?;
            db.track(Node::snapshot(ns, snapshotter, key));
            Ok(())
        })
        .expect("put snapshot");
    }

    fn put(
        db: &Db,
        def: redb::TableDefinition<(&str, &str), &[u8]>,
        key: (&str, &str),
        record: &serde_json::Value,
    ) {
        let bytes = serde_json::to_vec(record).expect("json");
        db.update(|txn: &redb::WriteTransaction| {
            txn.open_table(def)
                .context("open")?
                .insert(key, bytes.as_slice())
                .context("insert")?;
            Ok(())
        })
        .expect("put record");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::*;
    use super::*;
    use crate::leases::Resource;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        (dir, db)
    }

    fn digest(n: u32) -> String {
        format!("sha256:{:064x}", n)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn add(db: &Db, ns: &str, n: u32, l: &[(&str, &str)]) {
        db.content()
            .add(ns, &digest(n), 1, labels(l), None)
            .unwrap();
    }

    fn has(db: &Db, ns: &str, n: u32) -> bool {
        match db.content().info(ns, &digest(n)) {
            Ok(_) => true,
            Err(Error::NotFound(_)) => false,
            Err(e) => panic!("{e}"),
        }
    }

    fn gc(db: &Db) -> GcReport {
        db.collect_garbage(SystemTime::now()).unwrap()
    }

    fn content_res(n: u32) -> Resource {
        Resource {
            id: digest(n),
            kind: "content".to_owned(),
        }
    }

    #[test]
    fn empty_database_collects_nothing() {
        let (_dir, db) = open();
        let report = gc(&db);
        assert_eq!(report.sweep_transactions, 1);
        assert_eq!(
            GcReport {
                mark_duration: Duration::ZERO,
                sweep_duration: Duration::ZERO,
                longest_sweep_transaction: Duration::ZERO,
                duration: Duration::ZERO,
                sweep_transactions: 0,
                ..report
            },
            GcReport::default()
        );
    }

    #[test]
    fn unreferenced_blob_is_collected() {
        let (_dir, db) = open();
        add(&db, "default", 1, &[]);
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(1)]);
        assert_eq!(
            report.removed_content_records,
            vec![("default".to_owned(), digest(1))]
        );
        assert!(!has(&db, "default", 1));
        // Collected once only.
        assert!(gc(&db).removed_content.is_empty());
    }

    #[test]
    fn leased_blob_is_kept_until_the_lease_goes() {
        let (_dir, db) = open();
        db.leases()
            .create("default", "pull", Labels::new())
            .unwrap();
        db.content()
            .add("default", &digest(1), 1, Labels::new(), Some("pull"))
            .unwrap();
        db.leases()
            .add_resource("default", "pull", content_res(2))
            .unwrap();
        add(&db, "default", 2, &[]);
        let report = gc(&db);
        assert!(report.removed_content.is_empty(), "{report:?}");
        assert!(has(&db, "default", 1) && has(&db, "default", 2));

        db.leases().delete("default", "pull").unwrap();
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(1), digest(2)]);
    }

    #[test]
    fn expired_lease_is_deleted_and_its_blob_collected() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases
            .create(
                "default",
                "old",
                labels(&[(LABEL_EXPIRE, "2020-01-01T00:00:00Z")]),
            )
            .unwrap();
        leases
            .create(
                "default",
                "future",
                labels(&[(LABEL_EXPIRE, "2999-01-01T00:00:00+01:00")]),
            )
            .unwrap();
        leases
            .create("default", "bad-expiry", labels(&[(LABEL_EXPIRE, "never")]))
            .unwrap();
        db.content()
            .add("default", &digest(1), 1, Labels::new(), Some("old"))
            .unwrap();
        db.content()
            .add("default", &digest(2), 1, Labels::new(), Some("future"))
            .unwrap();
        db.content()
            .add("default", &digest(3), 1, Labels::new(), Some("bad-expiry"))
            .unwrap();

        let report = gc(&db);
        assert_eq!(
            report.removed_leases,
            vec![("default".to_owned(), "old".to_owned())]
        );
        assert_eq!(report.removed_content, vec![digest(1)]);
        let ids: Vec<String> = leases
            .list("default")
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec!["bad-expiry", "future"]);

        // At a later `now`, the other one expires too.
        let later = crate::timestamp::parse_rfc3339("2999-06-01T00:00:00Z").unwrap();
        let report = db.collect_garbage(later).unwrap();
        assert_eq!(
            report.removed_leases,
            vec![("default".to_owned(), "future".to_owned())]
        );
        assert_eq!(report.removed_content, vec![digest(2)]);
        assert!(has(&db, "default", 3));
    }

    #[test]
    fn reference_labels_are_followed() {
        let (_dir, db) = open();
        // root 1 -> 2 -> 3 (three label spellings), 4 alone; 5 is a dangling target.
        add(&db, "default", 3, &[]);
        add(
            &db,
            "default",
            2,
            &[("containerd.io/gc.ref.content/config", &digest(3))],
        );
        add(
            &db,
            "default",
            1,
            &[
                (LABEL_ROOT, "2024-01-01T00:00:00Z"),
                ("containerd.io/gc.ref.content.m.0", &digest(2)),
                ("containerd.io/gc.ref.content", &digest(5)),
                ("containerd.io/gc.ref.contentish", &digest(4)),
            ],
        );
        add(&db, "default", 4, &[]);
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(4)]);
        assert!(has(&db, "default", 1) && has(&db, "default", 2) && has(&db, "default", 3));
    }

    #[test]
    fn images_hold_their_target_tree() {
        let (_dir, db) = open();
        add(&db, "default", 10, &[]); // layer
        add(&db, "default", 11, &[]); // config
        add(
            &db,
            "default",
            12,
            &[
                ("containerd.io/gc.ref.content.l.0", &digest(10)),
                ("containerd.io/gc.ref.content.config", &digest(11)),
            ],
        );
        add(&db, "default", 13, &[]); // unrelated
        put_image(
            &db,
            "default",
            "docker.io/library/busybox:latest",
            &digest(12),
            &[],
        );
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(13)]);
        for n in [10, 11, 12] {
            assert!(has(&db, "default", n));
        }
    }

    #[test]
    fn flat_lease_holds_only_its_resources() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases
            .create("default", "flat", labels(&[(LABEL_FLAT, "true")]))
            .unwrap();
        add(&db, "default", 2, &[]);
        add(
            &db,
            "default",
            1,
            &[("containerd.io/gc.ref.content.x", &digest(2))],
        );
        leases
            .add_resource("default", "flat", content_res(1))
            .unwrap();
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(2)]);
        assert!(has(&db, "default", 1));

        // The same through a deep (normal) lease keeps the child.
        leases.create("default", "deep", Labels::new()).unwrap();
        leases
            .add_resource("default", "deep", content_res(1))
            .unwrap();
        add(&db, "default", 2, &[]);
        assert!(gc(&db).removed_content.is_empty());
        assert!(has(&db, "default", 2));
    }

    #[test]
    fn shared_blob_goes_only_when_no_namespace_holds_it() {
        let (_dir, db) = open();
        add(&db, "a", 1, &[]);
        add(&db, "b", 1, &[]);
        db.leases().create("b", "keep", Labels::new()).unwrap();
        db.leases()
            .add_resource("b", "keep", content_res(1))
            .unwrap();

        let report = gc(&db);
        assert_eq!(
            report.removed_content_records,
            vec![("a".to_owned(), digest(1))]
        );
        assert!(report.removed_content.is_empty(), "b still holds it");
        assert!(!has(&db, "a", 1) && has(&db, "b", 1));

        db.leases().delete("b", "keep").unwrap();
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(1)]);
    }

    #[test]
    fn deleted_content_is_reported_once_unless_added_again() {
        let (_dir, db) = open();
        for ns in ["a", "b"] {
            db.leases().create(ns, "keep", Labels::new()).unwrap();
            for n in [1, 2] {
                db.content()
                    .add(ns, &digest(n), 1, Labels::new(), Some("keep"))
                    .unwrap();
            }
        }
        assert!(db.content().delete("a", &digest(1)).unwrap());
        assert!(!db.content().delete("b", &digest(1)).unwrap());
        assert!(db.content().delete("a", &digest(2)).unwrap());
        assert!(!db.content().delete("b", &digest(2)).unwrap());
        // Re-added before the collection: not reported.
        add(&db, "a", 2, &[(LABEL_ROOT, "x")]);
        let report = gc(&db);
        assert_eq!(report.removed_content, vec![digest(1)]);
        assert!(report.removed_content_records.is_empty());
        assert!(gc(&db).removed_content.is_empty());
    }

    #[test]
    fn snapshots_follow_containers_parents_and_labels() {
        let (_dir, db) = open();
        let ss = "overlayfs";
        put_snapshot(&db, "default", ss, "base", "", &[]);
        put_snapshot(&db, "default", ss, "mid", "base", &[]);
        put_snapshot(&db, "default", ss, "ctr-rw", "mid", &[]);
        put_container(&db, "default", "ctr", ss, "ctr-rw");
        put_snapshot(&db, "default", ss, "unpacked", "", &[]);
        add(
            &db,
            "default",
            1,
            &[
                (LABEL_ROOT, "1"),
                ("containerd.io/gc.ref.snapshot.overlayfs/0", "unpacked"),
            ],
        );
        put_snapshot(&db, "default", ss, "orphan-parent", "", &[]);
        put_snapshot(&db, "default", ss, "orphan", "orphan-parent", &[]);
        put_snapshot(&db, "default", "native", "rooted", "", &[(LABEL_ROOT, "1")]);
        put_snapshot(
            &db,
            "default",
            "native",
            "labelled-blob",
            "",
            &[("containerd.io/gc.ref.content", &digest(2))],
        );
        add(&db, "default", 2, &[]);

        let report = gc(&db);
        let mut removed = report.removed_snapshots.clone();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                (
                    "default".to_owned(),
                    "native".to_owned(),
                    "labelled-blob".to_owned()
                ),
                ("default".to_owned(), ss.to_owned(), "orphan".to_owned()),
                (
                    "default".to_owned(),
                    ss.to_owned(),
                    "orphan-parent".to_owned()
                ),
            ]
        );
        // The blob was only referenced by a garbage snapshot: it goes in the same pass.
        assert_eq!(report.removed_content, vec![digest(2)]);
        let left = db
            .view(|txn| {
                let t = txn.open_table(schema::SNAPSHOTS).context("open")?;
                Ok(t.iter().context("iter")?.count())
            })
            .unwrap();
        assert_eq!(left, 5);
    }

    #[test]
    fn flat_lease_on_a_snapshot_keeps_parents_not_labels() {
        let (_dir, db) = open();
        db.leases()
            .create("default", "flat", labels(&[(LABEL_FLAT, "1")]))
            .unwrap();
        put_snapshot(&db, "default", "overlayfs", "p", "", &[]);
        put_snapshot(
            &db,
            "default",
            "overlayfs",
            "c",
            "p",
            &[("containerd.io/gc.ref.content", &digest(1))],
        );
        add(&db, "default", 1, &[]);
        db.leases()
            .add_resource(
                "default",
                "flat",
                Resource {
                    id: "c".to_owned(),
                    kind: "snapshots/overlayfs".to_owned(),
                },
            )
            .unwrap();
        let report = gc(&db);
        assert!(report.removed_snapshots.is_empty(), "{report:?}");
        assert_eq!(report.removed_content, vec![digest(1)]);
    }

    #[test]
    fn undecodable_record_skips_its_namespace_only() {
        let (_dir, db) = open();
        add(&db, "broken", 1, &[]);
        add(&db, "fine", 2, &[]);
        db.update(|txn| {
            txn.open_table(schema::IMAGES)
                .context("open")?
                .insert(("broken", "img"), b"\x00garbage".as_slice())
                .context("insert")?;
            Ok(())
        })
        .unwrap();
        let report = gc(&db);
        assert_eq!(report.skipped_namespaces, vec!["broken".to_owned()]);
        assert_eq!(report.removed_content, vec![digest(2)]);
        assert!(has(&db, "broken", 1));
    }

    #[test]
    fn records_added_between_mark_and_sweep_survive() {
        let (_dir, db) = open();
        let now = SystemTime::now();
        for n in 1..=6 {
            add(&db, "default", n, &[]);
        }
        add(&db, "default", 20, &[(LABEL_ROOT, "1")]);
        db.leases()
            .create("default", "late", Labels::new())
            .unwrap();

        let marked = mark(&db, now).unwrap();
        // 1: leased after the mark.
        db.leases()
            .add_resource("default", "late", content_res(1))
            .unwrap();
        // 2 (and 3 through 2's labels): deleted and added again, with labels.
        db.content().delete("default", &digest(2)).unwrap();
        add(
            &db,
            "default",
            2,
            &[("containerd.io/gc.ref.content", &digest(3))],
        );
        // 4: an image created after the mark targets it.
        put_image(&db, "default", "late-image", &digest(4), &[]);
        // 5: a live record gains a label referencing it.
        db.content()
            .update(
                "default",
                &digest(20),
                labels(&[("containerd.io/gc.ref.content.x", &digest(5))]),
                &["labels.containerd.io/gc.ref.content.x".to_owned()],
            )
            .unwrap();
        // 7: added after the mark, referenced by nothing.
        add(&db, "default", 7, &[]);
        let report = sweep(&db, marked).unwrap();

        assert_eq!(report.removed_content, vec![digest(6)]);
        for n in [1, 2, 3, 4, 5, 7, 20] {
            assert!(has(&db, "default", n), "{n} should survive");
        }
        assert!(report.kept_after_recheck >= 5, "{report:?}");
        // The next collection judges them again: 2 (re-added without a
        // lease), 3 (only 2 referenced it) and 7 are garbage now.
        assert_eq!(
            gc(&db).removed_content,
            vec![digest(2), digest(3), digest(7)]
        );
    }

    #[test]
    fn record_rewritten_without_tracking_survives_by_its_bytes() {
        let (_dir, db) = open();
        add(&db, "default", 1, &[]);
        let marked = mark(&db, SystemTime::now()).unwrap();
        // A raw rewrite that no store reported: the bytes differ, so it stays.
        db.update(|txn| {
            let bytes = serde_json::to_vec(&serde_json::json!({"size": 2, "labels": {"x": "y"}}))
                .expect("json");
            txn.open_table(schema::CONTENT)
                .context("open")?
                .insert(("default", digest(1).as_str()), bytes.as_slice())
                .context("insert")?;
            Ok(())
        })
        .unwrap();
        db.stop_tracking(); // the write above was not tracked anyway
        let report = sweep(&db, marked).unwrap();
        assert!(report.removed_content.is_empty());
        assert_eq!(report.kept_after_recheck, 1);
        assert!(has(&db, "default", 1));
    }

    #[test]
    fn lease_recreated_after_the_mark_is_not_deleted() {
        let (_dir, db) = open();
        let expire = labels(&[(LABEL_EXPIRE, "2000-01-01T00:00:00Z")]);
        db.leases().create("default", "l", expire).unwrap();
        let marked = mark(&db, SystemTime::now()).unwrap();
        db.leases().delete("default", "l").unwrap();
        db.leases().create("default", "l", Labels::new()).unwrap();
        db.leases()
            .add_resource("default", "l", content_res(1))
            .unwrap();
        let report = sweep(&db, marked).unwrap();
        assert!(report.removed_leases.is_empty());
        assert_eq!(db.leases().list_resources("default", "l").unwrap().len(), 1);
    }

    #[test]
    fn tracking_is_off_outside_collections() {
        let (_dir, db) = open();
        add(&db, "default", 1, &[]);
        assert!(db.take_tracked().is_empty());
        let marked = mark(&db, SystemTime::now()).unwrap();
        add(&db, "default", 2, &[]);
        drop(marked); // an abandoned collection stops tracking
        add(&db, "default", 3, &[]);
        assert!(db.take_tracked().is_empty());
    }

    #[test]
    fn writers_racing_collections_lose_nothing() {
        let (_dir, db) = open();
        db.leases()
            .create("default", "pull", Labels::new())
            .unwrap();
        // Ballast, so each mark takes long enough for writes to land
        // between a collection's mark and its sweep.
        db.update(|txn| {
            let mut table = txn.open_table(schema::CONTENT).context("open")?;
            let record = br#"{"size":1,"labels":{"containerd.io/gc.root":"ballast"}}"#;
            for n in 0..5_000 {
                let d = digest(100_000 + n);
                table
                    .insert(("ballast", d.as_str()), record.as_slice())
                    .context("insert")?;
            }
            Ok(())
        })
        .unwrap();
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut referenced = Vec::new();
                for n in 0..300 {
                    // Leased from the start: must survive.
                    db.content()
                        .add("default", &digest(n), 1, Labels::new(), Some("pull"))
                        .unwrap();
                    // Garbage: may go at any time.
                    add(&db, "default", 10_000 + n, &[]);
                    // Unreferenced for a moment, then leased if still there
                    // (atomically): from then on it must survive, even when
                    // a collection marked it as garbage just before.
                    let d = digest(20_000 + n);
                    add(&db, "default", 20_000 + n, &[]);
                    let held = db
                        .update(|txn| {
                            let present = txn
                                .open_table(schema::CONTENT)
                                .context("open")?
                                .get(("default", d.as_str()))
                                .context("get")?
                                .is_some();
                            if present {
                                leases::add_resource_in(
                                    txn,
                                    &db,
                                    "default",
                                    "pull",
                                    leases::CONTENT,
                                    &d,
                                )?;
                            }
                            Ok(present)
                        })
                        .unwrap();
                    if held {
                        referenced.push(20_000 + n);
                    }
                }
                referenced
            })
        };
        let mut collected = BTreeSet::new();
        while !writer.is_finished() {
            collected.extend(gc(&db).removed_content);
        }
        let referenced = writer.join().unwrap();
        collected.extend(gc(&db).removed_content);
        for n in (0..300).chain(referenced.iter().copied()) {
            assert!(has(&db, "default", n), "held blob {n} was collected");
            assert!(!collected.contains(&digest(n)));
        }
        for n in 10_000..10_300 {
            assert!(
                collected.contains(&digest(n)),
                "garbage {n} was not collected"
            );
        }
    }

    #[test]
    fn large_sweeps_are_split_into_short_transactions() {
        let (_dir, db) = open();
        db.leases()
            .create("default", "keep", Labels::new())
            .unwrap();
        let total = u32::try_from(SWEEP_BATCH).unwrap() + 100;
        for n in 0..total {
            let lease = (n % 100 == 0).then_some("keep");
            db.content()
                .add("default", &digest(n), 1, Labels::new(), lease)
                .unwrap();
        }
        let report = gc(&db);
        let kept = total.div_ceil(100);
        assert_eq!(report.sweep_transactions, 2);
        assert!(report.longest_sweep_transaction <= report.sweep_duration);
        assert_eq!(report.removed_content.len(), (total - kept) as usize);
        assert_eq!(db.content().list("default").unwrap().len(), kept as usize);
    }

    #[test]
    fn label_refs_parse_like_containerd() {
        let l = labels(&[
            ("containerd.io/gc.ref.content", "c0"),
            ("containerd.io/gc.ref.content.m", "c1"),
            ("containerd.io/gc.ref.content/m", "c2"),
            ("containerd.io/gc.ref.contentx", "no"),
            ("containerd.io/gc.ref.snapshot.overlayfs", "s0"),
            ("containerd.io/gc.ref.snapshot.overlayfs/1", "s1"),
            ("containerd.io/gc.ref.snapshot.", "no"),
            ("containerd.io/gc.ref.image", "no"),
            ("containerd.io/gc.root", "no"),
            ("zzz", "no"),
        ]);
        let mut refs = label_refs("ns", &l);
        refs.sort();
        assert_eq!(
            refs,
            vec![
                Node::content("ns", "c0"),
                Node::content("ns", "c1"),
                Node::content("ns", "c2"),
                Node::snapshot("ns", "overlayfs", "s0"),
                Node::snapshot("ns", "overlayfs", "s1"),
            ]
        );
    }
}
