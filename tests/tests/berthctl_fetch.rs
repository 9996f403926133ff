//! `berthctl content fetch|fetch-object|push-object` against Debian's
//! `docker-registry` and a real berthd (checked with Debian's `ctr`), and
//! the progress bars of `berthctl pull` in a real terminal (tmux) beside
//! its plain lines when stdout is not one.

use std::path::Path;

use anyhow::{Result, bail};
use berth_tests::tmux::Tmux;
use berth_tests::{Daemon, Registry, fails, ok, testimages};

#[test]
fn content_fetch_brings_all_content_without_unpacking() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    let reference = registry.push_layout(&layout, "berth/fetched", "v1")?;

    let out = d.berthctl(&[
        "content",
        "fetch",
        "--plain-http",
        "--label",
        "team=db",
        &reference,
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out)?;
    assert!(stdout.contains("fetched"), "{stdout}");
    // Not a terminal: one plain line per finished object, no bars.
    assert!(stderr.contains("complete"), "{stderr}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains("|+"),
        "{stderr}"
    );

    // Every blob of the image is in the store, the image recorded with its
    // label, nothing unpacked (as `ctr content fetch`).
    let blobs = ok(d.ctr(&["content", "ls", "-q"])?)?;
    for digest in layout.blobs()? {
        assert!(blobs.lines().any(|l| l == digest), "{digest} in\n{blobs}");
    }
    let images = ok(d.ctr(&["images", "ls"])?)?;
    assert!(
        images.contains(&reference) && images.contains("team=db"),
        "{images}"
    );
    let snapshots = ok(d.ctr(&["snapshots", "ls"])?)?;
    assert_eq!(
        snapshots.lines().count(),
        1,
        "nothing unpacked:\n{snapshots}"
    );
    // What was fetched unpacks and runs.
    let ran = ok(d.ctr(&["run", "--rm", &reference, "f1", "cat", "/links/hard"])?)?;
    assert!(ran.contains("shared"), "{ran}");

    // A second fetch finds it all present.
    let again = d.berthctl(&["content", "fetch", "--plain-http", &reference])?;
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(again)?;
    assert!(stderr.contains("exists"), "{stderr}");

    let err = fails(d.berthctl(&[
        "content",
        "fetch",
        "--plain-http",
        &format!("{}/berth/none:here", registry.host),
    ])?)?;
    assert!(err.contains("not found"), "{err}");
    d.finish()
}

#[test]
fn fetch_object_and_push_object_move_one_object() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    let reference = registry.push_layout(&layout, "berth/objects", "v1")?;

    // The reference's root, byte for byte, and the same as ctr's.
    let root = d.berthctl(&["content", "fetch-object", "--plain-http", &reference])?;
    let root = ok_bytes(root)?;
    assert_eq!(root, std::fs::read(layout.blob(&layout.root.digest))?);
    let ctr_root = d.ctr(&["content", "fetch-object", "--plain-http", &reference])?;
    assert_eq!(root, ok_bytes(ctr_root)?, "ctr fetches the same bytes");
    // A blob by digest in the reference's repository.
    let layer = &layout.layers[0].digest;
    let blob =
        ok_bytes(d.berthctl(&["content", "fetch-object", "--plain-http", &reference, layer])?)?;
    assert_eq!(blob, std::fs::read(layout.blob(layer))?);
    // ctr 2.x's fetch-blob: several blobs, one after the other.
    let second = &layout.layers[1].digest;
    let both = ok_bytes(d.berthctl(&[
        "content",
        "fetch-blob",
        "--plain-http",
        &reference,
        layer,
        second,
    ])?)?;
    let mut expected = std::fs::read(layout.blob(layer))?;
    expected.extend(std::fs::read(layout.blob(second))?);
    assert_eq!(both, expected);
    // Nothing was stored.
    assert_eq!(ok(d.ctr(&["content", "ls", "-q"])?)?, "");
    let err = fails(d.berthctl(&[
        "content",
        "fetch-object",
        "--plain-http",
        &reference,
        &format!("sha256:{}", "0".repeat(64)),
    ])?)?;
    assert!(err.contains("not found"), "{err}");

    // push-object: a blob of the store to another repository.
    let archive = d.scratch("layered.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    let other = format!("{}/berth/other:v1", registry.host);
    let pushed = ok(d.berthctl(&[
        "content",
        "push-object",
        "--plain-http",
        &other,
        layer,
        testimages::media::LAYER_GZIP,
    ])?)?;
    assert!(
        pushed.contains(&format!("Pushed {layer} {}", testimages::media::LAYER_GZIP)),
        "{pushed}"
    );
    let head = registry.get(&format!("/v2/berth/other/blobs/{layer}"))?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Again: the registry has it.
    let again = ok(d.berthctl(&[
        "content",
        "push-object",
        "--plain-http",
        &other,
        layer,
        testimages::media::LAYER_GZIP,
    ])?)?;
    assert!(again.contains("already present"), "{again}");
    let err = fails(d.berthctl(&[
        "content",
        "push-object",
        "--plain-http",
        &other,
        &format!("sha256:{}", "0".repeat(64)),
        testimages::media::LAYER_GZIP,
    ])?)?;
    assert!(err.contains("not found"), "{err}");
    d.finish()
}

fn ok_bytes(out: std::process::Output) -> Result<Vec<u8>> {
    if !out.status.success() {
        bail!(
            "command failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn pull_draws_bars_on_a_terminal_and_plain_lines_otherwise() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let layout = testimages::layered(&d.scratch("layered"))?;
    let reference = registry.push_layout(&layout, "berth/bars", "v1")?;
    let tmux = Tmux::new(d.scratch("tmux.sock"));
    let berthctl = format!(
        "{} -a {}",
        shell_quote(&berth_tests::bin("berthctl")?),
        shell_quote(&d.address)
    );

    // A terminal: one bar per object and the total line, left in place.
    let screen = tmux.screen_of("tty", &format!("{berthctl} pull --plain-http {reference}"))?;
    eprintln!("terminal:\n{screen}");
    assert!(
        screen.contains("elapsed:") && screen.contains("total:"),
        "{screen}"
    );
    let layer_rows: Vec<&str> = screen.lines().filter(|l| l.starts_with("layer-")).collect();
    assert_eq!(layer_rows.len(), layout.layers.len(), "{screen}");
    for row in &layer_rows {
        assert!(
            row.contains("|+") && row.contains("+|"),
            "a full bar: {row}"
        );
    }
    assert!(screen.contains("pulled in"), "{screen}");

    // stdout piped: no bars, no cursor movement, a line per object.
    ok(d.ctr(&["images", "rm", &reference])?)?;
    ok(d.berthctl(&["content", "prune"])?)?;
    let screen = tmux.screen_of(
        "piped",
        &format!("{berthctl} pull --plain-http {reference} | cat"),
    )?;
    assert!(
        !screen.contains("|+") && !screen.contains("elapsed:"),
        "{screen}"
    );
    assert!(
        screen.lines().filter(|l| l.starts_with("layer-")).count() >= layout.layers.len(),
        "{screen}"
    );
    d.finish()
}
