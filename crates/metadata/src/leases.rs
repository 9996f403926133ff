//! Leases: named, per-namespace holds on resources that are not referenced
//! yet (containerd's lease manager, `core/metadata/leases.go`).
//!
//! A client pulling an image writes blobs and snapshots one at a time, and
//! only the image record written at the end makes them reachable. Until
//! then they are held by a lease: every resource added to a live lease is a
//! root for the garbage collector. Deleting the lease releases them all at
//! once; a lease labelled `containerd.io/gc.expire` (an RFC 3339 time)
//! stops holding anything once that time passes, and the collector deletes
//! it.
//!
//! A lease labelled `containerd.io/gc.flat` holds only its resources
//! themselves, not what their `containerd.io/gc.ref.*` labels reference.
//!
//! # Resources
//!
//! A [`Resource`] is an id and a type, spelled as containerd spells them:
//!
//! | type | id | held for GC |
//! |---|---|---|
//! | [`CONTENT`] (`content`) | a digest | the namespace's content record |
//! | [`SNAPSHOTS_PREFIX`]`<snapshotter>` (`snapshots/overlayfs`) | a snapshot key | the namespace's snapshot record |
//! | [`IMAGES`] (`images`) | an image name | the image (images are roots anyway) |
//! | [`INGESTS`] (`ingests`) | an ingest ref | stored and listed; ingests are the content store's, not collected here |
//!
//! Any other type is [`Error::NotImplemented`], as in containerd.
//!
//! # Encoding
//!
//! A lease is stored in the `leases` table under `(namespace, id)` as the
//! JSON object `{"created": <ns since the Unix epoch>, "labels": {..}}`
//! (`labels` omitted when empty). Its resources are rows of
//! `lease_resources` keyed `(namespace, lease id, type, resource id)`, so
//! adding or removing one costs one key whatever the lease holds.

use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::db::Db;
use crate::digests;
use crate::error::{DbContext, Error, Result};
use crate::gc::{self, Node};
use crate::labels::{self, Labels};
use crate::namespaces;
use crate::schema::{self, end_of};
use crate::timestamp;

/// Resource type of a content blob; the id is its digest.
pub const CONTENT: &str = "content";
/// Resource type of an ingest (an upload in progress); the id is its ref.
pub const INGESTS: &str = "ingests";
/// Resource type of an image; the id is its name.
pub const IMAGES: &str = "images";
/// Prefix of snapshot resource types: `snapshots/<snapshotter>`; the id is the snapshot key.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";

/// The longest lease id accepted, in bytes.
///
/// Lease ids are otherwise free-form, as in containerd: its clients
/// generate ids such as `1712345678-Ab_-` that are not identifiers.
pub const MAX_ID_LENGTH: usize = 1024;

/// A lease (containerd's `leases.Lease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id, unique within its namespace.
    pub id: String,
    /// When the lease was created.
    pub created_at: SystemTime,
    /// The lease's labels, e.g. `containerd.io/gc.expire`.
    pub labels: Labels,
}

/// Something a lease holds (containerd's `leases.Resource`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// The resource's id: a digest, snapshot key, image name or ingest ref.
    pub id: String,
    /// The resource's type: `content`, `snapshots/<snapshotter>`, `images` or `ingests`.
    pub kind: String,
}

/// Creates, lists and deletes leases and the resources they hold. Obtain one
/// with [`Db::leases`].
///
/// Every method is one short transaction. Leases never keep their namespace
/// from being deleted; they are deleted with it.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    db: Db,
}

/// The stored form of a [`Lease`] (the id is the key).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredLease {
    #[serde(default)]
    pub(crate) created: i64,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub(crate) labels: Labels,
}

impl StoredLease {
    /// Decodes a stored lease; [`Error::DataLoss`] naming it if that fails.
    pub(crate) fn decode(ns: &str, id: &str, bytes: &[u8]) -> Result<StoredLease> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::DataLoss(format!(
                "lease {id:?} in namespace {ns:?}: cannot decode: {e}"
            ))
        })
    }

    fn into_lease(self, id: &str) -> Lease {
        Lease {
            id: id.to_owned(),
            created_at: timestamp::from_nanos(self.created),
            labels: self.labels,
        }
    }
}

/// A resource type, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Content,
    Ingest,
    Image,
    Snapshot(&'a str),
}

/// Checks a resource as containerd's `parseLeaseResource` does.
fn parse_resource<'a>(kind: &'a str, id: &str) -> Result<Kind<'a>> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "resource of type {kind:?} has an empty id"
        )));
    }
    let parsed = match kind {
        CONTENT => {
            digests::validate(id).map_err(|e| {
                Error::InvalidArgument(format!("invalid content resource id {id}: {e}"))
            })?;
            Kind::Content
        }
        INGESTS => Kind::Ingest,
        IMAGES => Kind::Image,
        _ => match kind.split_once('/') {
            Some(("snapshots", snapshotter)) => {
                if snapshotter.is_empty() || snapshotter.contains('/') {
                    return Err(Error::InvalidArgument(format!(
                        "invalid snapshot resource type {kind}"
                    )));
                }
                Kind::Snapshot(snapshotter)
            }
            _ if kind.starts_with("content/")
                || kind.starts_with("ingests/")
                || kind.starts_with("images/")
                || kind == "snapshots" =>
            {
                return Err(Error::InvalidArgument(format!(
                    "invalid resource type {kind}"
                )));
            }
            _ => {
                return Err(Error::NotImplemented(format!(
                    "resource type {kind} not supported yet"
                )));
            }
        },
    };
    Ok(parsed)
}

/// The garbage-collection node a resource holds, if any (ingests: none).
fn node_of(ns: &str, kind: Kind<'_>, id: &str) -> Option<Node> {
    match kind {
        Kind::Content => Some(Node::content(ns, id)),
        Kind::Snapshot(snapshotter) => Some(Node::snapshot(ns, snapshotter, id)),
        Kind::Image => Some(Node::image(ns, id)),
        Kind::Ingest => None,
    }
}

/// The node held by a stored resource row, for the garbage collector;
/// `None` for ingests and rows of types this build does not know.
pub(crate) fn held_node(ns: &str, kind: &str, id: &str) -> Option<Node> {
    parse_resource(kind, id)
        .ok()
        .and_then(|k| node_of(ns, k, id))
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(
            "lease id must not be empty".to_owned(),
        ));
    }
    if id.len() > MAX_ID_LENGTH {
        return Err(Error::InvalidArgument(format!(
            "lease id greater than maximum length ({MAX_ID_LENGTH} bytes)"
        )));
    }
    Ok(())
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("lease {id:?}"))
}

/// [`Error::NotFound`] unless lease `id` exists in namespace `ns`.
fn ensure_lease(
    leases: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
    id: &str,
) -> Result<()> {
    if leases.get((ns, id)).context("read lease")?.is_none() {
        return Err(not_found(id));
    }
    Ok(())
}

/// Removes every resource row of lease `id` in namespace `ns`.
fn clear_resources(txn: &WriteTransaction, ns: &str, id: &str) -> Result<()> {
    let end = end_of(id);
    txn.open_table(schema::LEASE_RESOURCES)
        .context("open table lease_resources")?
        .retain_in((ns, id, "", "")..(ns, end.as_str(), "", ""), |_, _| false)
        .context("remove lease resources")
}

/// Adds a resource to lease `lease` of namespace `ns` inside `txn`, and
/// reports what it holds to a concurrent garbage collection.
///
/// [`Error::NotFound`] if the lease does not exist; the resource's type and
/// id are checked as in [`LeaseStore::add_resource`].
pub(crate) fn add_resource_in(
    txn: &WriteTransaction,
    db: &Db,
    ns: &str,
    lease: &str,
    kind: &str,
    id: &str,
) -> Result<()> {
    let leases = txn
        .open_table(schema::LEASES)
        .context("open table leases")?;
    ensure_lease(&leases, ns, lease)?;
    let parsed = parse_resource(kind, id)?;
    txn.open_table(schema::LEASE_RESOURCES)
        .context("open table lease_resources")?
        .insert((ns, lease, kind, id), ())
        .context("insert lease resource")?;
    if let Some(node) = node_of(ns, parsed, id) {
        db.track(node);
    }
    Ok(())
}

/// Whether a lease with `labels` has expired at `now`: its
/// `containerd.io/gc.expire` label is an RFC 3339 time before `now`.
///
/// A label that does not parse is ignored (the lease stays live), as in
/// containerd, which logs and keeps using the lease.
pub(crate) fn expired(labels: &Labels, now: SystemTime) -> bool {
    labels
        .get(gc::LABEL_EXPIRE)
        .and_then(|v| timestamp::parse_rfc3339(v))
        .is_some_and(|at| now > at)
}

impl LeaseStore {
    /// A lease store over `db`.
    pub(crate) fn new(db: Db) -> LeaseStore {
        LeaseStore { db }
    }

    /// Creates lease `id` in namespace `ns` with `labels`, creating the namespace if missing.
    ///
    /// [`Error::InvalidArgument`] for an empty (or longer than
    /// [`MAX_ID_LENGTH`]) id, a malformed namespace or an oversized label;
    /// [`Error::AlreadyExists`] if the lease exists. Labels with empty values
    /// are dropped.
    pub fn create(&self, ns: &str, id: &str, labels: Labels) -> Result<Lease> {
        validate_id(id)?;
        let mut kept = Labels::new();
        for (k, v) in labels {
            labels::validate(&k, &v)?;
            if !v.is_empty() {
                kept.insert(k, v);
            }
        }
        let stored = StoredLease {
            created: timestamp::to_nanos(SystemTime::now()),
            labels: kept,
        };
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();

        self.db.update(|txn| {
            namespaces::create_if_missing(txn, ns)?;
            let mut leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            if leases
                .insert((ns, id), bytes.as_slice())
                .context("insert lease")?
                .is_some()
            {
                return Err(Error::AlreadyExists(format!("lease {id:?}")));
            }
            // `delete` removes a lease's resources; this keeps a new lease
            // clean even if a database written elsewhere left some behind.
            clear_resources(txn, ns, id)
        })?;

        debug!(namespace = ns, lease = id, "created lease");
        Ok(stored.into_lease(id))
    }

    /// Returns lease `id` of namespace `ns`; [`Error::NotFound`] if it does not exist.
    pub fn get(&self, ns: &str, id: &str) -> Result<Lease> {
        self.db.view(|txn| {
            let leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            let Some(bytes) = leases.get((ns, id)).context("read lease")? else {
                return Err(not_found(id));
            };
            Ok(StoredLease::decode(ns, id, bytes.value())?.into_lease(id))
        })
    }

    /// Deletes lease `id` of namespace `ns` and its list of resources.
    ///
    /// What it held becomes collectable unless something else references
    /// it; schedule a garbage collection. [`Error::NotFound`] if the lease
    /// does not exist.
    pub fn delete(&self, ns: &str, id: &str) -> Result<()> {
        self.db.update(|txn| {
            let mut leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            if leases.remove((ns, id)).context("remove lease")?.is_none() {
                return Err(not_found(id));
            }
            self.db.mark_dirty();
            clear_resources(txn, ns, id)
        })?;
        debug!(namespace = ns, lease = id, "deleted lease");
        Ok(())
    }

    /// Returns all leases of namespace `ns`, sorted by id (expired ones included
    /// until a garbage collection deletes them).
    ///
    /// Filtering (containerd's filter expressions) is the caller's job.
    pub fn list(&self, ns: &str) -> Result<Vec<Lease>> {
        self.db.view(|txn| {
            let leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            let end = end_of(ns);
            let mut out = Vec::new();
            for entry in leases
                .range((ns, "")..(end.as_str(), ""))
                .context("scan leases")?
            {
                let (k, v) = entry.context("read lease")?;
                let id = k.value().1;
                out.push(StoredLease::decode(ns, id, v.value())?.into_lease(id));
            }
            Ok(out)
        })
    }

    /// Adds `resource` to lease `id` of namespace `ns`; adding it twice is not an error.
    ///
    /// The resource need not exist yet (a client leases what it is about to
    /// write). [`Error::NotFound`] if the lease does not exist;
    /// [`Error::InvalidArgument`] for an empty id, a `content` id that is not
    /// a digest or a malformed `snapshots/` type; [`Error::NotImplemented`]
    /// for a type this store does not know.
    pub fn add_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<()> {
        self.db
            .update(|txn| add_resource_in(txn, &self.db, ns, id, &resource.kind, &resource.id))?;
        debug!(namespace = ns, lease = id, kind = %resource.kind, resource = %resource.id, "added lease resource");
        Ok(())
    }

    /// Removes `resource` from lease `id` of namespace `ns`; removing one the
    /// lease does not hold is not an error.
    ///
    /// [`Error::NotFound`] if the lease does not exist; the resource is
    /// checked as in [`LeaseStore::add_resource`].
    pub fn delete_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<()> {
        parse_resource(&resource.kind, &resource.id)?;
        self.db.update(|txn| {
            let leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            ensure_lease(&leases, ns, id)?;
            txn.open_table(schema::LEASE_RESOURCES)
                .context("open table lease_resources")?
                .remove((ns, id, resource.kind.as_str(), resource.id.as_str()))
                .context("remove lease resource")?;
            self.db.mark_dirty();
            Ok(())
        })?;
        debug!(namespace = ns, lease = id, kind = %resource.kind, resource = %resource.id, "removed lease resource");
        Ok(())
    }

    /// Drops the ingest `reference` from lease `id` of namespace `ns` once
    /// its blob is committed (or its writer never opened): containerd's
    /// `removeIngestLease`.
    ///
    /// Unlike [`LeaseStore::delete_resource`] this is no deletion for the
    /// garbage collector: the lease holds the committed blob instead, so
    /// nothing became collectable and no collection is scheduled (one
    /// would take content other clients wrote without a lease, which
    /// containerd keeps until a real deletion). A missing lease is not an
    /// error.
    pub fn release_ingest(&self, ns: &str, id: &str, reference: &str) -> Result<()> {
        self.db.update(|txn| {
            txn.open_table(schema::LEASE_RESOURCES)
                .context("open table lease_resources")?
                .remove((ns, id, INGESTS, reference))
                .context("remove lease resource")?;
            Ok(())
        })?;
        debug!(
            namespace = ns,
            lease = id,
            ingest = reference,
            "released ingest from lease"
        );
        Ok(())
    }

    /// Returns the resources lease `id` of namespace `ns` holds, sorted by
    /// type, then id; [`Error::NotFound`] if the lease does not exist.
    pub fn list_resources(&self, ns: &str, id: &str) -> Result<Vec<Resource>> {
        self.db.view(|txn| {
            let leases = txn
                .open_table(schema::LEASES)
                .context("open table leases")?;
            ensure_lease(&leases, ns, id)?;
            let table = txn
                .open_table(schema::LEASE_RESOURCES)
                .context("open table lease_resources")?;
            let end = end_of(id);
            let mut out = Vec::new();
            for entry in table
                .range((ns, id, "", "")..(ns, end.as_str(), "", ""))
                .context("scan lease resources")?
            {
                let (k, _) = entry.context("read lease resource")?;
                let (_, _, kind, rid) = k.value();
                out.push(Resource {
                    id: rid.to_owned(),
                    kind: kind.to_owned(),
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.db")).unwrap();
        (dir, db)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn digest(n: u32) -> String {
        format!("sha256:{:064x}", n)
    }

    fn res(kind: &str, id: &str) -> Resource {
        Resource {
            id: id.to_owned(),
            kind: kind.to_owned(),
        }
    }

    #[test]
    fn create_get_list() {
        let (_dir, db) = open();
        let leases = db.leases();
        let created = leases
            .create("default", "pull-1", labels(&[("a", "1"), ("e", "")]))
            .unwrap();
        assert_eq!(created.id, "pull-1");
        assert_eq!(created.labels, labels(&[("a", "1")]));
        assert_eq!(leases.get("default", "pull-1").unwrap(), created);
        leases
            .create("default", "0-random_ID-", Labels::new())
            .unwrap();
        leases.create("default.x", "other", Labels::new()).unwrap();
        let ids: Vec<String> = leases
            .list("default")
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec!["0-random_ID-", "pull-1"]);
        assert!(leases.list("nobody").unwrap().is_empty());
        assert!(db.namespaces().exists("default.x").unwrap());
    }

    #[test]
    fn create_refuses_duplicates_and_bad_input() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("default", "l", Labels::new()).unwrap();
        let err = leases.create("default", "l", Labels::new()).unwrap_err();
        assert_eq!(err.to_string(), "lease \"l\": already exists");
        for (ns, id) in [("default", ""), ("bad/ns", "l2")] {
            let err = leases.create(ns, id, Labels::new()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
        let long = "l".repeat(MAX_ID_LENGTH + 1);
        assert!(matches!(
            leases.create("default", &long, Labels::new()),
            Err(Error::InvalidArgument(_))
        ));
        let huge = "v".repeat(labels::MAX_SIZE);
        assert!(matches!(
            leases.create("default", "l3", labels(&[("k", &huge)])),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn missing_lease_is_not_found() {
        let (_dir, db) = open();
        let leases = db.leases();
        assert_eq!(
            leases.delete("default", "nope").unwrap_err().to_string(),
            "lease \"nope\": not found"
        );
        assert!(matches!(
            leases.get("default", "nope"),
            Err(Error::NotFound(_))
        ));
        let r = res(CONTENT, &digest(1));
        assert!(matches!(
            leases.add_resource("default", "nope", r.clone()),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            leases.delete_resource("default", "nope", r),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            leases.list_resources("default", "nope"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn resources_add_list_delete() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("default", "l", Labels::new()).unwrap();
        leases.create("default", "l.other", Labels::new()).unwrap();
        let all = vec![
            res(CONTENT, &digest(2)),
            res(CONTENT, &digest(1)),
            res(IMAGES, "docker.io/library/busybox:latest"),
            res(INGESTS, "default/pull-ref"),
            res("snapshots/overlayfs", "sha256:chain/with/slashes"),
            res("snapshots/native", "k"),
        ];
        for r in &all {
            leases.add_resource("default", "l", r.clone()).unwrap();
        }
        // Twice is fine.
        leases.add_resource("default", "l", all[0].clone()).unwrap();
        leases
            .add_resource("default", "l.other", res(CONTENT, &digest(9)))
            .unwrap();

        let mut expected = all.clone();
        expected.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        assert_eq!(leases.list_resources("default", "l").unwrap(), expected);

        leases
            .delete_resource("default", "l", all[0].clone())
            .unwrap();
        // Not held: fine.
        leases
            .delete_resource("default", "l", res(CONTENT, &digest(5)))
            .unwrap();
        assert_eq!(leases.list_resources("default", "l").unwrap().len(), 5);
        assert_eq!(
            leases.list_resources("default", "l.other").unwrap().len(),
            1
        );
    }

    #[test]
    fn resource_types_are_checked() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("default", "l", Labels::new()).unwrap();
        for r in [
            res(CONTENT, "not-a-digest"),
            res(CONTENT, ""),
            res("content/x", &digest(1)),
            res("ingests/x", "ref"),
            res("snapshots", "k"),
            res("snapshots/", "k"),
            res("snapshots/a/b", "k"),
        ] {
            let err = leases.add_resource("default", "l", r.clone()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{r:?}: {err}");
        }
        let err = leases
            .add_resource("default", "l", res("widgets", "w"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource type widgets not supported yet: not implemented"
        );
        assert!(leases.list_resources("default", "l").unwrap().is_empty());
    }

    #[test]
    fn releasing_a_committed_ingest_is_no_deletion() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("default", "l", Labels::new()).unwrap();
        leases
            .add_resource("default", "l", res(INGESTS, "ref-1"))
            .unwrap();
        leases.release_ingest("default", "l", "ref-1").unwrap();
        assert!(leases.list_resources("default", "l").unwrap().is_empty());
        assert!(!db.is_dirty(), "a committed ingest scheduled a collection");
        // Releasing from a lease that is gone is not an error.
        leases.release_ingest("default", "gone", "ref-1").unwrap();
        // Removing a resource through the Leases API is a deletion.
        leases
            .add_resource("default", "l", res(INGESTS, "ref-2"))
            .unwrap();
        leases
            .delete_resource("default", "l", res(INGESTS, "ref-2"))
            .unwrap();
        assert!(db.is_dirty());
    }

    #[test]
    fn delete_drops_resources() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("default", "l", Labels::new()).unwrap();
        leases
            .add_resource("default", "l", res(CONTENT, &digest(1)))
            .unwrap();
        leases.delete("default", "l").unwrap();
        leases.create("default", "l", Labels::new()).unwrap();
        assert!(leases.list_resources("default", "l").unwrap().is_empty());
    }

    #[test]
    fn namespace_delete_takes_leases_and_resources() {
        let (_dir, db) = open();
        let leases = db.leases();
        leases.create("gone", "l", Labels::new()).unwrap();
        leases
            .add_resource("gone", "l", res(CONTENT, &digest(1)))
            .unwrap();
        leases.create("stays", "l", Labels::new()).unwrap();
        leases
            .add_resource("stays", "l", res(CONTENT, &digest(1)))
            .unwrap();
        // Leases do not keep a namespace from being deleted.
        db.namespaces().delete("gone").unwrap();
        assert!(leases.list("gone").unwrap().is_empty());
        let rows = db
            .view(|txn| {
                let t = txn.open_table(schema::LEASE_RESOURCES).context("open")?;
                Ok(t.iter().context("iter")?.count())
            })
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(leases.list_resources("stays", "l").unwrap().len(), 1);
    }

    #[test]
    fn expiry_follows_the_label() {
        let at = |s: &str| timestamp::parse_rfc3339(s).unwrap();
        let l = labels(&[(gc::LABEL_EXPIRE, "2024-01-01T00:00:00Z")]);
        assert!(expired(&l, at("2024-01-01T00:00:01Z")));
        assert!(!expired(&l, at("2024-01-01T00:00:00Z")));
        assert!(!expired(&l, at("2023-12-31T23:00:00Z")));
        let offset = labels(&[(gc::LABEL_EXPIRE, "2024-01-01T02:00:00+02:00")]);
        assert!(expired(&offset, at("2024-01-01T00:00:01Z")));
        let garbage = labels(&[(gc::LABEL_EXPIRE, "soon")]);
        assert!(!expired(&garbage, SystemTime::now()));
        assert!(!expired(&Labels::new(), SystemTime::now()));
    }
}
