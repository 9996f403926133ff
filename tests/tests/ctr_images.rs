//! Images made by berth's own builder (from Debian's busybox-static),
//! imported and unpacked client-side by Debian's `ctr` through berthd's
//! Content, Images, Leases, Snapshots and Diff services, then run.

use anyhow::Result;
use berth_tests::{Daemon, in_mount_namespace, mount_script, ok, testimages};

/// berthd on defaults: containers run through berth's own shim.
fn daemon() -> Result<Daemon> {
    Daemon::start()
}

fn import(d: &Daemon, layout: &testimages::Layout, file: &str) -> Result<String> {
    let archive = d.scratch(file);
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)
}

#[test]
fn import_and_run_busybox_with_ctr_and_berthctl() -> Result<()> {
    let d = daemon()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let out = import(&d, &layout, "busybox.tar")?;
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    let images = ok(d.ctr(&["images", "ls"])?)?;
    assert!(
        images.contains("docker.io/library/busybox:latest") && images.contains(&layout.root.digest),
        "{images}"
    );
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert!(
        snapshots.contains("Committed") && snapshots.contains(&layout.diff_ids[0]),
        "the single layer's chain ID is its diffID:\n{snapshots}"
    );
    let hello = ok(d.ctr(&[
        "run",
        "--rm",
        "docker.io/library/busybox:latest",
        "c1",
        "echo",
        "hello",
    ])?)?;
    assert_eq!(hello, "hello\n");
    let env = ok(d.berthctl(&[
        "run",
        "--rm",
        "--env",
        "X=1",
        "docker.io/library/busybox:latest",
        "c2",
        "sh",
        "-c",
        "echo $X $PATH",
    ])?)?;
    assert!(
        env.starts_with("1 /usr/local/sbin"),
        "image env and --env: {env}"
    );
    assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    d.finish()
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_files() -> Result<()> {
    let d = daemon()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    import(&d, &layout, "layered.tar")?;
    let seen = ok(d.ctr(&[
        "run",
        "--rm",
        "docker.io/library/layered:latest",
        "c3",
        "sh",
        "-c",
        "ls /data /opq; cat /links/hard",
    ])?)?;
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines.contains(&"kept") && lines.contains(&"new") && lines.contains(&"fresh"),
        "{seen}"
    );
    assert!(
        !lines.contains(&"gone") && !lines.contains(&"old1"),
        "{seen}"
    );
    assert!(seen.contains("shared"), "{seen}");
    // A view of the top snapshot, mounted as ctr prints it, agrees.
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    let top = snapshots
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| {
            w.len() == 3
                && !snapshots
                    .lines()
                    .any(|o| o.split_whitespace().nth(1) == Some(w[0]))
        })
        .map(|w| w[0].to_string())
        .ok_or_else(|| anyhow::anyhow!("no top snapshot in:\n{snapshots}"))?;
    // The `run --rm` above deleted a container and its snapshot: like
    // containerd, berthd collects at its next tick after a deletion, and a
    // view no lease holds, made before that tick, goes with it (containerd
    // 1.6 loses such a view too). A `sync` lease deletion finishes a
    // collection; after it only a new deletion schedules one, so the view
    // made next stays between two separate calls.
    ok(d.ctr(&["leases", "create", "--id", "settle"])?)?;
    ok(d.ctr(&["leases", "rm", "--sync", "settle"])?)?;
    ok(d.ctr(&["snapshot", "view", "look", &top])?)?;
    let target = d.scratch("look");
    let lines = ok(d.ctr(&["snapshot", "mounts", &target.display().to_string(), "look"])?)?;
    let listing = in_mount_namespace(&mount_script(
        &lines,
        &target,
        &format!("ls {0}/data; ls {0}/opq", target.display()),
    ))?;
    assert!(
        !listing
            .lines()
            .any(|l| l == "gone" || l == "old1" || l == "old2"),
        "{listing}"
    );
    assert!(listing.lines().any(|l| l == "kept"), "{listing}");
    d.finish()
}

/// Push through one berthd and pull through a fresh one, both with Debian's
/// `ctr` (client-side), against Debian's `docker-registry` on 127.0.0.1.
/// `images rm --sync` returns after a collection that removed what only
/// the image held: its blobs and its snapshots.
#[test]
fn image_delete_with_sync_collects_before_returning() -> Result<()> {
    let d = daemon()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    import(&d, &layout, "busybox.tar")?;
    let blob = |digest: &str| {
        d.root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(blob(&layout.root.digest).exists());
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert!(snapshots.contains(&layout.diff_ids[0]), "{snapshots}");
    ok(d.ctr(&["images", "rm", "--sync", "docker.io/library/busybox:latest"])?)?;
    assert!(
        !blob(&layout.root.digest).exists(),
        "the image's root blob survived a sync delete"
    );
    let content = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert_eq!(content.trim(), "", "blobs left after a sync delete");
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert!(!snapshots.contains(&layout.diff_ids[0]), "{snapshots}");
    Ok(())
}

#[test]
fn ctr_push_then_pull_from_a_local_registry() -> Result<()> {
    let registry = berth_tests::Registry::start()?;
    let source = daemon()?;
    let layout = testimages::layered(&source.scratch("layered"))?;
    import(&source, &layout, "layered.tar")?;
    let reference = format!("{}/berth/layered:v1", registry.host);
    ok(source.ctr(&[
        "images",
        "tag",
        "docker.io/library/layered:latest",
        &reference,
    ])?)?;
    ok(source.ctr(&["images", "push", "--plain-http", &reference])?)?;
    let head = registry.get("/v2/berth/layered/manifests/v1")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let target = daemon()?;
    let out = ok(target.ctr(&["images", "pull", "--plain-http", &reference])?)?;
    assert!(out.contains("done"), "{out}");
    let images = ok(target.ctr(&["images", "ls"])?)?;
    assert!(images.contains(&reference), "{images}");
    let snapshots = ok(target.ctr(&["snapshot", "ls"])?)?;
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        3,
        "{snapshots}"
    );
    let seen = ok(target.ctr(&["run", "--rm", &reference, "p1", "ls", "/data"])?)?;
    assert_eq!(seen, "kept\nnew\n");
    source.finish()?;
    target.finish()
}

/// `ctr images export` then `import` into another namespace round-trips.
#[test]
fn export_then_import_into_another_namespace() -> Result<()> {
    let d = daemon()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    import(&d, &layout, "busybox.tar")?;
    let exported = d.scratch("exported.tar");
    ok(d.ctr(&[
        "images",
        "export",
        &exported.display().to_string(),
        "docker.io/library/busybox:latest",
    ])?)?;
    ok(d.ctr(&[
        "-n",
        "second",
        "images",
        "import",
        &exported.display().to_string(),
    ])?)?;
    let images = ok(d.ctr(&["-n", "second", "images", "ls"])?)?;
    assert!(
        images.contains("docker.io/library/busybox:latest"),
        "{images}"
    );
    let hello = ok(d.ctr(&[
        "-n",
        "second",
        "run",
        "--rm",
        "docker.io/library/busybox:latest",
        "x1",
        "echo",
        "round-trip",
    ])?)?;
    assert_eq!(hello, "round-trip\n");
    d.finish()
}

/// `ctr snapshot diff` computes a layer (Diff.Diff) from an active
/// snapshot's changes: the new file is in it, a deleted one is a whiteout,
/// unchanged image files are not.
#[test]
fn snapshot_diff_computes_a_layer_of_the_changes() -> Result<()> {
    let d = daemon()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    import(&d, &layout, "busybox.tar")?;
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    let top = snapshots
        .lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().next().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no snapshot:\n{snapshots}"))?;
    ok(d.ctr(&["snapshot", "prepare", "work", &top])?)?;
    let target = d.scratch("work");
    let lines = ok(d.ctr(&["snapshot", "mounts", &target.display().to_string(), "work"])?)?;
    in_mount_namespace(&mount_script(
        &lines,
        &target,
        &format!(
            "mkdir -p {0}/app && echo built > {0}/app/out && rm {0}/bin/ls",
            target.display()
        ),
    ))?;
    let out = d.ctr(&["snapshot", "diff", "--keep", "work"])?;
    assert!(out.status.success(), "{out:?}");
    let listing = std::process::Command::new("tar")
        .args(["-tzvf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut tar| {
            use std::io::Write;
            tar.stdin.take().map(|mut i| i.write_all(&out.stdout));
            tar.wait_with_output()
        })?;
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(listing.contains("app/out"), "{listing}");
    assert!(listing.contains("bin/.wh.ls"), "{listing}");
    assert!(
        !listing.contains("bin/busybox"),
        "unchanged files stay out: {listing}"
    );
    // That very layer is in the namespace's content, labelled with its
    // diffID (the digest of the uncompressed tar) by Diff.Diff; import's
    // labels on the image's own layers do not count.
    let sha = |b: &[u8]| {
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        format!("sha256:{hex}")
    };
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out.stdout[..]), &mut tar)?;
    let (layer, diff_id) = (sha(&out.stdout), sha(&tar));
    let content = ok(d.ctr(&["content", "ls"])?)?;
    let row = content
        .lines()
        .find(|l| l.starts_with(&layer))
        .ok_or_else(|| anyhow::anyhow!("layer {layer} not in content:\n{content}"))?;
    assert!(
        row.contains(&format!("containerd.io/uncompressed={diff_id}")),
        "{row}"
    );
    d.finish()
}

/// `ctr pull` (client-side) of a six-layer image: berthd unpacks each
/// layer as soon as its Content.Write commits and Diff.Apply then moves
/// the staged tree into the snapshot. The container sees exactly what
/// applying the registry's layers one by one makes, and nothing stays
/// staged after the pull.
#[test]
fn ctr_pull_applies_layers_unpacked_early() -> Result<()> {
    use sha2::Digest as _;
    let registry = berth_tests::Registry::start()?;
    let d = daemon()?;
    let layout = testimages::big(&d.scratch("big"), 12)?;
    import(&d, &layout, "big.tar")?;
    let reference = format!("{}/berth/big:v1", registry.host);
    ok(d.ctr(&["images", "tag", "docker.io/library/big:latest", &reference])?)?;
    ok(d.ctr(&["images", "push", "--plain-http", &reference])?)?;
    ok(d.ctr(&[
        "images",
        "rm",
        "--sync",
        "docker.io/library/big:latest",
        &reference,
    ])?)?;
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert_eq!(snapshots.lines().count(), 1, "{snapshots}");

    let out = ok(d.ctr(&["images", "pull", "--plain-http", &reference])?)?;
    assert!(out.contains("done"), "{out}");
    let staging = d.root.join("io.containerd.differ.v1.walking/early");
    assert!(staging.is_dir(), "nothing was staged");
    assert_eq!(
        std::fs::read_dir(&staging)?.count(),
        0,
        "staged layers left after the pull"
    );

    // The reference: the same layers applied one by one onto a directory.
    let expected_dir = d.scratch("expected");
    std::fs::create_dir_all(&expected_dir)?;
    for layer in &layout.layers {
        berth_images::archive::apply(
            &expected_dir,
            std::fs::File::open(layout.blob(&layer.digest))?,
            berth_images::archive::Compression::Gzip,
            berth_images::archive::Whiteouts::Remove,
            None,
        )?;
    }
    let mut expected = Vec::new();
    for f in walk(&expected_dir.join("payload"))? {
        let rel = f.strip_prefix(&expected_dir)?.display().to_string();
        let sum = sha2::Sha256::digest(std::fs::read(&f)?);
        expected.push(format!("{sum:x}  {rel}"));
    }
    expected.sort();
    assert!(expected.len() > 5, "{expected:?}");
    let seen = ok(d.ctr(&[
        "run",
        "--rm",
        &reference,
        "early",
        "sh",
        "-c",
        "cd / && find payload -type f | xargs sha256sum",
    ])?)?;
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort_unstable();
    assert_eq!(seen, expected);
    d.finish()
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.extend(walk(&e.path())?);
        } else {
            out.push(e.path());
        }
    }
    Ok(out)
}
