//! `cargo xtask bench [SCENARIO...]`: berthd and Debian's containerd side
//! by side, on temporary roots, driven by the same client (Debian's `ctr`),
//! alternating runs. Prints medians, min–max and the ratio berth/containerd,
//! and writes JSON under `target/bench/`.
//!
//! Scenarios so far: `run` (`run --rm ... true` latency; 20 sequential
//! `run -d`; daemon and shim RSS; both daemons run the same runc on the
//! same busybox root filesystem, `--rootfs`), `pull` and `unpack` (the
//! ~250 MB 6-layer test image through ctr's client-side pull and import).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, workspace_root};

/// Runs of each measurement per daemon.
const RUNS: usize = 10;

/// One daemon under test.
struct Daemon {
    name: &'static str,
    child: Child,
    address: PathBuf,
    state: PathBuf,
}

impl Daemon {
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("--address").arg(&self.address).args(args);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    /// berthctl (release build) against this daemon.
    fn berthctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(workspace_root().join("target/release/berthctl"));
        c.arg("--address").arg(&self.address).args(args);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// PIDs of this daemon's shims (started with `-address <our socket>`).
    fn shims(&self) -> Vec<u32> {
        let needle = self.address.display().to_string();
        let mut out = Vec::new();
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.contains("containerd-shim")) && args.contains(&needle)
            {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for pid in self.shims() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn wait_for_socket(path: &Path, child: &mut Child, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited with {status} during startup"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not serve {} within 20s",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn start_berthd(dir: &Path, bin: &Path) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("berthd.sock");
    let state = dir.join("state");
    let mut child = Command::new(bin.join("berthd"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&address)
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("berthd.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting berthd: {e}"))?;
    wait_for_socket(&address, &mut child, "berthd")?;
    Ok(Daemon {
        name: "berthd",
        child,
        address,
        state,
    })
}

fn start_containerd(dir: &Path) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("containerd.sock");
    let state = dir.join("state");
    let config = dir.join("config.toml");
    // Only what the scenarios use: CRI and the extra snapshotters off.
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n",
    )
    .map_err(|e| e.to_string())?;
    let mut child = Command::new("/usr/bin/containerd")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&address)
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("containerd.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting containerd: {e}"))?;
    wait_for_socket(&address, &mut child, "containerd")?;
    Ok(Daemon {
        name: "containerd",
        child,
        address,
        state,
    })
}

fn busybox_rootfs(dir: &Path) -> Result<()> {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .map_err(|e| format!("copying /bin/busybox (busybox-static): {e}"))?;
    for a in ["sh", "true", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn timed(mut cmd: Command) -> Result<Duration> {
    let started = Instant::now();
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(started.elapsed())
}

/// Median, min and max of `v` (sorted in place).
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// One row of the results table.
struct Row {
    metric: String,
    unit: &'static str,
    berth: Vec<f64>,
    containerd: Vec<f64>,
}

fn print_and_save(scenario: &str, rows: &mut [Row]) -> Result<()> {
    println!(
        "{:<34} {:>12} {:>21} {:>12} {:>21} {:>8}",
        "metric", "berth", "berth min-max", "containerd", "containerd min-max", "ratio"
    );
    let mut json = Vec::new();
    for r in rows.iter_mut() {
        let (bm, bmin, bmax) = stats(&mut r.berth);
        let (cm, cmin, cmax) = stats(&mut r.containerd);
        let ratio = if cm > 0.0 { bm / cm } else { 0.0 };
        println!(
            "{:<34} {:>9.1} {:<2} {:>9.1}-{:<9.1}   {:>9.1} {:<2} {:>9.1}-{:<9.1}   {:>6.2}",
            r.metric, bm, r.unit, bmin, bmax, cm, r.unit, cmin, cmax, ratio
        );
        json.push(serde_json::json!({
            "metric": r.metric, "unit": r.unit,
            "berth": {"median": bm, "min": bmin, "max": bmax, "samples": r.berth},
            "containerd": {"median": cm, "min": cmin, "max": cmax, "samples": r.containerd},
            "ratio": ratio,
        }));
    }
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let path = out.join(format!("{scenario}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("(written to {})", path.display());
    Ok(())
}

fn scenario_run(berth: &Daemon, containerd: &Daemon, rootfs: &Path) -> Result<()> {
    let rootfs = rootfs.display().to_string();
    let mut latency = Row {
        metric: "run --rm true (latency)".into(),
        unit: "ms",
        berth: Vec::new(),
        containerd: Vec::new(),
    };
    // Warm-up, then alternate A B A B.
    for d in [berth, containerd] {
        timed(d.ctr(&["run", "--rm", "--rootfs", &rootfs, "warm", "/bin/true"]))?;
    }
    for i in 0..RUNS {
        for d in [berth, containerd] {
            let id = format!("lat-{i}");
            let t = timed(d.ctr(&["run", "--rm", "--rootfs", &rootfs, &id, "/bin/true"]))?;
            let v = t.as_secs_f64() * 1000.0;
            if d.name == "berthd" {
                latency.berth.push(v)
            } else {
                latency.containerd.push(v)
            }
        }
    }
    let mut twenty = Row {
        metric: "20 x run -d (total)".into(),
        unit: "ms",
        berth: vec![],
        containerd: vec![],
    };
    let mut daemon_rss = Row {
        metric: "daemon RSS with 20 tasks".into(),
        unit: "MB",
        berth: vec![],
        containerd: vec![],
    };
    let mut shim_rss = Row {
        metric: "RSS per shim".into(),
        unit: "MB",
        berth: vec![],
        containerd: vec![],
    };
    let mut idle = Row {
        metric: "daemon RSS idle".into(),
        unit: "MB",
        berth: vec![],
        containerd: vec![],
    };
    for round in 0..3 {
        for d in [berth, containerd] {
            let idle_mb = d.rss_kib() as f64 / 1024.0;
            let started = Instant::now();
            for i in 0..20 {
                let id = format!("d{round}-{i}");
                timed(d.ctr(&["run", "-d", "--rootfs", &rootfs, &id, "/bin/sleep", "600"]))?;
            }
            let total = started.elapsed().as_secs_f64() * 1000.0;
            let shims = d.shims();
            let per_shim = if shims.is_empty() {
                0.0
            } else {
                shims.iter().map(|p| rss_kib(*p)).sum::<u64>() as f64 / 1024.0 / shims.len() as f64
            };
            let daemon_mb = d.rss_kib() as f64 / 1024.0;
            for i in 0..20 {
                let id = format!("d{round}-{i}");
                let _ = d.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).status();
            }
            for i in 0..20 {
                let id = format!("d{round}-{i}");
                let deadline = Instant::now() + Duration::from_secs(10);
                while d
                    .ctr(&["tasks", "rm", &id])
                    .status()
                    .map(|s| !s.success())
                    .unwrap_or(true)
                {
                    if Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = d.ctr(&["containers", "rm", &id]).status();
            }
            let row = |r: &mut Row, v: f64| {
                if d.name == "berthd" {
                    r.berth.push(v)
                } else {
                    r.containerd.push(v)
                }
            };
            row(&mut twenty, total);
            row(&mut daemon_rss, daemon_mb);
            row(&mut shim_rss, per_shim);
            row(&mut idle, idle_mb);
        }
    }
    print_and_save("run", &mut [latency, twenty, idle, daemon_rss, shim_rss])
}

/// Removes image `name`, its snapshots and (with `content`) all content from `d`.
fn reset_image(d: &Daemon, name: &str, content: bool) {
    let _ = d.ctr(&["images", "rm", "--sync", name]).status();
    // Snapshots leaf first: repeat until nothing more goes.
    for _ in 0..10 {
        let out = d.ctr(&["snapshot", "ls"]).stdout(Stdio::piped()).output();
        let keys: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let _ = d.ctr(&["snapshot", "rm", &k]).status();
        }
    }
    if content {
        let out = d
            .ctr(&["content", "ls", "-q"])
            .stdout(Stdio::piped())
            .output();
        if let Ok(o) = out {
            for digest in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = d.ctr(&["content", "rm", digest]).status();
            }
        }
        // Garbage collection removes the blobs in the background: wait for
        // it, so the next pull really downloads.
        let blobs = d
            .state
            .parent()
            .map(|p| p.join("root/io.containerd.content.v1.content/blobs/sha256"))
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_dir(&blobs).is_ok_and(|mut r| r.next().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `pull`: the ~250 MB 6-layer image from a local registry, fresh content
/// each run; `unpack`: the same image re-imported with its content already
/// local (so the time is mostly unpacking). Both use ctr's client-side
/// pull/import against each daemon (berthd has no daemon-side pull yet).
fn scenario_images(berth: &Daemon, containerd: &Daemon, dir: &Path, which: &str) -> Result<()> {
    let layout =
        berth_tests::testimages::big(&dir.join("big"), 250).map_err(|e| format!("{e:#}"))?;
    let archive = dir.join("big.tar");
    layout
        .write_archive(&archive)
        .map_err(|e| format!("{e:#}"))?;
    let archive = archive.display().to_string();
    let name = "docker.io/library/big:latest";
    let mut row = Row {
        metric: if which == "pull" {
            "pull 250 MB, 6 layers (berthctl pull vs ctr pull)".into()
        } else {
            "unpack 250 MB, content local".into()
        },
        unit: "s",
        berth: vec![],
        containerd: vec![],
    };
    let registry = berth_tests::Registry::start().map_err(|e| format!("{e:#}"))?;
    let remote = format!("{}/bench/big:latest", registry.host);
    if which == "pull" {
        timed(berth.ctr(&["images", "import", &archive]))?;
        timed(berth.ctr(&["images", "tag", name, &remote]))?;
        // berth's own pusher puts the test image in the registry.
        timed(berth.berthctl(&["push", "--plain-http", &remote]))?;
        reset_image(berth, name, true);
        reset_image(berth, &remote, true);
    }
    for _ in 0..3 {
        for d in [berth, containerd] {
            let t = if which == "pull" {
                reset_image(d, &remote, true);
                // Each daemon's fastest client path: berthd pulls
                // daemon-side (Transfer); ctr 1.6 pulls client-side.
                if d.name == "berthd" {
                    timed(d.berthctl(&["pull", "--plain-http", &remote]))?
                } else {
                    timed(d.ctr(&["images", "pull", "--plain-http", &remote]))?
                }
            } else {
                reset_image(d, name, false);
                timed(d.ctr(&["images", "import", &archive]))?
            };
            if d.name == "berthd" {
                row.berth.push(t.as_secs_f64())
            } else {
                row.containerd.push(t.as_secs_f64())
            }
        }
    }
    print_and_save(which, &mut [row])
}

/// Entry point of `cargo xtask bench`.
pub(crate) fn bench(scenarios: &[String]) -> Result<()> {
    crate::deps()?;
    crate::build_release()?;
    let bin = workspace_root().join("target/release");
    let dir = tempfile_dir()?;
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let berth = start_berthd(&dir.join("berth"), &bin)?;
    let containerd = start_containerd(&dir.join("containerd"))?;
    let all = ["run".to_string(), "pull".to_string(), "unpack".to_string()];
    let wanted: &[String] = if scenarios.is_empty() {
        &all
    } else {
        scenarios
    };
    let mut result = Ok(());
    for s in wanted {
        println!("== scenario {s} (alternating runs, berth first)");
        result = match s.as_str() {
            "run" => scenario_run(&berth, &containerd, &rootfs),
            "pull" | "unpack" => scenario_images(&berth, &containerd, &dir, s),
            other => Err(format!(
                "unknown scenario {other:?} (known: run, pull, unpack)"
            )),
        };
        if result.is_err() {
            break;
        }
    }
    let states = [berth.state.clone(), containerd.state.clone()];
    drop(berth);
    drop(containerd);
    cleanup_runc(&states);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Force-deletes containers left in the daemons' runc roots.
fn cleanup_runc(states: &[PathBuf]) {
    let mut roots: Vec<PathBuf> = states.iter().map(|s| s.join("runc/default")).collect();
    roots.push(PathBuf::from("/run/containerd/runc/default"));
    for root in roots {
        for id in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(id.file_name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("berth-bench-{nanos}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
