//! Namespace store benchmarks: create+get of one namespace, and listing, on a
//! database already holding 1000 labelled namespaces.
//!
//! Every create is a durable (fsynced) redb commit, so create+get measures
//! the disk's sync latency as much as berth.

use std::hint::black_box;
use std::time::Duration;

use berth_metadata::Db;
use criterion::{Criterion, criterion_main};

const POPULATION: usize = 1000;

/// A database in a fresh temporary directory, filled with `POPULATION` namespaces.
fn populated() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path().join("meta.db")).expect("open db");
    let namespaces = db.namespaces();
    for i in 0..POPULATION {
        namespaces
            .create(
                &format!("ns-{i:04}"),
                [("owner", "bench"), ("index", &*i.to_string())],
            )
            .expect("create");
    }
    (dir, db)
}

fn namespaces(c: &mut Criterion) {
    let (_dir, db) = populated();
    let store = db.namespaces();

    let mut group = c.benchmark_group("namespaces");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));

    let mut next = 0u64;
    group.bench_function("create+get (1000 present)", |b| {
        b.iter(|| {
            next += 1;
            let name = format!("bench-{next}");
            store.create(&name, [("owner", "bench")]).expect("create");
            black_box(store.get(&name).expect("get"));
        })
    });

    // Creates above added namespaces; list a fixed-size database.
    let (_dir2, db2) = populated();
    let store2 = db2.namespaces();
    group.bench_function("list (1000)", |b| {
        b.iter(|| black_box(store2.list().expect("list")))
    });
    group.bench_function("list_with_labels (1000)", |b| {
        b.iter(|| black_box(store2.list_with_labels().expect("list")))
    });
    group.bench_function("get (1000 present)", |b| {
        b.iter(|| black_box(store2.get("ns-0500").expect("get")))
    });
    group.finish();
}

/// The benchmark group (spelled out: `criterion_group!` emits an undocumented fn).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    namespaces(&mut c);
}

criterion_main!(benches);
