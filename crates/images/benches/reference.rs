//! Parse + normalise throughput of image references.
//!
//! `cargo bench -p berth-images --bench reference`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use berth_images::reference::Reference;
use criterion::{Criterion, criterion_group, criterion_main};

const INPUTS: &[&str] = &[
    "busybox",
    "user/app:1.2.3",
    "docker.io/library/ubuntu:22.04",
    "localhost:5000/team/service/api:v2",
    "127.0.0.1:5000/a/b:tag",
    "ghcr.io/org/app@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
    "quay.io/coreos/etcd:v3.5.9@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
];

fn parse(c: &mut Criterion) {
    c.bench_function("reference/parse_normalise_7_mixed", |b| {
        b.iter(|| {
            for s in INPUTS {
                let r = Reference::parse(black_box(s)).expect("valid reference");
                black_box(&r);
            }
        })
    });
    c.bench_function("reference/parse_short_name", |b| {
        b.iter(|| Reference::parse(black_box("busybox")).expect("valid reference"))
    });
    c.bench_function("reference/parse_and_display", |b| {
        b.iter(|| {
            let r = Reference::parse(black_box("localhost:5000/team/service/api:v2"))
                .expect("valid reference");
            black_box(r.to_string())
        })
    });
    c.bench_function("reference/reject_uppercase", |b| {
        b.iter(|| Reference::parse(black_box("User/App:latest")).is_err())
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
