//! Layer apply on real directories: contents, whiteouts in both modes, and
//! a corpus of malicious layers that must never write outside the root.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use berth_images::archive::{ApplyError, Compression, Whiteouts, apply};

/// One entry to put in a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A tar stream of `entries`, built with raw headers so hostile names survive.
fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            E::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name_literal(t).unwrap();
                (n, b"")
            }
            E::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_link_name_literal(t).unwrap();
                (n, b"")
            }
        };
        // Raw name bytes: no normalisation by the builder.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A scratch dir with `root/` inside and a canary next to it.
fn sandbox() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(dir.path().join("canary"), "untouched").unwrap();
    (dir, root)
}

/// Every path under `dir` except `root/...`: what a layer must never change.
fn outside(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "root")
        .collect();
    out.sort();
    out
}

#[test]
fn files_links_and_diff_id() {
    let (_d, root) = sandbox();
    let tar = layer(&[
        E::Dir("etc"),
        E::File("etc/hosts", b"127.0.0.1 localhost\n"),
        E::Symlink("etc/link", "hosts"),
        E::Hardlink("etc/hard", "etc/hosts"),
        E::File("./deep/er/file", b"x"),
    ]);
    let expected = format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(&tar));
    let stats = apply(
        &root,
        gzip(&tar).as_slice(),
        Compression::Gzip,
        Whiteouts::Remove,
        Some(&expected),
    )
    .unwrap();
    assert_eq!(stats.diff_id, expected);
    assert_eq!(stats.size, tar.len() as u64);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/link")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("etc/hard")).unwrap().ino(),
        std::fs::metadata(root.join("etc/hosts")).unwrap().ino()
    );
    assert_eq!(std::fs::read(root.join("deep/er/file")).unwrap(), b"x");
    assert_eq!(
        std::fs::metadata(root.join("etc/hosts")).unwrap().mtime(),
        1_700_000_000
    );
}

#[test]
fn a_hard_link_header_sets_its_inode_mode_and_owner() {
    // containerd lchowns and chmods every entry, hard links included, so a
    // link's header mode and owner end up on the file it shares an inode
    // with (how `docker save` and busybox images mark applets executable).
    let (_d, root) = sandbox();
    let mut b = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_mode(0o644);
    file.set_size(2);
    b.append_data(&mut file, "bin/tool", &b"hi"[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_mode(0o755);
    link.set_uid(1000);
    link.set_gid(1001);
    link.set_size(0);
    b.append_link(&mut link, "bin/alias", "bin/tool").unwrap();
    let tar = b.into_inner().unwrap();
    apply(
        &root,
        tar.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        None,
    )
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(
        meta.ino(),
        std::fs::metadata(root.join("bin/alias")).unwrap().ino()
    );
}

#[test]
fn zstd_layers_apply_and_keep_the_uncompressed_diff_id() {
    let (_dir, root) = sandbox();
    let tar = layer(&[E::Dir("etc"), E::File("etc/os-release", b"ID=berth\n")]);
    let expected = format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(&tar));
    let stats = apply(
        &root,
        zstd(&tar).as_slice(),
        Compression::Zstd,
        Whiteouts::Remove,
        Some(&expected),
    )
    .unwrap();
    assert_eq!(stats.diff_id, expected);
    assert_eq!(
        std::fs::read(root.join("etc/os-release")).unwrap(),
        b"ID=berth\n"
    );
}

#[test]
fn whiteouts_remove_and_opaque_dirs_empty() {
    let (_d, root) = sandbox();
    let base = layer(&[
        E::Dir("data"),
        E::File("data/kept", b"k"),
        E::File("data/gone", b"g"),
        E::Dir("opq"),
        E::File("opq/old", b"o"),
    ]);
    apply(
        &root,
        base.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        None,
    )
    .unwrap();
    let top = layer(&[
        E::File("data/.wh.gone", b""),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new", b"n"),
    ]);
    apply(
        &root,
        top.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        None,
    )
    .unwrap();
    assert!(root.join("data/kept").exists());
    assert!(!root.join("data/gone").exists());
    assert!(!root.join("opq/old").exists() && root.join("opq/new").exists());
    assert!(!root.join("data/.wh.gone").exists());
}

/// Mounts (and unmounts) an overlay of empty directories under `dir`.
fn overlay_probe(dir: &std::path::Path) -> Result<(), String> {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("\toverlay"))
    {
        return Err("the kernel has no overlay filesystem".into());
    }
    let [lower, upper, work, merged] = ["p-lower", "p-upper", "p-work", "p-merged"].map(|n| {
        let p = dir.join(n);
        std::fs::create_dir(&p).unwrap();
        p
    });
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let out = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let _ = std::process::Command::new("umount").arg(&merged).status();
    Ok(())
}

/// Reports a skipped test: printed, and recorded where `cargo xtask test`
/// collects skips (`BERTH_SKIP_LOG`) so CI shows it.
fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP: berth-images::archive_apply {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

#[test]
fn overlay_whiteouts_hide_lower_files_in_a_real_mount() {
    let dir = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|n| {
        let p = dir.path().join(n);
        std::fs::create_dir(&p).unwrap();
        p
    });
    let base = layer(&[
        E::File("gone", b"g"),
        E::File("kept", b"k"),
        E::Dir("opq"),
        E::File("opq/old", b"o"),
    ]);
    apply(
        &lower,
        base.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        None,
    )
    .unwrap();
    let top = layer(&[
        E::File(".wh.gone", b""),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new", b"n"),
    ]);
    apply(
        &upper,
        top.as_slice(),
        Compression::None,
        Whiteouts::Overlay,
        None,
    )
    .unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    // Skip only when this kernel (or these privileges) cannot mount an
    // overlay at all: probed on empty directories nothing of ours wrote.
    if let Err(why) = overlay_probe(dir.path()) {
        skip(&format!("cannot mount overlayfs here: {why}"));
        return;
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        mounted.status.success(),
        "overlayfs works here, but not on the applied layers: {}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let seen = (
        merged.join("gone").exists(),
        merged.join("kept").exists(),
        merged.join("opq/old").exists(),
        merged.join("opq/new").exists(),
    );
    let _ = std::process::Command::new("umount").arg(&merged).status();
    assert_eq!(seen, (false, true, false, true));
}

#[test]
fn malicious_layers_never_write_outside_the_root() {
    let cases: Vec<(&str, Vec<u8>, Compression)> = vec![
        (
            "parent traversal",
            layer(&[E::File("../escape", b"x")]),
            Compression::None,
        ),
        (
            "nested traversal",
            layer(&[E::File("a/../../escape", b"x")]),
            Compression::None,
        ),
        (
            "absolute path",
            layer(&[E::File("/canary", b"pwned")]),
            Compression::None,
        ),
        (
            "symlink to / then write through it",
            layer(&[E::Symlink("evil", "/"), E::File("evil/canary", b"pwned")]),
            Compression::None,
        ),
        (
            "symlink to .. then write through it",
            layer(&[E::Symlink("up", "../.."), E::File("up/canary", b"pwned")]),
            Compression::None,
        ),
        (
            "hardlink to an absolute outside file",
            layer(&[E::Hardlink("h", "/etc/passwd")]),
            Compression::None,
        ),
        (
            "hardlink through a symlink",
            layer(&[E::Symlink("s", "/etc"), E::Hardlink("h", "s/passwd")]),
            Compression::None,
        ),
        (
            "hardlink to ../",
            layer(&[E::Hardlink("h", "../canary")]),
            Compression::None,
        ),
        (
            "truncated gzip",
            gzip(&layer(&[E::File("f", &[7_u8; 100_000])]))[..500].to_vec(),
            Compression::Gzip,
        ),
        (
            "truncated zstd",
            zstd(&layer(&[E::File("f", &[7_u8; 100_000])]))[..40].to_vec(),
            Compression::Zstd,
        ),
        (
            "garbage",
            b"this is not a tar stream at all, not even close..........".repeat(20),
            Compression::None,
        ),
    ];
    for (what, data, compression) in cases {
        let (dir, root) = sandbox();
        let before = outside(dir.path());
        let result = apply(&root, data.as_slice(), compression, Whiteouts::Remove, None);
        assert_eq!(
            outside(dir.path()),
            before,
            "{what}: something appeared outside the root"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("canary")).unwrap(),
            "untouched",
            "{what}"
        );
        match (what, &result) {
            ("parent traversal" | "nested traversal", Err(ApplyError::BadPath { .. })) => {}
            ("absolute path", Ok(_)) => {
                // Contained: it lands inside the root.
                assert_eq!(
                    std::fs::read_to_string(root.join("canary")).unwrap(),
                    "pwned"
                );
            }
            (
                "symlink to / then write through it" | "symlink to .. then write through it",
                Ok(_),
            ) => {
                assert_eq!(
                    std::fs::read_to_string(root.join("canary")).unwrap(),
                    "pwned",
                    "{what}: contained in the root"
                );
            }
            (
                "hardlink to an absolute outside file" | "hardlink through a symlink",
                Err(ApplyError::Io { .. }),
            ) => {
                // /etc/passwd resolves to <root>/etc/passwd, which does not exist.
            }
            ("hardlink to ../", Err(ApplyError::BadPath { .. })) => {}
            (
                "truncated gzip" | "truncated zstd" | "garbage",
                Err(ApplyError::Malformed { .. }),
            ) => {}
            _ => panic!("{what}: unexpected result {result:?}"),
        }
        if let Err(e) = &result {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn oversized_pax_header_is_refused() {
    // A PAX header with 2 MiB of real records (containerd's Go reader
    // refuses more than 1 MiB), then an ordinary file.
    let record = {
        let value = "x".repeat(2 << 20);
        let body = format!("comment={value}\n");
        // "<len> <body>": the length counts itself.
        let mut len = body.len() + 2;
        while format!("{len} {body}").len() != len {
            len = format!("{len} {body}").len();
        }
        format!("{len} {body}").into_bytes()
    };
    let mut raw = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(record.len() as u64);
    h.set_path("PaxHeader").unwrap();
    h.set_cksum();
    raw.extend_from_slice(h.as_bytes());
    raw.extend_from_slice(&record);
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    let mut f = tar::Header::new_ustar();
    f.set_entry_type(tar::EntryType::Regular);
    f.set_size(1);
    f.set_mode(0o644);
    f.set_path("f").unwrap();
    f.set_cksum();
    raw.extend_from_slice(f.as_bytes());
    raw.extend_from_slice(b"x");
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let (_d, root) = sandbox();
    let e = apply(
        &root,
        raw.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(!root.join("f").exists());
}

#[test]
fn diff_id_mismatch_is_an_error() {
    let (_d, root) = sandbox();
    let tar = layer(&[E::File("f", b"data")]);
    let e = apply(
        &root,
        tar.as_slice(),
        Compression::None,
        Whiteouts::Remove,
        Some("sha256:0000"),
    )
    .unwrap_err();
    assert!(matches!(e, ApplyError::DiffIdMismatch { .. }), "{e}");
    assert!(e.to_string().contains("expected sha256:0000"), "{e}");
}
