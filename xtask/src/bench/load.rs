//! The API load scenarios, both driven by this workspace's `berthctl`:
//! `stress` (containerd-stress's loop, once while a [`Scraper`] reads
//! `/v1/metrics`) and `api` (small calls per second through `bench-api`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::Duration;

use super::daemons::Daemon;
use super::report::{Better, Goal, Row, Summary, print_and_save};
use super::{Ctx, json_of, rounds, timed};
use crate::Result;

/// Duration of one `berthctl stress` run.
const STRESS_DURATION: &str = "5s";
/// Duration of one `bench-api` run.
const API_DURATION: &str = "3s";
/// Container records listed by the `api` scenario's Containers.List.
const API_CONTAINERS: usize = 1000;

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

/// `stress`: `berthctl stress` (the same binary against both daemons).
pub(super) fn scenario_stress(
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
pub(super) fn scenario_api(
    berth: &Daemon,
    containerd: &Daemon,
    ctx: &mut Ctx,
    s: &mut Summary,
) -> Result<()> {
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
