//! Content store and leases through Debian's `ctr` and `berthctl`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_tests::{Daemon, ctr_bin, fails, ok};

/// `sha256:<hex>` of `data`, computed by coreutils so the test does not
/// trust berth's own hashing.
fn sha256(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(data))
        .transpose()?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    ))
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn blob_path(d: &Daemon, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    d.root
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(hex)
}

/// Runs `ctr content ingest` (or berthctl) with `input` on stdin.
fn ingest(
    d: &Daemon,
    tool: &str,
    extra: &[&str],
    reference: &str,
    input: &[u8],
) -> Result<std::process::Output> {
    let bin = if tool == "ctr" {
        ctr_bin()?
    } else {
        berth_tests::bin("berthctl")?
    };
    let mut child = Command::new(bin)
        .arg("--address")
        .arg(&d.address)
        .args(extra)
        .args(["content", "ingest"])
        .arg(reference)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

fn wait_until(what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f()? {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn ctr_content_ingest_get_ls_label_rm() -> Result<()> {
    let d = Daemon::start()?;
    let blob = data(3 << 20, 1);
    let digest = sha256(&blob)?;
    ok(ingest(&d, "ctr", &[], "r1", &blob)?)?;
    // The same bytes again under another ref: already there, not an error.
    ok(ingest(&d, "ctr", &[], "r2", &blob)?)?;
    let ls = ok(d.ctr(&["content", "ls"])?)?;
    assert!(ls.contains(&digest), "{ls}");
    // get returns the exact bytes.
    let got = d.ctr(&["content", "get", &digest])?;
    assert!(got.status.success());
    assert_eq!(got.stdout.len(), blob.len());
    assert!(got.stdout == blob, "content get returned different bytes");
    // labels
    let out = ok(d.ctr(&["content", "label", &digest, "team=a", "x=1"])?)?;
    assert!(out.contains("team=a") && out.contains("x=1"), "{out}");
    ok(d.ctr(&["content", "label", &digest, "x="])?)?;
    let ls = ok(d.ctr(&["content", "ls"])?)?;
    let line = ls.lines().find(|l| l.contains(&digest)).unwrap_or_default();
    assert!(line.contains("team=a") && !line.contains("x=1"), "{ls}");
    // filters on labels
    let ls = ok(d.ctr(&["content", "ls", "-q", "labels.team==a"])?)?;
    assert_eq!(ls.trim(), digest);
    let ls = ok(d.ctr(&["content", "ls", "-q", "labels.team==b"])?)?;
    assert_eq!(ls.trim(), "");
    // berthctl ingests with an expected digest and size.
    let other = data(1000, 2);
    let other_digest = sha256(&other)?;
    let size = other.len().to_string();
    let args = [
        "--expected-digest",
        other_digest.as_str(),
        "--expected-size",
        size.as_str(),
    ];
    let out = Command::new(berth_tests::bin("berthctl")?)
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest"])
        .args(args)
        .arg("r3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut s) = c.stdin.take() {
                s.write_all(&other)?;
            }
            c.wait_with_output()
        })?;
    ok(out)?;
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(ls.contains(&other_digest), "{ls}");
    // rm (the other blob, held by nothing, goes at the next collection:
    // see lease_less_content_stays_until_a_deletion_is_collected)
    let out = ok(d.ctr(&["content", "rm", &digest])?)?;
    assert_eq!(out.trim(), digest);
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(!ls.contains(&digest), "{ls}");
    let err = fails(d.ctr(&["content", "get", &digest])?)?;
    assert!(err.contains("not found"), "{err}");
    d.finish()
}

#[test]
fn digest_mismatch_is_rejected_and_nothing_committed() -> Result<()> {
    let d = Daemon::start()?;
    let blob = data(4096, 3);
    let wrong = sha256(b"something else")?;
    let out = Command::new(ctr_bin()?)
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "--expected-digest", &wrong, "bad"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut s) = c.stdin.take() {
                s.write_all(&blob)?;
            }
            c.wait_with_output()
        })?;
    let err = fails(out)?;
    assert!(err.contains("unexpected commit digest"), "{err}");
    assert!(err.contains(&wrong), "{err}");
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert_eq!(ls.trim(), "", "something was committed: {ls}");
    assert!(!blob_path(&d, &sha256(&blob)?).exists());
    assert!(!blob_path(&d, &wrong).exists());
    // The ingest stays, resumable or abortable.
    let active = ok(d.ctr(&["content", "active"])?)?;
    assert!(active.contains("bad"), "{active}");
    d.finish()
}

#[test]
fn kill9_mid_ingest_resumes_from_offset() -> Result<()> {
    let mut d = Daemon::start()?;
    let blob = data(24 << 20, 4);
    let digest = sha256(&blob)?;
    // Feed half the data through a pipe, then kill the daemon mid-ingest.
    let mut child = Command::new(ctr_bin()?)
        .arg("--address")
        .arg(&d.address)
        .args([
            "content",
            "ingest",
            "--expected-size",
            &blob.len().to_string(),
            "--expected-digest",
            &digest,
            "big",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin.write_all(&blob[..blob.len() / 2])?;
    stdin.flush()?;
    wait_until("the ingest shows progress", || {
        let active = ok(d.ctr(&["content", "active"])?)?;
        Ok(active.contains("big") && !active.contains(" 0 B/"))
    })?;
    d.kill9()?;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();

    d.restart()?;
    let active = ok(d.ctr(&["content", "active"])?)?;
    let line = active
        .lines()
        .find(|l| l.starts_with("big"))
        .unwrap_or_default();
    assert!(!line.is_empty(), "ingest lost across restart:\n{active}");
    assert!(!line.contains(" 0 B/"), "ingest offset lost: {line}");

    // Resume: ctr seeks its (file) stdin to the server's offset.
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &blob)?;
    let out = Command::new(ctr_bin()?)
        .arg("--address")
        .arg(&d.address)
        .args([
            "content",
            "ingest",
            "--expected-size",
            &blob.len().to_string(),
            "--expected-digest",
            &digest,
            "big",
        ])
        .stdin(std::fs::File::open(file.path())?)
        .output()?;
    ok(out)?;
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(ls.contains(&digest), "{ls}");
    let active = ok(d.ctr(&["content", "active"])?)?;
    assert!(!active.contains("big"), "{active}");
    d.finish()
}

#[test]
fn concurrent_writers_one_wins_other_is_told_locked() -> Result<()> {
    let d = Daemon::start()?;
    let blob = data(8 << 20, 5);
    let digest = sha256(&blob)?;
    let spawn = |tool: &str| -> Result<std::process::Child> {
        let bin = if tool == "ctr" {
            ctr_bin()?
        } else {
            berth_tests::bin("berthctl")?
        };
        Ok(Command::new(bin)
            .arg("--address")
            .arg(&d.address)
            .args(["content", "ingest", "--expected-digest", &digest, "same"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    };
    let mut first = spawn("ctr")?;
    let mut first_in = first
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    first_in.write_all(&blob[..1 << 20])?;
    wait_until("the first writer holds the ref", || {
        Ok(ok(d.ctr(&["content", "active"])?)?.contains("same"))
    })?;
    // berthctl does not retry: it reports the lock.
    let mut second = spawn("berthctl")?;
    drop(second.stdin.take());
    let err = fails(second.wait_with_output()?)?;
    assert!(err.contains("locked"), "{err}");
    // ctr's client retries a locked ref until it is free; it then finds the
    // blob committed by the first writer and succeeds without a second copy.
    let mut third = spawn("ctr")?;
    let mut third_in = third
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    // The first writer still holds the ref: the third cannot be done.
    assert!(
        third.try_wait()?.is_none(),
        "ctr finished while the ref was locked"
    );
    first_in.write_all(&blob[1 << 20..])?;
    drop(first_in);
    ok(first.wait_with_output()?)?;
    let committed = std::fs::metadata(blob_path(&d, &digest))?;
    // ctr may stop reading once it learns the blob exists.
    let _ = third_in.write_all(&blob);
    drop(third_in);
    ok(third.wait_with_output()?)?;
    let got = d.ctr(&["content", "get", &digest])?;
    assert!(got.stdout == blob, "blob corrupted");
    // No second copy: the first writer's file is the blob, and no ingest
    // of the third is left behind.
    let now = std::fs::metadata(blob_path(&d, &digest))?;
    assert_eq!(
        (now.ino(), now.mtime(), now.mtime_nsec()),
        (committed.ino(), committed.mtime(), committed.mtime_nsec()),
        "the blob was written again"
    );
    assert_eq!(
        ok(d.ctr(&["content", "active"])?)?.lines().skip(1).count(),
        0
    );
    d.finish()
}

#[test]
fn gc_removes_unreferenced_blobs_but_not_leased_ones() -> Result<()> {
    let d = Daemon::start()?;
    let loose = data(5000, 6);
    let leased = data(6000, 7);
    let (loose_d, leased_d) = (sha256(&loose)?, sha256(&leased)?);
    let out = ok(d.ctr(&["leases", "create", "--id", "keep"])?)?;
    assert_eq!(out.trim(), "keep");
    let ls = ok(d.ctr(&["leases", "ls"])?)?;
    assert!(ls.contains("keep"), "{ls}");
    ok(ingest(&d, "berthctl", &[], "loose", &loose)?)?;
    ok(ingest(
        &d,
        "berthctl",
        &["--lease", "keep"],
        "leased",
        &leased,
    )?)?;
    assert!(
        blob_path(&d, &loose_d).exists() && blob_path(&d, &leased_d).exists(),
        "an ingested blob is missing before any deletion (loose {}, leased {}); berthd's log:\n{}",
        blob_path(&d, &loose_d).exists(),
        blob_path(&d, &leased_d).exists(),
        d.log()
    );

    // A collection now: the loose blob has no reference, the other a lease.
    ok(d.berthctl(&["content", "prune"])?)?;
    assert!(
        !blob_path(&d, &loose_d).exists(),
        "unreferenced blob survived gc"
    );
    assert!(
        blob_path(&d, &leased_d).exists(),
        "leased blob was collected"
    );
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(!ls.contains(&loose_d) && ls.contains(&leased_d), "{ls}");

    // Dropping the lease drops the last reference.
    ok(d.ctr(&["leases", "rm", "--sync", "keep"])?)?;
    assert!(
        !blob_path(&d, &leased_d).exists(),
        "blob survived its lease"
    );
    let ls = ok(d.ctr(&["leases", "ls", "-q"])?)?;
    assert!(!ls.contains("keep"), "{ls}");
    d.finish()
}

/// containerd's scheduler: writes that delete nothing schedule no
/// collection, so content no lease holds stays listed call after call; a
/// deletion makes the next collection take it.
#[test]
fn lease_less_content_stays_until_a_deletion_is_collected() -> Result<()> {
    let d = Daemon::start()?;
    let (a, b, c) = (data(3000, 11), data(3000, 12), data(3000, 13));
    let (a_d, b_d, c_d) = (sha256(&a)?, sha256(&b)?, sha256(&c)?);
    ok(ingest(&d, "ctr", &[], "a", &a)?)?;
    ok(ingest(&d, "ctr", &[], "b", &b)?)?;
    for _ in 0..3 {
        let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
        assert!(ls.contains(&a_d) && ls.contains(&b_d), "{ls}");
    }
    // Deleting one blob makes the next collection take the other too.
    ok(d.ctr(&["content", "rm", &a_d])?)?;
    ok(d.ctr(&["leases", "create", "--id", "settle"])?)?;
    ok(d.ctr(&["leases", "rm", "--sync", "settle"])?)?;
    let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(!ls.contains(&a_d) && !ls.contains(&b_d), "{ls}");
    assert!(!blob_path(&d, &b_d).exists(), "lease-less blob survived");
    // After that collection, a new lease-less blob stays again.
    ok(ingest(&d, "ctr", &[], "c", &c)?)?;
    for _ in 0..3 {
        let ls = ok(d.ctr(&["content", "ls", "-q"])?)?;
        assert!(ls.contains(&c_d), "{ls}");
    }
    Ok(())
}

#[test]
fn content_delete_publishes_event() -> Result<()> {
    let d = Daemon::start()?;
    let blob = data(2048, 8);
    let digest = sha256(&blob)?;
    ok(ingest(&d, "ctr", &[], "ev", &blob)?)?;
    let mut cmd = Command::new(ctr_bin()?);
    cmd.arg("--address")
        .arg(&d.address)
        .args(["events", "topic==\"/content/delete\""]);
    let watcher = berth_tests::Watcher::spawn(cmd)?;
    // Give the subscription a moment, then delete; retry with fresh blobs
    // if the first event went out before the subscription was in place.
    let mut seen = false;
    for i in 0..20_u64 {
        let dg = if i == 0 {
            digest.clone()
        } else {
            let b = data(2048, 100 + i);
            ok(ingest(&d, "ctr", &[], &format!("ev{i}"), &b)?)?;
            sha256(&b)?
        };
        ok(d.ctr(&["content", "rm", &dg])?)?;
        if watcher
            .wait_for(&["/content/delete", &dg], Duration::from_millis(300))
            .is_ok()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "no /content/delete event");
    d.finish()
}
