//! Metrics and observability: berthd with `[metrics]` and `[debug]`
//! endpoints, three containers (idle, CPU burner, memory holder) run by
//! berth's shim and by Debian's `containerd-shim-runc-v2` from a berth-built busybox image
//! imported with Debian's `ctr`; the Prometheus output is parsed with a
//! Prometheus text parser and checked against `ctr tasks metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::{Daemon, ok, testimages};
use prometheus_parse::{Sample, Scrape, Value};

const IMAGE: &str = "docker.io/library/busybox:latest";
const IDLE: &str = "m-idle";
const CPU: &str = "m-cpu";
const MEM: &str = "m-mem";
/// Bytes the memory holder's cgroup is checked to exceed. The holder keeps
/// a string of 40 MB: with exactly 30 MB its cgroup's usage once read
/// 29.2 MB in CI, as the kernel counts a process's pages (and the cache
/// it may reclaim) only approximately.
const HELD: f64 = 30_000_000.0;

/// A TCP port free right now on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `GET path` from 127.0.0.1:`port`; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header in {raw:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}\n{body}");
    }
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((content_type, body.to_string()))
}

/// One parsed scrape.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn scrape(port: u16) -> Result<Metrics> {
        let (content_type, body) = http_get(port, "/v1/metrics")?;
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert!(
            body.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?;
        Ok(Metrics(scrape.samples))
    }

    /// Samples of `name` whose labels include every pair of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The one value of `name` for container `id`.
    fn container(&self, name: &str, id: &str) -> Result<f64> {
        self.one(name, &[("container_id", id)])
    }

    fn one(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        match self.find(name, labels).as_slice() {
            [s] => value(s),
            [] => bail!("no sample {name} {labels:?}"),
            more => bail!("{} samples {name} {labels:?}", more.len()),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.metric == name)
    }
}

fn value(s: &Sample) -> Result<f64> {
    match &s.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Ok(*v),
        other => bail!("{}: not a single value: {other:?}", s.metric),
    }
}

/// The METRIC/VALUE table of `ctr tasks metrics ID`.
fn ctr_metrics(d: &Daemon, id: &str) -> Result<BTreeMap<String, String>> {
    let out = ok(d.ctr(&["tasks", "metrics", id])?)?;
    let table = out
        .split("METRIC")
        .nth(1)
        .with_context(|| format!("no METRIC table:\n{out}"))?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect())
}

/// Every task in `ids` is RUNNING right now (`run -d` has returned).
fn assert_running(d: &Daemon, ids: &[&str]) -> Result<()> {
    let ls = ok(d.ctr(&["tasks", "ls"])?)?;
    for id in ids {
        let running = ls
            .lines()
            .any(|l| l.split_whitespace().next() == Some(*id) && l.contains("RUNNING"));
        if !running {
            bail!("task {id} is not running:\n{ls}\n{}", d.log());
        }
    }
    Ok(())
}

#[test]
fn metrics_and_debug_endpoints_with_three_containers_on_berths_shim() -> Result<()> {
    metrics_and_debug_endpoints_with_three_containers("", "berth-shim")
}

#[test]
fn metrics_and_debug_endpoints_with_three_containers_on_debians_shim() -> Result<()> {
    metrics_and_debug_endpoints_with_three_containers(
        "[plugins.\"io.containerd.runtime.v2.task\".shims]\n  \"io.containerd.runc.v2\" = \"/usr/bin/containerd-shim-runc-v2\"\n",
        "debian-shim",
    )
}

/// The scenario, with `shims` (a config fragment) choosing the shim; the
/// containers run in `namespace` (the two variants run at once with the
/// same container ids, so they must not share cgroups).
fn metrics_and_debug_endpoints_with_three_containers(shims: &str, namespace: &str) -> Result<()> {
    let (metrics_port, debug_port) = (free_port()?, free_port()?);
    let d = Daemon::start_with_config(Some(&format!(
        "version = 2\n\
         [metrics]\n  address = \"127.0.0.1:{metrics_port}\"\n  grpc_histogram = true\n\
         [debug]\n  address = \"127.0.0.1:{debug_port}\"\n{shims}"
    )))?
    .in_namespace(namespace);

    // A pull's worth of content: the image's blobs go through content ingests.
    let before = Metrics::scrape(metrics_port)?;
    assert_eq!(before.one("berth_pull_bytes_total", &[])?, 0.0);
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;

    ok(d.ctr(&["run", "-d", IMAGE, IDLE, "sleep", "1000"])?)?;
    ok(d.ctr(&["run", "-d", IMAGE, CPU, "sh", "-c", "while :; do :; done"])?)?;
    ok(d.ctr(&[
        "run",
        "-d",
        IMAGE,
        MEM,
        "awk",
        // busybox sh gives a big variable's pages back; awk keeps its string.
        "BEGIN { s = sprintf(\"%40000000s\", \"\"); gsub(/ /, \"a\", s); system(\"sleep 1000\") }",
    ])?)?;
    let ids = [IDLE, CPU, MEM];
    assert_running(&d, &ids)?;

    // The holder is past 30 MB once its memory is counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let m = Metrics::scrape(metrics_port)?;
        if m.container("container_memory_usage_usage_bytes", MEM)
            .or_else(|_| m.container("container_memory_usage_bytes", MEM))
            .unwrap_or(0.0)
            > HELD
        {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the memory holder never reached 30 MB:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Scrape again once the burner has visibly burned (no fixed wait: on
    // a loaded machine that takes longer).
    let cpu_of = |m: &Metrics| {
        m.container("container_cpu_total_nanoseconds", CPU)
            .map(|v| v / 1e9)
            .or_else(|_| {
                m.container("container_cpu_usage_usec_microseconds", CPU)
                    .map(|v| v / 1e6)
            })
    };
    let start_cpu = cpu_of(&first)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let m = Metrics::scrape(metrics_port)?;
        if cpu_of(&m)? > start_cpu + 0.1 {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the CPU burner never burned 0.1 s of CPU:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let v1 = first.has("container_cpu_total_nanoseconds");
    let v2 = first.has("container_cpu_usage_usec_microseconds");
    assert!(v1 || v2, "no cpu family at all");
    let families: &[&str] = if v1 {
        &[
            "container_cpu_total_nanoseconds",
            "container_cpu_kernel_nanoseconds",
            "container_cpu_user_nanoseconds",
            "container_cpu_throttle_periods_total",
            "container_cpu_throttled_periods_total",
            "container_cpu_throttled_time_nanoseconds",
            "container_memory_usage_usage_bytes",
            "container_memory_usage_limit_bytes",
            "container_memory_usage_max_bytes",
            "container_memory_usage_failcnt_total",
            "container_memory_cache_bytes",
            "container_memory_rss_bytes",
            "container_memory_total_rss_bytes",
            "container_memory_pgfault_bytes",
            "container_memory_hierarchical_memory_limit_bytes",
            "container_pids_current",
            "container_pids_limit",
        ]
    } else {
        &[
            "container_cpu_usage_usec_microseconds",
            "container_cpu_user_usec_microseconds",
            "container_cpu_system_usec_microseconds",
            "container_cpu_nr_throttled_total",
            "container_memory_usage_bytes",
            "container_memory_usage_limit_bytes",
            "container_memory_anon_bytes",
            "container_memory_file_bytes",
            "container_pids_current",
            "container_pids_limit",
        ]
    };
    for id in ids {
        for family in families {
            second
                .container(family, id)
                .with_context(|| format!("family {family} for {id}"))?;
        }
        // Labelled families, when the kernel reported anything.
        for s in second.find("container_per_cpu_nanoseconds", &[("container_id", id)]) {
            assert!(s.labels.get("cpu").is_some(), "{s:?}");
        }
        for name in [
            "container_blkio_io_service_bytes_recursive_bytes",
            "container_blkio_io_serviced_recursive_total",
        ] {
            for s in second.find(name, &[("container_id", id)]) {
                for l in ["op", "device", "major", "minor", "namespace"] {
                    assert!(s.labels.get(l).is_some(), "{name} without {l}: {s:?}");
                }
            }
        }
    }

    // CPU: between the scrapes the burner's usage grew, the idle (sleeping)
    // container's did not grow by as much.
    let cpu_family = if v1 {
        "container_cpu_total_nanoseconds"
    } else {
        "container_cpu_usage_usec_microseconds"
    };
    let per_second = if v1 { 1e9 } else { 1e6 };
    let labelled = second.find(cpu_family, &[("container_id", CPU)]);
    assert!(
        !labelled.is_empty()
            && labelled
                .iter()
                .all(|s| s.labels.get("namespace") == Some(namespace)),
        "{cpu_family} of {CPU} is labelled with namespace {namespace}: {labelled:?}"
    );
    let burned =
        (second.container(cpu_family, CPU)? - first.container(cpu_family, CPU)?) / per_second;
    let idle =
        (second.container(cpu_family, IDLE)? - first.container(cpu_family, IDLE)?) / per_second;
    assert!(
        burned > idle && idle >= 0.0,
        "the burner ({burned} s) and the idle container ({idle} s) are told apart"
    );

    // Memory: the holder is high, the idle one is not.
    let usage_family = if v1 {
        "container_memory_usage_usage_bytes"
    } else {
        "container_memory_usage_bytes"
    };
    let held = second.container(usage_family, MEM)?;
    let idle_mem = second.container(usage_family, IDLE)?;
    assert!(held > HELD, "memory holder: {held} bytes");
    assert!(idle_mem < held / 4.0, "idle {idle_mem} vs holder {held}");

    // ctr tasks metrics (Debian's ctr, through the Tasks API) agrees.
    let ctr_limit_key = if v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.usage_limit"
    };
    let table = ctr_metrics(&d, MEM)?;
    let ctr_limit: f64 = table
        .get(ctr_limit_key)
        .with_context(|| format!("{ctr_limit_key} not in {table:?}"))?
        .parse()?;
    let endpoint_limit = second.container("container_memory_usage_limit_bytes", MEM)?;
    assert!(
        (ctr_limit - endpoint_limit).abs() <= endpoint_limit * 1e-12,
        "memory limit: ctr {ctr_limit} vs endpoint {endpoint_limit}"
    );
    let ctr_usage: f64 = table
        .get(if v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.usage"
        })
        .context("memory usage in ctr's table")?
        .parse()?;
    assert!(
        ctr_usage > HELD && (ctr_usage / held - 1.0).abs() < 0.5,
        "memory usage: ctr {ctr_usage} vs endpoint {held}"
    );
    let cpu_before = Metrics::scrape(metrics_port)?.container(cpu_family, CPU)?;
    let cpu_table = ctr_metrics(&d, CPU)?;
    let cpu_after = Metrics::scrape(metrics_port)?.container(cpu_family, CPU)?;
    let ctr_cpu: f64 = cpu_table
        .get(if v1 {
            "cpuacct.usage"
        } else {
            "cpu.usage_usec"
        })
        .with_context(|| format!("cpu usage not in {cpu_table:?}"))?
        .parse()?;
    assert!(
        ctr_cpu >= cpu_before * 0.99 && ctr_cpu <= cpu_after * 1.01,
        "cpu usage: ctr {ctr_cpu} between endpoint scrapes {cpu_before} and {cpu_after}"
    );

    // gRPC server metrics saw the calls made above.
    let tasks = "containerd.services.tasks.v1.Tasks";
    let last = Metrics::scrape(metrics_port)?;
    let started = last.one(
        "grpc_server_started_total",
        &[
            ("grpc_service", tasks),
            ("grpc_method", "Start"),
            ("grpc_type", "unary"),
        ],
    )?;
    let handled = last.one(
        "grpc_server_handled_total",
        &[
            ("grpc_service", tasks),
            ("grpc_method", "Start"),
            ("grpc_code", "OK"),
        ],
    )?;
    assert!(started >= 3.0 && handled >= 3.0, "{started} {handled}");
    let metrics_calls = last.one(
        "grpc_server_handled_total",
        &[
            ("grpc_service", tasks),
            ("grpc_method", "Metrics"),
            ("grpc_code", "OK"),
        ],
    )?;
    assert!(
        metrics_calls >= 2.0,
        "ctr tasks metrics calls: {metrics_calls}"
    );
    let latency = last.find(
        "grpc_server_handling_seconds",
        &[("grpc_service", tasks), ("grpc_method", "Create")],
    );
    match latency.as_slice() {
        [s] => match &s.value {
            Value::Histogram(buckets) => {
                let total = buckets.last().map_or(0.0, |b| b.count);
                assert!(total >= 3.0, "{buckets:?}");
            }
            other => bail!("latency is not a histogram: {other:?}"),
        },
        other => bail!("latency histogram of Tasks/Create: {other:?}"),
    }
    // A failed call is counted with its code (ctr looks the container up first).
    let err = berth_tests::fails(d.ctr(&["tasks", "kill", "no-such-task"])?)?;
    assert!(err.contains("not found"), "{err}");
    let after_error = Metrics::scrape(metrics_port)?;
    let not_found = after_error.find("grpc_server_handled_total", &[("grpc_code", "NotFound")]);
    assert!(
        not_found.iter().any(|s| value(s).unwrap_or(0.0) >= 1.0),
        "no NotFound call counted"
    );

    // Daemon metrics.
    assert_eq!(last.one("berth_tasks_running", &[])?, 3.0);
    assert_eq!(last.one("berth_shims", &[])?, 3.0);
    let pulled = last.one("berth_pull_bytes_total", &[])?;
    let blobs: u64 = layout
        .blobs()?
        .iter()
        .map(|d| {
            std::fs::metadata(layout.blob(d))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    assert!(
        pulled >= blobs as f64 && pulled < (blobs + 16 * 1024) as f64,
        "pull bytes {pulled}: the image's blobs are {blobs} bytes (plus the archive's index)"
    );

    // The debug endpoint lists the three tasks, their shims and the plugins.
    let (content_type, body) = http_get(debug_port, "/debug/state")?;
    assert_eq!(content_type, "application/json");
    let state: serde_json::Value = serde_json::from_str(&body)?;
    let tasks: Vec<(&str, &str)> = state["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| Some((t["id"].as_str()?, t["status"].as_str()?)))
        .collect();
    for id in ids {
        assert!(tasks.contains(&(id, "RUNNING")), "{id} in {tasks:?}");
    }
    assert_eq!(state["shims"].as_array().map(Vec::len), Some(3));
    let plugins = state["plugins"].as_array().context("plugins")?;
    assert!(
        plugins.iter().any(|p| p["type"] == "io.containerd.grpc.v1"
            && p["id"] == "tasks"
            && p["status"] == "ok"),
        "{plugins:?}"
    );
    // An open ingest is listed while a writer holds it.
    let mut writer = std::process::Command::new(berth_tests::ctr_bin()?)
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "open-ingest"])
        .env("CONTAINERD_NAMESPACE", &d.namespace)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut writer_in = writer.stdin.take().context("no stdin")?;
    // ctr sends data in 1 MiB chunks: give it more than one.
    writer_in.write_all(&vec![7_u8; 3 << 20])?;
    writer_in.flush()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(d.ctr(&["content", "active"])?)?.contains("open-ingest") {
        if Instant::now() > deadline {
            bail!("the ingest never became active");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, body) = http_get(debug_port, "/debug/state")?;
    let state: serde_json::Value = serde_json::from_str(&body)?;
    let ingests = state["ingests"].as_array().context("ingests")?;
    assert!(
        ingests
            .iter()
            .any(|i| i.to_string().contains("open-ingest")),
        "open ingest not listed: {ingests:?}"
    );
    drop(writer_in);
    let _ = writer.wait()?;
    // The metrics address does not serve the debug state, and vice versa.
    assert!(http_get(metrics_port, "/debug/state").is_err());
    assert!(http_get(debug_port, "/v1/metrics").is_err());

    // Spans: one request can be followed through the log.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("tasks.start{") && l.contains(&format!("id={CPU}"))),
        "no tasks.start span for {CPU} in the log"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("content.write{") && l.contains("ref=")),
        "no content.write span with a ref in the log"
    );

    for id in ids {
        // Kills the task, waits for its exit and deletes it.
        ok(d.ctr(&["tasks", "rm", "-f", id])?)?;
        ok(d.ctr(&["containers", "rm", id])?)?;
    }
    d.finish()
}
