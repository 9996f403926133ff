//! `write_diff` then `apply`: applying the diff of lower → upper onto a copy
//! of lower gives upper again (files, deletions, links, modes).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_images::archive::{Compression, Whiteouts, apply, write_diff, write_layer};

fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "dir".to_string()
            } else {
                format!("{:?}", fs::read(&p).unwrap())
            };
            out.push(format!("{rel} {:o} {what}", m.mode() & 0o7777));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn copy(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn diff_then_apply_reproduces_the_upper_tree() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, target) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("target"),
    );
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
    fs::write(lower.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(lower.join("etc/conf.d/old"), "old").unwrap();
    fs::write(lower.join("keep"), "same").unwrap();
    fs::create_dir(lower.join("gone-dir")).unwrap();
    fs::write(lower.join("gone-dir/x"), "x").unwrap();
    copy(&lower, &upper);
    // Changes: edit, add, delete a file and a directory, chmod, symlink, hard link.
    fs::write(upper.join("etc/hosts"), "127.0.0.1 localhost berth\n").unwrap();
    fs::remove_file(upper.join("etc/conf.d/old")).unwrap();
    fs::remove_dir_all(upper.join("gone-dir")).unwrap();
    fs::create_dir_all(upper.join("new/deep")).unwrap();
    fs::write(upper.join("new/deep/file"), "fresh").unwrap();
    fs::hard_link(upper.join("new/deep/file"), upper.join("new/link")).unwrap();
    std::os::unix::fs::symlink("../etc/hosts", upper.join("new/sym")).unwrap();
    fs::set_permissions(upper.join("keep"), fs::Permissions::from_mode(0o600)).unwrap();

    let mut layer = Vec::new();
    let stats = write_diff(&lower, &upper, &mut layer).unwrap();
    assert!(stats.diff_id.starts_with("sha256:") && stats.size == layer.len() as u64);

    copy(&lower, &target);
    let applied = apply(
        &target,
        layer.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        Some(&stats.diff_id),
    )
    .unwrap();
    assert_eq!(applied.diff_id, stats.diff_id);
    assert_eq!(tree(&target), tree(&upper));
    let (a, b) = (
        fs::metadata(target.join("new/deep/file")).unwrap(),
        fs::metadata(target.join("new/link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link survives");

    // Unchanged files are not in the layer (parent directories of changes are).
    let names: Vec<String> = tar::Archive::new(layer.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with("conf.d/old")),
        "{names:?}"
    );
    assert!(
        names.contains(&"keep".to_string()),
        "a chmod is a change: {names:?}"
    );
    assert!(
        names.contains(&"etc/conf.d/.wh.old".to_string())
            && names.contains(&".wh.gone-dir".to_string()),
        "{names:?}"
    );
    // Directory entries are named with a trailing slash, as containerd
    // writes them (the raw header bytes, not the tar crate's parsed path).
    let raw: Vec<(tar::EntryType, String)> = tar::Archive::new(layer.as_slice())
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (e.header().entry_type(), name)
        })
        .collect();
    let dirs: Vec<&String> = raw
        .iter()
        .filter(|(t, _)| t.is_dir())
        .map(|(_, n)| n)
        .collect();
    assert!(!dirs.is_empty(), "{raw:?}");
    assert!(dirs.iter().all(|n| n.ends_with('/')), "{dirs:?}");
    assert!(dirs.contains(&&"etc/".to_string()), "{dirs:?}");
}

#[test]
fn identical_trees_give_an_empty_layer() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("a")).unwrap();
    fs::write(t.path().join("a/f"), "x").unwrap();
    let mut layer = Vec::new();
    let stats = write_diff(&t.path().join("a"), &t.path().join("a"), &mut layer).unwrap();
    assert_eq!(stats.entries, 0);
}

#[test]
fn compressed_layers_apply_back_in_every_compression() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, target) = (
            t.path().join("lower"),
            t.path().join("upper"),
            t.path().join("target"),
        );
        for d in [&lower, &upper, &target] {
            fs::create_dir(d).unwrap();
        }
        fs::write(lower.join("gone"), b"old").unwrap();
        fs::write(upper.join("new"), vec![42_u8; 200_000]).unwrap();
        let mut layer = Vec::new();
        let stats = write_layer(&lower, &upper, &mut layer, compression).unwrap();
        assert!(
            (layer.len() as u64) < stats.size,
            "{compression:?} compresses"
        );
        copy(&lower, &target);
        let applied = apply(
            &target,
            layer.as_slice(),
            compression,
            Whiteouts::Remove,
            Some(&stats.diff_id),
        )
        .unwrap();
        assert_eq!(applied.diff_id, stats.diff_id, "{compression:?}");
        assert_eq!(tree(&target), tree(&upper), "{compression:?}");
    }
}
