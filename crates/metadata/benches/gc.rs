//! Garbage collection benchmarks over 10 000 content records, half of them
//! referenced.
//!
//! The live half is 50 "manifests", each referencing 99 "layers" through
//! `containerd.io/gc.ref.content.l.<i>` labels; 25 manifests are held by a
//! lease, 25 are labelled `containerd.io/gc.root`. The other 5 000 records
//! are referenced by nothing.
//!
//! - `collect 10k (5k garbage)`: one full collection that removes the 5 000
//!   (mark, sweep and its fsynced commit). Each iteration runs on a fresh
//!   copy of a template database file; copying is not timed.
//! - `collect 5k (nothing to remove)`: a collection over the 5 000 live
//!   records alone, the steady state of a daemon that collects after every
//!   deletion.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_metadata::{Db, Labels, Resource};
use criterion::{BatchSize, Criterion, criterion_main};

const MANIFESTS: u32 = 50;
const LAYERS_PER_MANIFEST: u32 = 99;
const GARBAGE: u32 = 5_000;

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

/// Fills a new database at `path` with the records described above.
fn build(path: &Path) -> Db {
    let db = Db::open(path).expect("open db");
    let content = db.content();
    let leases = db.leases();
    leases
        .create("default", "pull", Labels::new())
        .expect("lease");
    let mut n = 0;
    for m in 0..MANIFESTS {
        let mut labels = Labels::new();
        for l in 0..LAYERS_PER_MANIFEST {
            n += 1;
            content
                .add("default", &digest(n), 1 << 20, Labels::new(), None)
                .expect("add layer");
            labels.insert(format!("containerd.io/gc.ref.content.l.{l}"), digest(n));
        }
        n += 1;
        let manifest = digest(n);
        if m % 2 == 0 {
            labels.insert("containerd.io/gc.root".to_owned(), "bench".to_owned());
            content
                .add("default", &manifest, 2048, labels, None)
                .expect("add manifest");
        } else {
            content
                .add("default", &manifest, 2048, labels, Some("pull"))
                .expect("add manifest");
        }
    }
    for _ in 0..GARBAGE {
        n += 1;
        content
            .add("default", &digest(n), 4096, Labels::new(), None)
            .expect("add garbage");
    }
    db
}

fn gc(c: &mut Criterion) {
    let template_dir = tempfile::tempdir().expect("tempdir");
    let template = template_dir.path().join("template.db");
    drop(build(&template));

    let mut group = c.benchmark_group("gc");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("collect 10k (5k garbage)", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("meta.db");
                std::fs::copy(&template, &path).expect("copy template");
                let db = Db::open(&path).expect("open copy");
                (dir, db)
            },
            |(dir, db)| {
                let report = db.collect_garbage(SystemTime::now()).expect("gc");
                assert_eq!(report.removed_content.len(), GARBAGE as usize);
                // Returned, so dropping them is not timed.
                (dir, db, report)
            },
            BatchSize::PerIteration,
        )
    });

    let steady_dir = tempfile::tempdir().expect("tempdir");
    let steady_path = steady_dir.path().join("meta.db");
    std::fs::copy(&template, &steady_path).expect("copy template");
    let steady = Db::open(&steady_path).expect("open copy");
    steady.collect_garbage(SystemTime::now()).expect("first gc");
    group.bench_function("collect 5k (nothing to remove)", |b| {
        b.iter(|| {
            let report = steady.collect_garbage(SystemTime::now()).expect("gc");
            black_box(report)
        })
    });
    group.finish();

    // One report, for the mark/sweep split.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    std::fs::copy(&template, &path).expect("copy template");
    let db = Db::open(&path).expect("open copy");
    let report = db.collect_garbage(SystemTime::now()).expect("gc");
    println!(
        "gc 10k/5k garbage: mark {:?}, sweep {:?} in {} write transactions (longest {:?}), total {:?}",
        report.mark_duration,
        report.sweep_duration,
        report.sweep_transactions,
        report.longest_sweep_transaction,
        report.duration
    );
    // Lease resources are listed here so the lease is not optimised away by a reader.
    black_box(
        db.leases()
            .list_resources("default", "pull")
            .expect("resources")
            .contains(&Resource {
                id: digest(1),
                kind: "content".to_owned(),
            }),
    );
}

/// The benchmark group (spelled out: `criterion_group!` emits an undocumented fn).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    gc(&mut c);
}

criterion_main!(benches);
