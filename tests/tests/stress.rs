//! `berthctl stress` against a scratch berthd with real runc: both
//! variants complete iterations without failures and leave nothing behind
//! (no containers, tasks, active snapshots or leases).

use anyhow::Result;
use berth_tests::{Daemon, ok, testimages};

fn daemon_with_busybox() -> Result<Daemon> {
    // berth's own shim (the default for io.containerd.runc.v2).
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    ok(d.ctr(&["images", "import", &archive.display().to_string()])?)?;
    Ok(d)
}

/// Runs `berthctl stress --json` with `extra` and returns its report.
fn stress(d: &Daemon, extra: &[&str]) -> Result<serde_json::Value> {
    let mut args = vec!["stress", "--json", "--concurrency", "2", "--duration", "3s"];
    args.extend_from_slice(extra);
    let out = ok(d.berthctl(&args)?)?;
    Ok(serde_json::from_str(out.trim())?)
}

/// Nothing the stress run made is left: only the image's committed snapshot.
fn assert_clean(d: Daemon) -> Result<()> {
    assert_eq!(ok(d.ctr(&["containers", "ls", "-q"])?)?, "");
    assert_eq!(ok(d.ctr(&["tasks", "ls", "-q"])?)?, "");
    assert_eq!(ok(d.ctr(&["leases", "ls", "-q"])?)?, "");
    let snapshots = ok(d.ctr(&["snapshots", "ls"])?)?;
    assert!(
        snapshots
            .lines()
            .skip(1)
            .all(|l| l.contains("Committed") && !l.contains("stress-")),
        "{snapshots}"
    );
    // No shim, runc state, mount or bundle either.
    d.finish()
}

#[test]
fn stress_runs_containers_and_cleans_up() -> Result<()> {
    let d = daemon_with_busybox()?;
    let report = stress(&d, &[])?;
    assert_eq!(report["mode"], "containers");
    assert!(report["iterations"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    let (Some(p50), Some(p95)) = (report["p50_ms"].as_f64(), report["p95_ms"].as_f64()) else {
        panic!("no latency percentiles reported: {report}");
    };
    assert!(p50 > 0.0 && p95 >= p50, "{report}");
    assert_clean(d)
}

#[test]
fn stress_exec_variant_cleans_up() -> Result<()> {
    let d = daemon_with_busybox()?;
    let report = stress(&d, &["--exec"])?;
    assert_eq!(report["mode"], "exec");
    assert!(report["iterations"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    assert_clean(d)
}

#[test]
fn stress_without_the_image_fails_clearly() -> Result<()> {
    let d = Daemon::start()?;
    let out = d.berthctl(&[
        "stress",
        "--duration",
        "1s",
        "--image",
        "docker.io/library/none:latest",
    ])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none:latest"), "{err}");
    d.finish()
}
