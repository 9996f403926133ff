//! The `run` and `memory` scenarios: containers started through Debian's
//! `ctr`, their latency and the memory the daemons and their shims take;
//! and [`remove_tasks`], which clears such containers again.

use std::time::{Duration, Instant};

use super::daemons::{Daemon, kib_field, start_berthd, start_containerd_defaults, status_kib};
use super::report::{Better, Goal, Row, Summary, print_and_save};
use super::{BUSYBOX, Ctx, in_turn, rounds, timed};
use crate::{Result, cleanup};

/// Samples of each latency measurement per daemon in `run`.
const RUNS: usize = 5;

pub(super) fn scenario_run(
    berth: &Daemon,
    containerd: &Daemon,
    ctx: &mut Ctx,
    s: &mut Summary,
) -> Result<()> {
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
pub(super) fn remove_tasks(d: &Daemon, ns: &str, ids: impl Iterator<Item = String> + Clone) {
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

/// `memory`: fresh daemons each round, each with its defaults (every
/// plugin it loads by default, the CRI plugin included: containerd enables
/// it too); RSS idle, with 20 and 100 running containers, and per shim.
pub(super) fn scenario_memory(ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
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
