//! Snapshotters through Debian's `ctr` and `berthctl`: both built-in
//! drivers, restart and crash safety, garbage collection, and a proxy
//! snapshotter in another process.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use berth_tests::{Daemon, bin, fails, in_mount_namespace, mount_script, ok, subscribe};

fn ctr_sn(d: &Daemon, sn: &str, args: &[&str]) -> Result<std::process::Output> {
    let mut all = vec!["snapshot", "--snapshotter", sn];
    all.extend_from_slice(args);
    d.ctr(&all)
}

/// Mounts what `ctr snapshot mounts` prints for `key` and runs `then`
/// (with `$T` the mount point) in a private mount namespace.
fn with_mounted(d: &Daemon, sn: &str, key: &str, then: &str) -> Result<String> {
    let target = d.scratch(&format!("mnt-{key}"));
    let lines = ok(ctr_sn(
        d,
        sn,
        &["mounts", &target.display().to_string(), key],
    )?)?;
    let script = mount_script(&lines, &target, &format!("T={}\n{then}", target.display()));
    in_mount_namespace(&script)
}

fn lifecycle(sn: &str) -> Result<()> {
    let d = Daemon::start()?;
    let c = |args: &[&str]| ctr_sn(&d, sn, args);
    ok(c(&["prepare", "base-work"])?)?;
    with_mounted(
        &d,
        sn,
        "base-work",
        "echo lower > $T/from-base; mkdir $T/dir; echo x > $T/dir/gone",
    )?;
    ok(c(&["commit", "base", "base-work"])?)?;
    ok(c(&["prepare", "top-work", "base"])?)?;
    with_mounted(
        &d,
        sn,
        "top-work",
        "echo upper > $T/from-top; rm $T/dir/gone",
    )?;
    ok(c(&["commit", "top", "top-work"])?)?;
    ok(c(&["prepare", "ctr-1", "top"])?)?;
    ok(c(&["view", "look", "top"])?)?;

    // Lower layers' files show through the mounts ctr prints.
    let seen = with_mounted(
        &d,
        sn,
        "ctr-1",
        "cat $T/from-base $T/from-top; ls $T/dir | wc -l",
    )?;
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        ["lower", "upper", "0"],
        "{seen}"
    );
    let seen = with_mounted(
        &d,
        sn,
        "look",
        "cat $T/from-base; touch $T/new 2>&1 || echo read-only",
    )?;
    assert!(
        seen.contains("lower") && seen.contains("read-only"),
        "{seen}"
    );

    let ls = ok(c(&["ls"])?)?;
    for row in ["base", "top     base", "ctr-1   top", "look    top"] {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert!(
            ls.lines().any(|l| l
                .split_whitespace()
                .take(words.len())
                .eq(words.iter().copied())),
            "{row:?} missing from:\n{ls}"
        );
    }
    assert!(
        ls.contains("Committed") && ls.contains("Active") && ls.contains("View"),
        "{ls}"
    );
    let tree = ok(c(&["tree"])?)?;
    assert!(tree.contains(" base\n  \\_ top\n"), "{tree}");
    let usage = ok(c(&["usage", "-b", "top"])?)?;
    assert!(
        usage.lines().nth(1).is_some_and(|l| l.starts_with("top")),
        "{usage}"
    );
    let info = ok(c(&["info", "top"])?)?;
    assert!(
        info.contains("\"Kind\": \"Committed\"") && info.contains("\"Parent\": \"base\""),
        "{info}"
    );

    // A parent with children stays, with containerd's error category.
    let err = fails(c(&["rm", "top"])?)?;
    assert!(err.contains("failed precondition"), "{err}");
    let err = fails(c(&["prepare", "x", "ctr-1"])?)?;
    assert!(err.contains("not committed"), "{err}");
    let err = fails(c(&["prepare", "ctr-1", "top"])?)?;
    assert!(err.contains("already exists"), "{err}");
    // The view goes first: ctr makes views without a gc.root label, so, as
    // in containerd, a collection after any other removal may take it
    // (`prepare` labels its snapshot a root).
    ok(c(&["rm", "look", "ctr-1"])?)?;
    ok(c(&["rm", "top", "base"])?)?;
    assert_eq!(ok(c(&["ls"])?)?.lines().count(), 1);
    d.finish()
}

#[test]
fn overlayfs_snapshots_through_ctr() -> Result<()> {
    lifecycle("overlayfs")
}

#[test]
fn native_snapshots_through_ctr() -> Result<()> {
    lifecycle("native")
}

#[test]
fn namespaces_have_their_own_keys_and_events_are_published() -> Result<()> {
    let d = Daemon::start()?;
    let watcher = subscribe(&d)?;
    ok(d.ctr(&["-n", "one", "snapshot", "prepare", "k"])?)?;
    ok(d.ctr(&["-n", "two", "snapshot", "prepare", "k"])?)?;
    ok(d.ctr(&["-n", "one", "snapshot", "commit", "K", "k"])?)?;
    ok(d.ctr(&["-n", "two", "snapshot", "rm", "k"])?)?;
    let seen = watcher.wait_for(
        &["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"],
        Duration::from_secs(30),
    )?;
    // Each event carries the namespace it happened in.
    let topics_in = |ns: &str| -> Vec<&str> {
        // `<time> <namespace> <topic> <event>`; the time has spaces.
        seen.lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let t = words.iter().position(|w| w.starts_with("/snapshot/"))?;
                (t > 0 && words[t - 1] == ns).then_some(words[t])
            })
            .collect()
    };
    assert_eq!(
        topics_in("one"),
        ["/snapshot/prepare", "/snapshot/commit"],
        "{seen}"
    );
    assert_eq!(
        topics_in("two"),
        ["/snapshot/prepare", "/snapshot/remove"],
        "{seen}"
    );
    let one = ok(d.ctr(&["-n", "one", "snapshot", "ls"])?)?;
    let two = ok(d.ctr(&["-n", "two", "snapshot", "ls"])?)?;
    assert!(one.contains("K ") && !one.contains("k "), "{one}");
    assert_eq!(two.lines().count(), 1, "{two}");
    d.finish()
}

#[test]
fn restart_keeps_every_snapshot_something_holds() -> Result<()> {
    let mut d = Daemon::start()?;
    for sn in ["overlayfs", "native"] {
        ok(ctr_sn(&d, sn, &["prepare", "a"])?)?;
        with_mounted(&d, sn, "a", "echo kept > $T/f")?;
        ok(ctr_sn(&d, sn, &["commit", "A", "a"])?)?;
        ok(ctr_sn(&d, sn, &["prepare", "b", "A"])?)?;
        ok(ctr_sn(&d, sn, &["view", "v", "A"])?)?;
    }
    let before: Vec<String> = ["overlayfs", "native"]
        .iter()
        .map(|sn| ok(ctr_sn(&d, sn, &["ls"])?))
        .collect::<Result<_>>()?;
    d.kill9()?;
    d.restart()?;
    for (sn, before) in ["overlayfs", "native"].iter().zip(before) {
        // All but the view: ctr's view holds no lease and no gc.root label,
        // and the startup collection takes it (containerd 1.6 does the same).
        assert!(before.lines().any(|l| l.starts_with("v ")), "{before}");
        let expected: String = before
            .lines()
            .filter(|l| !l.starts_with("v "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(ok(ctr_sn(&d, sn, &["ls"])?)?, expected);
        let seen = with_mounted(&d, sn, "b", "cat $T/f")?;
        assert_eq!(seen.trim(), "kept");
        ok(ctr_sn(&d, sn, &["commit", "B", "b"])?)?;
    }
    d.finish()
}

/// Commits racing a SIGKILL: afterwards each snapshot is wholly active
/// under its key or wholly committed under its name, and usable either way.
#[test]
fn kill9_during_commits_leaves_old_or_new_state() -> Result<()> {
    let mut d = Daemon::start()?;
    const N: usize = 30;
    for i in 0..N {
        ok(d.ctr(&["snapshot", "prepare", &format!("k{i}")])?)?;
    }
    // Each landed commit leaves a marker, so the kill can wait for one.
    let landed = d.scratch("landed");
    std::fs::create_dir_all(&landed)?;
    let mut script = String::new();
    let ctr = berth_tests::ctr_bin()?;
    for i in 0..N {
        script.push_str(&format!(
            "{} -a {} snapshot commit n{i} k{i} && touch {}/{i}\n",
            ctr.display(),
            d.address.display(),
            landed.display()
        ));
    }
    let mut committer = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Once a commit landed, crash in the middle of the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&landed)?.next().is_none() {
        if std::time::Instant::now() > deadline {
            bail!("no commit landed:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    d.kill9()?;
    let _ = committer.kill();
    let _ = committer.wait();
    // berthd finishes or rolls back interrupted commits before it serves.
    d.restart()?;
    let ls = ok(d.ctr(&["snapshot", "ls"])?)?;
    let kind_of = |name: &str| {
        ls.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().last().map(str::to_owned))
    };
    let mut committed = 0;
    for i in 0..N {
        let (key, name) = (format!("k{i}"), format!("n{i}"));
        match (kind_of(&key), kind_of(&name)) {
            (Some(k), None) if k == "Active" => {
                ok(d.ctr(&["snapshot", "commit", &name, &key])?)?;
            }
            (None, Some(n)) if n == "Committed" => committed += 1,
            other => bail!("snapshot {i} is in a torn state {other:?}:\n{ls}"),
        }
        // Either way it now works as a parent.
        ok(d.ctr(&["snapshot", "view", &format!("v{i}"), &name])?)?;
    }
    // At least the commit whose marker the kill waited for is kept.
    assert!(committed >= 1, "no commit survived the kill:\n{ls}");
    eprintln!("{committed} of {N} commits landed before the kill");
    d.finish()
}

#[test]
fn garbage_collection_removes_unreferenced_snapshots_from_the_driver() -> Result<()> {
    let d = Daemon::start()?;
    ok(d.ctr(&["snapshot", "prepare", "a"])?)?;
    ok(d.ctr(&["snapshot", "commit", "A", "a"])?)?;
    ok(d.ctr(&["snapshot", "prepare", "b", "A"])?)?;
    ok(d.ctr(&["snapshot", "prepare", "keep"])?)?;
    // Drop A's gc.root: only its child keeps it now.
    ok(d.ctr(&["snapshot", "label", "A", "containerd.io/gc.root="])?)?;
    let dirs = d
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let count = || std::fs::read_dir(&dirs).map(|r| r.count()).unwrap_or(0);
    assert_eq!(count(), 3);
    ok(d.ctr(&["snapshot", "rm", "b"])?)?;
    // A synchronous lease removal returns once a collection that began
    // after it has finished, driver directories swept: A goes, `keep` (a
    // root) stays.
    ok(d.ctr(&["leases", "create", "--id", "sync-point"])?)?;
    ok(d.ctr(&["leases", "rm", "--sync", "sync-point"])?)?;
    let ls = ok(d.ctr(&["snapshot", "ls"])?)?;
    assert!(!ls.contains("A ") && ls.contains("keep"), "{ls}");
    assert_eq!(
        count(),
        1,
        "driver directories left: {:?}",
        std::fs::read_dir(&dirs)?.collect::<Vec<_>>()
    );
    d.finish()
}

#[test]
fn berthctl_snapshot_commands() -> Result<()> {
    let d = Daemon::start()?;
    let b = |args: &[&str]| d.berthctl(args);
    let target = d.scratch("mnt");
    let out = ok(b(&[
        "snapshot",
        "prepare",
        "--target",
        &target.display().to_string(),
        "a",
    ])?)?;
    assert!(out.starts_with("mount -t bind "), "{out}");
    in_mount_namespace(&mount_script(
        &out,
        &target,
        &format!("echo hi > {}/f", target.display()),
    ))?;
    ok(b(&["snapshot", "commit", "A", "a"])?)?;
    let json = ok(b(&["snapshot", "view", "--mounts", "v", "A"])?)?;
    assert!(
        json.contains("\"Type\": \"bind\"") && json.contains("\"ro\""),
        "{json}"
    );
    let ls = ok(b(&["snapshot", "ls"])?)?;
    assert!(
        ls.starts_with("KEY") && ls.contains("v") && ls.contains("View"),
        "{ls}"
    );
    assert_eq!(ok(b(&["snapshot", "tree"])?)?, " A\n  \\_ v\n");
    let labels = ok(b(&["snapshot", "label", "A", "team=db"])?)?;
    assert!(
        labels.contains("team=db") && labels.contains("containerd.io/gc.root="),
        "{labels}"
    );
    let info = ok(b(&["snapshot", "info", "A"])?)?;
    assert!(info.contains("\"team\": \"db\""), "{info}");
    let usage = ok(b(&["snapshot", "usage", "-b", "A"])?)?;
    let size: u64 = usage
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(size > 0, "{usage}");
    let mounts = ok(b(&["snapshot", "mounts", "/x", "v"])?)?;
    assert!(mounts.contains(" /x -o ro,rbind"), "{mounts}");
    let err = fails(b(&["snapshot", "rm", "A"])?)?;
    assert!(err.contains("failed precondition"), "{err}");
    ok(b(&["snapshot", "rm", "v", "A"])?)?;
    // The same commands on ctr's side see the result.
    assert_eq!(ok(d.ctr(&["snapshot", "ls"])?)?.lines().count(), 1);
    d.finish()
}

/// A snapshotter served by another process, declared in config.toml.
#[test]
fn proxy_snapshotter_is_used_like_a_builtin() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("berth-proxy").tempdir()?;
    let socket = dir.path().join("proxy.sock");
    let mut proxy = Command::new(bin("berth-proxy-snapshotter")?)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--address")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if std::time::Instant::now() > deadline || proxy.try_wait()?.is_some() {
            bail!("berth-proxy-snapshotter did not come up");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _proxy = Kill(proxy);
    let config = format!(
        "version = 2\n[proxy_plugins.mysnap]\ntype = \"snapshot\"\naddress = \"{}\"\n",
        socket.display()
    );
    let d = Daemon::start_with_config(Some(&config))?;
    let plugins = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains("mysnap")
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    ok(ctr_sn(&d, "mysnap", &["prepare", "a"])?)?;
    with_mounted(&d, "mysnap", "a", "echo via-proxy > $T/f")?;
    ok(ctr_sn(&d, "mysnap", &["commit", "A", "a"])?)?;
    ok(ctr_sn(&d, "mysnap", &["prepare", "b", "A"])?)?;
    assert_eq!(
        with_mounted(&d, "mysnap", "b", "cat $T/f")?.trim(),
        "via-proxy"
    );
    let ls = ok(ctr_sn(&d, "mysnap", &["ls"])?)?;
    assert!(ls.contains("Committed") && ls.contains("Active"), "{ls}");
    let err = fails(ctr_sn(&d, "mysnap", &["rm", "A"])?)?;
    assert!(err.contains("failed precondition"), "{err}");
    // The proxy's own store holds the namespaced names.
    assert!(ok(ctr_sn(&d, "overlayfs", &["ls"])?)?.lines().count() == 1);
    ok(ctr_sn(&d, "mysnap", &["rm", "b", "A"])?)?;
    d.finish()
}
