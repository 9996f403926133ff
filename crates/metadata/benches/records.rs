//! Image and container record reads and writes, on a database already
//! holding 1000 of each (the size of the `api` benchmark's Containers.List).
//!
//! - `create`: one new record per iteration (a durable, fsynced commit, so
//!   it measures the disk's sync latency as much as berth).
//! - `get`: one record by name/id.
//! - `list`: all 1000 (decode included).
//!
//! `cargo bench -p berth-metadata --bench records`

use std::hint::black_box;
use std::time::Duration;

use berth_metadata::{AnyValue, ContainerRecord, Db, Labels, Runtime, Target};
use criterion::{Criterion, criterion_main};

const POPULATION: usize = 1000;
const NS: &str = "default";

/// A container record like `ctr run` makes: runtime, a ~2.5 KB spec, a snapshot.
fn container(id: &str) -> ContainerRecord {
    let mut spec =
        String::from("{\"ociVersion\":\"1.1.0\",\"process\":{\"args\":[\"sh\"],\"env\":[");
    spec.push_str(
        &"\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",".repeat(30),
    );
    spec.push_str("\"TERM=xterm\"]}}");
    let mut c = ContainerRecord::default();
    c.id = id.to_owned();
    c.image = "docker.io/library/busybox:latest".to_owned();
    c.runtime = Runtime {
        name: "io.containerd.runc.v2".to_owned(),
        options: None,
    };
    c.spec = Some(AnyValue {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned(),
        value: spec.into_bytes(),
    });
    c.snapshotter = "overlayfs".to_owned();
    c.snapshot_key = id.to_owned();
    c.labels.insert(
        "io.containerd.image.config.stop-signal".to_owned(),
        "SIGTERM".to_owned(),
    );
    c
}

fn target(n: usize) -> Target {
    Target {
        media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
        digest: format!("sha256:{n:064x}"),
        size: 1234,
        annotations: Default::default(),
    }
}

/// A database in a fresh temporary directory with `POPULATION` images and containers.
fn populated() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path().join("meta.db")).expect("open db");
    for i in 0..POPULATION {
        db.images()
            .create(
                NS,
                &format!("docker.io/library/image-{i:04}:latest"),
                target(i),
                Labels::new(),
            )
            .expect("create image");
        db.containers()
            .create(NS, container(&format!("c-{i:04}")))
            .expect("create container");
    }
    (dir, db)
}

fn records(c: &mut Criterion) {
    let (_dir, db) = populated();
    let mut group = c.benchmark_group("records");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));

    let images = db.images();
    let mut next = 0_usize;
    group.bench_function("image create (1000 present)", |b| {
        b.iter(|| {
            next += 1;
            images
                .create(
                    NS,
                    &format!("bench/new-{next}:latest"),
                    target(next),
                    Labels::new(),
                )
                .expect("create")
        })
    });
    group.bench_function("image get (1000 present)", |b| {
        b.iter(|| black_box(images.get(NS, "docker.io/library/image-0500:latest")).expect("get"))
    });

    let containers = db.containers();
    let mut next = 0_usize;
    group.bench_function("container create (1000 present)", |b| {
        b.iter(|| {
            next += 1;
            containers
                .create(NS, container(&format!("new-{next}")))
                .expect("create")
        })
    });
    group.bench_function("container get (1000 present)", |b| {
        b.iter(|| black_box(containers.get(NS, "c-0500")).expect("get"))
    });
    group.finish();

    // Lists over a database the creates above did not grow.
    let (_dir2, db2) = populated();
    let mut group = c.benchmark_group("records");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("image list (1000)", |b| {
        b.iter(|| black_box(db2.images().list(NS).expect("list")))
    });
    group.bench_function("container list (1000)", |b| {
        b.iter(|| black_box(db2.containers().list(NS).expect("list")))
    });
    group.finish();
}

/// The benchmark group (spelled out: `criterion_group!` emits an undocumented fn).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    records(&mut c);
}

criterion_main!(benches);
