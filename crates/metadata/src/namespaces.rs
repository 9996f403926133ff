//! The namespace store: names and labels of the namespaces that partition all
//! other metadata (containerd's `NamespaceStore`).
//!
//! A namespace is just a name and a set of labels. Every image, container,
//! lease, content blob and snapshot record belongs to exactly one namespace;
//! clients name theirs in the `containerd-namespace` gRPC header.
//!
//! Each method is one short transaction. Where containerd's namespaces
//! service performs several store calls in one transaction (create with
//! labels, update by field paths, replace all labels), this store offers a
//! single atomic method instead: [`Namespaces::create`],
//! [`Namespaces::update_labels`], [`Namespaces::set_labels`].
//!
//! Reading and labelling follow containerd's bolt store (`metadata/namespaces.go`),
//! which clients rely on: containerd's Go client reads the namespace's labels
//! when it connects and sets one with `SetLabel` (Docker Engine does both for
//! `moby` on a fresh root), before anything has created the namespace:
//! - reading the labels of a namespace that does not exist gives no labels,
//!   not an error ([`Namespaces::labels`], [`Namespaces::get`]);
//! - labelling a namespace that does not exist creates it
//!   ([`Namespaces::set_label`], [`Namespaces::update_labels`], and
//!   [`Namespaces::set_labels`] when it is given at least one label, even one
//!   with an empty value).
//!
//! Deliberate differences from containerd's bolt store:
//! - a label with an empty value is never stored, on create as on update
//!   (empty means "absent" everywhere in containerd's label handling);
//! - labelling creates a namespace only if its name is a valid identifier
//!   ([`Error::InvalidArgument`] otherwise): containerd creates any name
//!   there, but a namespace no `containerd-namespace` header can name holds
//!   nothing and can only be listed.

use redb::{ReadableTable, Table};
use tracing::debug;

use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::identifiers;
use crate::labels::{self, Labels};
use crate::schema::{self, end_of};

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    /// The namespace's name, a valid identifier (see [`crate::identifiers`]).
    pub name: String,
    /// The namespace's labels.
    pub labels: Labels,
}

/// Creates, reads, labels, lists and deletes namespaces. Obtain one with [`Db::namespaces`].
#[derive(Debug, Clone)]
pub struct Namespaces {
    db: Db,
}

/// The labels table as opened in a write transaction.
type LabelsTable<'txn> = Table<'txn, (&'static str, &'static str), &'static str>;

impl Namespaces {
    /// A namespace store over `db`.
    pub(crate) fn new(db: Db) -> Namespaces {
        Namespaces { db }
    }

    /// Creates namespace `name` with `labels`.
    ///
    /// [`Error::InvalidArgument`] if `name` is not a valid identifier or a
    /// label is too large; [`Error::AlreadyExists`] if the namespace exists.
    /// Labels with empty values are dropped. Returns the stored namespace.
    pub fn create<K, V>(
        &self,
        name: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Namespace>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        identifiers::validate(name)?;
        let labels = collect_labels(labels)?;

        self.db.update(|txn| {
            let mut namespaces = txn
                .open_table(schema::NAMESPACES)
                .context("open table namespaces")?;
            if namespaces
                .insert(name, ())
                .context("insert namespace")?
                .is_some()
            {
                return Err(Error::AlreadyExists(format!("namespace {name:?}")));
            }
            let mut table = open_labels(txn)?;
            // A namespace deleted and re-created must not inherit stale labels;
            // `delete` removes them, this keeps the invariant local.
            clear_labels(&mut table, name)?;
            for (k, v) in &labels {
                table
                    .insert((name, k.as_str()), v.as_str())
                    .context("insert namespace label")?;
            }
            Ok(())
        })?;

        debug!(namespace = name, labels = labels.len(), "created namespace");
        Ok(Namespace {
            name: name.to_owned(),
            labels,
        })
    }

    /// Returns namespace `name` with its labels; no labels if it does not
    /// exist, as in containerd.
    pub fn get(&self, name: &str) -> Result<Namespace> {
        Ok(Namespace {
            name: name.to_owned(),
            labels: self.labels(name)?,
        })
    }

    /// Returns the labels of namespace `name`; none if it does not exist,
    /// as in containerd (its Go client reads them before creating anything).
    pub fn labels(&self, name: &str) -> Result<Labels> {
        self.db.view(|txn| {
            let table = txn
                .open_table(schema::NAMESPACE_LABELS)
                .context("open table namespace_labels")?;
            read_labels(&table, name)
        })
    }

    /// Whether namespace `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        self.db.view(|txn| {
            let namespaces = txn
                .open_table(schema::NAMESPACES)
                .context("open table namespaces")?;
            Ok(namespaces.get(name).context("read namespace")?.is_some())
        })
    }

    /// Sets label `key` of namespace `name` to `value`; an empty `value` deletes the label.
    ///
    /// Creates the namespace if it does not exist, as containerd's `SetLabel`
    /// does. [`Error::InvalidArgument`] if the label is too large or the
    /// namespace is missing and `name` is not a valid identifier.
    pub fn set_label(&self, name: &str, key: &str, value: &str) -> Result<()> {
        self.update_labels(name, [(key, value)]).map(drop)
    }

    /// Applies several label changes to namespace `name` atomically and returns the result.
    ///
    /// Each `(key, value)` sets a label, or deletes it if `value` is empty;
    /// this is what an update with `labels.<key>` field paths needs. Either
    /// every change is applied or, on error, none is. A missing namespace is
    /// created if there is at least one change (see [`Namespaces::set_label`]).
    pub fn update_labels<K, V>(
        &self,
        name: &str,
        changes: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Namespace>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let changes: Vec<(K, V)> = changes.into_iter().collect();
        for (k, v) in &changes {
            validate_label(k.as_ref(), v.as_ref())?;
        }

        let labels = self.db.update(|txn| {
            if !changes.is_empty() {
                create_if_missing(txn, name)?;
            }
            let mut table = open_labels(txn)?;
            for (k, v) in &changes {
                let (k, v) = (k.as_ref(), v.as_ref());
                if v.is_empty() {
                    table.remove((name, k)).context("remove namespace label")?;
                } else {
                    table
                        .insert((name, k), v)
                        .context("insert namespace label")?;
                }
            }
            read_labels(&table, name)
        })?;

        debug!(
            namespace = name,
            changes = changes.len(),
            "updated namespace labels"
        );
        Ok(Namespace {
            name: name.to_owned(),
            labels,
        })
    }

    /// Replaces all labels of namespace `name` with `labels` atomically and returns the result.
    ///
    /// This is an update without field paths. Labels with empty values are
    /// dropped. A missing namespace is created if `labels` holds at least one
    /// pair, even one with an empty value: containerd sets (or deletes) each
    /// given label, and each such call creates the namespace.
    pub fn set_labels<K, V>(
        &self,
        name: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Namespace>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut given = false;
        let labels = collect_labels(labels.into_iter().inspect(|_| given = true))?;

        self.db.update(|txn| {
            if given {
                create_if_missing(txn, name)?;
            }
            let mut table = open_labels(txn)?;
            clear_labels(&mut table, name)?;
            for (k, v) in &labels {
                table
                    .insert((name, k.as_str()), v.as_str())
                    .context("insert namespace label")?;
            }
            Ok(())
        })?;

        debug!(
            namespace = name,
            labels = labels.len(),
            "replaced namespace labels"
        );
        Ok(Namespace {
            name: name.to_owned(),
            labels,
        })
    }

    /// Returns the names of all namespaces, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        self.db.view(|txn| {
            let namespaces = txn
                .open_table(schema::NAMESPACES)
                .context("open table namespaces")?;
            namespaces
                .iter()
                .context("iterate namespaces")?
                .map(|entry| {
                    let (k, _) = entry.context("read namespace")?;
                    Ok(k.value().to_owned())
                })
                .collect()
        })
    }

    /// Returns all namespaces with their labels, sorted by name, from one consistent snapshot.
    pub fn list_with_labels(&self) -> Result<Vec<Namespace>> {
        self.db.view(|txn| {
            let namespaces = txn
                .open_table(schema::NAMESPACES)
                .context("open table namespaces")?;
            let table = txn
                .open_table(schema::NAMESPACE_LABELS)
                .context("open table namespace_labels")?;

            let mut out: Vec<Namespace> = Vec::new();
            for entry in namespaces.iter().context("iterate namespaces")? {
                let (k, _) = entry.context("read namespace")?;
                out.push(Namespace {
                    name: k.value().to_owned(),
                    labels: Labels::new(),
                });
            }
            // Both tables are sorted by namespace name: merge in one pass
            // instead of one range query per namespace.
            let mut i = 0;
            for entry in table.iter().context("iterate namespace labels")? {
                let (k, v) = entry.context("read namespace label")?;
                let (ns, key) = k.value();
                while out.get(i).is_some_and(|n| n.name.as_str() < ns) {
                    i += 1;
                }
                match out.get_mut(i) {
                    Some(n) if n.name == ns => {
                        n.labels.insert(key.to_owned(), v.value().to_owned());
                    }
                    // Labels of a namespace that no longer exists: `delete`
                    // removes them, so there are none to skip; ignore if any.
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// Deletes namespace `name` and its labels and leases.
    ///
    /// [`Error::NotFound`] if it does not exist; [`Error::FailedPrecondition`]
    /// if it still holds images, content blobs, containers or snapshots, with
    /// a message naming which (`namespace "x" must be empty, but it contains
    /// images, snapshots on "overlayfs" snapshotter`).
    pub fn delete(&self, name: &str) -> Result<()> {
        self.db.update(|txn| {
            let mut namespaces = txn
                .open_table(schema::NAMESPACES)
                .context("open table namespaces")?;
            ensure_exists(&namespaces, name)?;

            let remaining = remaining_objects(txn, name)?;
            if !remaining.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "namespace {name:?} must be empty, but it contains {}",
                    remaining.join(", ")
                )));
            }

            namespaces.remove(name).context("remove namespace")?;
            purge(txn, name)
        })?;
        debug!(namespace = name, "deleted namespace");
        Ok(())
    }
}

/// Creates namespace `name` (without labels) in `txn` unless it exists.
///
/// Stores whose objects create their namespace implicitly, as containerd's
/// do (committing content, creating a lease), call this in their write
/// transaction. [`Error::InvalidArgument`] if `name` is not an identifier.
pub(crate) fn create_if_missing(txn: &redb::WriteTransaction, name: &str) -> Result<()> {
    identifiers::validate(name)?;
    let mut namespaces = txn
        .open_table(schema::NAMESPACES)
        .context("open table namespaces")?;
    if namespaces.get(name).context("read namespace")?.is_none() {
        namespaces.insert(name, ()).context("insert namespace")?;
        // As in `create`: a re-created namespace must not inherit labels.
        clear_labels(&mut open_labels(txn)?, name)?;
        debug!(namespace = name, "created namespace implicitly");
    }
    Ok(())
}

/// Validates a label, prefixing errors the way containerd does for namespaces.
fn validate_label(key: &str, value: &str) -> Result<()> {
    labels::validate(key, value).map_err(|e| match e {
        Error::InvalidArgument(msg) => Error::InvalidArgument(format!("namespace.Labels: {msg}")),
        other => other,
    })
}

/// Validates labels and collects the non-empty ones.
fn collect_labels<K, V>(labels: impl IntoIterator<Item = (K, V)>) -> Result<Labels>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = Labels::new();
    for (k, v) in labels {
        let (k, v) = (k.as_ref(), v.as_ref());
        validate_label(k, v)?;
        if !v.is_empty() {
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(out)
}

/// [`Error::NotFound`] unless namespace `name` has a row in `namespaces`.
fn ensure_exists(namespaces: &impl ReadableTable<&'static str, ()>, name: &str) -> Result<()> {
    if namespaces.get(name).context("read namespace")?.is_none() {
        return Err(Error::NotFound(format!("namespace {name:?}")));
    }
    Ok(())
}

/// Opens the labels table for writing.
fn open_labels(txn: &redb::WriteTransaction) -> Result<LabelsTable<'_>> {
    txn.open_table(schema::NAMESPACE_LABELS)
        .context("open table namespace_labels")
}

/// Reads all labels of namespace `name` (one range scan).
fn read_labels(
    table: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    name: &str,
) -> Result<Labels> {
    let end = end_of(name);
    let mut labels = Labels::new();
    for entry in table
        .range((name, "")..(end.as_str(), ""))
        .context("scan namespace labels")?
    {
        let (k, v) = entry.context("read namespace label")?;
        labels.insert(k.value().1.to_owned(), v.value().to_owned());
    }
    Ok(labels)
}

/// Removes all labels of namespace `name`.
fn clear_labels(table: &mut LabelsTable<'_>, name: &str) -> Result<()> {
    let end = end_of(name);
    table
        .retain_in((name, "")..(end.as_str(), ""), |_, _| false)
        .context("remove namespace labels")
}

/// Whether a `(namespace, ..)`-keyed table has any entry for namespace `name`.
fn holds_any(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    name: &str,
) -> Result<bool> {
    let end = end_of(name);
    let mut range = table
        .range((name, "")..(end.as_str(), ""))
        .context("scan namespace objects")?;
    Ok(range
        .next()
        .transpose()
        .context("read object key")?
        .is_some())
}

/// The kinds of objects that still keep namespace `name` from being deleted,
/// in containerd's order, e.g. `["images", "snapshots on \"overlayfs\" snapshotter"]`.
///
/// One seek per kind, plus one per snapshotter that holds snapshots.
fn remaining_objects(txn: &redb::WriteTransaction, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();

    let images = txn
        .open_table(schema::IMAGES)
        .context("open table images")?;
    if holds_any(&images, name)? {
        out.push("images".to_owned());
    }
    let content = txn
        .open_table(schema::CONTENT)
        .context("open table content")?;
    if holds_any(&content, name)? {
        out.push("blobs".to_owned());
    }
    let containers = txn
        .open_table(schema::CONTAINERS)
        .context("open table containers")?;
    if holds_any(&containers, name)? {
        out.push("containers".to_owned());
    }

    // Keys are (namespace, snapshotter, key): find the first snapshot, note
    // its snapshotter, then seek past that snapshotter's keys to the next.
    let snapshots = txn
        .open_table(schema::SNAPSHOTS)
        .context("open table snapshots")?;
    let end = end_of(name);
    let mut from = String::new();
    loop {
        let mut range = snapshots
            .range((name, from.as_str(), "")..(end.as_str(), "", ""))
            .context("scan namespace snapshots")?;
        let Some(entry) = range.next() else { break };
        let (k, _) = entry.context("read snapshot key")?;
        let snapshotter = k.value().1;
        out.push(format!("snapshots on {snapshotter:?} snapshotter"));
        from = end_of(snapshotter);
    }

    Ok(out)
}

/// Removes what goes with a deleted namespace: its labels, and its leases
/// with their resources.
fn purge(txn: &redb::WriteTransaction, name: &str) -> Result<()> {
    clear_labels(&mut open_labels(txn)?, name)?;

    let end = end_of(name);
    let mut leases = txn
        .open_table(schema::LEASES)
        .context("open table leases")?;
    leases
        .retain_in((name, "")..(end.as_str(), ""), |_, _| false)
        .context("remove namespace leases")?;
    let mut resources = txn
        .open_table(schema::LEASE_RESOURCES)
        .context("open table lease_resources")?;
    resources
        .retain_in((name, "", "", "")..(end.as_str(), "", "", ""), |_, _| false)
        .context("remove namespace lease resources")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    const NO_LABELS: [(&str, &str); 0] = [];

    fn open(dir: &Path) -> Db {
        Db::open(dir.join("meta.db")).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Puts an opaque record into a `(namespace, id)` object table.
    fn put(db: &Db, def: redb::TableDefinition<(&str, &str), &[u8]>, ns: &str, id: &str) {
        db.update(|txn| {
            let mut t = txn.open_table(def).context("open")?;
            t.insert((ns, id), b"record".as_slice()).context("insert")?;
            Ok(())
        })
        .unwrap();
    }

    /// Puts an opaque snapshot record.
    fn put_snapshot(db: &Db, ns: &str, snapshotter: &str, key: &str) {
        db.update(|txn| {
            let mut t = txn.open_table(schema::SNAPSHOTS).context("open")?;
            t.insert((ns, snapshotter, key), b"record".as_slice())
                .context("insert")?;
            Ok(())
        })
        .unwrap();
    }

    /// Removes everything from a `(namespace, id)` object table.
    fn clear(db: &Db, def: redb::TableDefinition<(&str, &str), &[u8]>) {
        db.update(|txn| {
            let mut t = txn.open_table(def).context("open")?;
            t.retain(|_, _| false).context("retain")?;
            Ok(())
        })
        .unwrap();
    }

    fn count(db: &Db, def: redb::TableDefinition<(&str, &str), &[u8]>) -> usize {
        db.view(|txn| {
            let t = txn.open_table(def).context("open")?;
            Ok(t.iter().context("iter")?.count())
        })
        .unwrap()
    }

    #[test]
    fn create_then_get() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        let created = ns
            .create("k8s.io", [("owner", "kubelet"), ("tier", "system")])
            .unwrap();
        assert_eq!(created.name, "k8s.io");
        assert_eq!(
            created.labels,
            labels(&[("owner", "kubelet"), ("tier", "system")])
        );
        assert_eq!(ns.get("k8s.io").unwrap(), created);
        assert_eq!(ns.labels("k8s.io").unwrap(), created.labels);
        assert!(ns.exists("k8s.io").unwrap());
        assert!(!ns.exists("moby").unwrap());
    }

    #[test]
    fn create_accepts_hashmaps_and_drops_empty_values() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        let mut map = HashMap::new();
        map.insert("a".to_owned(), "1".to_owned());
        map.insert("empty".to_owned(), String::new());
        let created = ns.create("default", &map).unwrap();
        assert_eq!(created.labels, labels(&[("a", "1")]));
        assert_eq!(ns.labels("default").unwrap(), labels(&[("a", "1")]));
    }

    #[test]
    fn create_twice_is_already_exists() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", [("a", "1")]).unwrap();
        let err = ns.create("default", [("b", "2")]).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
        assert_eq!(err.to_string(), r#"namespace "default": already exists"#);
        // The failed create changed nothing.
        assert_eq!(ns.labels("default").unwrap(), labels(&[("a", "1")]));
    }

    #[test]
    fn create_validates_name_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        for bad in ["", "-x", "a/b", "a..b", &"n".repeat(77)] {
            let err = ns.create(bad, NO_LABELS).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err:?}");
        }
        let huge = "v".repeat(labels::MAX_SIZE);
        let err = ns.create("ok", [("k", huge.as_str())]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().starts_with("namespace.Labels: "), "{err}");
        assert!(ns.list().unwrap().is_empty());
    }

    #[test]
    fn missing_namespace_reads_empty_and_deletes_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        assert_eq!(
            ns.get("nope").unwrap(),
            Namespace {
                name: "nope".into(),
                labels: Labels::new(),
            }
        );
        assert!(ns.labels("nope").unwrap().is_empty());
        // Reading never creates.
        assert!(!ns.exists("nope").unwrap());
        let err = ns.delete("nope").unwrap_err();
        assert_eq!(err.to_string(), r#"namespace "nope": not found"#);
        // Names that could never exist are simply not found.
        assert!(matches!(ns.delete("../etc"), Err(Error::NotFound(_))));
    }

    #[test]
    fn labelling_a_missing_namespace_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.set_label("moby", "a", "b").unwrap();
        assert_eq!(ns.labels("moby").unwrap(), labels(&[("a", "b")]));
        // Deleting a label that is not there still creates the namespace.
        ns.set_label("gone", "a", "").unwrap();
        assert!(ns.exists("gone").unwrap());
        assert!(ns.labels("gone").unwrap().is_empty());
        let updated = ns.update_labels("upd", [("x", "1")]).unwrap();
        assert_eq!(updated.labels, labels(&[("x", "1")]));
        assert!(ns.exists("upd").unwrap());
        // Replacing all labels creates it when any pair is given...
        ns.set_labels("rep", [("e", "")]).unwrap();
        assert!(ns.exists("rep").unwrap());
        assert!(ns.labels("rep").unwrap().is_empty());
        // ...and not when none is, nor does an update without changes.
        ns.set_labels("none", NO_LABELS).unwrap();
        ns.update_labels("none", NO_LABELS).unwrap();
        assert!(!ns.exists("none").unwrap());
        // A name no header could carry is refused, not created.
        assert!(matches!(
            ns.set_label("../etc", "a", "b"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!ns.exists("../etc").unwrap());
        assert_eq!(ns.list().unwrap(), ["gone", "moby", "rep", "upd"]);
    }

    #[test]
    fn set_label_adds_replaces_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", [("a", "1")]).unwrap();
        ns.set_label("default", "b", "2").unwrap();
        ns.set_label("default", "a", "one").unwrap();
        assert_eq!(
            ns.labels("default").unwrap(),
            labels(&[("a", "one"), ("b", "2")])
        );
        ns.set_label("default", "a", "").unwrap();
        assert_eq!(ns.labels("default").unwrap(), labels(&[("b", "2")]));
        // Deleting a label that is not there is fine.
        ns.set_label("default", "zzz", "").unwrap();
    }

    #[test]
    fn set_label_validates_size() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", NO_LABELS).unwrap();
        let huge = "v".repeat(labels::MAX_SIZE);
        let err = ns.set_label("default", "k", &huge).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn update_labels_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", [("a", "1"), ("b", "2")]).unwrap();
        let updated = ns
            .update_labels("default", [("a", ""), ("c", "3")])
            .unwrap();
        assert_eq!(updated.labels, labels(&[("b", "2"), ("c", "3")]));

        // One bad change: nothing is applied.
        let huge = "v".repeat(labels::MAX_SIZE);
        let err = ns
            .update_labels("default", [("d", "4"), ("e", huge.as_str())])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(
            ns.labels("default").unwrap(),
            labels(&[("b", "2"), ("c", "3")])
        );
    }

    #[test]
    fn set_labels_replaces_all() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", [("a", "1"), ("b", "2")]).unwrap();
        ns.create("other", [("a", "x")]).unwrap();
        let replaced = ns
            .set_labels("default", [("c", "3"), ("gone", "")])
            .unwrap();
        assert_eq!(replaced.labels, labels(&[("c", "3")]));
        assert_eq!(ns.labels("default").unwrap(), labels(&[("c", "3")]));
        assert_eq!(
            ns.set_labels("default", NO_LABELS).unwrap().labels,
            Labels::new()
        );
        assert!(ns.labels("default").unwrap().is_empty());
        // Neighbours are untouched.
        assert_eq!(ns.labels("other").unwrap(), labels(&[("a", "x")]));
    }

    #[test]
    fn labels_do_not_leak_between_prefix_names() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("a", [("k", "a")]).unwrap();
        ns.create("a.b", [("k", "a.b")]).unwrap();
        ns.create("a-b", [("k", "a-b")]).unwrap();
        ns.create("ab", [("k", "ab")]).unwrap();
        assert_eq!(ns.labels("a").unwrap(), labels(&[("k", "a")]));
        ns.set_labels("a", NO_LABELS).unwrap();
        for other in ["a.b", "a-b", "ab"] {
            assert_eq!(ns.labels(other).unwrap(), labels(&[("k", other)]));
        }
    }

    #[test]
    fn list_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        assert!(ns.list().unwrap().is_empty());
        for name in ["moby", "default", "k8s.io", "buildkit"] {
            ns.create(name, NO_LABELS).unwrap();
        }
        assert_eq!(
            ns.list().unwrap(),
            vec!["buildkit", "default", "k8s.io", "moby"]
        );
    }

    #[test]
    fn list_with_labels_merges_tables() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("b", [("x", "1"), ("y", "2")]).unwrap();
        ns.create("a", NO_LABELS).unwrap();
        ns.create("c", [("z", "3")]).unwrap();
        ns.create("a.b", [("w", "4")]).unwrap();
        let all = ns.list_with_labels().unwrap();
        let want = vec![
            Namespace {
                name: "a".into(),
                labels: Labels::new(),
            },
            Namespace {
                name: "a.b".into(),
                labels: labels(&[("w", "4")]),
            },
            Namespace {
                name: "b".into(),
                labels: labels(&[("x", "1"), ("y", "2")]),
            },
            Namespace {
                name: "c".into(),
                labels: labels(&[("z", "3")]),
            },
        ];
        assert_eq!(all, want);
    }

    #[test]
    fn delete_removes_namespace_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let ns = open(dir.path()).namespaces();
        ns.create("default", [("a", "1")]).unwrap();
        ns.create("other", [("a", "2")]).unwrap();
        ns.delete("default").unwrap();
        assert!(!ns.exists("default").unwrap());
        assert_eq!(ns.list().unwrap(), vec!["other"]);
        // Re-creating starts with no labels.
        assert!(ns.create("default", NO_LABELS).unwrap().labels.is_empty());
        assert!(ns.labels("default").unwrap().is_empty());
        assert_eq!(ns.labels("other").unwrap(), labels(&[("a", "2")]));
    }

    #[test]
    fn delete_refuses_non_empty_namespace_naming_the_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ns = db.namespaces();
        ns.create("x", NO_LABELS).unwrap();
        put(&db, schema::IMAGES, "x", "docker.io/library/busybox:latest");
        put(&db, schema::CONTAINERS, "x", "web");
        put_snapshot(&db, "x", "overlayfs", "sha256:abc");
        put_snapshot(&db, "x", "overlayfs", "sha256:def");
        put_snapshot(&db, "x", "native", "k");

        let err = ns.delete("x").unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "namespace \"x\" must be empty, but it contains images, containers, \
             snapshots on \"native\" snapshotter, snapshots on \"overlayfs\" snapshotter: \
             failed precondition"
        );
        assert!(ns.exists("x").unwrap());

        clear(&db, schema::IMAGES);
        clear(&db, schema::CONTAINERS);
        db.update(|txn| {
            let mut t = txn.open_table(schema::SNAPSHOTS).context("open")?;
            t.retain(|_, _| false).context("retain")?;
            Ok(())
        })
        .unwrap();
        put(&db, schema::CONTENT, "x", "sha256:0123");
        let err = ns.delete("x").unwrap_err();
        assert!(err.to_string().contains("it contains blobs:"), "{err}");

        clear(&db, schema::CONTENT);
        ns.delete("x").unwrap();
    }

    #[test]
    fn delete_names_each_snapshotter_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ns = db.namespaces();
        ns.create("x", NO_LABELS).unwrap();
        ns.create("x.y", NO_LABELS).unwrap();
        for key in ["a", "b", "c"] {
            put_snapshot(&db, "x", "overlay", key);
            put_snapshot(&db, "x", "overlayfs", key);
        }
        put_snapshot(&db, "x.y", "zfs", "a");
        let err = ns.delete("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace \"x\" must be empty, but it contains \
             snapshots on \"overlay\" snapshotter, snapshots on \"overlayfs\" snapshotter: \
             failed precondition"
        );
    }

    #[test]
    fn delete_ignores_objects_of_prefix_named_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ns = db.namespaces();
        for name in ["a", "a.b", "ab", "0"] {
            ns.create(name, NO_LABELS).unwrap();
        }
        for neighbour in ["a.b", "ab", "0"] {
            put(&db, schema::IMAGES, neighbour, "img");
            put(&db, schema::CONTENT, neighbour, "sha256:1");
            put(&db, schema::CONTAINERS, neighbour, "c");
            put_snapshot(&db, neighbour, "overlayfs", "k");
        }
        ns.delete("a").unwrap();
        assert_eq!(count(&db, schema::IMAGES), 3);
    }

    #[test]
    fn delete_drops_leases_with_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ns = db.namespaces();
        ns.create("x", NO_LABELS).unwrap();
        ns.create("y", NO_LABELS).unwrap();
        put(&db, schema::LEASES, "x", "pull-1");
        put(&db, schema::LEASES, "x", "pull-2");
        put(&db, schema::LEASES, "y", "keep");
        ns.delete("x").unwrap();
        assert_eq!(count(&db, schema::LEASES), 1);
    }

    #[test]
    fn namespaces_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ns = open(dir.path()).namespaces();
            ns.create("default", [("a", "1"), ("b", "2")]).unwrap();
            ns.create("k8s.io", [("c", "3")]).unwrap();
            ns.create("gone", NO_LABELS).unwrap();
            ns.set_label("default", "b", "").unwrap();
            ns.delete("gone").unwrap();
        } // every handle dropped: the file is closed
        let ns = open(dir.path()).namespaces();
        assert_eq!(ns.list().unwrap(), vec!["default", "k8s.io"]);
        assert_eq!(ns.labels("default").unwrap(), labels(&[("a", "1")]));
        assert_eq!(ns.labels("k8s.io").unwrap(), labels(&[("c", "3")]));
    }

    #[test]
    fn concurrent_creates_from_clones() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ns = db.namespaces();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        ns.create(&format!("ns-{t}-{i}"), [("t", t.to_string())])
                            .unwrap();
                    }
                    // Everyone races for the same name; exactly one wins.
                    ns.create("contended", NO_LABELS).is_ok()
                })
            })
            .collect();
        let winners = threads
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1);
        assert_eq!(db.namespaces().list().unwrap().len(), 41);
    }
}
