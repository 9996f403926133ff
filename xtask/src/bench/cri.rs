//! The `cri` scenario: cri-tools' `critest -benchmark` (the shared tools'
//! v1.32.0) against berthd with its CRI plugin and against Debian's
//! containerd 1.6 with its own, alternating, a fresh daemon each round
//! (3 rounds per daemon unless `--rounds N`), both started by the CRI
//! tests' harness ([`berth_tests::cri_daemon::CriDaemon`]: the same CRI
//! config, local registry mirrors, CNI bridge, and teardown of every pod).
//! One round per daemon let a busy minute on this shared machine land on
//! one side only: most of a container start is `runc create`, whose time
//! swings with the load.
//!
//! Measured: each daemon's RSS idle with the CRI plugin loaded (after it
//! started, before the benchmark), and from critest's
//! `pod_benchmark_data.json` and `container_benchmark_data.json` the
//! median of each pod (`CreatePod`, i.e. `RunPodSandbox`, and `StopPod`)
//! and container (`StartContainer`, `StopContainer`) operation over its
//! samples; each row holds one figure per round.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cri_daemon::{CriDaemon, CriDaemonKind, without_proxy};
use berth_tests::cri_env::CriEnv;

use super::daemons::status_kib;
use super::report::{Better, Goal, Row, Summary, print_and_save, stats};
use crate::Result;

/// Pod and container lifecycles critest times (sequentially).
const SAMPLES: usize = 20;
/// critest is killed if the benchmark runs longer than this.
const HANG: Duration = Duration::from_secs(600);
/// The operations reported: (benchmark file, operation as critest names
/// it, the row's name). critest's `CreatePod` times `RunPodSandbox`.
const OPERATIONS: [(&str, &str, &str); 4] = [
    (
        "pod_benchmark_data.json",
        "CreatePod",
        "pod start (RunPodSandbox)",
    ),
    (
        "pod_benchmark_data.json",
        "StopPod",
        "pod stop (StopPodSandbox)",
    ),
    (
        "container_benchmark_data.json",
        "StartContainer",
        "container start (StartContainer)",
    ),
    (
        "container_benchmark_data.json",
        "StopContainer",
        "container stop (StopContainer)",
    ),
];

/// Runs the scenario; everything it starts is stopped on return.
pub(super) fn scenario(s: &mut Summary) -> Result<()> {
    let env = CriEnv::start().map_err(|e| format!("CRI environment: {e:#}"))?;
    let result = measure(&env, s);
    let finished = env.finish().map_err(|e| format!("CRI environment: {e:#}"));
    result.and(finished)
}

fn measure(env: &CriEnv, s: &mut Summary) -> Result<()> {
    let mut rss = Row::new("daemon RSS idle, CRI plugin loaded", "MB", Better::Lower)
        .goal(Goal::AtMost(0.25));
    let mut ops: Vec<Row> = OPERATIONS
        .iter()
        .map(|(_, _, name)| {
            Row::new(
                format!("critest -benchmark {name}, median of {SAMPLES} per round"),
                "ms",
                Better::Lower,
            )
            .goal(Goal::AtMost(0.6))
        })
        .collect();
    let rounds =
        (0..super::rounds()).flat_map(|_| [CriDaemonKind::Berthd, CriDaemonKind::Containerd]);
    for kind in rounds {
        let daemon = CriDaemon::start(kind, env).map_err(|e| format!("{kind:?}: {e:#}"))?;
        let pid = daemon_pid(&daemon.address)
            .ok_or_else(|| format!("no process serves {}", daemon.address.display()))?;
        // Stopped by PID on Ctrl-C too; otherwise `finish` (or the drop on
        // an error) stops it with its pods.
        crate::cleanup::process(pid);
        // Settle after startup (plugins loading, first GC) before reading.
        std::thread::sleep(Duration::from_secs(2));
        let idle = status_kib(pid, "VmRSS:") as f64 / 1024.0;
        let out = daemon.scratch("benchmark");
        let run = benchmark(&daemon, &out);
        let figures = run.and_then(|()| {
            OPERATIONS
                .iter()
                .map(|(file, op, _)| median_ms(&out.join(file), op))
                .collect::<Result<Vec<f64>>>()
        });
        // Kept for a breakdown of the calls (berthd logs at debug level);
        // the last round's.
        let log = super::target_dir().join(format!("bench/cri-{kind:?}.log").to_lowercase());
        let _ = std::fs::create_dir_all(super::target_dir().join("bench"));
        let _ = std::fs::write(&log, daemon.log());
        let finished = daemon.finish().map_err(|e| format!("{kind:?}: {e:#}"));
        crate::cleanup::forget(pid);
        let figures = figures.map_err(|e| format!("{kind:?}: {e}"))?;
        finished?;
        let berth = kind == CriDaemonKind::Berthd;
        for (row, v) in std::iter::once((&mut rss, idle)).chain(ops.iter_mut().zip(figures)) {
            if berth {
                row.berth.push(v);
            } else {
                row.containerd.push(v);
            }
        }
    }
    let mut rows = vec![rss];
    rows.append(&mut ops);
    print_and_save("cri", &mut rows, s)
}

/// The PID of the daemon started with `--address <address>`.
fn daemon_pid(address: &Path) -> Option<u32> {
    let want = address.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == b"--address" && w[1] == want)
            .then_some(pid)
    })
}

/// Runs `critest -benchmark` (the pod and container lifecycle specs only)
/// against `daemon`, writing its JSON data under `out`.
fn benchmark(daemon: &CriDaemon, out: &Path) -> Result<()> {
    let critest = berth_tests::shared_tool("critest").map_err(|e| format!("{e:#}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let params = out.join("params.yaml");
    std::fs::write(
        &params,
        format!(
            "containersNumber: {SAMPLES}\ncontainersNumberParallel: 1\npodsNumber: {SAMPLES}\npodsNumberParallel: 1\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let config = daemon.scratch("crictl.yaml");
    let log_path = out.join("critest.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(critest);
    cmd.arg("-benchmark")
        .args(["-runtime-endpoint", &daemon.endpoint()])
        .args(["-image-endpoint", &daemon.endpoint()])
        .arg(format!("-config={}", config.display()))
        .arg(format!("-benchmarking-params-file={}", params.display()))
        .arg(format!("-benchmarking-output-dir={}", out.display()))
        .arg("-ginkgo.focus=benchmark about lifecycle of PodSandbox")
        .arg("-ginkgo.focus=benchmark about start a container from scratch")
        .arg("-ginkgo.no-color")
        .env("TMPDIR", out)
        .current_dir(out)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    without_proxy(&mut cmd);
    let _lock = critest_lock()?;
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("starting critest: {e}"))?;
    crate::cleanup::process(child.id());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            crate::cleanup::forget(child.id());
            return Err(format!(
                "critest -benchmark still ran after {HANG:?} (log: {})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    crate::cleanup::forget(child.id());
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        return Err(format!(
            "critest -benchmark exited with {status}:\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        ));
    }
    Ok(())
}

/// The machine-wide critest lock of the CRI tests (critest binds fixed
/// host ports), released when dropped.
fn critest_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = berth_tests::critest::LOCK_PATH;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {path}: {e}"))
}

/// The median duration of operation `op` over the samples of a critest
/// lifecycle benchmark file, in milliseconds.
fn median_ms(path: &PathBuf, op: &str) -> Result<f64> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut v = durations_ms(&text, op).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(stats(&mut v).0)
}

/// Every sample's duration of `op` (milliseconds) in a critest lifecycle
/// benchmark result: `operationsNames` names the columns of each
/// datapoint's `operationsDurationsNs`.
fn durations_ms(json: &str, op: &str) -> Result<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let names = v["operationsNames"]
        .as_array()
        .ok_or("no operationsNames")?;
    let col = names
        .iter()
        .position(|n| n.as_str() == Some(op))
        .ok_or_else(|| format!("no operation {op} in {names:?}"))?;
    let samples: Vec<f64> = v["datapoints"]
        .as_array()
        .ok_or("no datapoints")?
        .iter()
        .filter_map(|d| d["operationsDurationsNs"][col].as_f64())
        .map(|ns| ns / 1e6)
        .collect();
    if samples.is_empty() {
        return Err(format!("no samples of {op}"));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_of_named_operation() {
        let json = r#"{"operationsNames":["CreatePod","StatusPod","StopPod","RemovePod"],
            "numParallel":1,
            "datapoints":[
              {"sampleIndex":0,"startTime":1,"endTime":2,"operationsDurationsNs":[3000000,10,5000000,1]},
              {"sampleIndex":1,"startTime":1,"endTime":2,"operationsDurationsNs":[1000000,10,7000000,1]}]}"#;
        assert_eq!(durations_ms(json, "CreatePod").unwrap(), [3.0, 1.0]);
        assert_eq!(durations_ms(json, "StopPod").unwrap(), [5.0, 7.0]);
        assert!(durations_ms(json, "StartContainer").is_err());
        assert!(durations_ms(r#"{"operationsNames":[],"datapoints":[]}"#, "X").is_err());
    }
}
