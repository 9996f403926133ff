//! cri-tools' `critest` (v1.32.0, from the shared tools) against a CRI
//! daemon on a temporary root, with the project's stand-in images in a
//! local registry and a CNI bridge of its own (see `src/cri_env.rs`,
//! `src/cri_daemon.rs`).
//!
//! - `containerd_passes_critest`: Debian's containerd 1.6.20 and its CRI
//!   plugin, the reference: at least 84 specs pass (it fails two, its
//!   StopContainer / StopPodSandbox not-found idempotence bugs).
//! - `berthd_passes_critest`: berthd and its CRI plugin. Every spec of
//!   `critest_expected_pass.txt` (every spec containerd passes plus the two
//!   it fails), the streaming ones (Exec / Attach / PortForward through
//!   the streaming server) included, must pass. Nothing is skipped.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use berth_tests::cri_daemon::{CriDaemon, CriDaemonKind};
use berth_tests::cri_env::CriEnv;
use berth_tests::critest;

/// Specs containerd 1.6.20 passes here, at least.
const CONTAINERD_MIN_PASSED: usize = 84;

/// A hang guard, not a timing expectation: critest takes minutes.
const HANG: Duration = Duration::from_secs(20 * 60);

/// The specs berthd must pass, one per line (`#` starts a comment).
fn expected_pass() -> BTreeSet<String> {
    include_str!("critest_expected_pass.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs critest against `kind`; `None` when the daemon serves no CRI.
fn run_critest(kind: CriDaemonKind) -> Result<Option<critest::Report>> {
    let env = CriEnv::start()?;
    let daemon = CriDaemon::start(kind, &env)?;
    if !daemon.serves_cri()? {
        daemon.finish()?;
        env.finish()?;
        return Ok(None);
    }
    let report = critest::run(&daemon, &[], HANG)?;
    println!("critest against {kind:?}: {}", report.summary());
    for name in &report.skipped {
        println!("skipped: {name}");
    }
    for (name, message) in &report.failed {
        println!("FAILED: {name}\n    {}", head(message, 12).join("\n    "));
    }
    // Regenerating the expected list: every spec that passed or failed.
    if let Some(path) = std::env::var_os("BERTH_CRITEST_SAVE") {
        let mut ran: Vec<String> = report.passed.iter().cloned().collect();
        ran.extend(report.failed_names());
        ran.sort();
        let header = "# critest v1.32.0 specs berthd must pass: every spec Debian's containerd\n\
                      # 1.6.20 passes, plus the two it fails (StopContainer / StopPodSandbox\n\
                      # not-found idempotence). Written by BERTH_CRITEST_SAVE=<this file>\n\
                      # cargo nextest run -p berth-tests --test critest -E 'test(containerd)'\n";
        std::fs::write(&path, format!("{header}{}\n", ran.join("\n")))?;
    }
    daemon.finish()?;
    env.finish()?;
    Ok(Some(report))
}

/// The first `n` lines of `text`.
fn head(text: &str, n: usize) -> Vec<&str> {
    text.lines().take(n).collect()
}

#[test]
fn containerd_passes_critest() -> Result<()> {
    let Some(report) = run_critest(CriDaemonKind::Containerd)? else {
        bail!("containerd's CRI plugin answered Version with Unimplemented");
    };
    let expected = expected_pass();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|s| !report.passed.contains(*s))
        .collect();
    if !missing.is_empty() {
        println!(
            "specs of critest_expected_pass.txt containerd did not pass ({}):",
            missing.len()
        );
        for m in missing {
            println!("  {m}");
        }
    }
    if report.passed.len() < CONTAINERD_MIN_PASSED {
        bail!(
            "containerd passed {} critest specs, expected at least {CONTAINERD_MIN_PASSED} ({}); failures:\n  {}\ncritest log: {}",
            report.passed.len(),
            report.summary(),
            report
                .failed_names()
                .into_iter()
                .collect::<Vec<_>>()
                .join("\n  "),
            report.log.display()
        );
    }
    Ok(())
}

#[test]
fn berthd_passes_critest() -> Result<()> {
    let Some(report) = run_critest(CriDaemonKind::Berthd)? else {
        bail!("berthd's CRI plugin answered Version with Unimplemented");
    };
    let not_passed: Vec<String> = expected_pass()
        .into_iter()
        .filter(|s| !report.passed.contains(s))
        .collect();
    if !not_passed.is_empty() {
        bail!(
            "berthd did not pass {} expected critest specs ({}):\n  {}",
            not_passed.len(),
            report.summary(),
            not_passed.join("\n  ")
        );
    }
    Ok(())
}

#[test]
fn report_is_read_spec_by_spec() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("report.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!([{
            "SuiteDescription": "CRI validation",
            "SpecReports": [
                {"LeafNodeType": "BeforeSuite", "LeafNodeText": "", "State": "passed"},
                {"ContainerHierarchyTexts": ["[k8s.io] Image Manager"],
                 "LeafNodeType": "It", "LeafNodeText": "pulls", "State": "passed"},
                {"ContainerHierarchyTexts": ["[k8s.io] Idempotence", "StopContainer"],
                 "LeafNodeType": "It", "LeafNodeText": "should not fail", "State": "failed",
                 "Failure": {"Message": "Unexpected error:\nnot found"}},
                {"ContainerHierarchyTexts": ["[k8s.io] AppArmor"],
                 "LeafNodeType": "It", "LeafNodeText": "loads", "State": "skipped"},
            ],
        }]))?,
    )?;
    let report = critest::parse_report(&path)?;
    assert_eq!(
        report.passed.iter().collect::<Vec<_>>(),
        ["[k8s.io] Image Manager pulls"]
    );
    assert_eq!(
        report.failed,
        [(
            "[k8s.io] Idempotence StopContainer should not fail".to_string(),
            "Unexpected error:\nnot found".to_string()
        )]
    );
    assert_eq!(
        report.skipped.iter().collect::<Vec<_>>(),
        ["[k8s.io] AppArmor loads"]
    );
    Ok(())
}
