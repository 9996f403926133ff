//! Runs cri-tools' `critest` (the shared tools' v1.32.0) against a
//! [`CriDaemon`] and reads its outcome from the Ginkgo JSON report
//! (`-ginkgo.json-report`), spec by spec, rather than from its text.
//!
//! critest runs serially: its `-parallel` needs the Ginkgo v2 CLI (Debian
//! ships only v1's), and the machine has 2 cores. Its specs use fixed
//! host ports (12000-12003), so one critest runs at a time on the machine:
//! [`run`] holds an exclusive lock on [`LOCK_PATH`] while it runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cri_daemon::{CriDaemon, without_proxy};
use crate::shared_tool;

/// The spec no local image can pass: it pulls an upstream digest.
pub const DIGEST_SPEC: &str = "public image with digest should be pulled and removed";

/// Held while critest runs, machine-wide (critest binds fixed host ports).
pub const LOCK_PATH: &str = "/tmp/berth-critest.lock";

/// The outcome of every spec of one critest run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Full names of the specs that passed.
    pub passed: BTreeSet<String>,
    /// Full names of the specs that failed, with Ginkgo's failure message.
    pub failed: Vec<(String, String)>,
    /// Full names of the specs skipped (by `-ginkgo.skip` or by the spec).
    pub skipped: BTreeSet<String>,
    /// How long critest ran.
    pub elapsed: Duration,
    /// critest's own output (its log file).
    pub log: PathBuf,
}

impl Report {
    /// Names of the failed specs.
    pub fn failed_names(&self) -> BTreeSet<String> {
        self.failed.iter().map(|(n, _)| n.clone()).collect()
    }

    /// A one-line summary: `N passed, N failed, N skipped in Ns`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped in {:.0}s",
            self.passed.len(),
            self.failed.len(),
            self.skipped.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs critest against `daemon`, skipping [`DIGEST_SPEC`] and the specs
/// matching `skip` (Ginkgo regular expressions); fails if it runs longer
/// than `hang` (then it is killed) or writes no report.
pub fn run(daemon: &CriDaemon, skip: &[&str], hang: Duration) -> Result<Report> {
    let critest = shared_tool("critest")?;
    let dir = daemon.scratch("critest");
    std::fs::create_dir_all(&dir)?;
    let report_path = dir.join("report.json");
    let log_path = dir.join("critest.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(critest);
    cmd.args(["-runtime-endpoint", &daemon.endpoint()])
        .args(["-image-endpoint", &daemon.endpoint()])
        .arg(format!("-config={}", dir.join("crictl.yaml").display()))
        .arg(format!("-ginkgo.skip={DIGEST_SPEC}"));
    for s in skip {
        cmd.arg(format!("-ginkgo.skip={s}"));
    }
    cmd.arg(format!("-ginkgo.json-report={}", report_path.display()))
        .arg("-ginkgo.no-color")
        // critest's temporary files (log and seccomp profile dirs) land in
        // the test's directory.
        .env("TMPDIR", &dir)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    without_proxy(&mut cmd);
    let _lock = lock()?;
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting critest")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > hang {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "critest still ran after {hang:?}; its output:\n{}",
                tail_file(&log_path, 60)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = started.elapsed();
    let mut report = parse_report(&report_path).with_context(|| {
        format!(
            "reading critest's report; its output:\n{}",
            tail_file(&log_path, 60)
        )
    })?;
    report.elapsed = elapsed;
    report.log = log_path;
    Ok(report)
}

/// Takes the machine-wide critest lock (released when dropped).
fn lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("opening {LOCK_PATH}"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {LOCK_PATH}: {e}"))
}

/// Reads a Ginkgo v2 JSON report: an array of suite reports, each with
/// `SpecReports`; only `It` nodes are specs.
pub fn parse_report(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let suites: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut report = Report::default();
    for suite in suites.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"].as_str() != Some("It") {
                continue;
            }
            let name = spec_name(spec);
            match spec["State"].as_str().unwrap_or_default() {
                "passed" => {
                    report.passed.insert(name);
                }
                "skipped" | "pending" => {
                    report.skipped.insert(name);
                }
                _ => {
                    let message = spec["Failure"]["Message"]
                        .as_str()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    report.failed.push((name, message));
                }
            }
        }
    }
    if report.passed.is_empty() && report.failed.is_empty() {
        bail!("{} holds no spec that ran", path.display());
    }
    Ok(report)
}

/// A spec's full name: its containers' texts, then its own, space-joined
/// (as Ginkgo prints it).
pub fn spec_name(spec: &serde_json::Value) -> String {
    let mut parts: Vec<String> = spec["ContainerHierarchyTexts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    parts.push(spec["LeafNodeText"].as_str().unwrap_or_default().to_owned());
    parts.join(" ")
}

/// The last `n` lines of the file at `path`.
fn tail_file(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
