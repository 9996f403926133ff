//! Daemon-side import and export of image archives: `berthctl images
//! import` of an OCI layout and of a `docker save` archive, `berthctl images
//! export` then import into another namespace (and by Debian's `ctr`), a
//! container run from each result, and a bad archive refused cleanly.

use std::io::Read;

use anyhow::Result;
use berth_tests::{Daemon, fails, ok, testimages};

const LAYERED: &str = "docker.io/library/layered:latest";

/// `cat` of `path` in a container of `image` in namespace `ns`.
fn cat(d: &Daemon, ns: &str, image: &str, path: &str) -> Result<std::process::Output> {
    d.ctr(&["-n", ns, "run", "--rm", image, "cat-it", "/bin/cat", path])
}

#[test]
fn import_export_round_trip_across_namespaces() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    let archive = d.scratch("layered.tar");
    layout.write_archive(&archive)?;
    let out = ok(d.berthctl(&["images", "import", &archive.display().to_string()])?)?;
    assert!(out.contains("imported"), "{out}");
    let images = ok(d.ctr(&["images", "ls", "-q"])?)?;
    assert!(images.lines().any(|l| l == LAYERED), "{images}");
    let snapshots = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        3,
        "unpacked, one snapshot per layer:\n{snapshots}"
    );
    // The whiteout of the upper layer holds in the unpacked image.
    assert_eq!(ok(cat(&d, "default", LAYERED, "/data/kept")?)?, "kept\n");
    let gone = cat(&d, "default", LAYERED, "/data/gone")?;
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("No such file or directory"), "{err}");

    // Export, then import into another namespace through berthd and
    // through Debian's ctr (client-side import: interop of the format).
    let exported = d.scratch("exported.tar");
    let exported_s = exported.display().to_string();
    ok(d.berthctl(&["images", "export", &exported_s, LAYERED])?)?;
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&exported)?);
    for e in tar.entries()? {
        names.push(e?.path()?.display().to_string());
    }
    for wanted in ["oci-layout", "index.json", "manifest.json"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    ok(d.berthctl(&["-n", "copy", "images", "import", &exported_s])?)?;
    let copy = ok(d.ctr(&["-n", "copy", "images", "ls", "-q"])?)?;
    assert!(copy.lines().any(|l| l == LAYERED), "{copy}");
    ok(cat(&d, "copy", LAYERED, "/data/new")?)?;
    ok(d.ctr(&["-n", "viactr", "images", "import", &exported_s])?)?;
    ok(cat(&d, "viactr", LAYERED, "/data/kept")?)?;

    // Export to stdout and import from stdin with a new name.
    let mut export = d.berthctl_command(&["images", "export", "-", LAYERED])?;
    export.stdout(std::process::Stdio::piped());
    let mut child = export.spawn()?;
    let mut bytes = Vec::new();
    child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?
        .read_to_end(&mut bytes)?;
    assert!(child.wait()?.success());
    assert_eq!(
        bytes,
        std::fs::read(&exported)?,
        "the export is deterministic"
    );
    let mut import = d.berthctl_command(&[
        "-n",
        "piped",
        "images",
        "import",
        "--index-name",
        "docker.io/library/piped:1",
        "-",
    ])?;
    import.stdin(std::process::Stdio::piped());
    let mut child = import.spawn()?;
    {
        use std::io::Write;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(&bytes)?;
    }
    assert!(child.wait()?.success(), "import from stdin");
    let piped = ok(d.ctr(&["-n", "piped", "images", "ls", "-q"])?)?;
    assert!(
        piped.lines().any(|l| l == "docker.io/library/piped:1")
            && piped.lines().any(|l| l == LAYERED),
        "{piped}"
    );
    assert_eq!(
        ok(cat(&d, "piped", "docker.io/library/piped:1", "/data/kept")?)?,
        "kept\n"
    );
    d.finish()
}

#[test]
fn docker_save_archives_import_and_run() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let manifest = testimages::read_json(&layout, &layout.manifests[0].1.digest)?;
    let config = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no config"))?;
    // docker save: uncompressed layer tars in per-layer directories, the
    // config as <hex>.json, manifest.json naming them with RepoTags.
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(layout.blob(&layout.layers[0].digest))?)
        .read_to_end(&mut layer)?;
    let config_bytes = std::fs::read(layout.blob(config))?;
    let list = serde_json::json!([{
        "Config": "cfg.json",
        "RepoTags": ["saved:1"],
        "Layers": ["l0/layer.tar"],
    }]);
    let archive = d.scratch("saved.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive)?);
    let mut put = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data)?;
        Ok(())
    };
    put("l0/layer.tar", &layer)?;
    put("l0/json", b"{}")?;
    put("cfg.json", &config_bytes)?;
    put("manifest.json", &serde_json::to_vec(&list)?)?;
    b.into_inner()?;
    ok(d.berthctl(&["images", "import", &archive.display().to_string()])?)?;
    let images = ok(d.ctr(&["images", "ls"])?)?;
    assert!(
        images.contains("docker.io/library/saved:1")
            && images.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{images}"
    );
    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "docker.io/library/saved:1",
        "saved",
        "/bin/echo",
        "from docker save",
    ])?)?;
    assert_eq!(out, "from docker save\n");
    d.finish()
}

#[test]
fn bad_archives_are_refused_and_leave_nothing() -> Result<()> {
    let d = Daemon::start()?;
    let garbage = d.scratch("garbage.tar");
    std::fs::write(&garbage, b"this is not an image archive".repeat(100))?;
    let err = fails(d.berthctl(&["images", "import", &garbage.display().to_string()])?)?;
    assert!(err.contains("image archive"), "{err}");

    // A blob whose bytes do not match its name.
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let layer = layout.blob(&layout.layers[0].digest);
    let mut bytes = std::fs::read(&layer)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes)?;
    let archive = d.scratch("corrupt.tar");
    layout.write_archive(&archive)?;
    let err = fails(d.berthctl(&["images", "import", &archive.display().to_string()])?)?;
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(ok(d.ctr(&["images", "ls", "-q"])?)?, "");
    let content = ok(d.ctr(&["content", "ls", "-q"])?)?;
    assert!(
        !content.contains(&layout.layers[0].digest),
        "the corrupt blob is not stored: {content}"
    );
    // Exporting an image that does not exist says so.
    let err = fails(d.berthctl(&[
        "images",
        "export",
        &d.scratch("none.tar").display().to_string(),
        "none:1",
    ])?)?;
    assert!(err.contains("none:1"), "{err}");
    assert!(
        !d.scratch("none.tar").exists(),
        "no partial archive is left"
    );
    d.finish()
}
