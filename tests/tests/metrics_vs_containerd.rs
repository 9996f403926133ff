//! berthd's `/v1/metrics` compared with Debian containerd's for the same
//! workload: both daemons (containerd started and stopped here, on a temp
//! root) import the same berth-built busybox image with Debian's `ctr`, run
//! the same container and answer the same calls; then every metric family
//! containerd exposes under the prefixes berth shares with it (`container_`:
//! the cgroup statistics, `grpc_server_`: the gRPC server metrics) must
//! exist in berth with the same type and label names, and berth must have
//! no family there that containerd lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_tests::{Containerd, Daemon, ok, testimages};

const IMAGE: &str = "docker.io/library/busybox:latest";
const ID: &str = "metrics-same";

/// The prefixes of the families berth means to share with containerd.
const SHARED: &[&str] = &["container_", "grpc_server_"];

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The body of `GET /v1/metrics` on 127.0.0.1:`port`.
fn scrape(port: u16) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header in {raw:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /v1/metrics: {head}\n{body}");
    }
    // containerd answers chunked; the sample lines survive the chunk sizes
    // except where a chunk boundary cuts one, which the parser skips.
    Ok(
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One family: its type and the label names its samples carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// The families of an exposition (Prometheus text or OpenMetrics), keyed
/// by name with a counter's `_total` removed (OpenMetrics names the family
/// without it, the Prometheus text format with it).
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let name = if kind == "counter" {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                out.insert(
                    name.to_string(),
                    Family {
                        kind: kind.to_string(),
                        labels: BTreeSet::new(),
                    },
                );
            }
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = ["_total", "_bucket", "_sum", "_count", "_created", ""]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| out.contains_key(*base));
        let Some(family) = family.map(str::to_string) else {
            continue;
        };
        if let Some(labels) = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
        {
            for name in label_names(labels.0) {
                if name == "le" || name == "quantile" {
                    continue;
                }
                if let Some(f) = out.get_mut(&family) {
                    f.labels.insert(name);
                }
            }
        }
    }
    out
}

/// The gRPC call counters (`grpc_server_{started,handled,msg_received,
/// msg_sent}_total`), keyed by name and sorted labels.
fn call_counts(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // OpenMetrics may append a timestamp or exemplar; containerd does not.
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        if !(name.starts_with("grpc_server_") && name.ends_with("_total")) {
            continue;
        }
        let mut pairs: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .collect();
        pairs.sort_unstable();
        if let Ok(v) = value.parse::<f64>() {
            out.insert(format!("{name}{{{}}}", pairs.join(",")), v);
        }
    }
    out
}

/// The `grpc_service` label value of a [`call_counts`] key.
fn service_of(key: &str) -> Option<&str> {
    key.split("grpc_service=\"").nth(1)?.split('"').next()
}

/// The names in `k1="v1",k2="v2"` (values may hold escaped quotes).
fn label_names(mut s: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((name, rest)) = s.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_string());
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        s = rest.get(end + 1..).unwrap_or("");
    }
    names
}

fn shared(all: &BTreeMap<String, Family>) -> BTreeMap<String, Family> {
    all.iter()
        .filter(|(name, _)| SHARED.iter().any(|p| name.starts_with(p)))
        .map(|(n, f)| (n.clone(), f.clone()))
        .collect()
}

/// Every difference between containerd's and berth's shared families.
fn differences(
    containerd: &BTreeMap<String, Family>,
    berth: &BTreeMap<String, Family>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, f) in containerd {
        match berth.get(name) {
            None => out.push(format!("{name} ({}) missing in berth", f.kind)),
            Some(b) if b != f => out.push(format!(
                "{name}: berth {} {:?}, containerd {} {:?}",
                b.kind, b.labels, f.kind, f.labels
            )),
            Some(_) => {}
        }
    }
    for (name, b) in berth {
        if !containerd.contains_key(name) {
            out.push(format!("{name} ({}) only in berth", b.kind));
        }
    }
    out
}

/// The same calls against either daemon, through Debian's `ctr`.
fn workload(ctr: &dyn Fn(&[&str]) -> Result<std::process::Output>, archive: &str) -> Result<()> {
    ok(ctr(&["images", "import", archive])?)?;
    ok(ctr(&["run", "-d", IMAGE, ID, "sleep", "1000"])?)?;
    ok(ctr(&["tasks", "metrics", ID])?)?;
    ok(ctr(&["tasks", "ls"])?)?;
    // A failed call, counted with its code.
    let _ = ctr(&["tasks", "kill", "no-such-task"])?;
    Ok(())
}

fn stop(ctr: &dyn Fn(&[&str]) -> Result<std::process::Output>) -> Result<()> {
    ok(ctr(&["tasks", "kill", "-s", "SIGKILL", ID])?)?;
    Ok(())
}

#[test]
fn shared_metric_families_match_containerds() -> Result<()> {
    let metrics = "[metrics]\n  address = \"127.0.0.1:{port}\"\n  grpc_histogram = true\n";
    let containerd_port = free_port()?;
    let containerd =
        Containerd::start_with_config(&metrics.replace("{port}", &containerd_port.to_string()))?;
    let berth_port = free_port()?;
    let berth = Daemon::start_with_config(Some(&format!(
        "version = 2\n{}",
        metrics.replace("{port}", &berth_port.to_string())
    )))?
    .in_unique_namespace("berth-metrics");

    let layout = testimages::busybox(&berth.scratch("busybox"))?;
    let archive = berth.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    let archive = archive.display().to_string();

    let on_containerd = |args: &[&str]| containerd.ctr(args);
    let on_berth = |args: &[&str]| berth.ctr(args);
    workload(&on_containerd, &archive).with_context(|| containerd.log())?;
    workload(&on_berth, &archive).with_context(|| berth.log())?;

    let (their_text, our_text) = (scrape(containerd_port)?, scrape(berth_port)?);
    let theirs = families(&their_text);
    let ours = families(&our_text);
    stop(&on_containerd)?;
    stop(&on_berth)?;

    let theirs = shared(&theirs);
    let ours = shared(&ours);
    // Guard against comparing two empty scrapes.
    for must in ["container_pids_current", "grpc_server_handled"] {
        assert!(
            theirs.contains_key(must),
            "containerd has no {must}: {theirs:?}"
        );
    }
    let mut diffs = differences(&theirs, &ours);
    // The same client calls: the same calls started, handled (by code) and
    // messages received and sent, method by method. Like containerd, berth
    // has a zero series for every method of the services both serve (berth
    // also serves 2.x services, with their own zero series).
    let (their_calls, our_calls) = (call_counts(&their_text), call_counts(&our_text));
    assert!(
        their_calls
            .keys()
            .any(|k| k.contains("grpc_method=\"Create\"")),
        "{their_calls:?}"
    );
    let served: BTreeSet<&str> = our_calls.keys().filter_map(|k| service_of(k)).collect();
    for key in their_calls.keys().chain(our_calls.keys()) {
        let (t, o) = (their_calls.get(key), our_calls.get(key));
        let shared_service = service_of(key).is_some_and(|s| served.contains(s));
        let differs = t.copied().unwrap_or(0.0) != o.copied().unwrap_or(0.0)
            || (t.is_some() && o.is_none() && shared_service);
        if differs && !diffs.iter().any(|d| d.contains(key.as_str())) {
            diffs.push(format!("{key}: berth {o:?}, containerd {t:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences from containerd's metrics:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    Ok(())
}

#[test]
fn the_family_parser_reads_both_formats() {
    let prom = "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b,c=\\\"\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\",m=\"q\"} 1\nh_sum{m=\"q\"} 1\n";
    let open = "# TYPE a counter\na_total{y=\"v\",x=\"2\"} 3\n# TYPE h histogram\nh_bucket{m=\"q\",le=\"+Inf\"} 1\n# EOF\n";
    let (p, o) = (families(prom), families(open));
    assert_eq!(p, o);
    let a = &p["a"];
    assert_eq!(a.kind, "counter");
    assert_eq!(
        a.labels.iter().map(String::as_str).collect::<Vec<_>>(),
        ["x", "y"]
    );
    let mut changed = o.clone();
    changed.insert(
        "h".into(),
        Family {
            kind: "gauge".into(),
            labels: BTreeSet::new(),
        },
    );
    assert_eq!(differences(&p, &changed).len(), 1);
}
