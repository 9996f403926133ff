//! Hardening: private state, recovery from a full disk and from a read-only
//! root, refusing a second daemon on one root, and bad command-line and
//! label input.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Daemon, fails, ok, testimages};

/// The unprivileged user the permission checks run as.
const NOBODY: &str = "65534";

/// `setpriv` dropping to `nobody` with no supplementary groups, then `program`.
fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "--",
        program,
    ]);
    cmd
}

/// Every path under `dir` (not following symlinks), with a type letter:
/// `d` directory, `s` socket, `p` FIFO, `l` symlink, `f` anything else.
fn walk(dir: &Path, out: &mut Vec<(char, PathBuf)>) -> Result<()> {
    let md = std::fs::symlink_metadata(dir)?;
    let t = md.file_type();
    let kind = if t.is_dir() {
        'd'
    } else if t.is_socket() {
        's'
    } else if t.is_fifo() {
        'p'
    } else if t.is_symlink() {
        'l'
    } else {
        'f'
    };
    out.push((kind, dir.to_path_buf()));
    if kind == 'd' {
        for e in std::fs::read_dir(dir)? {
            walk(&e?.path(), out)?;
        }
    }
    Ok(())
}

/// Which of `paths` `nobody` can list (directories), read (files), or
/// open at all (sockets, FIFOs): one line each.
fn reachable_by_nobody(paths: &[(char, PathBuf)]) -> Result<String> {
    // Files are really opened; FIFOs would block on open, so they and
    // sockets (connecting needs write permission) are checked with access(2).
    let script = r#"
while IFS= read -r line; do
  kind=${line%% *}; p=${line#* }
  case $kind in
    d) ls "$p" >/dev/null 2>&1 && echo "listable: $p" ;;
    f) cat "$p" </dev/null >/dev/null 2>&1 && echo "readable: $p" ;;
    s|p) { [ -r "$p" ] || [ -w "$p" ]; } && echo "openable: $p" ;;
  esac
done
true
"#;
    let mut child = as_nobody("/bin/busybox")
        .args(["sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running setpriv (util-linux) and /bin/busybox (busybox-static)")?;
    let list: String = paths
        .iter()
        .filter(|(k, _)| *k != 'l')
        .map(|(k, p)| format!("{k} {}\n", p.display()))
        .collect();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(list.as_bytes())?;
    }
    ok(child.wait_with_output()?)
}

#[test]
fn other_users_can_read_nothing_under_root_and_state() -> Result<()> {
    let d = Daemon::start()?.in_namespace("h7-private");
    // The test's temporary directory is 0700: open it up, so only berthd's
    // own modes stand between `nobody` and its files.
    let top = d.root.parent().context("root has a parent")?;
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755))?;

    // Blobs, snapshots, a metadata record holding a secret, and a running
    // task's bundle (config.json with the same secret) and mounted rootfs.
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    ok(d.ctr(&[
        "run",
        "-d",
        "--env",
        "SECRET=hunter2",
        "docker.io/library/busybox:latest",
        "private",
        "sleep",
        "300",
    ])?)?;

    let mut paths = Vec::new();
    walk(&d.root, &mut paths)?;
    walk(&d.state, &mut paths)?;
    let bundle_config = paths
        .iter()
        .any(|(_, p)| p.ends_with("h7-private/private/config.json"));
    let meta_db = paths.iter().any(|(_, p)| p.ends_with("meta.redb"));
    let reachable = reachable_by_nobody(&paths);
    let sockets = [
        d.address.clone(),
        PathBuf::from(format!("{}.ttrpc", d.address.display())),
    ];
    let connect = as_nobody("/usr/bin/ctr")
        .arg("--address")
        .arg(&d.address)
        .arg("version")
        .output();

    let _ = d.ctr(&["tasks", "kill", "-s", "KILL", "private"]);
    let _ = d.ctr(&["tasks", "delete", "-f", "private"]);
    let _ = d.ctr(&["containers", "delete", "private"]);

    assert!(bundle_config && meta_db, "the walk missed files: {paths:?}");
    let reachable = reachable?;
    assert_eq!(reachable, "", "other users can reach berth's files");
    for s in &sockets {
        assert!(s.exists(), "{} missing", s.display());
    }
    let err = fails(connect?)?;
    assert!(err.contains("permission denied"), "{err}");
    Ok(())
}

#[test]
fn existing_wide_directories_are_made_private_on_start() -> Result<()> {
    let mut d = Daemon::start()?.in_namespace("h7-upgrade");
    let rootfs = d.scratch("rootfs");
    berth_tests::busybox_rootfs(&rootfs)?;
    // A task that lives on across the restart, so its bundle stays.
    ok(d.ctr(&[
        "run",
        "-d",
        "--rootfs",
        &rootfs.display().to_string(),
        "kept",
        "/bin/sleep",
        "300",
    ])?)?;
    d.stop()?;
    // An older berth left every directory 0755.
    let mut paths = Vec::new();
    walk(&d.root, &mut paths)?;
    walk(&d.state, &mut paths)?;
    for (k, p) in &paths {
        if *k == 'd' && !p.starts_with(&rootfs) {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let restarted = d.restart();
    let mode = |p: &Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    let bundle = d
        .state
        .join("io.containerd.runtime.v2.task/h7-upgrade/kept");
    let modes = (|| -> Result<Vec<(PathBuf, u32)>> {
        let mut v = vec![
            (d.root.clone(), mode(&d.root)?),
            (d.state.clone(), mode(&d.state)?),
            (bundle.clone(), mode(&bundle)?),
        ];
        for e in std::fs::read_dir(&d.root)?.chain(std::fs::read_dir(&d.state)?) {
            let p = e?.path();
            if p.is_dir() {
                let m = mode(&p)?;
                v.push((p, m));
            }
        }
        Ok(v)
    })();
    let _ = d.ctr(&["tasks", "kill", "-s", "KILL", "kept"]);
    let _ = d.ctr(&["tasks", "delete", "-f", "kept"]);
    let _ = d.ctr(&["containers", "delete", "kept"]);
    restarted?;
    let modes = modes?;
    assert_eq!(modes[0].1, 0o700, "root");
    assert_eq!(modes[1].1, 0o711, "state");
    assert_eq!(modes[2].1, 0o700, "bundle");
    for (p, m) in &modes[3..] {
        assert_eq!(m & 0o066, 0, "{} is {m:o}", p.display());
    }
    Ok(())
}

/// berthd whose root is a `size` tmpfs of its own (unmounted with the daemon).
fn daemon_on_tmpfs(size: &str, namespace: &str) -> Result<Daemon> {
    let d = Daemon::start_prepared(None, |d| {
        std::fs::create_dir_all(&d.root)?;
        ok(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(&d.root)
            .output()?)?;
        Ok(())
    })?;
    Ok(d.in_namespace(namespace))
}

/// Writes `path` until the filesystem is full; the error must be ENOSPC.
fn fill(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0xa5_u8; 64 * 1024];
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..4096 {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            anyhow::ensure!(e.raw_os_error() == Some(28), "filling: {e}");
            return Ok(());
        }
    }
    anyhow::bail!("{} never filled up", path.display())
}

/// `ctr namespaces create name` with 64 labels of ~4 KiB: a metadata write
/// that needs new pages in the database file.
fn big_namespace(d: &Daemon, name: &str) -> Result<std::process::Output> {
    let value = "v".repeat(4000);
    let labels: Vec<String> = (0..64).map(|i| format!("l{i}={value}")).collect();
    let mut args = vec!["namespaces", "create", name];
    args.extend(labels.iter().map(String::as_str));
    d.ctr(&args)
}

#[test]
fn a_full_disk_is_reported_and_writes_work_again_once_space_is_freed() -> Result<()> {
    let d = daemon_on_tmpfs("24m", "h7-full")?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    ok(d.ctr(&["namespaces", "create", "before-full"])?)?;
    let image = "docker.io/library/busybox:latest";
    let parent = ok(d.ctr(&["snapshot", "ls"])?)?;
    let parent = parent
        .lines()
        .find(|l| l.contains("Committed"))
        .and_then(|l| l.split_whitespace().next())
        .context("the image's committed snapshot")?
        .to_string();

    let filler = d.root.join("filler");
    fill(&filler)?;
    // Metadata writes that grow the file fail, with a clear error; bounded
    // (each asks for ~256 KiB more and nothing is free).
    let mut failure = None;
    for i in 0..8 {
        let out = big_namespace(&d, &format!("grow-{i}"))?;
        if !out.status.success() {
            failure = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let failure = failure.context("no metadata write failed on a full disk")?;
    assert!(
        failure.contains("metadata db") && failure.contains("No space left on device"),
        "{failure}"
    );
    // Still full: still failing, and logged once per episode, not once per
    // request (a small write that fits in freed pages, such as a scheduled
    // garbage collection, ends an episode).
    let more = 4;
    for i in 0..more {
        fails(big_namespace(&d, &format!("still-full-{i}"))?)?;
    }
    let log = d.log();
    let logged = log.matches("I/O error on the metadata database").count();
    assert!((1..more).contains(&logged), "logged {logged} times:\n{log}");
    assert!(log.contains("free space on its filesystem"), "{log}");

    // Space freed: everything works without a restart.
    std::fs::remove_file(&filler)?;
    ok(big_namespace(&d, "after-full")?)?;
    let namespaces = ok(d.ctr(&["namespaces", "ls", "-q"])?)?;
    assert!(
        namespaces.contains("before-full") && namespaces.contains("after-full"),
        "{namespaces}"
    );
    ok(d.ctr(&["snapshot", "prepare", "work", &parent])?)?;
    ok(d.ctr(&["snapshot", "commit", "done", "work"])?)?;
    let hello = ok(d.ctr(&["run", "--rm", image, "after-full", "echo", "hello"])?)?;
    assert_eq!(hello, "hello\n");
    Ok(())
}

#[test]
fn a_second_daemon_on_the_same_root_refuses_to_start() -> Result<()> {
    let d = Daemon::start()?;
    let other = tempfile::tempdir()?;
    let out = Command::new(berth_tests::bin("berthd")?)
        .arg("--root")
        .arg(&d.root)
        .arg("--state")
        .arg(other.path().join("state"))
        .arg("--address")
        .arg(other.path().join("berthd.sock"))
        .output()?;
    let err = fails(out)?;
    let lock = d.root.join("berthd.lock");
    assert!(
        err.contains("in use by another berthd") && err.contains(&lock.display().to_string()),
        "{err}"
    );
    let pid = d.pid().context("daemon pid")?;
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    // Nor on the same state with another root.
    let out = Command::new(berth_tests::bin("berthd")?)
        .arg("--root")
        .arg(other.path().join("root"))
        .arg("--state")
        .arg(&d.state)
        .arg("--address")
        .arg(other.path().join("berthd.sock"))
        .output()?;
    let err = fails(out)?;
    assert!(
        err.contains(&d.state.join("berthd.lock").display().to_string()),
        "{err}"
    );
    // It opened nothing of the first daemon's: that one is unharmed.
    ok(d.ctr(&["version"])?)?;
    ok(d.ctr(&["plugins", "ls"])?)?;
    Ok(())
}

#[test]
fn an_unknown_log_level_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(berth_tests::bin("berthd")?)
        .args(["--log-level", "bogus"])
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(dir.path().join("berthd.sock"))
        .output()?;
    let err = fails(out)?;
    assert!(err.contains("\"bogus\" is not a log level"), "{err}");
    assert!(!dir.path().join("berthd.sock").exists());
    // containerd's (logrus') names are accepted.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "version = 2\n[debug]\nlevel = \"loud\"\n")?;
    let out = Command::new(berth_tests::bin("berthd")?)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(dir.path().join("berthd.sock"))
        .output()?;
    let err = fails(out)?;
    assert!(err.contains("\"loud\" is not a log level"), "{err}");
    Ok(())
}

#[test]
fn an_empty_label_key_is_refused() -> Result<()> {
    let d = Daemon::start()?.in_namespace("h7-labels");
    let err = fails(d.ctr(&["namespaces", "create", "emptykey", "=value"])?)?;
    assert!(err.contains("label key must not be empty"), "{err}");
    ok(d.ctr(&["namespaces", "create", "labelled", "k=v"])?)?;
    let err = fails(d.ctr(&["namespaces", "label", "labelled", "=value"])?)?;
    assert!(err.contains("label key must not be empty"), "{err}");
    let rootfs = d.scratch("rootfs");
    berth_tests::busybox_rootfs(&rootfs)?;
    let err = fails(d.ctr(&[
        "containers",
        "create",
        "--label",
        "=value",
        "--rootfs",
        &rootfs.display().to_string(),
        "c1",
        "/bin/true",
    ])?)?;
    assert!(err.contains("label key must not be empty"), "{err}");
    assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    Ok(())
}

/// Whether anything is mounted on `path` (by /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let wanted = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

#[test]
fn a_mount_target_through_a_symlink_stays_inside_the_root() -> Result<()> {
    use berth_api::containerd::services::diff::v1::ApplyRequest;
    use berth_api::containerd::services::diff::v1::diff_client::DiffClient;
    use berth_api::containerd::types::{Descriptor, Mount};

    let d = Daemon::start()?.in_namespace("h7-mounts");
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    // The first mount's tree holds tmp/x -> <host-target>, an absolute
    // link out of it; the second mount asks for target tmp/x.
    let (tree, host, other) = (
        d.scratch("tree"),
        d.scratch("host-target"),
        d.scratch("other"),
    );
    for dir in [&tree.join("tmp"), &host, &other] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(other.join("marker"), b"x")?;
    std::os::unix::fs::symlink(&host, tree.join("tmp/x"))?;
    let bind = |source: &Path, target: &str| Mount {
        r#type: "bind".into(),
        source: source.display().to_string(),
        target: target.into(),
        options: vec!["rbind".into(), "rw".into()],
    };
    let layer = &layout.layers[0];
    let request = ApplyRequest {
        diff: Some(Descriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size)?,
            annotations: Default::default(),
        }),
        mounts: vec![bind(&tree, ""), bind(&other, "tmp/x")],
        payloads: Default::default(),
        sync_fs: false,
    };
    let address = d.address.clone();
    let namespace = d.namespace.clone();
    let (host2, seen_during) = (host.clone(), Arc::new(AtomicBool::new(false)));
    let seen = seen_during.clone();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = berth_api::client::Client::connect(&address)
                .await?
                .with_namespace(namespace);
            let mut diff = DiffClient::with_interceptor(client.channel(), client.interceptor());
            let call = diff.apply(request);
            tokio::pin!(call);
            // Watch the host path while the call runs.
            loop {
                tokio::select! {
                    r = &mut call => return anyhow::Ok(r),
                    () = tokio::time::sleep(Duration::from_millis(1)) => {
                        if is_mount_point(&host2) {
                            seen.store(true, Ordering::Release);
                        }
                    }
                }
            }
        });
    let mounted_after = is_mount_point(&host);
    let marker = host.join("marker").exists();
    if mounted_after {
        let _ = Command::new("umount").arg("-l").arg(&host).status();
    }
    let result = result?;
    assert!(!mounted_after, "a mount was left on the host path");
    assert!(
        !seen_during.load(Ordering::Acquire),
        "the host path was mounted on"
    );
    assert!(!marker, "the host path showed the mount's content");
    // The target does not exist inside the tree (the link read in-root
    // names a missing path): the call fails and says where.
    let status = result.expect_err("apply mounted through the link");
    assert!(
        status.message().contains("No such file or directory"),
        "{status:?}"
    );
    Ok(())
}

/// Unmounts its path when dropped (so a failing test leaves no mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Makes `dir` read-only by binding it over itself read-only: the part of
/// berth's root below `dir` turns read-only under a running daemon, as when
/// the kernel remounts a failing disk read-only (a plain `remount,ro` of
/// the whole root is refused while the daemon holds its databases open for
/// writing).
fn read_only(dir: &Path) -> Result<Unmount> {
    ok(Command::new("mount")
        .arg("--bind")
        .arg(dir)
        .arg(dir)
        .output()?)?;
    let guard = Unmount(dir.to_path_buf());
    ok(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(dir)
        .output()?)?;
    Ok(guard)
}

#[test]
fn a_read_only_root_is_reported_and_nothing_is_lost() -> Result<()> {
    let d = Daemon::start()?.in_namespace("h7-ro");
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();
    let image = "docker.io/library/busybox:latest";
    let content = d.root.join("io.containerd.content.v1.content");
    let snapshots = d.root.join("io.containerd.snapshotter.v1.overlayfs");

    // Blobs and snapshots read-only: an import and a run fail, naming the
    // cause; the daemon keeps serving what needs no new files.
    {
        let _content = read_only(&content)?;
        let _snapshots = read_only(&snapshots)?;
        let err = fails(d.ctr(&["images", "import", &archive])?)?;
        assert!(err.contains("Read-only file system"), "{err}");
        ok(d.ctr(&["namespaces", "create", "during-ro"])?)?;
        assert_eq!(ok(d.ctr(&["images", "ls", "-q"])?)?, "");
        assert_eq!(ok(d.ctr(&["content", "active"])?)?.lines().count(), 1);
    }
    // Writable again: the same calls work without a restart, and nothing
    // half-written was left behind.
    ok(d.ctr(&["images", "import", &archive])?)?;
    {
        let _snapshots = read_only(&snapshots.join("snapshots"))?;
        let err = fails(d.ctr(&["run", "--rm", image, "h7-ro-run", "true"])?)?;
        assert!(err.contains("Read-only file system"), "{err}");
        // The failed run left no container behind.
        assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    }
    let hello = ok(d.ctr(&["run", "--rm", image, "h7-ro-run", "echo", "hello"])?)?;
    assert_eq!(hello, "hello\n");
    let blobs = ok(d.ctr(&["content", "ls", "-q"])?)?;
    for digest in ok(d.ctr(&["content", "ls", "-q"])?)?.lines() {
        ok(d.ctr(&["content", "get", digest])?)?;
    }
    assert!(!blobs.is_empty());
    assert_eq!(ok(d.ctr(&["content", "active"])?)?.lines().count(), 1);
    assert!(ok(d.ctr(&["namespaces", "ls", "-q"])?)?.contains("during-ro"));
    d.finish()
}

#[test]
fn berthd_refuses_to_start_on_a_read_only_root() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("berth-ro-root").tempdir()?;
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    std::fs::create_dir_all(&root)?;
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m,mode=0700", "tmpfs"])
        .arg(&root)
        .output()?)?;
    let unmount = Unmount(root.clone());
    let out = Command::new(berth_tests::bin("berthd")?)
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(state.join("berthd.sock"))
        .stdin(Stdio::null())
        .output()?;
    drop(unmount);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "berthd started on a read-only root");
    assert!(
        err.contains(&root.display().to_string()) && err.contains("Read-only file system"),
        "{err}"
    );
    Ok(())
}
