//! The `scale` scenario: how each daemon's costs grow with work, measured
//! on one fresh daemon at a time (berthd, then containerd 1.6: a thousand
//! containerd shims take ~8 GB), with the same clients (Debian's `ctr`
//! 1.6 for the image path, this workspace's `berthctl bench-api` for the
//! bulk gRPC work).
//!
//! - **Running containers** (0, 100, 500, 1000): at each count, the
//!   latency of `ctr run -d <image> ... sleep` (the image path: snapshot
//!   prepare, container, task; [`PROBES`] samples, removed again), the
//!   daemon's RSS, and the median latency of Containers.List and
//!   Tasks.List (every container and task of the namespace) over
//!   [`LIST_DURATION`] of back-to-back calls.
//! - **Pull under churn**: the `pull` scenario's ~250 MB image (`ctr
//!   images pull`, client-side on both) quiet, and again and again while
//!   [`CHURN`] containers start and stop on two workers (`ctr run -d`,
//!   then kill and removal); `run -d` latency with no pull (a churn of
//!   [`QUIET_CHURN`]) and during the pulls.
//! - **Blobs** (1k, 10k, 100k small blobs held by one lease, written by
//!   `bench-api blobs`): at each count, the pause of a synchronous
//!   garbage collection (`Leases.Delete` with `sync` of a lease holding
//!   one new blob: the call returns after a full collection) and the
//!   median Content.Info latency. These daemons keep their root on a
//!   tmpfs (see [`tmpfs`]): the curve is the daemons' own work, not the
//!   disk's syncs.
//!
//! `BERTH_BENCH_SCALE_MAX=N` caps the container counts at N (the churn at
//! N as well, the blob counts at 100 N) for quick runs; the default is the
//! full curve. Every figure is a row of the table (goal: never above
//! containerd, ratio ≤ 1), and each curve is drawn as a PNG beside the
//! JSON (see [`super::plot`]): `<target>/bench/scale-*.png`.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::daemons::{Daemon, start_berthd, start_containerd};
use super::plot::{self, Bar, Series};
use super::report::{Better, Goal, Row, Summary, print_and_save, stats};
use super::run::remove_tasks;
use super::{BUSYBOX, Ctx, json_of, target_dir, timed};
use crate::{Result, cleanup};

/// Running containers at each point of the curve.
const POINTS: [usize; 4] = [0, 100, 500, 1000];
/// `run -d` latency samples at each point.
const PROBES: usize = 5;
/// Concurrent `ctr run -d` while growing to the next point.
const GROW_WORKERS: usize = 4;
/// How long each List latency is sampled.
const LIST_DURATION: &str = "2s";
/// Containers started and stopped during the loaded pulls.
const CHURN: usize = 200;
/// Containers started and stopped for the quiet `run -d` latency.
const QUIET_CHURN: usize = 40;
/// Concurrent start-and-stop loops of a churn.
const CHURN_WORKERS: usize = 2;
/// Quiet pulls per daemon.
const QUIET_PULLS: usize = 3;
/// Blobs held at each point of the blob curve.
const BLOB_POINTS: [usize; 3] = [1_000, 10_000, 100_000];
/// Synchronous collections timed at each blob point.
const GC_SAMPLES: usize = 5;
/// How long Content.Info is sampled at each blob point.
const INFO_DURATION: &str = "2s";
/// The environment variable capping the counts.
const MAX_ENV: &str = "BERTH_BENCH_SCALE_MAX";
/// The lease holding the bulk blobs.
const BLOB_LEASE: &str = "bench-scale-blobs";

/// The two daemons, in the order they run.
const DAEMONS: [&str; 2] = ["berthd", "containerd"];

/// The container cap: [`MAX_ENV`], default the last of [`POINTS`].
fn max_containers() -> Result<usize> {
    match std::env::var(MAX_ENV) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{MAX_ENV}={v:?}: not a number of containers")),
        Err(_) => Ok(POINTS[POINTS.len() - 1]),
    }
}

/// The points of `full` up to `max`, and `max` itself when it falls
/// between two of them.
fn capped(full: &[usize], max: usize) -> Vec<usize> {
    let mut points: Vec<usize> = full.iter().copied().filter(|p| *p <= max).collect();
    if points.last() != Some(&max) && max > 0 {
        points.push(max);
    }
    points
}

/// Starts a fresh daemon `name` in `dir`.
fn start(name: &str, dir: &Path, ctx: &Ctx) -> Result<Daemon> {
    if name == "berthd" {
        start_berthd(dir, &ctx.bin)
    } else {
        start_containerd(dir, &ctx.bin)
    }
}

/// Mounts a tmpfs on `dir` (created): the blob curve's daemons keep their
/// root there, because this machine's disk syncs only some tens of blob
/// commits a second (a file and a DB sync each, on both daemons), which
/// would make 100k blobs take an hour and measure the disk. Unmounted with
/// the daemon's mounts when it stops.
fn tmpfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16g,mode=0700", "tmpfs"])
            .arg(dir),
    )
}

/// Stops `d` (its shims, containers and mounts go with it) and removes `dir`.
fn finish(d: Daemon, dir: &Path) {
    drop(d);
    cleanup::remove_dir(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ctr run -d` of a `sleep` container `id` from the busybox image.
fn run_detached(d: &Daemon, id: &str) -> Result<Duration> {
    timed(d.ctr(&["run", "-d", BUSYBOX, id, "sleep", "100000"]))
}

/// A number from a `bench-api` JSON answer.
fn field(v: &serde_json::Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .ok_or_else(|| format!("bench-api answered without {key:?}: {v}"))
}

/// The median latency (ms) of `call` (`list`, `tasks`, `info`) in
/// namespace `default`, one connection, for `duration`.
fn call_p50(d: &Daemon, call: &str, duration: &str, digest: Option<&str>) -> Result<f64> {
    let mut args = vec![
        "-n",
        "default",
        "bench-api",
        "run",
        "--call",
        call,
        "-c",
        "1",
        "-d",
        duration,
    ];
    if let Some(digest) = digest {
        args.extend(["--digest", digest]);
    }
    field(&json_of(d.berthctl(&args))?, "p50_ms")
}

/// The rows of the container curve at one point.
struct PointRows {
    start: Row,
    rss: Row,
    list: Row,
    tasks: Row,
}

impl PointRows {
    fn new(n: usize) -> PointRows {
        let lower =
            |name: String, unit| Row::new(name, unit, Better::Lower).goal(Goal::AtMost(1.0));
        PointRows {
            start: lower(format!("ctr run -d latency, {n} running"), "ms"),
            rss: lower(format!("daemon RSS, {n} running"), "MB"),
            list: lower(format!("Containers.List, {n} containers"), "ms"),
            tasks: lower(format!("Tasks.List, {n} tasks"), "ms"),
        }
    }
}

/// Starts containers `s<from>`..`s<to>` on [`GROW_WORKERS`] workers.
fn grow(d: &Daemon, from: usize, to: usize) -> Result<()> {
    let next = AtomicUsize::new(from);
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..GROW_WORKERS)
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= to {
                            return Ok(());
                        }
                        run_detached(d, &format!("s{i}"))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "grow worker panicked".to_string())?)
    })
}

/// The container curve on `d`: grows to each point and measures there.
fn containers_curve(d: &Daemon, points: &[usize], rows: &mut [PointRows]) -> Result<()> {
    let mut running = 0;
    for (n, r) in points.iter().zip(rows.iter_mut()) {
        let t = Instant::now();
        grow(d, running, *n)?;
        running = *n;
        eprintln!(
            "{}: {n} running (grown in {:.1}s, {} shims)",
            d.name,
            t.elapsed().as_secs_f64(),
            d.shims().len()
        );
        // Let the daemon settle (background work after the starts).
        std::thread::sleep(Duration::from_secs(1));
        r.rss.push(d, d.rss_kib() as f64 / 1024.0);
        let probes: Vec<String> = (0..PROBES).map(|k| format!("p{n}-{k}")).collect();
        for id in &probes {
            r.start.push(d, ms(run_detached(d, id)?));
        }
        remove_tasks(d, "default", probes.iter().cloned());
        r.list.push(d, call_p50(d, "list", LIST_DURATION, None)?);
        r.tasks.push(d, call_p50(d, "tasks", LIST_DURATION, None)?);
    }
    Ok(())
}

/// One `run -d` of a churn: when it began, and its latency (ms).
struct Start {
    at: Instant,
    ms: f64,
}

/// Starts and stops `count` containers `<tag>-<i>` on [`CHURN_WORKERS`]
/// loops (each starts one with `ctr run -d`, kills and removes it, then
/// the next); sets `done` when finished.
fn churn(d: &Daemon, tag: &str, count: usize, done: &AtomicBool) -> Result<Vec<Start>> {
    let next = AtomicUsize::new(0);
    let result = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..CHURN_WORKERS)
            .map(|_| {
                sc.spawn(|| -> Result<Vec<Start>> {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(out);
                        }
                        let id = format!("{tag}-{i}");
                        let at = Instant::now();
                        let t = run_detached(d, &id)?;
                        out.push(Start { at, ms: ms(t) });
                        remove_tasks(d, "default", std::iter::once(id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| "churn worker panicked".to_string())??,
            );
        }
        Ok(all)
    });
    done.store(true, Ordering::SeqCst);
    result
}

/// Committed snapshots of `d`'s overlayfs.
fn committed_snapshots(d: &Daemon) -> Result<usize> {
    let out = d
        .ctr(&["snapshots", "ls"])
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "Committed"))
        .count())
}

/// Removes the big image from `d` (`ctr images rm --sync`: the collection
/// takes its content and snapshots) and waits until its layer blobs
/// `layers` are gone and no more than `committed` snapshots are left, so the next pull really downloads and unpacks.
fn reset_big(d: &Daemon, remote: &str, layers: &[String], committed: usize) -> Result<()> {
    let _ = d.ctr(&["images", "rm", "--sync", remote]).status();
    let blobs = d.root.join("io.containerd.content.v1.content/blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let blobs_left = layers
            .iter()
            .filter(|l| blobs.join(l.trim_start_matches("sha256:")).exists())
            .count();
        let snapshots = committed_snapshots(d)?;
        if blobs_left == 0 && snapshots <= committed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: after removing {remote}, {blobs_left} layer blob(s) and {} snapshot(s) still there after 60s",
                d.name,
                snapshots.saturating_sub(committed)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rows of the pull-under-churn measurement.
struct ChurnRows {
    pull_quiet: Row,
    pull_loaded: Row,
    start_quiet: Row,
    start_loaded: Row,
}

/// The big image on its own, then while containers start and stop.
fn pull_under_churn(
    d: &Daemon,
    remote: &str,
    layers: &[String],
    churn_count: usize,
    rows: &mut ChurnRows,
) -> Result<()> {
    let committed = committed_snapshots(d)?;
    // Layers already there (shared with the busybox image) stay.
    let blobs = d.root.join("io.containerd.content.v1.content/blobs/sha256");
    let layers: Vec<String> = layers
        .iter()
        .filter(|l| !blobs.join(l.trim_start_matches("sha256:")).exists())
        .cloned()
        .collect();
    let layers = &layers[..];
    let pull = || timed(d.ctr(&["images", "pull", "--plain-http", remote]));
    // Quiet starts, then quiet pulls.
    let quiet = churn(
        d,
        "cq",
        QUIET_CHURN.min(churn_count.max(1)),
        &AtomicBool::new(false),
    )?;
    for s in &quiet {
        rows.start_quiet.push(d, s.ms);
    }
    for _ in 0..QUIET_PULLS {
        reset_big(d, remote, layers, committed)?;
        rows.pull_quiet.push(d, pull()?.as_secs_f64());
    }
    // Pulls back to back for as long as the churn runs.
    reset_big(d, remote, layers, committed)?;
    let done = AtomicBool::new(false);
    let (starts, pulls) = std::thread::scope(|sc| {
        let churning = sc.spawn(|| churn(d, "cl", churn_count, &done));
        let mut pulls: Vec<(Instant, Instant)> = Vec::new();
        let pulled = (|| {
            loop {
                let began = Instant::now();
                pull()?;
                pulls.push((began, Instant::now()));
                if done.load(Ordering::SeqCst) {
                    return Ok(());
                }
                reset_big(d, remote, layers, committed)?;
                if done.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
        })();
        let starts = churning
            .join()
            .map_err(|_| "churn panicked".to_string())
            .and_then(|r| r);
        pulled.and(starts.map(|s| (s, pulls)))
    })?;
    // A pull counts as loaded if the churn ran to its end; the first
    // always does.
    let churn_end = starts.iter().map(|s| s.at).max();
    for (i, (began, ended)) in pulls.iter().enumerate() {
        if i == 0 || churn_end.is_some_and(|e| *ended <= e) {
            rows.pull_loaded
                .push(d, ended.duration_since(*began).as_secs_f64());
        }
    }
    let during: Vec<&Start> = starts
        .iter()
        .filter(|s| pulls.iter().any(|(b, e)| s.at >= *b && s.at < *e))
        .collect();
    eprintln!(
        "{}: {} pulls during a churn of {churn_count}; {} of its starts during a pull",
        d.name,
        pulls.len(),
        during.len()
    );
    for s in during {
        rows.start_loaded.push(d, s.ms);
    }
    reset_big(d, remote, layers, committed)
}

/// The rows of the blob curve at one point.
struct BlobRows {
    gc: Row,
    info: Row,
    write: Row,
}

/// Writes blobs up to each point (held by one lease) and measures there.
fn blob_curve(d: &Daemon, points: &[usize], rows: &mut [BlobRows]) -> Result<()> {
    timed(d.berthctl(&["leases", "create", "--id", BLOB_LEASE, "--expires", "0"]))?;
    let mut written = 0;
    for (n, r) in points.iter().zip(rows.iter_mut()) {
        let count = (n - written).to_string();
        let seed = format!("p{n}");
        let v = json_of(d.berthctl(&[
            "--lease",
            BLOB_LEASE,
            "bench-api",
            "blobs",
            "--count",
            &count,
            "--seed",
            &seed,
        ]))?;
        written = *n;
        r.write.push(d, field(&v, "per_second")?);
        let digest = v["last_digest"]
            .as_str()
            .ok_or_else(|| format!("bench-api blobs answered without a digest: {v}"))?
            .to_string();
        eprintln!(
            "{}: {n} blobs ({count} written in {:.1}s)",
            d.name,
            v["seconds"].as_f64().unwrap_or(0.0)
        );
        let samples = GC_SAMPLES.to_string();
        let gc = json_of(d.berthctl(&["bench-api", "gc", "--samples", &samples]))?;
        for s in gc["samples"].as_array().into_iter().flatten() {
            r.gc.push(d, s.as_f64().unwrap_or(0.0));
        }
        r.info
            .push(d, call_p50(d, "info", INFO_DURATION, Some(&digest))?);
    }
    Ok(())
}

/// The median of `v` (a copy is sorted).
fn median(v: &[f64]) -> f64 {
    stats(&mut v.to_vec()).0
}

/// One curve's two series from `rows` at `xs`.
fn series<'a>(xs: &[f64], rows: impl Iterator<Item = &'a Row> + Clone) -> Vec<Series> {
    let pick = |berth: bool| {
        xs.iter()
            .zip(rows.clone())
            .filter_map(|(x, r)| {
                let v = if berth { &r.berth } else { &r.containerd };
                (!v.is_empty()).then(|| (*x, median(v)))
            })
            .collect()
    };
    vec![
        Series {
            name: "berthd",
            points: pick(true),
        },
        Series {
            name: "containerd 1.6",
            points: pick(false),
        },
    ]
}

/// Runs the scenario.
pub(super) fn scenario(berth: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    let max = max_containers()?;
    let points = capped(&POINTS, max);
    let blob_points = capped(&BLOB_POINTS, max.saturating_mul(100));
    let churn_count = CHURN.min(max.max(1));
    let archive = ctx.busybox()?;
    let big = ctx.big(berth)?;
    let remote = big.remote.clone();
    let layers: Vec<String> = big.layout.layers.iter().map(|l| l.digest.clone()).collect();

    let mut curve: Vec<PointRows> = points.iter().map(|n| PointRows::new(*n)).collect();
    let lower = |name: &str, unit| Row::new(name, unit, Better::Lower).goal(Goal::AtMost(1.0));
    let mut churn_rows = ChurnRows {
        pull_quiet: lower("ctr pull 250 MB, quiet", "s"),
        pull_loaded: lower(
            &format!("ctr pull 250 MB, {churn_count} containers starting and stopping"),
            "s",
        ),
        start_quiet: lower("ctr run -d latency, no pull", "ms"),
        start_loaded: lower("ctr run -d latency, during a pull", "ms"),
    };
    let mut blobs: Vec<BlobRows> = blob_points
        .iter()
        .map(|n| BlobRows {
            gc: lower(&format!("GC pause (sync Leases.Delete), {n} blobs"), "ms"),
            info: lower(&format!("Content.Info, {n} blobs"), "ms"),
            write: Row::new(
                format!("blob writes up to {n} blobs (bench-api, c=8)"),
                "/s",
                Better::Higher,
            ),
        })
        .collect();

    for (part, name) in ["curve", "churn", "blobs"]
        .into_iter()
        .flat_map(|part| DAEMONS.map(|name| (part, name)))
    {
        println!("-- scale {part}: {name}");
        let dir = ctx.dir.join(format!("scale-{part}-{name}"));
        if part == "blobs" {
            tmpfs(&dir)?;
        }
        let d = start(name, &dir, ctx)?;
        let result = d
            .ensure_busybox("default", &archive)
            .and_then(|()| match part {
                "curve" => containers_curve(&d, &points, &mut curve),
                "churn" => pull_under_churn(&d, &remote, &layers, churn_count, &mut churn_rows),
                _ => blob_curve(&d, &blob_points, &mut blobs),
            });
        finish(d, &dir);
        result?;
    }

    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let xs: Vec<f64> = points.iter().map(|n| *n as f64).collect();
    let containers = "containers running";
    for (file, title, y, pick) in [
        (
            "scale-start.png",
            "ctr run -d latency vs running containers",
            "ms (median)",
            (|r: &PointRows| &r.start) as fn(&PointRows) -> &Row,
        ),
        (
            "scale-rss.png",
            "daemon RSS vs running containers",
            "MB",
            |r: &PointRows| &r.rss,
        ),
        (
            "scale-containers-list.png",
            "Containers.List latency vs containers",
            "ms (median)",
            |r: &PointRows| &r.list,
        ),
        (
            "scale-tasks-list.png",
            "Tasks.List latency vs running tasks",
            "ms (median)",
            |r: &PointRows| &r.tasks,
        ),
    ] {
        plot::curve(
            &out.join(file),
            title,
            containers,
            y,
            false,
            &series(&xs, curve.iter().map(pick)),
        )?;
    }
    let blob_xs: Vec<f64> = blob_points.iter().map(|n| *n as f64).collect();
    for (file, title, y, pick) in [
        (
            "scale-gc-pause.png",
            "GC pause (sync Leases.Delete) vs blobs",
            "ms (median)",
            (|r: &BlobRows| &r.gc) as fn(&BlobRows) -> &Row,
        ),
        (
            "scale-content-info.png",
            "Content.Info latency vs blobs",
            "ms (median)",
            |r: &BlobRows| &r.info,
        ),
    ] {
        plot::curve(
            &out.join(file),
            title,
            "blobs (log scale)",
            y,
            true,
            &series(&blob_xs, blobs.iter().map(pick)),
        )?;
    }
    let bar = |label: &str, r: &Row| Bar {
        label: label.to_string(),
        berth: median(&r.berth),
        containerd: median(&r.containerd),
    };
    plot::bars(
        &out.join("scale-pull-churn.png"),
        &format!("pull while {churn_count} containers start and stop"),
        &[
            (
                "ctr pull 250 MB (s)",
                vec![
                    bar("quiet", &churn_rows.pull_quiet),
                    bar("under churn", &churn_rows.pull_loaded),
                ],
            ),
            (
                "ctr run -d latency (ms)",
                vec![
                    bar("no pull", &churn_rows.start_quiet),
                    bar("during pull", &churn_rows.start_loaded),
                ],
            ),
        ],
    )?;
    println!("(plots written to {}/scale-*.png)", out.display());

    let mut rows: Vec<Row> = Vec::new();
    for r in curve {
        rows.extend([r.start, r.rss, r.list, r.tasks]);
    }
    rows.extend([
        churn_rows.pull_quiet,
        churn_rows.pull_loaded,
        churn_rows.start_quiet,
        churn_rows.start_loaded,
    ]);
    for r in blobs {
        rows.extend([r.gc, r.info, r.write]);
    }
    print_and_save("scale", &mut rows, s)
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn points_are_capped() {
        assert_eq!(capped(&[0, 100, 500, 1000], 1000), [0, 100, 500, 1000]);
        assert_eq!(capped(&[0, 100, 500, 1000], 100), [0, 100]);
        assert_eq!(capped(&[0, 100, 500, 1000], 50), [0, 50]);
        assert_eq!(capped(&[0, 100, 500, 1000], 0), [0]);
        assert_eq!(capped(&[1000, 10_000], 5000), [1000, 5000]);
    }
}
