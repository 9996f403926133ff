//! containerd 2.1.5's `ctr` against berthd: its pull, push, import and
//! export go through the Transfer service (daemon-side), its `shim`
//! commands reach berth's shims directly over ttrpc, and the rest of its
//! command tree (images, content, snapshots, leases, namespaces, tasks,
//! containers, plugins) speaks the same v1 API as ctr 1.6.
//!
//! ctr 2.1.5 is a shared test tool: `<repo>/../shared/tools/ctr-2.1.5`, or
//! `$BERTH_SHARED_TOOLS/ctr-2.1.5`.

use anyhow::{Context, Result};
use berth_tests::{Daemon, Registry, fails, in_mount_namespace, ok, testimages};

/// berthd in a namespace of the test's own (container cgroups are
/// `/<namespace>/<id>`, shared by every daemon on the machine).
fn daemon(namespace: &str) -> Result<Daemon> {
    Ok(Daemon::start()?.in_namespace(namespace))
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Writes `layout` as an archive whose index entries carry only the OCI
/// ref name `tag` (no `io.containerd.image.name`): the importer must name
/// them from the request.
fn archive_with_bare_tag(d: &Daemon, layout: &testimages::Layout, tag: &str) -> Result<String> {
    let copy = d.scratch("bare-tag-layout");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&layout.dir)
        .arg(&copy)
        .status()
        .context("copying the layout")?;
    anyhow::ensure!(status.success(), "cp -a failed");
    let index_path = copy.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    for m in index["manifests"]
        .as_array_mut()
        .context("index.json without manifests")?
    {
        m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    }
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    let mut bare = layout.clone();
    bare.dir = copy;
    let archive = d.scratch("bare-tag.tar");
    bare.write_archive(&archive)?;
    Ok(path(&archive))
}

/// Image names `ctr images ls -q` prints.
fn image_names(d: &Daemon) -> Result<Vec<String>> {
    Ok(ok(d.ctr2(&["images", "ls", "-q"])?)?
        .lines()
        .map(str::to_string)
        .collect())
}

#[test]
fn import_names_images_from_the_archive_and_the_request() -> Result<()> {
    let d = daemon("ctr2-import")?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    // Named by containerd's annotation in the archive.
    let named = d.scratch("busybox.tar");
    layout.write_archive(&named)?;
    let out = ok(d.ctr2(&["images", "import", &path(&named)])?)?;
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");

    // Entries with a bare tag: the base name (a prefix reference in the
    // request) names them, `--digests` adds `<base>@<digest>`, and the
    // index gets `--index-name`.
    let bare = archive_with_bare_tag(&d, &layout, "v1")?;
    ok(d.ctr2(&[
        "images",
        "import",
        "--base-name",
        "example.com/berth/named",
        "--digests",
        "--index-name",
        "example.com/berth/index:all",
        &bare,
    ])?)?;
    let names = image_names(&d)?;
    let digest_ref = format!("example.com/berth/named@{}", layout.root.digest);
    for want in [
        "docker.io/library/busybox:latest",
        "example.com/berth/named:v1",
        "example.com/berth/index:all",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    // --digests with a named entry skips the digest name unless asked.
    assert!(!names.contains(&digest_ref), "{names:?}");

    // Without --base-name ctr asks for `import-<date>:<tag>`.
    ok(d.ctr2(&["-n", "ctr2-import-default", "images", "import", &bare])?)?;
    let defaults = ok(d.ctr2(&["-n", "ctr2-import-default", "images", "ls", "-q"])?)?;
    assert!(
        defaults
            .lines()
            .any(|l| l.starts_with("import-") && l.ends_with(":v1")),
        "{defaults}"
    );

    let hello = ok(d.ctr2(&[
        "run",
        "--rm",
        "example.com/berth/named:v1",
        "ctr2-imp",
        "echo",
        "named by the request",
    ])?)?;
    assert_eq!(hello, "named by the request\n");
    Ok(())
}

#[test]
fn export_then_import_round_trips_through_transfer() -> Result<()> {
    let d = daemon("ctr2-export")?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr2(&["images", "import", &path(&archive)])?)?;
    let exported = d.scratch("exported.tar");
    ok(d.ctr2(&[
        "images",
        "export",
        &path(&exported),
        "docker.io/library/busybox:latest",
    ])?)?;
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&exported)
        .output()?;
    let listing = ok(listing)?;
    assert!(
        listing.contains("index.json")
            && listing.contains(&format!(
                "blobs/sha256/{}",
                layout.root.digest.trim_start_matches("sha256:")
            )),
        "{listing}"
    );
    ok(d.ctr2(&[
        "-n",
        "ctr2-export-copy",
        "images",
        "import",
        &path(&exported),
    ])?)?;
    let hello = ok(d.ctr2(&[
        "-n",
        "ctr2-export-copy",
        "run",
        "--rm",
        "docker.io/library/busybox:latest",
        "ctr2-exp",
        "echo",
        "round-trip",
    ])?)?;
    assert_eq!(hello, "round-trip\n");
    Ok(())
}

#[test]
fn push_then_pull_from_a_local_registry() -> Result<()> {
    let registry = Registry::start()?;
    let source = daemon("ctr2-push")?;
    let layout = testimages::layered(&source.scratch("layered"))?;
    let archive = source.scratch("layered.tar");
    layout.write_archive(&archive)?;
    ok(source.ctr2(&["images", "import", &path(&archive)])?)?;
    let reference = format!("{}/berth/ctr2:v1", registry.host);
    ok(source.ctr2(&[
        "images",
        "tag",
        "docker.io/library/layered:latest",
        &reference,
    ])?)?;
    ok(source.ctr2(&["images", "push", "--plain-http", &reference])?)?;
    let head = registry.get("/v2/berth/ctr2/manifests/v1")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let target = daemon("ctr2-pull")?;
    ok(target.ctr2(&["images", "pull", "--plain-http", &reference])?)?;
    assert!(image_names(&target)?.contains(&reference));
    let content = ok(target.ctr2(&["content", "ls", "-q"])?)?;
    for layer in &layout.layers {
        assert!(content.contains(&layer.digest), "{content}");
    }
    let snapshots = ok(target.ctr2(&["snapshots", "ls"])?)?;
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        3,
        "{snapshots}"
    );
    let seen = ok(target.ctr2(&["run", "--rm", &reference, "ctr2-pull", "ls", "/data"])?)?;
    assert_eq!(seen, "kept\nnew\n");
    Ok(())
}

#[test]
fn containers_tasks_and_shim_commands() -> Result<()> {
    let d = daemon("ctr2-tasks")?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr2(&["images", "import", &path(&archive)])?)?;
    let image = "docker.io/library/busybox:latest";
    ok(d.ctr2(&["run", "-d", image, "ctr2-t1", "sleep", "1000"])?)?;

    let tasks = ok(d.ctr2(&["tasks", "ls"])?)?;
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("ctr2-t1") && l.contains("RUNNING")),
        "{tasks}"
    );
    let ps = ok(d.ctr2(&["tasks", "ps", "ctr2-t1"])?)?;
    assert_eq!(ps.lines().count(), 2, "one process: {ps}");

    // ctr finds the shim's socket from the daemon address, namespace and
    // id, and speaks task API v3 by default, v2 when asked.
    let state = ok(d.ctr2(&["shim", "--id", "ctr2-t1", "state"])?)?;
    assert!(state.contains("\"status\": 2"), "RUNNING: {state}");
    let state_v2 = ok(d.ctr2(&["shim", "--id", "ctr2-t1", "state", "--api-version", "2"])?)?;
    assert!(state_v2.contains("ctr2-t1"), "{state_v2}");

    let exec = ok(d.ctr2(&[
        "tasks",
        "exec",
        "--exec-id",
        "x1",
        "ctr2-t1",
        "echo",
        "exec-ok",
    ])?)?;
    assert_eq!(exec, "exec-ok\n");
    let metrics = ok(d.ctr2(&["tasks", "metrics", "--format", "json", "ctr2-t1"])?)?;
    let metrics: serde_json::Value = serde_json::from_str(&metrics).context(metrics)?;
    assert_eq!(metrics["pids"]["current"], 1, "{metrics}");
    ok(d.ctr2(&["tasks", "pause", "ctr2-t1"])?)?;
    let paused = ok(d.ctr2(&["tasks", "ls"])?)?;
    assert!(paused.contains("PAUSED"), "{paused}");
    ok(d.ctr2(&["tasks", "resume", "ctr2-t1"])?)?;

    ok(d.ctr2(&["containers", "label", "ctr2-t1", "team=berth"])?)?;
    let info = ok(d.ctr2(&["containers", "info", "ctr2-t1"])?)?;
    assert!(info.contains("\"team\": \"berth\""), "{info}");
    let containers = ok(d.ctr2(&["containers", "ls", "-q"])?)?;
    assert_eq!(containers, "ctr2-t1\n");

    ok(d.ctr2(&["tasks", "rm", "-f", "ctr2-t1"])?)?;
    assert_eq!(ok(d.ctr2(&["tasks", "ls", "-q"])?)?, "");
    ok(d.ctr2(&["containers", "rm", "ctr2-t1"])?)?;
    assert_eq!(ok(d.ctr2(&["containers", "ls", "-q"])?)?, "");
    Ok(())
}

#[test]
fn namespaces_leases_content_and_snapshots() -> Result<()> {
    let d = daemon("ctr2-misc")?;
    ok(d.ctr2(&["namespaces", "create", "ctr2-ns", "owner=berth"])?)?;
    ok(d.ctr2(&["namespaces", "label", "ctr2-ns", "tier=test"])?)?;
    let namespaces = ok(d.ctr2(&["namespaces", "ls"])?)?;
    let line = namespaces
        .lines()
        .find(|l| l.starts_with("ctr2-ns"))
        .with_context(|| format!("no ctr2-ns in {namespaces}"))?;
    assert!(
        line.contains("owner=berth") && line.contains("tier=test"),
        "{line}"
    );
    ok(d.ctr2(&["namespaces", "rm", "ctr2-ns"])?)?;
    assert!(!ok(d.ctr2(&["namespaces", "ls", "-q"])?)?.contains("ctr2-ns"));

    ok(d.ctr2(&["leases", "create", "--id", "ctr2-lease", "--expires", "1h"])?)?;
    assert!(ok(d.ctr2(&["leases", "ls", "-q"])?)?.contains("ctr2-lease"));

    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr2(&["images", "import", &path(&archive)])?)?;
    let content = ok(d.ctr2(&["content", "ls"])?)?;
    assert!(content.contains(&layout.root.digest), "{content}");
    let manifest = ok(d.ctr2(&["content", "get", &layout.root.digest])?)?;
    assert!(manifest.contains(&layout.layers[0].digest), "{manifest}");
    let check = ok(d.ctr2(&["images", "check"])?)?;
    assert!(check.contains("complete"), "{check}");
    let snapshots = ok(d.ctr2(&["snapshots", "ls"])?)?;
    assert!(snapshots.contains(&layout.diff_ids[0]), "{snapshots}");
    let tree = ok(d.ctr2(&["snapshots", "tree"])?)?;
    assert!(tree.contains(&layout.diff_ids[0]), "{tree}");
    let usage = ok(d.ctr2(&["snapshots", "usage", &layout.diff_ids[0]])?)?;
    assert!(usage.lines().count() >= 2, "{usage}");

    // `images mount` (an active snapshot under a lease, mounted by ctr)
    // and `images unmount --rm` (both removed), in a private mount
    // namespace so nothing outlives the script.
    let target = d.scratch("mnt");
    let ctr = format!(
        "{} --address {} --namespace {}",
        berth_tests::shared_tool("ctr-2.1.5")?.display(),
        d.address.display(),
        d.namespace
    );
    let t = target.display();
    let seen = in_mount_namespace(&format!(
        "mkdir -p {t}\n{ctr} images mount docker.io/library/busybox:latest {t}\nls {t}/bin/busybox\n{ctr} images unmount --rm {t}\n"
    ))?;
    assert!(seen.contains(&format!("{t}/bin/busybox")), "{seen}");
    let after = ok(d.ctr2(&["snapshots", "ls"])?)?;
    assert!(
        !after.contains("Active"),
        "unmount --rm removed it: {after}"
    );

    ok(d.ctr2(&["leases", "rm", "ctr2-lease"])?)?;
    assert!(!ok(d.ctr2(&["leases", "ls", "-q"])?)?.contains("ctr2-lease"));
    ok(d.ctr2(&["images", "rm", "docker.io/library/busybox:latest"])?)?;
    // ctr only logs a missing image (NotFound), as with containerd.
    let again = d.ctr2(&["images", "rm", "docker.io/library/busybox:latest"])?;
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not found"), "{err}");
    assert!(!image_names(&d)?.iter().any(|n| n.contains("busybox")));
    Ok(())
}

/// `ctr plugins inspect-runtime`: containerd 2.x's RuntimeInfo through
/// `Introspection.PluginInfo` with a `RuntimeRequest`, answered by the
/// shim's `-info`.
#[test]
fn inspect_runtime_reports_the_shims_runtime_info() -> Result<()> {
    let d = daemon("ctr2-info")?;
    let out = ok(d.ctr2(&[
        "plugins",
        "inspect-runtime",
        "--runc-root",
        "/run/ctr2-info",
    ])?)?;
    let info: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
    assert_eq!(info["Name"], "io.containerd.runc.v2", "{out}");
    assert_eq!(info["Options"]["root"], "/run/ctr2-info", "{out}");
    // runc's own features document.
    assert!(
        info["Features"]["ociVersionMin"].is_string(),
        "features from `runc features`: {out}"
    );
    let err = fails(d.ctr2(&[
        "plugins",
        "inspect-runtime",
        "--runtime",
        "io.containerd.nope.v1",
    ])?)?;
    assert!(
        err.contains(
            "runtime \"io.containerd.nope.v1\" binary not installed \"containerd-shim-nope-v1\""
        ),
        "{err}"
    );
    let server = ok(d.ctr2(&["info"])?)?;
    let server: serde_json::Value = serde_json::from_str(&server)?;
    assert_eq!(
        server["server"]["pid"].as_u64(),
        d.pid().map(u64::from),
        "{server}"
    );
    Ok(())
}
