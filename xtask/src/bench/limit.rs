//! The `limit` scenario: this machine's floors, without any daemon (bare
//! `runc run`, plain HTTP download of the big image's layers, and sha256
//! and gunzip of the same bytes).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::daemons::Daemon;
use super::report::{Better, Row, Summary, print_and_save};
use super::{Ctx, busybox_rootfs, timed};
use crate::{Result, run};

/// Samples of each `limit` measurement.
const LIMIT_RUNS: usize = 5;

/// `limit`: what this machine can do at best, without any daemon.
pub(super) fn scenario_limit(berth: &Daemon, ctx: &mut Ctx, s: &mut Summary) -> Result<()> {
    // Bare runc: a prepared bundle on the busybox root filesystem.
    let limit = ctx.dir.join("limit");
    let bundle = limit.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    run(Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle))?;
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let runc_root = limit.join("runc");
    let runc = |id: &str| {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&runc_root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let mut runc_row = Row::new("bare runc run true (bundle ready)", "ms", Better::Lower);
    timed(runc("warm"))?;
    for i in 0..LIMIT_RUNS {
        runc_row
            .berth
            .push(timed(runc(&format!("l{i}")))?.as_secs_f64() * 1000.0);
    }

    // The big image's layer blobs: over HTTP, hashed, decompressed.
    let big = ctx.big(berth)?;
    let url = |digest: &str| format!("http://{}/v2/bench/big/blobs/{digest}", big.registry.0.host);
    let mut blobs = Vec::new();
    for l in &big.layout.layers {
        let mut data = Vec::new();
        std::fs::File::open(big.layout.blob(&l.digest))
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| e.to_string())?;
        blobs.push(data);
    }
    let total_mb = blobs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let mut http = Row::new(
        format!("HTTP GET of the layers, {total_mb:.0} MB (curl, parallel)"),
        "s",
        Better::Lower,
    );
    let mut sha = Row::new("sha256 of the same bytes", "s", Better::Lower);
    let mut gunzip = Row::new("gunzip of the same bytes", "s", Better::Lower);
    let mut curl = Command::new("curl");
    curl.args(["-s", "--fail", "--parallel", "--parallel-max", "6"]);
    for l in &big.layout.layers {
        curl.args(["-o", "/dev/null"]).arg(url(&l.digest));
    }
    for _ in 0..LIMIT_RUNS {
        let mut c = Command::new("curl");
        c.args(curl.get_args());
        http.berth.push(timed(c)?.as_secs_f64());
        let started = Instant::now();
        for b in &blobs {
            use sha2::Digest as _;
            std::hint::black_box(sha2::Sha256::digest(b));
        }
        sha.berth.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for b in &blobs {
            let mut dec = flate2::read::GzDecoder::new(b.as_slice());
            std::io::copy(&mut dec, &mut std::io::sink()).map_err(|e| e.to_string())?;
        }
        gunzip.berth.push(started.elapsed().as_secs_f64());
    }
    print_and_save("limit", &mut [runc_row, http, sha, gunzip], s)
}
