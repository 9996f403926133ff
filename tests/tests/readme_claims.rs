//! What the READMEs promise and no other test checked: `berthd config dump`,
//! `BERTH_ADDRESS`, `berthctl content ls/get/label/rm/active`, `berthctl
//! leases` keeping content through a collection, and `berthctl images
//! import` options (`--no-unpack`, `--all-platforms`, `--index-name`, a
//! gzipped archive read from stdin).

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use berth_api::client::Client;
use berth_api::containerd::services::content::v1 as content;
use berth_tests::{Daemon, bin, fails, ok, testimages};
use content::content_client::ContentClient;
use tokio_stream::StreamExt;

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// Runs `cmd` with `input` on its stdin.
fn with_stdin(mut cmd: Command, input: &[u8]) -> Result<std::process::Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    child.stdin.take().context("no stdin")?.write_all(input)?;
    Ok(child.wait_with_output()?)
}

#[test]
fn config_dump_is_the_file_then_the_flags() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "version = 2\nroot = \"/from/the/file\"\nstate = \"/state/from/the/file\"\n[metrics]\n  address = \"127.0.0.1:19999\"\n",
    )?;
    let out = ok(Command::new(bin("berthd")?)
        .arg("config")
        .arg("--config")
        .arg(&file)
        .args(["--root", "/from/the/flag", "dump"])
        .output()?)?;
    let dumped: toml::Value = toml::from_str(&out).with_context(|| out.clone())?;
    // The flag wins over the file; what only the file says is kept.
    assert_eq!(dumped["root"].as_str(), Some("/from/the/flag"), "{out}");
    assert_eq!(
        dumped["state"].as_str(),
        Some("/state/from/the/file"),
        "{out}"
    );
    assert_eq!(
        dumped["metrics"]["address"].as_str(),
        Some("127.0.0.1:19999"),
        "{out}"
    );
    Ok(())
}

#[test]
fn berth_address_selects_the_daemon() -> Result<()> {
    let d = Daemon::start()?;
    let run = |address: &std::path::Path| -> Result<std::process::Output> {
        Ok(Command::new(bin("berthctl")?)
            .arg("version")
            .env("BERTH_ADDRESS", address)
            .output()?)
    };
    let out = ok(run(&d.address)?)?;
    assert!(out.contains("Server"), "{out}");
    let err = fails(run(&d.scratch("no-daemon-here.sock"))?)?;
    assert!(err.contains("no-daemon-here.sock"), "{err}");
    Ok(())
}

#[test]
fn content_commands_and_leases() -> Result<()> {
    let d = Daemon::start()?.in_namespace("readme-content");
    let blob = b"a blob for the readme\n";
    let digest = sha256(blob);
    let ingest = |r: &str, data: &[u8], lease: Option<&str>| -> Result<String> {
        let mut args = vec!["content", "ingest", r];
        if let Some(l) = lease {
            args.splice(0..0, ["--lease", l]);
        }
        ok(with_stdin(d.berthctl_command(&args)?, data)?)
    };
    ingest("readme-1", blob, None)?;
    ok(d.berthctl(&["content", "label", &digest, "team=infra"])?)?;
    let ls = ok(d.berthctl(&["content", "ls", r#"labels."team"==infra"#])?)?;
    assert!(ls.contains(&digest) && ls.contains("team=infra"), "{ls}");
    let other = ok(d.berthctl(&["content", "ls", r#"labels."team"==other"#])?)?;
    assert!(!other.contains(&digest), "{other}");
    let got = d.berthctl(&["content", "get", &digest])?;
    assert!(got.status.success());
    assert_eq!(got.stdout, blob);
    ok(d.berthctl(&["content", "rm", &digest])?)?;
    let ls = ok(d.berthctl(&["content", "ls"])?)?;
    assert!(!ls.contains(&digest), "{ls}");

    // An unfinished ingest is listed as active.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let c = Client::connect(&d.address)
                .await?
                .with_namespace(d.namespace.clone());
            let mut cs = ContentClient::with_interceptor(c.channel(), c.interceptor());
            let half = content::WriteContentRequest {
                action: content::WriteAction::Write as i32,
                r#ref: "readme-half".into(),
                total: 8,
                data: b"half".to_vec(),
                ..Default::default()
            };
            let mut replies = cs.write(tokio_stream::iter(vec![half])).await?.into_inner();
            while let Some(r) = replies.next().await {
                r?;
            }
            anyhow::Ok(())
        })?;
    let active = ok(d.berthctl(&["content", "active"])?)?;
    assert!(active.contains("readme-half"), "{active}");

    // A lease keeps what is ingested under it through a collection.
    let kept = b"kept while the lease lives\n";
    let loose = b"collected: nothing holds it\n";
    let id = ok(d.berthctl(&["leases", "create", "--id", "build-42", "--expires", "1h"])?)?;
    assert_eq!(id.trim(), "build-42");
    let leases = ok(d.berthctl(&["leases", "ls"])?)?;
    assert!(
        leases.contains("build-42") && leases.contains("containerd.io/gc.expire="),
        "{leases}"
    );
    ingest("readme-kept", kept, Some("build-42"))?;
    ingest("readme-loose", loose, None)?;
    ok(d.berthctl(&["content", "prune"])?)?;
    let ls = ok(d.berthctl(&["content", "ls"])?)?;
    assert!(ls.contains(&sha256(kept)), "{ls}");
    assert!(!ls.contains(&sha256(loose)), "{ls}");
    ok(d.berthctl(&["leases", "rm", "build-42"])?)?;
    assert!(!ok(d.berthctl(&["leases", "ls"])?)?.contains("build-42"));
    ok(d.berthctl(&["content", "prune"])?)?;
    let ls = ok(d.berthctl(&["content", "ls"])?)?;
    assert!(!ls.contains(&sha256(kept)), "{ls}");
    Ok(())
}

#[test]
fn import_options() -> Result<()> {
    const NAME: &str = "docker.io/library/multi:latest";
    let d = Daemon::start()?;
    let layout = testimages::two_platform(&d.scratch("multi"))?;
    let archive = d.scratch("multi.tar");
    layout.write_archive(&archive)?;
    let archive_s = archive.display().to_string();
    let (_, other_manifest) = layout
        .manifests
        .iter()
        .find(|(p, _)| *p != format!("linux/{}", testimages::host_arch()))
        .context("no second platform")?;
    let other_layer =
        testimages::read_json(&layout, &other_manifest.digest)?["layers"][0]["digest"]
            .as_str()
            .context("other platform's layer")?
            .to_string();
    let snapshots = |ns: &str| -> Result<usize> {
        Ok(ok(d.ctr(&["-n", ns, "snapshots", "ls"])?)?
            .lines()
            .skip(1)
            .count())
    };
    let content = |ns: &str| -> Result<String> { ok(d.ctr(&["-n", ns, "content", "ls"])?) };

    // Default: the host's platform, unpacked.
    ok(d.berthctl(&["-n", "plain", "images", "import", &archive_s])?)?;
    assert!(ok(d.ctr(&["-n", "plain", "images", "ls", "-q"])?)?.contains(NAME));
    assert!(snapshots("plain")? > 0);
    assert!(!content("plain")?.contains(&other_layer));

    // --no-unpack: the image, no snapshots.
    ok(d.berthctl(&[
        "-n",
        "nounpack",
        "images",
        "import",
        "--no-unpack",
        &archive_s,
    ])?)?;
    assert!(ok(d.ctr(&["-n", "nounpack", "images", "ls", "-q"])?)?.contains(NAME));
    assert_eq!(snapshots("nounpack")?, 0);

    // --all-platforms: every platform's content.
    ok(d.berthctl(&[
        "-n",
        "all",
        "images",
        "import",
        "--all-platforms",
        &archive_s,
    ])?)?;
    assert!(content("all")?.contains(&other_layer));

    // A gzipped archive on stdin, also named by --index-name: the name
    // points where containerd's own importer (Debian's ctr) points it.
    let index_name = "example.com/named:index";
    let digest_of = |ns: &str| -> Result<String> {
        let ls = ok(d.ctr(&["-n", ns, "images", "ls"])?)?;
        let line = ls
            .lines()
            .find(|l| l.starts_with(&format!("{index_name} ")))
            .with_context(|| ls.clone())?;
        line.split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .map(str::to_string)
            .with_context(|| line.to_string())
    };
    ok(d.ctr(&[
        "-n",
        "viactr",
        "images",
        "import",
        "--index-name",
        index_name,
        &archive_s,
    ])?)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&archive)?)?;
    let gz = gz.finish()?;
    let cmd = d.berthctl_command(&[
        "-n",
        "stdin",
        "images",
        "import",
        "--index-name",
        index_name,
        "-",
    ])?;
    ok(with_stdin(cmd, &gz)?)?;
    assert_eq!(digest_of("stdin")?, digest_of("viactr")?);
    assert!(ok(d.ctr(&["-n", "stdin", "images", "ls", "-q"])?)?.contains(NAME));
    Ok(())
}

#[test]
fn snapshotter_root_path_moves_its_root() -> Result<()> {
    let elsewhere = tempfile::Builder::new()
        .prefix("berth-native-root")
        .tempdir()?;
    let d = Daemon::start_with_config(Some(&format!(
        "version = 2\n[plugins.\"io.containerd.snapshotter.v1.native\"]\n  root_path = \"{}\"\n",
        elsewhere.path().display()
    )))?;
    ok(d.berthctl(&["snapshot", "--snapshotter", "native", "prepare", "work"])?)?;
    let mounts = ok(d.berthctl(&[
        "snapshot",
        "--snapshotter",
        "native",
        "mounts",
        "/mnt",
        "work",
    ])?)?;
    assert!(
        mounts.contains(&elsewhere.path().display().to_string()),
        "the snapshot lives under root_path: {mounts}"
    );
    assert!(
        !d.root
            .join("io.containerd.snapshotter.v1.native/snapshots")
            .exists(),
        "nothing under the default root"
    );
    Ok(())
}

#[test]
fn the_berth_runtime_runs_through_berthd() -> Result<()> {
    let d = Daemon::start()?.in_namespace("readme-berth-runtime");
    let rootfs = d.scratch("rootfs");
    berth_tests::busybox_rootfs(&rootfs)?;
    let rootfs = rootfs.display().to_string();
    let out = ok(d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.berth.v2",
        "--rootfs",
        &rootfs,
        "rt1",
        "/bin/echo",
        "through berth's runtime",
    ])?)?;
    assert_eq!(out, "through berth's runtime\n");
    // An unknown runtime is refused with a clear error, so the name above
    // was really looked up.
    let err = fails(d.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nosuch.v2",
        "--rootfs",
        &rootfs,
        "rt2",
        "/bin/true",
    ])?)?;
    assert!(err.contains("nosuch"), "{err}");
    Ok(())
}

/// `berthctl pull --platform linux/<other> --user me:secret` against a
/// registry that wants basic auth: without credentials it is refused; with
/// them the other platform's content (only) arrives.
#[test]
fn pull_with_platform_and_user_from_an_authenticating_registry() -> Result<()> {
    // bcrypt (cost 5) of "berth-test-secret", the registry's htpasswd line.
    const USER: &str = "berth:berth-test-secret";
    const HTPASSWD: &str = "berth:$2a$05$FsihgY6rcUMqBAUXIV7YJ.kPtBQ0/gRSrLzY55sipQyYJ6F/qfKsq";
    let registry = berth_tests::Registry::start_with_auth(Some(HTPASSWD))?;
    let d = Daemon::start()?;
    let layout = testimages::two_platform(&d.scratch("multi"))?;
    let archive = d.scratch("multi.tar");
    layout.write_archive(&archive)?;
    ok(d.berthctl(&[
        "-n",
        "src",
        "images",
        "import",
        "--all-platforms",
        &archive.display().to_string(),
    ])?)?;
    let remote = format!("{}/readme/multi:1", registry.host);
    let push = |user: Option<&str>| -> Result<std::process::Output> {
        let mut args = vec!["-n", "src", "push", "--plain-http"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.extend([remote.as_str(), "docker.io/library/multi:latest"]);
        d.berthctl(&args)
    };
    fails(push(None)?)?;
    ok(push(Some(USER))?)?;

    let host_platform = format!("linux/{}", testimages::host_arch());
    let (other_platform, other_manifest) = layout
        .manifests
        .iter()
        .find(|(p, _)| *p != host_platform)
        .context("no second platform")?;
    let layer_of = |manifest: &str| -> Result<String> {
        testimages::read_json(&layout, manifest)?["layers"][0]["digest"]
            .as_str()
            .map(str::to_string)
            .context("a layer")
    };
    let other_layer = layer_of(&other_manifest.digest)?;
    let host_layer = layout.layers[0].digest.clone();

    let pull = |user: Option<&str>| -> Result<std::process::Output> {
        let mut args = vec![
            "-n",
            "dst",
            "pull",
            "--plain-http",
            "--platform",
            other_platform.as_str(),
        ];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.push(remote.as_str());
        d.berthctl(&args)
    };
    let refused = fails(pull(None)?)?;
    assert!(
        refused.to_lowercase().contains("unauthorized") || refused.contains("401"),
        "{refused}"
    );
    ok(pull(Some(USER))?)?;
    let content = ok(d.ctr(&["-n", "dst", "content", "ls"])?)?;
    assert!(content.contains(&other_layer), "{content}");
    assert!(!content.contains(&host_layer), "{content}");
    Ok(())
}

/// `berthctl events` takes containerd's filter language, `~=` included; a
/// bad regular expression is refused at once with what was wrong.
#[test]
fn events_filters_are_checked() -> Result<()> {
    let d = Daemon::start()?;
    let err = fails(d.berthctl(&["events", r#"topic~="(unclosed""#])?)?;
    assert!(err.contains("unclosed") || err.contains("regex"), "{err}");
    Ok(())
}

/// Unmounts a mount this test made, even when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The source directory of a native snapshot, from `snapshot mounts`.
fn native_dir(d: &Daemon, key: &str) -> Result<std::path::PathBuf> {
    let out = ok(d.berthctl(&["snapshot", "--snapshotter", "native", "mounts", "/mnt", key])?)?;
    out.split_whitespace()
        .nth(3)
        .map(std::path::PathBuf::from)
        .with_context(|| format!("no source in {out:?}"))
}

/// The native snapshotter's copies share their data with the parent
/// (reflinks) where the filesystem can: here a loop-mounted Btrfs, since
/// the machine's own filesystem (ext4) cannot.
#[test]
fn native_copies_are_reflinks_on_btrfs() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("berth-reflink").tempdir()?;
    let image = dir.path().join("btrfs.img");
    std::fs::File::create(&image)?.set_len(256 << 20)?;
    ok(Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(&image)
        .output()
        .context("mkfs.btrfs (cargo xtask deps installs btrfs-progs)")?)?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    ok(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt)
        .output()?)?;
    let _unmount = Unmount(mnt.clone());

    let d = Daemon::start_with_config(Some(&format!(
        "version = 2\n[plugins.\"io.containerd.snapshotter.v1.native\"]\n  root_path = \"{}\"\n",
        mnt.join("native").display()
    )))?;
    ok(d.berthctl(&["snapshot", "--snapshotter", "native", "prepare", "base"])?)?;
    let base = native_dir(&d, "base")?;
    assert!(base.starts_with(&mnt), "{}", base.display());
    std::fs::write(base.join("data"), vec![7_u8; 4 << 20])?;
    ok(d.berthctl(&[
        "snapshot",
        "--snapshotter",
        "native",
        "commit",
        "layer",
        "base",
    ])?)?;
    ok(d.berthctl(&[
        "snapshot",
        "--snapshotter",
        "native",
        "prepare",
        "child",
        "layer",
    ])?)?;
    let child = native_dir(&d, "child")?.join("data");
    assert_eq!(std::fs::read(&child)?, vec![7_u8; 4 << 20]);
    // Sync so the extents are on disk, then ask where they are.
    ok(Command::new("sync").arg("-f").arg(&child).output()?)?;
    let extents = ok(Command::new("filefrag").arg("-v").arg(&child).output()?)?;
    assert!(
        extents.contains("shared"),
        "the child's copy shares no extent with its parent:\n{extents}"
    );
    drop(d);
    Ok(())
}
