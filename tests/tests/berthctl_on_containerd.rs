//! berthctl pull, push, import and export against Debian's containerd 1.6,
//! which has no Transfer service: berthctl does the transfer itself through
//! berth-client (Content, Images, Snapshots and Diff services), and
//! containerd's own `ctr` sees and runs the result.

use std::process::{Command, Output};
use std::time::Instant;

use anyhow::Result;
use berth_tests::{Containerd, Registry, bin, ok, testimages};

/// `berthctl --address <containerd> -n <namespace> args...`.
fn berthctl(c: &Containerd, namespace: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new(bin("berthctl")?)
        .arg("--address")
        .arg(&c.address)
        .arg("--namespace")
        .arg(namespace)
        .args(args)
        .env_remove("CONTAINERD_NAMESPACE")
        .env_remove("BERTH_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .output()?)
}

#[test]
fn berthctl_pulls_pushes_imports_and_exports_on_containerd_1_6() -> Result<()> {
    let registry = Registry::start()?;
    let c = Containerd::start()?;
    let layout = testimages::busybox(&c.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let ns = c.namespace.clone();

    // Pull: into containerd's store, unpacked by containerd, runnable by ctr.
    let started = Instant::now();
    let out = ok(berthctl(&c, &ns, &["pull", &reference])?)?;
    eprintln!("berthctl pull on containerd 1.6: {:?}", started.elapsed());
    assert!(out.contains("pulled in"), "{out}");
    let listed = ok(c.ctr(&["images", "ls", "-q"])?)?;
    assert!(listed.lines().any(|l| l == reference), "{listed}");
    let ran = ok(c.ctr(&[
        "run",
        "--rm",
        &reference,
        "pulled1",
        "echo",
        "hello from a pulled image",
    ])?)?;
    assert_eq!(ran, "hello from a pulled image\n");
    let leases = ok(c.ctr(&["leases", "ls", "-q"])?)?;
    assert_eq!(leases.trim(), "", "the pull's lease is left: {leases}");
    // Pulling again finds everything there (blobs and snapshots).
    let out = ok(berthctl(&c, &ns, &["pull", &reference])?)?;
    assert!(out.contains("pulled in"), "{out}");
    let snapshots = ok(c.ctr(&["snapshots", "ls"])?)?;
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        layout.diff_ids.len(),
        "one snapshot per layer, none twice:\n{snapshots}"
    );

    // Push under another name, then read it back from the registry.
    let pushed = format!("{}/berth/pushed:2", registry.host);
    let out = ok(berthctl(&c, &ns, &["push", &pushed, &reference])?)?;
    assert!(out.contains("pushed"), "{out}");
    let head = registry.get("/v2/berth/pushed/manifests/2")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let copy_ns = format!("{ns}-pushed");
    ok(berthctl(&c, &copy_ns, &["pull", &pushed])?)?;
    let ran = ok(c.ctr_in(
        &copy_ns,
        &[
            "run",
            "--rm",
            &pushed,
            "pushed1",
            "echo",
            "pushed and pulled",
        ],
    )?)?;
    assert_eq!(ran, "pushed and pulled\n");

    // Export, then import into another namespace, and run the copy.
    let archive = c.scratch("exported.tar");
    let archive_s = archive.display().to_string();
    ok(berthctl(
        &c,
        &ns,
        &["images", "export", &archive_s, &reference],
    )?)?;
    assert!(std::fs::metadata(&archive)?.len() > 0);
    let import_ns = format!("{ns}-imported");
    let out = ok(berthctl(
        &c,
        &import_ns,
        &[
            "images",
            "import",
            "--index-name",
            "example.com/imported:1",
            &archive_s,
        ],
    )?)?;
    assert!(out.contains("imported"), "{out}");
    let listed = ok(c.ctr_in(&import_ns, &["images", "ls", "-q"])?)?;
    assert!(
        listed.lines().any(|l| l == "example.com/imported:1"),
        "{listed}"
    );
    let ran = ok(c.ctr_in(
        &import_ns,
        &[
            "run",
            "--rm",
            "example.com/imported:1",
            "imported1",
            "echo",
            "imported",
        ],
    )?)?;
    assert_eq!(ran, "imported\n");
    c.finish()
}

/// `berthctl pull` of one image from the same registry into berthd (its
/// Transfer service) and into containerd 1.6 (berthctl's client-side
/// path), three fresh namespaces each; prints the times and checks each
/// pull left a listed image.
#[test]
fn berthctl_pull_times_on_berthd_and_containerd_1_6() -> Result<()> {
    let registry = Registry::start()?;
    let d = berth_tests::Daemon::start()?;
    let c = Containerd::start()?;
    let layout = testimages::busybox(&c.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let mut berthd = Vec::new();
    let mut containerd = Vec::new();
    for i in 0..3 {
        let ns = format!("timing-{i}");
        let started = Instant::now();
        ok(d.berthctl(&["-n", &ns, "pull", &reference])?)?;
        berthd.push(started.elapsed());
        let listed = ok(d.ctr(&["-n", &ns, "images", "ls", "-q"])?)?;
        assert!(listed.lines().any(|l| l == reference), "{listed}");

        let ns = format!("{}-timing-{i}", c.namespace);
        let started = Instant::now();
        ok(berthctl(&c, &ns, &["pull", &reference])?)?;
        containerd.push(started.elapsed());
        let listed = ok(c.ctr_in(&ns, &["images", "ls", "-q"])?)?;
        assert!(listed.lines().any(|l| l == reference), "{listed}");
    }
    berthd.sort();
    containerd.sort();
    eprintln!(
        "berthctl pull {reference}: berthd (Transfer) {berthd:?}, median {:?}; containerd 1.6 (client-side) {containerd:?}, median {:?}",
        berthd[1], containerd[1]
    );
    d.finish()?;
    c.finish()
}

/// `--user` reaches the registry on the client-side path: push and pull
/// against an authenticating registry fail without it and work with it.
#[test]
fn berthctl_user_reaches_an_authenticating_registry_on_containerd_1_6() -> Result<()> {
    // bcrypt (cost 5) of "berth-test-secret", the registry's htpasswd line.
    const USER: &str = "berth:berth-test-secret";
    const HTPASSWD: &str = "berth:$2a$05$FsihgY6rcUMqBAUXIV7YJ.kPtBQ0/gRSrLzY55sipQyYJ6F/qfKsq";
    let registry = Registry::start_with_auth(Some(HTPASSWD))?;
    let c = Containerd::start()?;
    let layout = testimages::busybox(&c.scratch("busybox"))?;
    let archive = c.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    let ns = c.namespace.clone();
    ok(berthctl(
        &c,
        &ns,
        &[
            "images",
            "import",
            "--index-name",
            "example.com/busybox:1",
            &archive.display().to_string(),
        ],
    )?)?;
    let remote = format!("{}/auth/busybox:1", registry.host);
    berth_tests::fails(berthctl(
        &c,
        &ns,
        &["push", "--plain-http", &remote, "example.com/busybox:1"],
    )?)?;
    ok(berthctl(
        &c,
        &ns,
        &[
            "push",
            "--plain-http",
            "--user",
            USER,
            &remote,
            "example.com/busybox:1",
        ],
    )?)?;
    let other = format!("{ns}-auth");
    berth_tests::fails(berthctl(&c, &other, &["pull", "--plain-http", &remote])?)?;
    ok(berthctl(
        &c,
        &other,
        &["pull", "--plain-http", "--user", USER, &remote],
    )?)?;
    let ran = ok(c.ctr_in(
        &other,
        &["run", "--rm", &remote, "auth1", "echo", "authenticated"],
    )?)?;
    assert_eq!(ran, "authenticated\n");
    c.finish()
}
