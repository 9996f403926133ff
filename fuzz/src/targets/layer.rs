//! Layer tar application into a temporary root, asserting containment:
//! whatever the tar says, nothing outside the root changes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_images::archive::{Compression, Whiteouts, apply};

use super::Def;
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "layer",
            default_iters: 800,
            dictionary: &[
                "../",
                "/",
                ".wh.",
                ".wh..wh..opq",
                "..",
                "/etc/",
                "../outside",
                "root/",
                "\0",
            ],
            max_len: 64 << 10,
        },
        check,
    }
}

/// Recomputes the checksum of every block that looks like a ustar header, so
/// that mutations reach the code behind the checksum check.
fn fix_checksums(data: &mut [u8]) {
    for block in data.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .expect("read temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn check(data: &[u8]) {
    let mut data = data.to_vec();
    fix_checksums(&mut data);
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).expect("root");
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"untouched").expect("outside file");
    fs::create_dir(tmp.path().join("outsidedir")).expect("outside dir");
    let whiteouts = if data.len().is_multiple_of(2) {
        Whiteouts::Remove
    } else {
        Whiteouts::Overlay
    };
    let compression = if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else {
        Compression::None
    };
    let _ = apply(&root, data.as_slice(), compression, whiteouts, None);

    assert_eq!(names(tmp.path()), ["outside", "outsidedir", "root"]);
    assert_eq!(fs::read(&outside).expect("outside"), b"untouched");
    assert_eq!(fs::metadata(&outside).expect("outside").nlink(), 1);
    assert!(names(&tmp.path().join("outsidedir")).is_empty());
    assert!(
        fs::symlink_metadata(&root).expect("root").is_dir(),
        "the root was replaced"
    );
    for host in ["/etc/through", "/escape", "/abs"] {
        assert!(
            fs::symlink_metadata(host).is_err(),
            "{host} created outside"
        );
    }
}
