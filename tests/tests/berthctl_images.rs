//! Daemon-side pull and push: `berthctl push` sends an imported image to
//! Debian's `docker-registry` with berth's own pusher, `berthctl pull`
//! (berthd's Transfer service) pulls it into a fresh daemon, and Debian's
//! `ctr` sees and runs the result.

use anyhow::Result;
use berth_tests::{Daemon, fails, ok, testimages};

fn import(d: &Daemon, layout: &testimages::Layout, file: &str) -> Result<String> {
    let archive = d.scratch(file);
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)
}

#[test]
fn berthctl_push_then_pull_into_a_fresh_daemon() -> Result<()> {
    let registry = berth_tests::Registry::start()?;
    let source = Daemon::start()?;
    let layout = testimages::layered(&source.scratch("layered"))?;
    import(&source, &layout, "layered.tar")?;
    let reference = format!("{}/berth/layered:v2", registry.host);
    let pushed = ok(source.berthctl(&[
        "push",
        "--plain-http",
        &reference,
        "docker.io/library/layered:latest",
    ])?)?;
    assert!(pushed.contains("pushed"), "{pushed}");
    let head = registry.get("/v2/berth/layered/manifests/v2")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let target = Daemon::start()?;
    let watcher = berth_tests::subscribe(&target)?;
    let out = target.berthctl(&["pull", "--plain-http", &reference])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out)?;
    assert!(stdout.contains("pulled"), "{stdout}");
    // Without a terminal, progress is one line per finished step.
    assert!(
        stderr.contains("complete") && stderr.contains("unpacked"),
        "{stderr}"
    );
    watcher.wait_for(
        &["/images/create", "/snapshot/commit"],
        std::time::Duration::from_secs(10),
    )?;

    let images = ok(target.ctr(&["images", "ls", "-q"])?)?;
    assert!(images.lines().any(|l| l == reference), "{images}");
    let snapshots = ok(target.ctr(&["snapshot", "ls"])?)?;
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        3,
        "one snapshot per layer, named by chain ID:\n{snapshots}"
    );
    // The whiteout in the top layer hides the lower file; hardlinks survive.
    let seen = ok(target.ctr(&[
        "run",
        "--rm",
        &reference,
        "p1",
        "sh",
        "-c",
        "ls /data /opq; cat /links/hard",
    ])?)?;
    let lines: Vec<&str> = seen.lines().collect();
    assert!(lines.contains(&"kept") && lines.contains(&"new"), "{seen}");
    assert!(
        !lines.contains(&"gone") && !lines.contains(&"old1"),
        "{seen}"
    );
    assert!(seen.contains("shared"), "{seen}");
    let check = ok(target.berthctl(&["images", "check"])?)?;
    assert!(
        check.contains("complete") && check.contains("true"),
        "{check}"
    );
    let ls = ok(target.berthctl(&["images", "ls"])?)?;
    assert!(ls.contains(&reference) && ls.contains("linux/"), "{ls}");

    // Pulling again finds everything present and unpacked.
    let again = target.berthctl(&["pull", "--plain-http", &reference])?;
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(again)?;
    assert!(stderr.contains("exists"), "{stderr}");

    // Tag, label, remove.
    ok(target.berthctl(&["images", "tag", &reference, "example.com/copy:1"])?)?;
    ok(target.berthctl(&["images", "label", "example.com/copy:1", "team=db"])?)?;
    let ls = ok(target.ctr(&["images", "ls"])?)?;
    assert!(
        ls.contains("example.com/copy:1") && ls.contains("team=db"),
        "{ls}"
    );
    ok(target.berthctl(&["images", "rm", "example.com/copy:1"])?)?;
    assert!(!ok(target.ctr(&["images", "ls", "-q"])?)?.contains("example.com/copy:1"));
    source.finish()?;
    target.finish()
}

#[test]
fn pull_errors_name_the_problem() -> Result<()> {
    let registry = berth_tests::Registry::start()?;
    let d = Daemon::start()?;
    let missing = format!("{}/berth/nothing:here", registry.host);
    let err = fails(d.berthctl(&["pull", "--plain-http", &missing])?)?;
    assert!(err.contains("not found"), "{err}");
    let err = fails(d.berthctl(&["pull", "Not//A/Reference"])?)?;
    assert!(
        err.contains("Not//A/Reference") && err.contains("invalid reference"),
        "{err}"
    );
    // Nothing half-made is left as an image.
    assert_eq!(ok(d.ctr(&["images", "ls", "-q"])?)?, "");
    d.finish()
}
