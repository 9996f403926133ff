//! Ingest throughput: 64 MiB through `Writer` + `commit` of the local store,
//! against plain `sha2::Sha256` over the same bytes in memory.
//!
//! The project's goal is ingest at ≥ 0.9× the plain hash: the store's own
//! work (file writes, fsync, rename) should hide behind hashing. The store
//! lives under Cargo's target tmp directory, so it measures the disk the
//! build uses rather than a tmpfs `/tmp`.
//!
//! `cargo bench -p berth-content --bench ingest -- --measurement-time 5`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_content::local::LocalStore;
use berth_content::{Digest, IngestManager, Labels, Manager, Writer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest as _;

const SIZE: usize = 64 << 20;
/// Chunk size of each `write`, as a gRPC stream or HTTP body would deliver
/// (containerd copies with 1 MiB buffers).
const CHUNK: usize = 1 << 20;

fn payload() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..SIZE / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn bench_ingest(c: &mut Criterion) {
    let data = payload();
    let digest = Digest::of(&data);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open store");

    let mut group = c.benchmark_group("ingest_64MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);

    group.bench_function("sha256_in_memory", |b| {
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            for chunk in data.chunks(CHUNK) {
                h.update(chunk);
            }
            black_box(h.finalize())
        })
    });

    group.bench_function("writer_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: the previous iteration's blob must go, or commit
                // would find it and stop short with AlreadyExists.
                let _ = store.delete(&digest);
                let start = Instant::now();
                let mut w = store
                    .open_writer("bench", Some(SIZE as u64), Some(&digest))
                    .expect("writer");
                for chunk in data.chunks(CHUNK) {
                    w.write(chunk).expect("write");
                }
                w.commit(SIZE as u64, Some(&digest), Labels::new())
                    .expect("commit");
                total += start.elapsed();
            }
            total
        })
    });

    // As the content API's Write does: a digest in every response.
    group.bench_function("writer_commit_digest_per_chunk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = store.delete(&digest);
                let start = Instant::now();
                let mut w = store
                    .open_writer("bench-api", Some(SIZE as u64), Some(&digest))
                    .expect("writer");
                for chunk in data.chunks(CHUNK) {
                    w.write(chunk).expect("write");
                    black_box(w.digest());
                }
                w.commit(SIZE as u64, Some(&digest), Labels::new())
                    .expect("commit");
                total += start.elapsed();
            }
            total
        })
    });

    // The same without commit (no fsync, no rename): where the time goes.
    group.bench_function("writer_write_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = store.delete(&digest);
                let start = Instant::now();
                let mut w = store
                    .open_writer("bench-write", Some(SIZE as u64), Some(&digest))
                    .expect("writer");
                for chunk in data.chunks(CHUNK) {
                    w.write(chunk).expect("write");
                }
                black_box(w.digest());
                total += start.elapsed();
                drop(w);
                store.abort("bench-write").expect("abort");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
