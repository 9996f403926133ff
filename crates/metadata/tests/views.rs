//! The namespaced views against the library conformance suites (content
//! over a local store; snapshots over the native and overlayfs drivers,
//! mounting for real), plus what only a namespaced view has: isolation
//! between namespaces and recording into leases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_content::local::LocalStore;
use berth_content::{Digest, IngestManager, Ingester, Labels, Manager, Provider, Writer};
use berth_metadata::leases::Resource;
use berth_metadata::{Db, MetaSnapshotter, NamespacedContent, NamespacedSnapshotter};
use berth_snapshots::Snapshotter;

/// A local store and a DB in one temporary directory.
fn content_in(dir: &Path) -> (Arc<LocalStore>, Db) {
    let store = Arc::new(LocalStore::open(dir.join("content")).unwrap());
    let db = Db::open(dir.join("meta.db")).unwrap();
    (store, db)
}

berth_content::content_suite!(|| {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = content_in(dir.path());
    (NamespacedContent::new(store, db, "suite"), dir)
});

/// Namespace `ns` of a driver opened by `driver` on `root`, its DB beside the root.
fn namespaced(
    root: &Path,
    name: &str,
    driver: Arc<dyn Snapshotter>,
) -> berth_snapshots::Result<NamespacedSnapshotter> {
    let db = Db::open(root.with_file_name("meta.db"))
        .map_err(|e| berth_snapshots::Error::io(root, std::io::Error::other(e.to_string())))?;
    Ok(Arc::new(MetaSnapshotter::new(db, name, driver)).namespace("suite"))
}

berth_snapshots::snapshotter_conformance!(native_view, |root: &Path| {
    let driver = berth_snapshots::native::NativeSnapshotter::new(root)?;
    super::namespaced(root, "native", std::sync::Arc::new(driver))
});

berth_snapshots::snapshotter_conformance!(
    overlay_view,
    |root: &Path| {
        let driver = berth_snapshots::overlay::OverlaySnapshotter::new(root)?;
        super::namespaced(root, "overlayfs", std::sync::Arc::new(driver))
    },
    requires = "overlayfs"
);

fn commit(w: Box<dyn Writer>, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    let mut w = w;
    w.write(data).unwrap();
    w.commit(data.len() as u64, Some(&digest), Labels::new())
        .unwrap();
    digest
}

fn resources(db: &Db, ns: &str, lease: &str) -> Vec<Resource> {
    db.leases().list_resources(ns, lease).unwrap()
}

#[test]
fn content_is_namespaced() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = content_in(dir.path());
    let a = NamespacedContent::new(store.clone(), db.clone(), "a");
    let b = NamespacedContent::new(store.clone(), db.clone(), "b");
    let data = b"only in a";
    let digest = commit(a.writer("ref", None, None).unwrap(), data);

    // On disk once, but b holds no record: NotFound everywhere.
    assert!(b.reader_at(&digest).unwrap_err().is_not_found());
    assert!(b.info(&digest).unwrap_err().is_not_found());
    assert!(b.delete(&digest).unwrap_err().is_not_found());
    assert!(b.list().unwrap().is_empty());
    assert_eq!(a.list().unwrap().len(), 1);

    // Ingests are per namespace too, under the namespace's own refs.
    let mut w = b.writer("ref", None, None).unwrap();
    w.write(b"half").unwrap();
    drop(w);
    assert!(a.status("ref").unwrap_err().is_not_found());
    let statuses = b.list_statuses().unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].ref_, "ref");
    assert!(a.list_statuses().unwrap().is_empty());
    b.abort("ref").unwrap();

    // Writing a blob another namespace stored shares it: AlreadyExists, recorded.
    let err = b.writer("again", None, Some(&digest)).unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(b.info(&digest).unwrap().size, data.len() as u64);
    assert_eq!(berth_content::read_blob(&b, &digest).unwrap(), data);
    assert!(b.list_statuses().unwrap().is_empty());

    // Deleting removes the namespace's record only; a's copy stays readable.
    b.delete(&digest).unwrap();
    assert!(b.reader_at(&digest).unwrap_err().is_not_found());
    assert_eq!(berth_content::read_blob(&a, &digest).unwrap(), data);
}

#[test]
fn content_commits_into_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = content_in(dir.path());
    db.leases().create("ns", "pull", BTreeMap::new()).unwrap();
    let view = NamespacedContent::new(store, db.clone(), "ns").with_lease(Some("pull".into()));

    // The lease holds the ingest while it is written...
    let mut w = view.writer("layer", None, None).unwrap();
    w.write(b"leased").unwrap();
    let kinds: Vec<String> = resources(&db, "ns", "pull")
        .into_iter()
        .map(|r| format!("{}:{}", r.kind, r.id))
        .collect();
    assert_eq!(kinds, ["ingests:layer"]);
    // ...and the blob, not the ingest, once committed.
    let digest = Digest::of(b"leased");
    w.commit(0, Some(&digest), Labels::new()).unwrap();
    let held = resources(&db, "ns", "pull");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].kind, berth_metadata::leases::CONTENT);
    assert_eq!(held[0].id, digest.to_string());

    // add_labels labels the record and keeps it in the lease.
    let labels: Labels = [(
        "containerd.io/gc.ref.content.0".to_string(),
        digest.to_string(),
    )]
    .into_iter()
    .collect();
    view.add_labels(&digest, 6, labels.clone()).unwrap();
    assert_eq!(view.info(&digest).unwrap().labels, labels);

    // Writing to a lease that does not exist fails and leaves no ingest.
    let gone = view.clone().with_lease(Some("missing".into()));
    assert!(gone.writer("x", None, None).unwrap_err().is_not_found());
    assert!(gone.status("x").unwrap_err().is_not_found());
}

/// Native driver and two namespaces of it in `dir`.
fn two_namespaces(dir: &Path) -> (Db, Arc<MetaSnapshotter>) {
    let db = Db::open(dir.join("meta.db")).unwrap();
    let driver = berth_snapshots::native::NativeSnapshotter::new(dir.join("native")).unwrap();
    let sn = Arc::new(MetaSnapshotter::new(db.clone(), "native", Arc::new(driver)));
    (db, sn)
}

fn driver_names(sn: &MetaSnapshotter) -> Vec<String> {
    let mut names = Vec::new();
    sn.driver()
        .walk(&mut |i| {
            names.push(i.name.clone());
            Ok(())
        })
        .unwrap();
    names.sort();
    names
}

#[test]
fn snapshots_are_namespaced() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sn) = two_namespaces(dir.path());
    let a = sn.namespace("a");
    let b = sn.namespace("b");
    a.prepare("k", None, Labels::new()).unwrap();
    assert!(b.stat("k").unwrap_err().is_not_found());
    assert!(b.mounts("k").unwrap_err().is_not_found());
    assert!(b.remove("k").unwrap_err().is_not_found());
    // The same key in another namespace is another snapshot.
    b.prepare("k", None, Labels::new()).unwrap();
    a.commit("layer", "k", Labels::new()).unwrap();
    assert!(
        b.prepare("c", Some("layer"), Labels::new())
            .unwrap_err()
            .is_not_found()
    );
    let names = driver_names(&sn);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("a/")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("b/")), "{names:?}");
}

#[test]
fn snapshot_removal_and_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, sn) = two_namespaces(dir.path());
    let a = sn.namespace("a");
    a.prepare("x", None, Labels::new()).unwrap();
    a.commit("X", "x", Labels::new()).unwrap();
    a.prepare("y", Some("X"), Labels::new()).unwrap();
    // The record goes at once, the driver's snapshot with remove_pending.
    a.remove("y").unwrap();
    a.remove("X").unwrap();
    assert!(a.stat("X").unwrap_err().is_not_found());
    assert_eq!(driver_names(&sn).len(), 2);
    assert_eq!(sn.remove_pending(), 2);
    assert!(driver_names(&sn).is_empty());

    // Driver snapshots no record refers to go with a reconcile.
    sn.driver().prepare("stray", None, Labels::new()).unwrap();
    a.prepare("kept", None, Labels::new()).unwrap();
    assert_eq!(sn.reconcile().unwrap(), 1);
    assert_eq!(driver_names(&sn).len(), 1);
    assert!(a.stat("kept").is_ok());
}

#[test]
fn snapshots_are_held_by_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sn) = two_namespaces(dir.path());
    db.leases().create("a", "l", BTreeMap::new()).unwrap();
    let a = sn.namespace("a").with_lease(Some("l".into()));
    a.prepare("work", None, Labels::new()).unwrap();
    a.commit("done", "work", Labels::new()).unwrap();
    let mut held: Vec<String> = resources(&db, "a", "l")
        .into_iter()
        .map(|r| format!("{}:{}", r.kind, r.id))
        .collect();
    held.sort();
    assert!(
        held.contains(&"snapshots/native:done".to_string()),
        "{held:?}"
    );
    // A lease that does not exist: nothing is made, in the DB or the driver.
    let gone = sn.namespace("a").with_lease(Some("missing".into()));
    assert!(
        gone.prepare("z", None, Labels::new())
            .unwrap_err()
            .is_not_found()
    );
    assert!(a.stat("z").unwrap_err().is_not_found());
    assert_eq!(driver_names(&sn).len(), 1);
}

#[test]
fn relabelling_writers_leave_ingests_out_of_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = content_in(dir.path());
    db.leases().create("ns", "pull", BTreeMap::new()).unwrap();
    let view = NamespacedContent::new(store.clone(), db.clone(), "ns")
        .with_lease(Some("pull".into()))
        .relabelled_after_commit();
    let mut w = view.writer("layer", None, None).unwrap();
    w.write(b"transfer").unwrap();
    assert!(resources(&db, "ns", "pull").is_empty());
    let digest = Digest::of(b"transfer");
    w.commit(0, Some(&digest), Labels::new()).unwrap();
    let labels: Labels = [("k".to_string(), "v".to_string())].into_iter().collect();
    view.add_labels(&digest, 8, labels.clone()).unwrap();
    assert_eq!(view.info(&digest).unwrap().labels, labels);
    let held = resources(&db, "ns", "pull");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].id, digest.to_string());

    // A blob another namespace stored is shared: AlreadyExists, recorded.
    let other = NamespacedContent::new(store, db.clone(), "other")
        .with_lease(None)
        .relabelled_after_commit();
    let err = other.writer("layer", None, Some(&digest)).unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(other.info(&digest).unwrap().size, 8);
}
