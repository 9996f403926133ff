//! `berthctl images convert` on a real berthd, beside Debian's `ctr images
//! convert` (containerd 1.6's converter) on the same images: the same
//! media types and the same layer digests come out, the result survives a
//! garbage collection and runs.

use anyhow::{Context, Result};
use berth_tests::{Daemon, ok, testimages};
use serde_json::Value;

fn blob(d: &Daemon, digest: &str) -> Result<Value> {
    let text = ok(d.ctr(&["content", "get", digest])?)?;
    serde_json::from_str(&text).context(text)
}

/// The target digest an image name points at.
fn target(d: &Daemon, name: &str) -> Result<String> {
    let ls = ok(d.ctr(&["images", "ls"])?)?;
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
        .with_context(|| format!("{name} in\n{ls}"))
}

/// Media types and layer digests of a manifest.
fn shape(m: &Value) -> (String, String, Vec<(String, String)>) {
    (
        m["mediaType"].as_str().unwrap_or_default().to_string(),
        m["config"]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["mediaType"].as_str().unwrap_or_default().to_string(),
                    l["digest"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

#[test]
fn convert_uncompresses_and_cuts_an_index_to_the_host() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::two_platform(&d.scratch("multi"))?;
    let archive = d.scratch("multi.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&[
        "images",
        "import",
        "--all-platforms",
        &archive.display().to_string(),
    ])?)?;
    let source = "docker.io/library/multi:latest";
    ok(d.ctr(&["images", "label", source, "team=db"])?)?;

    let printed = ok(d.berthctl(&[
        "images",
        "convert",
        "--uncompress",
        source,
        "example.com/multi:plain",
    ])?)?;
    let root = target(&d, "example.com/multi:plain")?;
    assert_eq!(printed.trim(), root, "prints the new target's digest");
    assert_ne!(root, layout.root.digest);
    // The source's labels come along, as containerd's converter copies them.
    let ls = ok(d.ctr(&["images", "ls"])?)?;
    assert!(
        ls.lines()
            .any(|l| l.starts_with("example.com/multi:plain") && l.contains("team=db")),
        "{ls}"
    );

    // Only the host's manifest is left; its layer is the plain tar, whose
    // digest is the diff ID.
    let index = blob(&d, &root)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(
        entries[0]["platform"]["architecture"],
        testimages::host_arch(),
        "{index}"
    );
    let manifest = blob(&d, entries[0]["digest"].as_str().unwrap_or_default())?;
    let (_, _, layers) = shape(&manifest);
    assert_eq!(
        layers,
        vec![(
            "application/vnd.oci.image.layer.v1.tar".to_string(),
            layout.diff_ids[0].clone()
        )],
        "{manifest}"
    );

    // ctr's converter makes the same manifest (media types, layers).
    ok(d.ctr(&[
        "images",
        "convert",
        "--uncompress",
        source,
        "example.com/multi:ctr",
    ])?)?;
    let theirs = blob(&d, &target(&d, "example.com/multi:ctr")?)?;
    let their_manifest = blob(
        &d,
        theirs["manifests"][0]["digest"]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert_eq!(shape(&manifest), shape(&their_manifest));
    assert_eq!(
        theirs["manifests"].as_array().map(Vec::len),
        Some(1),
        "{theirs}"
    );

    // What the converted image names survives a collection without the
    // source, and runs.
    ok(d.ctr(&["images", "rm", source, "example.com/multi:ctr"])?)?;
    ok(d.berthctl(&["content", "prune"])?)?;
    let ran = ok(d.ctr(&[
        "run",
        "--rm",
        "example.com/multi:plain",
        "c1",
        "echo",
        "converted",
    ])?)?;
    assert_eq!(ran, "converted\n");
    d.finish()
}

#[test]
fn convert_oci_turns_docker_media_types_into_oci_ones() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    let archive = d.scratch("docker.tar");
    layout.write_docker_archive(&archive, "docker.io/library/dockerish:1")?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    let source = "docker.io/library/dockerish:1";
    let before = blob(&d, &target(&d, source)?)?;
    assert!(
        before.to_string().contains("vnd.docker"),
        "a Docker image to start from: {before}"
    );

    ok(d.berthctl(&[
        "images",
        "convert",
        "--oci",
        source,
        "example.com/dockerish:oci",
    ])?)?;
    let ours = blob(&d, &target(&d, "example.com/dockerish:oci")?)?;
    let (manifest_type, config_type, layers) = shape(&ours);
    assert_eq!(manifest_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(config_type, "application/vnd.oci.image.config.v1+json");
    assert!(
        layers
            .iter()
            .all(|(t, _)| t.starts_with("application/vnd.oci.image.layer.v1.tar")),
        "{ours}"
    );
    // Only media types changed: the layers are the same blobs.
    let (_, _, before_layers) = shape(&before);
    let digests = |l: &[(String, String)]| l.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&layers), digests(&before_layers));

    ok(d.ctr(&[
        "images",
        "convert",
        "--oci",
        source,
        "example.com/dockerish:ctr",
    ])?)?;
    let theirs = blob(&d, &target(&d, "example.com/dockerish:ctr")?)?;
    assert_eq!(shape(&ours), shape(&theirs));

    // Converting again changes nothing and points the target at the same root.
    let again = ok(d.berthctl(&[
        "images",
        "convert",
        "--oci",
        "example.com/dockerish:oci",
        "example.com/dockerish:oci2",
    ])?)?;
    assert_eq!(again.trim(), target(&d, "example.com/dockerish:oci")?);

    let ran = ok(d.ctr(&[
        "run",
        "--rm",
        "example.com/dockerish:oci",
        "c2",
        "cat",
        "/links/hard",
    ])?)?;
    assert!(ran.contains("shared"), "{ran}");
    d.finish()
}
