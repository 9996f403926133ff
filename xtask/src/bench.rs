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
//! This file is the entry point ([`bench()`]): the scenario list and their
//! dispatch, the inputs they share ([`Ctx`]: the busybox root filesystem
//! and image, the big image in a local registry) and the helpers they share
//! use ([`timed`], [`json_of`], [`in_turn`], [`rounds`]). The two daemons
//! under test are started in `bench/daemons.rs`; the results table, its
//! JSON and the summary are `bench/report.rs`. The scenarios:
//! `bench/run.rs` (`run`, `memory`), `bench/pull.rs` (`pull`, and the
//! removal of an image and its content between pulls), `bench/load.rs`
//! (`stress`, `api`), `bench/limit.rs`, `bench/docker.rs`,
//! `bench/unpack.rs`, `bench/cri.rs` and `bench/scale.rs` (its PNG curves
//! drawn by `bench/plot.rs`).
//!
//! Everything started is registered in [`crate::cleanup`] and stopped by
//! PID on exit, on error and on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Result, cleanup, workspace_root};
use daemons::{Daemon, start_berthd, start_containerd};
use pull::reset_image;
use report::Summary;

mod cri;
pub(crate) mod daemons;
mod docker;
mod limit;
mod load;
mod plot;
mod pull;
mod report;
mod run;
mod scale;
mod unpack;

/// Rounds (per daemon) of the `run -d`, `pull`, `unpack`, `stress`, `api`
/// and `memory` measurements, unless `--rounds N` says otherwise.
const ROUNDS: usize = 3;
/// `--rounds N`, when given.
static ROUNDS_SET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Rounds per daemon of each measurement (see [`ROUNDS`]).
fn rounds() -> usize {
    ROUNDS_SET.get().copied().unwrap_or(ROUNDS)
}

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
            "run" => run::scenario_run(&berth, &containerd, &mut ctx, &mut summary),
            "pull" => pull::scenario_pull(&berth, &containerd, &mut ctx, &mut summary),
            "unpack" => unpack::scenario(&berth, &mut ctx, &mut summary),
            "stress" => load::scenario_stress(&berth, &containerd, &mut ctx, &mut summary),
            "memory" => run::scenario_memory(&mut ctx, &mut summary),
            "api" => load::scenario_api(&berth, &containerd, &mut ctx, &mut summary),
            "limit" => limit::scenario_limit(&berth, &mut ctx, &mut summary),
            "docker" => docker::scenario_docker(&berth, &containerd, &mut summary),
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
