//! The local store: the conformance suite, plus what only a filesystem store
//! has (its layout, crashes, other processes, hostile refs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_content::local::LocalStore;
use berth_content::testsuite::data;
use berth_content::{Digest, Error, IngestManager, Labels, Manager, Writer, read_blob};

berth_content::content_suite!(|| {
    let dir = tempfile::tempdir().unwrap();
    (
        berth_content::local::LocalStore::open(dir.path()).unwrap(),
        dir,
    )
});

fn store() -> (LocalStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (LocalStore::open(dir.path()).expect("open store"), dir)
}

#[test]
fn layout_matches_containerd() {
    let (store, dir) = store();
    let root = dir.path();
    let bytes = b"layout";
    let digest = Digest::of(bytes);
    let mut w = store.open_writer("layout-ref", Some(6), None).unwrap();
    w.write(bytes).unwrap();

    let ingest = store.ingest_dir("layout-ref");
    assert_eq!(ingest.parent().unwrap(), root.join("ingest"));
    assert_eq!(
        ingest.file_name().unwrap().to_str().unwrap(),
        Digest::of(b"layout-ref").hex(),
        "named by the sha256 of the ref"
    );
    for name in ["ref", "data", "startedat", "updatedat", "total"] {
        assert!(ingest.join(name).is_file(), "{name}");
    }
    assert_eq!(
        fs::read_to_string(ingest.join("ref")).unwrap(),
        "layout-ref"
    );
    assert_eq!(fs::read_to_string(ingest.join("total")).unwrap(), "6");

    w.commit(6, Some(&digest), Labels::new()).unwrap();
    let blob = root.join("blobs/sha256").join(digest.hex());
    assert_eq!(store.blob_path(&digest), blob);
    assert_eq!(fs::read(&blob).unwrap(), bytes);
    let mode = fs::metadata(&blob).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "blobs are read-only: {mode:o}");
    assert!(!ingest.exists());
    assert_eq!(fs::read_dir(root.join("ingest")).unwrap().count(), 0);
}

#[test]
fn labels_survive_reopening() {
    let (store, dir) = store();
    let digest = Digest::of(b"x");
    let mut w = store.open_writer("x", None, None).unwrap();
    w.write(b"x").unwrap();
    let labels: Labels = [("containerd.io/gc.root".to_owned(), "yes".to_owned())].into();
    w.commit(1, Some(&digest), labels.clone()).unwrap();
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.info(&digest).unwrap().labels, labels);
}

#[test]
fn readers_outlive_delete() {
    let (store, _dir) = store();
    let digest = Digest::of(b"still here");
    let mut w = store.open_writer("r", None, None).unwrap();
    w.write(b"still here").unwrap();
    w.commit(0, Some(&digest), Labels::new()).unwrap();
    let r = store.open_reader(&digest).unwrap();
    assert_eq!(r.path(), store.blob_path(&digest));
    store.delete(&digest).unwrap();
    let mut buf = [0; 4];
    berth_content::ReaderAt::read_exact_at(&r, &mut buf, 6).unwrap();
    assert_eq!(&buf, b"here");
}

#[test]
fn abort_under_an_active_writer_fails_its_commit() {
    let (store, dir) = store();
    let digest = Digest::of(b"doomed");
    let mut w = store.open_writer("doomed", None, None).unwrap();
    w.write(b"doomed").unwrap();
    store.abort("doomed").unwrap();
    let err = w.commit(0, Some(&digest), Labels::new()).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(store.info(&digest).unwrap_err().is_not_found());
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn corrupt_ingest_starts_over() {
    let (store, _dir) = store();
    let mut w = store.open_writer("corrupt", None, None).unwrap();
    w.write(b"abc").unwrap();
    drop(w);
    let ingest = store.ingest_dir("corrupt");
    fs::write(ingest.join("startedat"), "not a time").unwrap();
    assert!(
        store.list_statuses().unwrap().is_empty(),
        "unreadable ingests are skipped"
    );
    let w = store.open_writer("corrupt", None, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
}

/// Runs one test of this binary in a child process, with `envs` set.
fn child(test: &str, envs: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {path:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

const CRASH_ROOT: &str = "BERTH_CONTENT_CRASH_ROOT";
const HOLD_ROOT: &str = "BERTH_CONTENT_HOLD_ROOT";
const CRASH_LEN: usize = 1 << 20;

/// Child half of `resume_after_crash`: writes half a blob, then dies without
/// running any destructor. Does nothing when run as an ordinary test.
#[test]
#[allow(clippy::exit)]
fn crash_child() {
    let Some(root) = std::env::var_os(CRASH_ROOT) else {
        return;
    };
    let store = LocalStore::open(PathBuf::from(root)).unwrap();
    let bytes = data(CRASH_LEN, 42);
    let mut w = store
        .open_writer("crash", Some(CRASH_LEN as u64), None)
        .unwrap();
    w.write(&bytes[..CRASH_LEN / 2]).unwrap();
    std::process::exit(0);
}

#[test]
fn resume_after_crash() {
    let (store, dir) = store();
    let out = child("crash_child", &[(CRASH_ROOT, dir.path())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bytes = data(CRASH_LEN, 42);
    let digest = Digest::of(&bytes);
    assert_eq!(
        store.status("crash").unwrap().offset,
        (CRASH_LEN / 2) as u64
    );
    // The dead process's flock went with it.
    let mut w = store.open_writer("crash", None, Some(&digest)).unwrap();
    assert_eq!(w.status().unwrap().offset, (CRASH_LEN / 2) as u64);
    assert_eq!(w.status().unwrap().total, Some(CRASH_LEN as u64));
    w.write(&bytes[CRASH_LEN / 2..]).unwrap();
    w.commit(CRASH_LEN as u64, Some(&digest), Labels::new())
        .unwrap();
    assert_eq!(read_blob(&store, &digest).unwrap(), bytes);
}

/// Child half of `other_process_holds_the_ref`: holds a writer until told to
/// let go. Does nothing when run as an ordinary test.
#[test]
fn hold_child() {
    let Some(root) = std::env::var_os(HOLD_ROOT) else {
        return;
    };
    let root = PathBuf::from(root);
    let store = LocalStore::open(root.join("store")).unwrap();
    let mut w = store.open_writer("held", None, None).unwrap();
    w.write(b"abc").unwrap();
    fs::write(root.join("locked"), "").unwrap();
    wait_for(&root.join("release"));
}

#[test]
fn other_process_holds_the_ref() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let mut holder = child("hold_child", &[(HOLD_ROOT, dir.path())])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("locked"));

    let err = store.open_writer("held", None, None).unwrap_err();
    assert!(matches!(&err, Error::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );

    fs::write(dir.path().join("release"), "").unwrap();
    assert!(holder.wait().unwrap().success());
    let w = store.open_writer("held", None, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 3);
}

/// Refs are hashed into ingest directory names, so no ref, however hostile,
/// creates, opens or removes anything outside `<root>/ingest`.
#[test]
fn refs_never_escape_the_ingest_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = LocalStore::open(&root).unwrap();
    // Something an escaping ref could reach.
    let outside = dir.path().join("outside");
    fs::write(&outside, "keep me").unwrap();

    const PIECES: &[&str] = &[
        "..", "/", ".", "../", "..\\", "\0", "x", "outside", "ingest", "blobs", "ref", "data", "~",
        "%2e%2e", "\u{202e}", "é", " ", "\n", "*", "sha256:", "lock",
    ];
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        usize::from(rng.to_le_bytes()[0])
    };
    let mut refs: Vec<String> = vec![
        "../../outside".into(),
        "/etc/passwd".into(),
        "..".into(),
        ".".into(),
        "../ingest/../blobs/sha256/x".into(),
        "x".repeat(10_000),
    ];
    for _ in 0..200 {
        let len = 1 + next() % 12;
        refs.push((0..len).map(|_| PIECES[next() % PIECES.len()]).collect());
    }
    refs.sort();
    refs.dedup();

    for r in &refs {
        let dir = store.ingest_dir(r);
        assert_eq!(dir.parent().unwrap(), root.join("ingest"), "{r:?}");
        let mut w = store.open_writer(r, None, None).unwrap();
        w.write(r.as_bytes()).unwrap();
        drop(w);
        assert_eq!(&store.status(r).unwrap().ref_, r);
    }
    let names: Vec<String> = fs::read_dir(root.join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), refs.len());
    assert!(
        names
            .iter()
            .all(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())),
        "{names:?}"
    );
    let mut listed: Vec<String> = store
        .list_statuses()
        .unwrap()
        .into_iter()
        .map(|s| s.ref_)
        .collect();
    listed.sort();
    assert_eq!(listed, refs);

    for r in &refs {
        store.abort(r).unwrap();
    }
    assert_eq!(fs::read_dir(root.join("ingest")).unwrap().count(), 0);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me");
    let mut top: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["outside", "root"]);
}

#[test]
fn digests_never_escape_the_blob_directory() {
    // Blob paths come only from validated digests; malformed ones never parse.
    for bad in [
        "sha256:../../x",
        "sha256/../../x:ab",
        "../sha256:00",
        "sha256:",
    ] {
        assert!(Digest::parse(bad).is_err(), "{bad}");
    }
}
