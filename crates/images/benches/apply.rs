//! Layer apply: a ~20 MiB tar of 5000 small files (4 KiB each, in 50
//! directories) applied into a fresh temporary directory, plain and
//! gzip-compressed. The directory is made and removed outside the timing.
//!
//! `cargo bench -p berth-images --bench apply`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use berth_images::archive::{Compression, Whiteouts, apply};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const DIRS: usize = 50;
const FILES_PER_DIR: usize = 100;
const FILE_SIZE: usize = 4096;

/// The layer as an uncompressed tar.
fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut data = vec![0_u8; FILE_SIZE];
    for d in 0..DIRS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("usr/share/d{d:02}/"), std::io::empty())
            .expect("dir entry");
        for f in 0..FILES_PER_DIR {
            for chunk in data.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(FILE_SIZE as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(
                &mut h,
                format!("usr/share/d{d:02}/f{f:03}"),
                data.as_slice(),
            )
            .expect("file entry");
        }
    }
    b.into_inner().expect("finish tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn bench_apply(c: &mut Criterion) {
    let tar = layer();
    let tgz = gzip(&tar);
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut group = c.benchmark_group("apply_5000_files");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, bytes, compression) in [
        ("tar", &tar, Compression::None),
        ("tar_gzip", &tgz, Compression::Gzip),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let root = tempfile::tempdir_in(scratch.path()).expect("root");
                    let start = Instant::now();
                    let stats = apply(
                        root.path(),
                        bytes.as_slice(),
                        compression,
                        Whiteouts::Remove,
                        None,
                    )
                    .expect("apply");
                    total += start.elapsed();
                    assert_eq!(stats.entries, (DIRS * (FILES_PER_DIR + 1)) as u64);
                    drop(root);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
