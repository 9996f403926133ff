//! `cargo xtask bench [SCENARIO...]`: berthd and Debian's containerd side
//! by side, on temporary roots, driven by the same clients (Debian's `ctr`,
//! and this workspace's release `berthctl` for `stress` and `api`),
//! alternating runs. Prints medians, min–max, which direction is better and
//! the ratio berth/containerd, and writes JSON (one file per scenario) and a
//! Markdown summary under `<target>/bench/`.
//!
//! Scenarios (all of them when none is named):
//! - `run`: `ctr run --rm IMAGE ID true` latency (the image path: the
//!   busybox test image, a snapshot prepared and removed per container),
//!   the same with `--rootfs` (a prepared root filesystem, no snapshot);
//!   20 sequential `run -d`; daemon and shim RSS (both daemons run the
//!   same runc).
//! - `pull`: the ~250 MB 6-layer test image from a local registry into
//!   the default snapshotter: `ctr images pull` (Debian's ctr 1.6,
//!   client-side) on both daemons; and berthd's daemon-side pull
//!   (`berthctl pull`, Transfer) beside containerd 1.6's `ctr pull`.
//! - `unpack`: per snapshotter (overlayfs, native, btrfs, blockfile,
//!   erofs), the same pull, and the image imported again with its content
//!   already in the store (`berthctl images import` / `ctr images import`),
//!   beside containerd 1.6 where it has the same snapshotter; on daemons of
//!   its own, btrfs on loop-mounted Btrfs images; snapshotters this machine
//!   cannot run are listed as skipped, with the reason (see `bench/unpack.rs`).
//! - `stress`: `berthctl stress` (containerd-stress's loop through the API)
//!   at concurrency 2 and 8, at 8 again while `/v1/metrics` is scraped every
//!   100 ms (both daemons serve metrics), and its exec variant at 2.
//! - `memory`: fresh daemons with their defaults (CRI on for both); RSS
//!   idle (one image imported), with 20 and with 100 running `sleep`
//!   containers; RSS and PSS per shim.
//! - `api`: Version, Containers.List (1000 records) and Content.Info calls/s
//!   at concurrency 1 and 16 (`berthctl bench-api`, one connection per worker).
//! - `limit`: this machine's floors, no daemon: bare `runc run` of a
//!   bundle, plain HTTP download of the big image's blobs, sha256 and
//!   gunzip of the same bytes.
//! - `docker`: Docker Engine 20.10 on each daemon (`dockerd --containerd`,
//!   set up as the end-to-end tests do, but on Docker's default storage
//!   driver, overlay2, as users run it): `docker run --rm busybox true`
//!   latency (20 alternating runs per daemon on each of the rounds' fresh
//!   dockerd pairs), and the daemon's RSS with 50 running Docker
//!   containers. With `BERTH_BENCH_GRPC_PROXY` naming a built
//!   `contrib/grpc-timing-proxy`, each dockerd reaches its daemon through
//!   one, and the last round's per-call log, each `run --rm`'s start and
//!   end on the same clock, and dockerd's debug log are kept under
//!   `<target>/bench/docker-<daemon>-*.log`.
//! - `cri`: `critest -benchmark` against each daemon with its CRI plugin,
//!   in alternating rounds, each on a fresh daemon (set up as the CRI tests
//!   do): pod and container start/stop
//!   latencies, and the daemon's idle RSS with the CRI plugin loaded; each
//!   daemon's log is kept as `<target>/bench/cri-<daemon>.log` (see
//!   `bench/cri.rs` and docs/perf-cri.md).
//! - `scale`: costs against work, one fresh daemon at a time: `run -d`
//!   latency, RSS, Containers.List and Tasks.List with 0–1000 running
//!   containers; a pull while 200 containers start and stop; GC pause and
//!   Content.Info at up to 100k blobs; PNG curves (see `bench/scale.rs`).
//!
//! `--rounds N` sets the rounds per daemon of the repeated measurements
//! (default 3).
//!
//! Everything started is registered in [`crate::cleanup`] and stopped by
//! PID on exit, on error and on Ctrl-C.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, cleanup, run, workspace_root};

mod cri;
mod plot;
mod scale;
mod unpack;

/// Samples of each latency measurement per daemon in `run`.
const RUNS: usize = 5;
/// Rounds (per daemon) of the `run -d`, `pull`, `unpack`, `stress`, `api`
/// and `memory` measurements, unless `--rounds N` says otherwise.
const ROUNDS: usize = 3;
/// `--rounds N`, when given.
static ROUNDS_SET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Rounds per daemon of each measurement (see [`ROUNDS`]).
fn rounds() -> usize {
    ROUNDS_SET.get().copied().unwrap_or(ROUNDS)
}
/// `docker run --rm` samples per daemon and round, alternating: a run
/// takes ~0.1 s on overlay2. Five samples left the median at the mercy of
/// one slow run on this shared machine (0.72 and 0.85 in two runs a minute
/// apart); fifty in one round still spread 0.74–0.84 between runs of the
/// scenario, so the samples come from [`rounds`] dockerd pairs.
const DOCKER_RUNS: usize = 20;
/// Samples of each `limit` measurement.
const LIMIT_RUNS: usize = 5;
/// Duration of one `berthctl stress` run.
const STRESS_DURATION: &str = "5s";
/// Duration of one `bench-api` run.
const API_DURATION: &str = "3s";
/// Container records listed by the `api` scenario's Containers.List.
const API_CONTAINERS: usize = 1000;
/// The busybox test image's name.
const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// One daemon under test; stopped (with everything it started) when dropped.
struct Daemon {
    name: &'static str,
    pid: u32,
    address: PathBuf,
    bin: PathBuf,
    /// The daemon's `--root`.
    root: PathBuf,
    /// Port of its Prometheus endpoint on 127.0.0.1.
    metrics_port: u16,
}

impl Daemon {
    fn is_berth(&self) -> bool {
        self.name == "berthd"
    }

    /// Debian's `ctr` against this daemon.
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("--address").arg(&self.address).args(args);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    /// This workspace's `berthctl` against this daemon.
    fn berthctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("berthctl"));
        c.arg("--address")
            .arg(&self.address)
            .args(args)
            .env_remove("BERTH_NAMESPACE")
            .env_remove("CONTAINERD_NAMESPACE");
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmRSS:")
    }

    /// PIDs of this daemon's shims (started with `-address <our socket>`).
    fn shims(&self) -> Vec<u32> {
        cleanup::shims_of(&self.address)
    }

    /// Imports the busybox test image into namespace `ns` unless there.
    fn ensure_busybox(&self, ns: &str, archive: &Path) -> Result<()> {
        let out = self
            .ctr(&["-n", ns, "images", "ls", "-q"])
            .stdout(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == BUSYBOX)
        {
            return Ok(());
        }
        let archive = archive.display().to_string();
        timed(self.ctr(&["-n", ns, "images", "import", &archive]))?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        cleanup::stop_pid(self.pid);
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// A `kB` field of a `/proc` key-value file.
fn kib_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn wait_for_socket(path: &Path, child: &mut std::process::Child, name: &str) -> Result<()> {
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

/// Spawns a daemon in a process group of its own (a terminal's Ctrl-C is
/// for the harness, which then stops it), registered for cleanup.
fn spawn_daemon(
    name: &'static str,
    mut cmd: Command,
    dir: &Path,
    address: PathBuf,
    bin: &Path,
    metrics_port: u16,
) -> Result<Daemon> {
    let state = dir.join("state");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    cleanup::daemon(child.id(), &address, &state, dir);
    let d = Daemon {
        name,
        pid: child.id(),
        address,
        bin: bin.to_path_buf(),
        root: dir.join("root"),
        metrics_port,
    };
    wait_for_socket(&d.address, &mut child, name)?;
    Ok(d)
}

fn start_berthd(dir: &Path, bin: &Path) -> Result<Daemon> {
    start_berthd_with(dir, bin, "")
}

/// berthd with `plugins` (TOML tables) added to its config.
fn start_berthd_with(dir: &Path, bin: &Path, plugins: &str) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("berthd.sock");
    let port = free_port()?;
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("{}{plugins}", metrics_config(port)))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin.join("berthd"));
    berthd_args(&mut cmd, dir, &config, &address);
    spawn_daemon("berthd", cmd, dir, address, bin, port)
}

/// berthd's arguments for a bench daemon: `config`, root and state under
/// `dir`, socket `address`, warnings only in its log.
pub(crate) fn berthd_args(cmd: &mut Command, dir: &Path, config: &Path, address: &Path) {
    cmd.arg("--config")
        .arg(config)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(address)
        .arg("--log-level")
        .arg("warn");
}

fn start_containerd(dir: &Path, bin: &Path) -> Result<Daemon> {
    start_containerd_with(dir, bin, None)
}

/// containerd, with its btrfs snapshotter on `btrfs_root` (its
/// `root_path`, on a Btrfs) when given.
fn start_containerd_with(dir: &Path, bin: &Path, btrfs_root: Option<&Path>) -> Result<Daemon> {
    // Only what the scenarios use: CRI and the extra snapshotters off.
    let mut disabled = vec![
        "io.containerd.grpc.v1.cri",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
    ];
    let mut plugins = String::new();
    match btrfs_root {
        Some(root) => {
            plugins = format!(
                "[plugins.\"io.containerd.snapshotter.v1.btrfs\"]\n  root_path = \"{}\"\n",
                root.display()
            )
        }
        None => disabled.push("io.containerd.snapshotter.v1.btrfs"),
    }
    spawn_containerd(dir, bin, |port| {
        format!(
            "disabled_plugins = {disabled:?}\n{}{plugins}",
            metrics_config(port)
        )
    })
}

/// containerd with its defaults, every plugin it loads by default (CRI
/// included) and nothing else but the metrics endpoint, as berthd's
/// defaults for the `memory` scenario.
fn start_containerd_defaults(dir: &Path, bin: &Path) -> Result<Daemon> {
    spawn_containerd(dir, bin, metrics_config)
}

/// containerd on `dir` with the config `config(metrics port)`.
fn spawn_containerd(dir: &Path, bin: &Path, config: impl FnOnce(u16) -> String) -> Result<Daemon> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let address = dir.join("containerd.sock");
    let path = dir.join("config.toml");
    let port = free_port()?;
    std::fs::write(&path, config(port)).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("/usr/bin/containerd");
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&address)
        .arg("--config")
        .arg(&path)
        .arg("--log-level")
        .arg("warn");
    spawn_daemon("containerd", cmd, dir, address, bin, port)
}

/// A TCP port free right now on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Config (version 2, both daemons read it) serving metrics on `port`.
pub(crate) fn metrics_config(port: u16) -> String {
    format!("version = 2\n[metrics]\n  address = \"127.0.0.1:{port}\"\n")
}

/// Scrapes `port`'s `/v1/metrics` every 100 ms until dropped; counts scrapes.
struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Scraper {
    fn start(port: u16) -> Scraper {
        use std::io::Write as _;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = c.write_all(
                        b"GET /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                    );
                    let mut body = Vec::new();
                    if c.read_to_end(&mut body).is_ok() && body.starts_with(b"HTTP/1.1 200") {
                        scrapes += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops scraping; the number of successful scrapes.
    fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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

/// Runs `cmd` and parses the last line of its stdout as JSON.
fn json_of(mut cmd: Command) -> Result<serde_json::Value> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match parsed {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(format!(
            "{cmd:?} failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
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

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    /// Times, memory.
    Lower,
    /// Throughputs.
    Higher,
}

/// A target for the ratio berth/containerd.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// Ratio at most this.
    AtMost(f64),
    /// Ratio at least this.
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio > 0.0 && ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {g}"),
            Goal::AtLeast(g) => format!("≥ {g}"),
        }
    }
}

/// One row of the results table.
struct Row {
    metric: String,
    unit: &'static str,
    better: Better,
    goal: Option<Goal>,
    berth: Vec<f64>,
    containerd: Vec<f64>,
    /// Not measured, and why (shown instead of the figures).
    skipped: Option<String>,
    /// Why there is no containerd figure, shown in its column.
    no_baseline: Option<String>,
}

impl Row {
    fn new(metric: impl Into<String>, unit: &'static str, better: Better) -> Row {
        Row {
            metric: metric.into(),
            unit,
            better,
            goal: None,
            berth: Vec::new(),
            containerd: Vec::new(),
            skipped: None,
            no_baseline: None,
        }
    }

    fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }

    fn push(&mut self, d: &Daemon, v: f64) {
        if d.is_berth() {
            self.berth.push(v)
        } else {
            self.containerd.push(v)
        }
    }
}

/// Every scenario's rows, for the closing summary.
#[derive(Default)]
struct Summary {
    lines: Vec<String>,
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_and_save(scenario: &str, rows: &mut [Row], summary: &mut Summary) -> Result<()> {
    println!(
        "{:<40} {:>6} {:>10} {:>19} {:>10} {:>19} {:>7} {:>7}",
        "metric", "better", "berth", "min-max", "containerd", "min-max", "ratio", "goal"
    );
    let mut json = Vec::new();
    for r in rows.iter_mut() {
        let better = match r.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        if let Some(reason) = &r.skipped {
            println!("{:<40} {better:>6} skipped: {reason}", r.metric);
            summary.lines.push(format!(
                "| {scenario} | {} | {better} | skipped: {reason} | – | – | – |",
                r.metric
            ));
            json.push(serde_json::json!({
                "metric": r.metric, "unit": r.unit, "better": better, "skipped": reason,
            }));
            continue;
        }
        let (bm, bmin, bmax) = stats(&mut r.berth);
        let baseline = !r.containerd.is_empty();
        let (cm, cmin, cmax) = stats(&mut r.containerd);
        let ratio = if cm > 0.0 { bm / cm } else { 0.0 };
        let none = r.no_baseline.clone().unwrap_or_else(|| "-".into());
        let goal = r.goal.map(|g| {
            format!(
                "{} {}",
                g.text(),
                if g.met(ratio) { "met" } else { "missed" }
            )
        });
        let (c_med, c_range, ratio_s) = if baseline {
            (
                format!("{} {}", fmt_num(cm), r.unit),
                format!("{}-{}", fmt_num(cmin), fmt_num(cmax)),
                format!("{ratio:.2}"),
            )
        } else {
            (none.clone(), "-".into(), "-".into())
        };
        println!(
            "{:<40} {:>6} {:>10} {:>19} {:>10} {:>19} {:>7} {}",
            r.metric,
            better,
            format!("{} {}", fmt_num(bm), r.unit),
            format!("{}-{}", fmt_num(bmin), fmt_num(bmax)),
            c_med,
            c_range,
            ratio_s,
            goal.clone().unwrap_or_default(),
        );
        summary.lines.push(format!(
            "| {scenario} | {} | {better} | {} {} ({}–{}) | {} | {} | {} |",
            r.metric,
            fmt_num(bm),
            r.unit,
            fmt_num(bmin),
            fmt_num(bmax),
            if baseline {
                format!(
                    "{} {} ({}–{})",
                    fmt_num(cm),
                    r.unit,
                    fmt_num(cmin),
                    fmt_num(cmax)
                )
            } else {
                r.no_baseline.clone().unwrap_or_else(|| "–".into())
            },
            if baseline { ratio_s } else { "–".into() },
            goal.unwrap_or_else(|| "–".into()),
        ));
        json.push(serde_json::json!({
            "metric": r.metric, "unit": r.unit, "better": better,
            "berth": {"median": bm, "min": bmin, "max": bmax, "samples": r.berth},
            "containerd": if baseline {
                serde_json::json!({"median": cm, "min": cmin, "max": cmax, "samples": r.containerd})
            } else {
                serde_json::Value::Null
            },
            "ratio": if baseline { serde_json::json!(ratio) } else { serde_json::Value::Null },
            "no_baseline": r.no_baseline,
            "goal": r.goal.map(Goal::text),
            "goal_met": r.goal.map(|g| g.met(ratio)),
        }));
    }
    let out = target_dir().join("bench");
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

/// Shared inputs, built on first use.
struct Ctx {
    dir: PathBuf,
    bin: PathBuf,
    rootfs: PathBuf,
    busybox: Option<PathBuf>,
    big: Option<Big>,
}

/// The big image: its layout, its archive, and a registry holding it.
struct Big {
    layout: berth_tests::testimages::Layout,
    archive: String,
    registry: Registry,
    remote: String,
}

/// A local registry, registered for cleanup while it runs.
struct Registry(berth_tests::Registry);

impl Registry {
    fn start() -> Result<Registry> {
        let r = berth_tests::Registry::start().map_err(|e| format!("{e:#}"))?;
        cleanup::process(r.pid());
        Ok(Registry(r))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Its own Drop kills and reaps it.
        cleanup::forget(self.0.pid());
    }
}

impl Ctx {
    /// The busybox test image as an archive for `ctr images import`.
    fn busybox(&mut self) -> Result<PathBuf> {
        if let Some(p) = &self.busybox {
            return Ok(p.clone());
        }
        let layout = berth_tests::testimages::busybox(&self.dir.join("busybox"))
            .map_err(|e| format!("{e:#}"))?;
        let archive = self.dir.join("busybox.tar");
        layout
            .write_archive(&archive)
            .map_err(|e| format!("{e:#}"))?;
        self.busybox = Some(archive.clone());
        Ok(archive)
    }

    /// The big image, pushed (through berthd) to a local registry.
    fn big(&mut self, berth: &Daemon) -> Result<&Big> {
        if self.big.is_none() {
            eprintln!("building the 250 MB test image and pushing it to a local registry");
            let layout = berth_tests::testimages::big(&self.dir.join("big"), 250)
                .map_err(|e| format!("{e:#}"))?;
            let archive = self.dir.join("big.tar");
            layout
                .write_archive(&archive)
                .map_err(|e| format!("{e:#}"))?;
            let archive = archive.display().to_string();
            let registry = Registry::start()?;
            let remote = format!("{}/bench/big:latest", registry.0.host);
            let name = "docker.io/library/big:latest";
            timed(berth.ctr(&["images", "import", &archive]))?;
            timed(berth.ctr(&["images", "tag", name, &remote]))?;
            // berth's own pusher puts the test image in the registry.
            timed(berth.berthctl(&["push", "--plain-http", &remote]))?;
            reset_image(berth, name, true);
            reset_image(berth, &remote, true);
            self.big = Some(Big {
                layout,
                archive,
                registry,
                remote,
            });
        }
        self.big
            .as_ref()
            .ok_or_else(|| "big image missing".to_string())
    }
}

/// The two daemons of sample pair `n`, each first in every other pair: what
/// one run leaves behind (a shim exiting, a collection its deletes
/// scheduled, dockerd removing a layer) then slows both daemons' next runs
/// alike, not always the same one.
fn in_turn<T: Copy>(n: usize, pair: [T; 2]) -> [T; 2] {
    if n.is_multiple_of(2) {
        pair
    } else {
        [pair[1], pair[0]]
    }
}

fn scenario_run(berth: &Daemon, containerd: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    // Samples per daemon of the headline latency (twice the usual: its
    // goal is a ratio of two ~100 ms figures on a noisy machine).
    const IMAGE_RUNS: usize = 2 * RUNS;
    let rootfs = ctx.rootfs.display().to_string();
    // The path users take: an image, its snapshot prepared and removed
    // per container (`ctr run --rm IMAGE ID true`).
    let archive = ctx.busybox()?;
    for d in [berth, containerd] {
        d.ensure_busybox("default", &archive)?;
    }
    let mut latency =
        Row::new("run --rm IMAGE true (latency)", "ms", Better::Lower).goal(Goal::AtMost(0.5));
    let mut latency_rootfs = Row::new("run --rm --rootfs true (latency)", "ms", Better::Lower);
    // Warm-up, then alternate A B B A.
    for d in [berth, containerd] {
        timed(d.ctr(&["run", "--rm", BUSYBOX, "warm", "/bin/true"]))?;
        timed(d.ctr(&["run", "--rm", "--rootfs", &rootfs, "warm", "/bin/true"]))?;
    }
    for i in 0..IMAGE_RUNS {
        for d in in_turn(i, [berth, containerd]) {
            let id = format!("lat-{i}");
            let t = timed(d.ctr(&["run", "--rm", BUSYBOX, &id, "/bin/true"]))?;
            latency.push(d, t.as_secs_f64() * 1000.0);
        }
    }
    for i in 0..RUNS {
        for d in in_turn(i, [berth, containerd]) {
            let id = format!("lat-rootfs-{i}");
            let t = timed(d.ctr(&["run", "--rm", "--rootfs", &rootfs, &id, "/bin/true"]))?;
            latency_rootfs.push(d, t.as_secs_f64() * 1000.0);
        }
    }
    let mut twenty = Row::new("20 x run -d (total)", "ms", Better::Lower);
    let mut daemon_rss = Row::new("daemon RSS with 20 tasks", "MB", Better::Lower);
    let mut shim_rss = Row::new("RSS per shim", "MB", Better::Lower).goal(Goal::AtMost(0.2));
    let mut idle = Row::new("daemon RSS idle", "MB", Better::Lower).goal(Goal::AtMost(0.25));
    for round in 0..rounds() {
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
                shims.iter().map(|p| status_kib(*p, "VmRSS:")).sum::<u64>() as f64
                    / 1024.0
                    / shims.len() as f64
            };
            let daemon_mb = d.rss_kib() as f64 / 1024.0;
            remove_tasks(d, "default", (0..20).map(|i| format!("d{round}-{i}")));
            twenty.push(d, total);
            daemon_rss.push(d, daemon_mb);
            shim_rss.push(d, per_shim);
            idle.push(d, idle_mb);
        }
    }
    print_and_save(
        "run",
        &mut [latency, latency_rootfs, twenty, idle, daemon_rss, shim_rss],
        s,
    )
}

/// Kills (SIGKILL) and removes the tasks and containers `ids` of `d` in `ns`.
fn remove_tasks(d: &Daemon, ns: &str, ids: impl Iterator<Item = String> + Clone) {
    for id in ids.clone() {
        let _ = d
            .ctr(&["-n", ns, "tasks", "kill", "-s", "SIGKILL", &id])
            .status();
    }
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while d
            .ctr(&["-n", ns, "tasks", "rm", &id])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = d.ctr(&["-n", ns, "containers", "rm", &id]).status();
        let _ = d.ctr(&["-n", ns, "snapshots", "rm", &id]).status();
    }
}

/// Removes image `name`, its snapshots and (with `content`) all content from `d`.
fn reset_image(d: &Daemon, name: &str, content: bool) {
    let _ = d.ctr(&["images", "rm", "--sync", name]).status();
    remove_snapshots(d, "overlayfs");
    if content {
        remove_content(d);
    }
}

/// Removes every snapshot of snapshotter `sn` from `d`.
fn remove_snapshots(d: &Daemon, sn: &str) {
    // Snapshots leaf first: repeat until nothing more goes.
    for _ in 0..10 {
        let out = d
            .ctr(&["snapshots", "--snapshotter", sn, "ls"])
            .stdout(Stdio::piped())
            .output();
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
            let _ = d
                .ctr(&["snapshots", "--snapshotter", sn, "rm", &k])
                .status();
        }
    }
}

/// Removes all content from `d`, and waits for its blobs to be gone.
fn remove_content(d: &Daemon) {
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
    let blobs = d.root.join("io.containerd.content.v1.content/blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&blobs).is_ok_and(|mut r| r.next().is_some())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pull`: the ~250 MB 6-layer image from a local registry into the
/// default snapshotter (overlayfs), fresh content each run. berthd pulls
/// daemon-side (`berthctl pull`), containerd 1.6 client-side (`ctr pull`).
/// `unpack` (see [`unpack`]) measures pull and unpack per snapshotter.
fn scenario_pull(
    berth: &Daemon,
    containerd: &Daemon,
    ctx: &mut Ctx,
    s: &mut Summary,
) -> Result<()> {
    let big = ctx.big(berth)?;
    // The main row: the same client (Debian's ctr 1.6, client-side pull:
    // it fetches the blobs itself, writes them through Content.Write and
    // unpacks through Diff.Apply and Snapshots) against both daemons.
    let mut ctr_row =
        Row::new("pull 250 MB, 6 layers (ctr pull)", "s", Better::Lower).goal(Goal::AtMost(0.4));
    // Each daemon's fastest client path: berthd pulls daemon-side
    // (Transfer, berthctl pull); ctr 1.6 only pulls client-side.
    let mut transfer_row = Row::new(
        "pull 250 MB, 6 layers (berthctl pull vs ctr pull)",
        "s",
        Better::Lower,
    )
    .goal(Goal::AtMost(0.33));
    for _ in 0..rounds() {
        for d in [berth, containerd] {
            reset_image(d, &big.remote, true);
            let t = timed(d.ctr(&["images", "pull", "--plain-http", &big.remote]))?;
            ctr_row.push(d, t.as_secs_f64());
            if d.is_berth() {
                reset_image(d, &big.remote, true);
                let t = timed(d.berthctl(&["pull", "--plain-http", &big.remote]))?;
                transfer_row.push(d, t.as_secs_f64());
            } else {
                // The same ctr pull is containerd's figure in both rows.
                transfer_row.push(d, t.as_secs_f64());
            }
        }
    }
    // Leave the daemons as small as they were for later scenarios.
    for d in [berth, containerd] {
        reset_image(d, &big.remote, true);
    }
    print_and_save("pull", &mut [ctr_row, transfer_row], s)
}

/// `stress`: `berthctl stress` (the same binary against both daemons).
fn scenario_stress(
    berth: &Daemon,
    containerd: &Daemon,
    ctx: &mut Ctx,
    s: &mut Summary,
) -> Result<()> {
    let archive = ctx.busybox()?;
    for d in [berth, containerd] {
        d.ensure_busybox("default", &archive)?;
    }
    // (name, concurrency, exec variant, scraped every 100 ms)
    let configs: [(&str, usize, bool, bool); 4] = [
        ("stress c=2", 2, false, false),
        ("stress c=8", 8, false, false),
        ("stress c=8 scraped /100ms", 8, false, true),
        ("stress exec c=2", 2, true, false),
    ];
    let mut rates: Vec<Row> = configs
        .iter()
        .map(|(name, _, exec, _)| {
            let (metric, unit) = if *exec {
                (format!("{name} (execs/s)"), "/s")
            } else {
                (format!("{name} (containers/s)"), "/s")
            };
            let row = Row::new(metric, unit, Better::Higher);
            if *exec {
                row
            } else {
                row.goal(Goal::AtLeast(2.0))
            }
        })
        .collect();
    let mut p50s: Vec<Row> = configs
        .iter()
        .map(|(name, _, _, _)| Row::new(format!("{name} p50 per iteration"), "ms", Better::Lower))
        .collect();
    let stress = |d: &Daemon, c: usize, exec: bool, duration: &str| {
        let c = c.to_string();
        let mut args = vec!["stress", "--json", "-c", &c, "-d", duration];
        if exec {
            args.push("--exec");
        }
        json_of(d.berthctl(&args))
    };
    for d in [berth, containerd] {
        stress(d, 2, false, "2s")?;
    }
    for _ in 0..rounds() {
        for (i, (_, c, exec, scraped)) in configs.iter().enumerate() {
            for d in [berth, containerd] {
                let scraper = scraped.then(|| Scraper::start(d.metrics_port));
                let v = stress(d, *c, *exec, STRESS_DURATION)?;
                if scraper.map(Scraper::finish) == Some(0) {
                    return Err(format!("{}: /v1/metrics never answered", d.name));
                }
                rates[i].push(d, v["per_second"].as_f64().unwrap_or(0.0));
                p50s[i].push(d, v["p50_ms"].as_f64().unwrap_or(0.0));
            }
        }
    }
    rates.extend(p50s);
    print_and_save("stress", &mut rates, s)
}

/// `api`: small calls per second through `berthctl bench-api`, in a
/// namespace of its own holding [`API_CONTAINERS`] container records.
fn scenario_api(berth: &Daemon, containerd: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    let ns = "bench-api";
    let archive = ctx.busybox()?;
    let n = API_CONTAINERS.to_string();
    for d in [berth, containerd] {
        d.ensure_busybox(ns, &archive)?;
        let t = timed(d.berthctl(&["-n", ns, "bench-api", "setup", "--containers", &n]))?;
        eprintln!(
            "{}: created {n} container records in {:.1}s",
            d.name,
            t.as_secs_f64()
        );
    }
    let calls = [
        ("version", "Version"),
        ("list", "Containers.List (1000)"),
        ("info", "Content.Info"),
    ];
    let concurrency = [1_usize, 16];
    let mut rows = BTreeMap::new();
    for (call, label) in calls {
        for c in concurrency {
            rows.insert(
                (call, c),
                Row::new(format!("api {label} c={c}"), "calls/s", Better::Higher)
                    .goal(Goal::AtLeast(2.0)),
            );
        }
    }
    let result = (|| {
        for _ in 0..rounds() {
            for (call, _) in calls {
                for c in concurrency {
                    for d in [berth, containerd] {
                        let c_s = c.to_string();
                        let v = json_of(d.berthctl(&[
                            "-n",
                            ns,
                            "bench-api",
                            "run",
                            "--call",
                            call,
                            "-c",
                            &c_s,
                            "-d",
                            API_DURATION,
                        ]))?;
                        if let Some(r) = rows.get_mut(&(call, c)) {
                            r.push(d, v["per_second"].as_f64().unwrap_or(0.0));
                        }
                    }
                }
            }
        }
        Ok::<(), String>(())
    })();
    for d in [berth, containerd] {
        let _ = timed(d.berthctl(&["-n", ns, "bench-api", "teardown"]));
    }
    result?;
    let mut ordered: Vec<Row> = Vec::new();
    for (call, _) in calls {
        for c in concurrency {
            if let Some(r) = rows.remove(&(call, c)) {
                ordered.push(r);
            }
        }
    }
    print_and_save("api", &mut ordered, s)
}

/// `memory`: fresh daemons each round, each with its defaults (every
/// plugin it loads by default, the CRI plugin included: containerd enables
/// it too); RSS idle, with 20 and 100 running containers, and per shim.
fn scenario_memory(ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    let archive = ctx.busybox()?;
    let mut idle = Row::new(
        "daemon RSS idle, defaults incl. CRI (1 image imported)",
        "MB",
        Better::Lower,
    )
    .goal(Goal::AtMost(0.2));
    let mut with20 = Row::new("daemon RSS, 20 running", "MB", Better::Lower);
    let mut with100 =
        Row::new("daemon RSS, 100 running", "MB", Better::Lower).goal(Goal::AtMost(0.25));
    let mut shim_rss =
        Row::new("shim RSS (mean of 100)", "MB", Better::Lower).goal(Goal::AtMost(0.15));
    let mut shim_pss = Row::new("shim PSS (mean of 100)", "MB", Better::Lower);
    for round in 0..rounds() {
        for name in ["berthd", "containerd"] {
            let dir = ctx.dir.join(format!("mem-{round}-{name}"));
            let d = if name == "berthd" {
                start_berthd(&dir, &ctx.bin)?
            } else {
                start_containerd_defaults(&dir, &ctx.bin)?
            };
            d.ensure_busybox("default", &archive)?;
            std::thread::sleep(Duration::from_secs(1));
            idle.push(&d, d.rss_kib() as f64 / 1024.0);
            for i in 0..100 {
                let id = format!("m{i}");
                timed(d.ctr(&["run", "-d", BUSYBOX, &id, "sleep", "1000"]))?;
                if i == 19 {
                    std::thread::sleep(Duration::from_millis(500));
                    with20.push(&d, d.rss_kib() as f64 / 1024.0);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            with100.push(&d, d.rss_kib() as f64 / 1024.0);
            let shims = d.shims();
            if shims.len() != 100 {
                eprintln!("{name}: {} shims for 100 containers", shims.len());
            }
            let n = shims.len().max(1) as f64;
            let rss: u64 = shims.iter().map(|p| status_kib(*p, "VmRSS:")).sum();
            let pss: u64 = shims
                .iter()
                .map(|p| kib_field(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .sum();
            shim_rss.push(&d, rss as f64 / 1024.0 / n);
            shim_pss.push(&d, pss as f64 / 1024.0 / n);
            // Stops the daemon, its shims and containers, unmounts.
            drop(d);
            cleanup::remove_dir(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    print_and_save(
        "memory",
        &mut [idle, with20, with100, shim_rss, shim_pss],
        s,
    )
}

/// `limit`: what this machine can do at best, without any daemon.
fn scenario_limit(berth: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    // Bare runc: a prepared bundle on the busybox root filesystem.
    let limit = ctx.dir.join("limit");
    let bundle = limit.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    run(Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle))?;
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let runc_root = limit.join("runc");
    let runc = |id: &str| {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&runc_root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let mut runc_row = Row::new("bare runc run true (bundle ready)", "ms", Better::Lower);
    timed(runc("warm"))?;
    for i in 0..LIMIT_RUNS {
        runc_row
            .berth
            .push(timed(runc(&format!("l{i}")))?.as_secs_f64() * 1000.0);
    }

    // The big image's layer blobs: over HTTP, hashed, decompressed.
    let big = ctx.big(berth)?;
    let url = |digest: &str| format!("http://{}/v2/bench/big/blobs/{digest}", big.registry.0.host);
    let mut blobs = Vec::new();
    for l in &big.layout.layers {
        let mut data = Vec::new();
        std::fs::File::open(big.layout.blob(&l.digest))
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| e.to_string())?;
        blobs.push(data);
    }
    let total_mb = blobs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let mut http = Row::new(
        format!("HTTP GET of the layers, {total_mb:.0} MB (curl, parallel)"),
        "s",
        Better::Lower,
    );
    let mut sha = Row::new("sha256 of the same bytes", "s", Better::Lower);
    let mut gunzip = Row::new("gunzip of the same bytes", "s", Better::Lower);
    let mut curl = Command::new("curl");
    curl.args(["-s", "--fail", "--parallel", "--parallel-max", "6"]);
    for l in &big.layout.layers {
        curl.args(["-o", "/dev/null"]).arg(url(&l.digest));
    }
    for _ in 0..LIMIT_RUNS {
        let mut c = Command::new("curl");
        c.args(curl.get_args());
        http.berth.push(timed(c)?.as_secs_f64());
        let started = Instant::now();
        for b in &blobs {
            use sha2::Digest as _;
            std::hint::black_box(sha2::Sha256::digest(b));
        }
        sha.berth.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for b in &blobs {
            let mut dec = flate2::read::GzDecoder::new(b.as_slice());
            std::io::copy(&mut dec, &mut std::io::sink()).map_err(|e| e.to_string())?;
        }
        gunzip.berth.push(started.elapsed().as_secs_f64());
    }
    print_and_save("limit", &mut [runc_row, http, sha, gunzip], s)
}

/// Number of running Docker containers the `docker` scenario measures RSS with.
const DOCKER_CONTAINERS: usize = 50;

/// Environment variable naming a built `contrib/grpc-timing-proxy`: when
/// set, the `docker` scenario puts one between each dockerd and its daemon
/// and keeps its per-call log as `<target>/bench/docker-<daemon>-calls.log`.
const GRPC_PROXY_VAR: &str = "BERTH_BENCH_GRPC_PROXY";

/// A dockerd on a daemon under test, registered for cleanup while it runs.
struct DockerOn {
    /// Always there until dropped (taken first, before the proxy stops).
    dockerd: Option<berth_tests::docker::Dockerd>,
    pid: u32,
    /// The Dockerd's temporary directory (registered for cleanup).
    dir: PathBuf,
    /// The timing proxy between dockerd and the daemon, if any, and when
    /// it started (its log's time zero, give or take its start-up).
    proxy: Option<(std::process::Child, Instant)>,
    /// The daemon's name (where dockerd's debug log goes, with a proxy).
    name: &'static str,
}

impl DockerOn {
    fn start(d: &Daemon) -> Result<DockerOn> {
        let mut proxy = None;
        let mut address = d.address.clone();
        if let Some(bin) = std::env::var_os(GRPC_PROXY_VAR) {
            let listen = d.address.with_extension("proxy.sock");
            let dir = target_dir().join("bench");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let log = std::fs::File::create(dir.join(format!("docker-{}-calls.log", d.name)))
                .map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .arg(&listen)
                .arg(&d.address)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {GRPC_PROXY_VAR}: {e}"))?;
            let started = Instant::now();
            cleanup::process(child.id());
            while !listen.exists() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            proxy = Some((child, started));
            address = listen;
        }
        let dockerd = berth_tests::docker::Dockerd::builder(&address)
            .storage_driver(berth_tests::docker::StorageDriver::Overlay2)
            .start()
            .map_err(|e| format!("{e:#}"))?;
        let pid = dockerd.pid().unwrap_or_default();
        cleanup::process(pid);
        // On Ctrl-C: the overlay mounts under its data root, and the data
        // root's own bind mount, go with its directory.
        let dir = dockerd.dir().to_path_buf();
        cleanup::dir(&dir);
        dockerd.load_busybox().map_err(|e| format!("{e:#}"))?;
        Ok(DockerOn {
            dockerd: Some(dockerd),
            pid,
            dir,
            proxy,
            name: d.name,
        })
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = match &self.dockerd {
            Some(d) => d.command(args),
            None => Command::new("false"),
        };
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }
}

impl Drop for DockerOn {
    fn drop(&mut self) {
        if let (Some(d), Some(_)) = (&self.dockerd, &self.proxy) {
            let path = target_dir().join(format!("bench/docker-{}-dockerd.log", self.name));
            let _ = std::fs::write(path, d.log());
        }
        // The Dockerd stops itself (by PID) and its containers, unmounts
        // what is left under its data root and removes its directory.
        drop(self.dockerd.take());
        cleanup::forget(self.pid);
        cleanup::remove_dir(&self.dir);
        if let Some((mut p, _)) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
            cleanup::forget(p.id());
        }
    }
}

/// `docker`: Docker Engine on berthd and on containerd, the same dockerd
/// setup and image on both; the storage driver is overlay2, Docker's
/// default (the Docker tests keep vfs, which mounts nothing): one overlay
/// mount per container, set up and torn down by dockerd, no copy of the
/// image's files.
fn scenario_docker(berth: &Daemon, containerd: &Daemon, s: &mut Summary) -> Result<()> {
    let mut latency =
        Row::new("docker run --rm busybox true", "ms", Better::Lower).goal(Goal::AtMost(0.8));
    let mut rss = Row::new(
        format!("daemon RSS, {DOCKER_CONTAINERS} docker containers"),
        "MB",
        Better::Lower,
    )
    .goal(Goal::AtMost(0.25));
    for round in 0..rounds() {
        // Fresh dockerds each round: one dockerd pair's luck (its Go
        // runtime's pacing, where its threads run) moved a whole run's ratio
        // by ±0.04; pooling rounds averages it out, as the cri scenario does.
        let dockers = [DockerOn::start(berth)?, DockerOn::start(containerd)?];
        let pairs = [(berth, &dockers[0]), (containerd, &dockers[1])];
        for (_, k) in pairs {
            timed(k.docker(&["run", "--rm", "busybox", "true"]))?;
        }
        let mut runs_log: Vec<String> = vec![String::new(), String::new()];
        for n in 0..DOCKER_RUNS {
            for i in in_turn(n, [0, 1]) {
                let (d, k) = pairs[i];
                let began = Instant::now();
                let t = timed(k.docker(&["run", "--rm", "busybox", "true"]))?;
                latency.push(d, t.as_secs_f64() * 1000.0);
                if let Some((_, zero)) = &k.proxy {
                    // On the proxy log's clock: where the command began and ended.
                    let at = |i: Instant| i.duration_since(*zero).as_secs_f64() * 1000.0;
                    runs_log[i].push_str(&format!(
                        "{:10.3} docker run --rm began\n{:10.3} docker run --rm ended\n",
                        at(began),
                        at(began + t)
                    ));
                }
            }
        }
        // The logs kept are the last round's (each round's proxy has a
        // clock of its own).
        for (i, (d, k)) in pairs.into_iter().enumerate() {
            if k.proxy.is_some() {
                let path = target_dir().join(format!("bench/docker-{}-runs.log", d.name));
                std::fs::write(&path, &runs_log[i])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        if round + 1 < rounds() {
            continue;
        }
        for (d, k) in pairs {
            for i in 0..DOCKER_CONTAINERS {
                let name = format!("m{i}");
                timed(k.docker(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"]))?;
            }
            std::thread::sleep(Duration::from_millis(500));
            rss.push(d, d.rss_kib() as f64 / 1024.0);
            let names: Vec<String> = (0..DOCKER_CONTAINERS).map(|i| format!("m{i}")).collect();
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            timed(k.docker(&args))?;
        }
    }
    print_and_save("docker", &mut [latency, rss], s)
}

/// All scenarios, in the order they run.
const ALL: [&str; 10] = [
    "run", "pull", "unpack", "stress", "memory", "api", "limit", "docker", "cri", "scale",
];

/// Entry point of `cargo xtask bench`.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    // The `cri` scenario starts berthd through the tests' harness, which
    // runs the binaries of `BERTH_BIN_DIR`: the release build measured.
    #[allow(unsafe_code)]
    // SAFETY: set first thing, while this process has a single thread (the
    // signal handler thread and every child start later).
    unsafe {
        std::env::set_var("BERTH_BIN_DIR", target_dir().join("release"));
    }
    let mut scenarios = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if a == "--rounds" {
            let n = args
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or("--rounds takes a number of rounds, at least 1")?;
            let _ = ROUNDS_SET.set(n);
        } else {
            scenarios.push(a.clone());
        }
    }
    let scenarios = &scenarios[..];
    for s in scenarios {
        if !ALL.contains(&s.as_str()) {
            return Err(format!(
                "unknown scenario {s:?} (known: {})",
                ALL.join(", ")
            ));
        }
    }
    crate::deps()?;
    crate::build_release()?;
    cleanup::on_signals()?;
    let result = bench_in(scenarios);
    cleanup::all();
    result
}

fn bench_in(scenarios: &[String]) -> Result<()> {
    let bin = target_dir().join("release");
    let dir = tempfile_dir()?;
    cleanup::dir(&dir);
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let mut ctx = Ctx {
        dir: dir.clone(),
        bin: bin.clone(),
        rootfs,
        busybox: None,
        big: None,
    };
    let berth = start_berthd(&dir.join("berth"), &bin)?;
    let containerd = start_containerd(&dir.join("containerd"), &bin)?;
    let wanted: Vec<&str> = if scenarios.is_empty() {
        ALL.to_vec()
    } else {
        scenarios.iter().map(String::as_str).collect()
    };
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut result = Ok(());
    for s in &wanted {
        println!("== scenario {s} (alternating runs)");
        let t = Instant::now();
        result = match *s {
            "run" => scenario_run(&berth, &containerd, &mut ctx, &mut summary),
            "pull" => scenario_pull(&berth, &containerd, &mut ctx, &mut summary),
            "unpack" => unpack::scenario(&berth, &mut ctx, &mut summary),
            "stress" => scenario_stress(&berth, &containerd, &mut ctx, &mut summary),
            "memory" => scenario_memory(&mut ctx, &mut summary),
            "api" => scenario_api(&berth, &containerd, &mut ctx, &mut summary),
            "limit" => scenario_limit(&berth, &mut ctx, &mut summary),
            "docker" => scenario_docker(&berth, &containerd, &mut summary),
            "cri" => cri::scenario(&mut summary),
            "scale" => scale::scenario(&berth, &mut ctx, &mut summary),
            other => Err(format!("unknown scenario {other:?}")),
        };
        eprintln!("(scenario {s} took {:.0}s)", t.elapsed().as_secs_f64());
        if result.is_err() {
            break;
        }
    }
    if !summary.lines.is_empty() {
        let mut md = String::from(
            "| scenario | metric | better | berth median (min–max) | containerd median (min–max) | berth/containerd | goal |\n|---|---|---|---|---|---|---|\n",
        );
        for l in &summary.lines {
            md.push_str(l);
            md.push('\n');
        }
        let path = target_dir().join("bench/summary.md");
        if std::fs::write(&path, &md).is_ok() {
            println!(
                "\n{md}\n(summary written to {}; {} scenario(s) in {:.0}s)",
                path.display(),
                wanted.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(ctx);
    drop(berth);
    drop(containerd);
    result
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
