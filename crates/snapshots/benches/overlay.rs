//! Overlay snapshotter hot paths: prepare+commit of one layer, and mounting
//! and reading through a 50-layer chain. Needs root (it mounts).

#![allow(missing_docs, clippy::unwrap_used)]

use std::fs;

use berth_snapshots::mount::MountGuard;
use berth_snapshots::overlay::OverlaySnapshotter;
use berth_snapshots::{Labels, Snapshotter};
use criterion::{Criterion, criterion_group, criterion_main};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-snapshots-bench-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn prepare_commit(c: &mut Criterion) {
    let dir = scratch();
    let sn = OverlaySnapshotter::new(dir.path().join("root")).unwrap();
    let mut parent: Option<String> = None;
    let mut i = 0u64;
    c.bench_function("overlay prepare+commit one layer", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("extract-{i}");
            let name = format!("layer-{i}");
            sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap();
            sn.commit(&name, &key, Labels::new()).unwrap();
            // Chains stay short so mount option length never matters here.
            parent = if i.is_multiple_of(20) {
                None
            } else {
                Some(name)
            };
        });
    });
}

fn deep_chain(c: &mut Criterion) {
    let dir = scratch();
    let sn = OverlaySnapshotter::new(dir.path().join("root")).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..50 {
        let key = format!("extract-{i}");
        let name = format!("layer-{i}");
        let mounts = sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap();
        let target = dir.path().join("mnt");
        fs::create_dir_all(&target).unwrap();
        let m = MountGuard::mount(&mounts, &target).unwrap();
        fs::write(m.target().join(format!("f{i}")), i.to_string()).unwrap();
        m.unmount().unwrap();
        sn.commit(&name, &key, Labels::new()).unwrap();
        parent = Some(name);
    }
    let mounts = sn.view("top", parent.as_deref(), Labels::new()).unwrap();
    let target = dir.path().join("view");
    fs::create_dir_all(&target).unwrap();
    c.bench_function("overlay mount 50-layer view, read 50 files, unmount", |b| {
        b.iter(|| {
            let m = MountGuard::mount(&mounts, &target).unwrap();
            for i in 0..50 {
                let got = fs::read_to_string(m.target().join(format!("f{i}"))).unwrap();
                assert_eq!(got, i.to_string());
            }
            m.unmount().unwrap();
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = prepare_commit, deep_chain
}
criterion_main!(benches);
