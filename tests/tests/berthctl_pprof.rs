//! berthd's CPU profile on its debug address (`/debug/pprof/profile`, as
//! containerd's): fetched by `berthctl pprof profile` and by Debian's
//! `ctr pprof profile`, read by Go's own `go tool pprof`.

use std::io::Read;
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_tests::{Daemon, fails};

/// Runs `go tool pprof -top` on a profile file and returns its report.
fn go_pprof_top(file: &std::path::Path) -> Result<String> {
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(file)
        .env("HOME", file.parent().unwrap_or(file))
        .output()
        .context("running go tool pprof")?;
    if !out.status.success() {
        bail!(
            "go tool pprof failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn cpu_profile_is_a_pprof_that_ctr_and_go_read() -> Result<()> {
    let sockets = tempfile::Builder::new().prefix("berth-pprof").tempdir()?;
    let debug = sockets.path().join("debug.sock");
    let d = Daemon::start_with_config(Some(&format!(
        "version = 2\n[debug]\n  address = \"{}\"\n",
        debug.display()
    )))?;
    let debug_arg = debug.display().to_string();

    // Work for the daemon while it samples: an import (hashing, gunzip,
    // layers written into snapshots), again and again until the profile
    // is back (the first profile of a daemon starts its sampler late: the
    // profiler's tables are set up on first use). Time in
    // system calls is not attributed (samples inside libc are dropped, see
    // crates/daemon/src/http.rs); this is time in berthd's own code.
    let layout = berth_tests::testimages::big(&d.scratch("big"), 20)?;
    let archive = d.scratch("big.tar");
    layout.write_archive(&archive)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let address = d.address.clone();
        let berthctl = berth_tests::bin("berthctl")?;
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new(&berthctl)
                    .arg("-a")
                    .arg(&address)
                    .args(["images", "import", "--index-name", "big:1"])
                    .arg(&archive)
                    .output();
                let _ = Command::new(&berthctl)
                    .arg("-a")
                    .arg(&address)
                    .args(["images", "rm", "big:1"])
                    .output();
                let _ = Command::new(&berthctl)
                    .arg("-a")
                    .arg(&address)
                    .args(["content", "prune"])
                    .output();
            }
        })
    };
    let out = d.berthctl(&["pprof", "-d", &debug_arg, "profile", "--seconds", "2s"])?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = busy.join();
    let gz = out.stdout;
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzipped, as Go serves it");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut raw)?;
    assert!(!raw.is_empty());
    let file = sockets.path().join("berthctl.pprof");
    std::fs::write(&file, &gz)?;
    let top = go_pprof_top(&file)?;
    eprintln!("go tool pprof -top:\n{top}");
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("Duration: 2"), "{top}");
    assert!(
        !top.contains("Total samples = 0 "),
        "berthd's own frames: {top}"
    );

    // ctr 1.6 fetches the same endpoint over the same socket.
    let out = d.ctr(&["pprof", "-d", &debug_arg, "profile", "--seconds", "1s"])?;
    if !out.status.success() {
        bail!("ctr pprof: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = sockets.path().join("ctr.pprof");
    std::fs::write(&file, &out.stdout)?;
    let top = go_pprof_top(&file)?;
    assert!(top.contains("Type: cpu"), "{top}");

    // Refusals name the problem.
    let err = fails(d.berthctl(&[
        "pprof",
        "-d",
        "/nonexistent/debug.sock",
        "profile",
        "-s",
        "1",
    ])?)?;
    assert!(err.contains("/nonexistent/debug.sock"), "{err}");
    d.finish()
}

#[test]
fn profile_seconds_out_of_range_are_refused() -> Result<()> {
    let sockets = tempfile::Builder::new().prefix("berth-pprof").tempdir()?;
    let debug = sockets.path().join("debug.sock");
    let d = Daemon::start_with_config(Some(&format!(
        "version = 2\n[debug]\n  address = \"{}\"\n",
        debug.display()
    )))?;
    let err = fails(d.berthctl(&[
        "pprof",
        "-d",
        &debug.display().to_string(),
        "profile",
        "-s",
        "100000",
    ])?)?;
    assert!(
        err.contains("400") && err.contains("invalid value for seconds"),
        "{err}"
    );
    d.finish()
}
