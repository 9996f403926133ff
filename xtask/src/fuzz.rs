//! `cargo xtask fuzz`: coverage-guided fuzzing of every target of
//! `fuzz/` with libFuzzer, on the stable toolchain.
//!
//! The driver (`berth-libfuzzer`, feature `libfuzzer` of berth-fuzz) is
//! built with LLVM's SanitizerCoverage passes (what cargo-fuzz turns on,
//! without its nightly-only sanitizers) into `target/fuzz`, then run once
//! per target for a fixed time, seeded from `fuzz/corpus/<target>/`. New
//! inputs go to `target/fuzz/corpus/<target>/` (kept between runs, never
//! committed); a crash is saved under `fuzz/crashes/<target>/` and fails
//! the run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, cargo, run, workspace_root};

/// SanitizerCoverage as libFuzzer needs it: edge counters, the PC table
/// and comparison tracing (so it learns the tokens parsers compare with).
const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

/// What one target's run did.
struct Outcome {
    target: String,
    executions: u64,
    coverage: u64,
    corpus: u64,
    crashed: bool,
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`: every target (or those
/// named) for N seconds each (default 60).
pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a number")?;
                seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds {v:?} is not a whole number"))?;
            }
            t if !t.starts_with('-') => wanted.push(t.to_string()),
            other => {
                return Err(format!(
                    "unknown option {other}; usage: cargo xtask fuzz [--seconds N] [TARGET...]"
                ));
            }
        }
    }
    let root = workspace_root();
    let all = targets(&root)?;
    for t in &wanted {
        if !all.contains(t) {
            return Err(format!("no fuzz target {t:?}; targets: {}", all.join(", ")));
        }
    }
    let chosen = if wanted.is_empty() { all } else { wanted };
    let driver = build(&root)?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        outcomes.push(fuzz_one(&root, &driver, target, seconds)?);
    }
    eprintln!(
        "\n{:<12} {:>12} {:>8} {:>8}  result",
        "target", "executions", "cov", "corpus"
    );
    for o in &outcomes {
        eprintln!(
            "{:<12} {:>12} {:>8} {:>8}  {}",
            o.target,
            o.executions,
            o.coverage,
            o.corpus,
            if o.crashed { "CRASH" } else { "no crash" }
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz targets crashed: {} (inputs saved under fuzz/crashes/)",
            crashed.join(", ")
        ))
    }
}

/// The targets: one corpus directory each.
fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/corpus");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The host's target triple: passing it explicitly keeps the coverage
/// flags off build scripts and proc macros.
fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .map_err(|e| format!("running rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "rustc -vV names no host".to_string())
}

fn build(root: &Path) -> Result<PathBuf> {
    let triple = host_triple()?;
    let target_dir = root.join("target/fuzz");
    run(cargo()
        .env("RUSTFLAGS", COVERAGE_FLAGS)
        .args(["build", "--profile", "fuzz", "-p", "berth-fuzz"])
        .args(["--features", "libfuzzer", "--bin", "berth-libfuzzer"])
        .args(["--target", &triple])
        .arg("--target-dir")
        .arg(&target_dir))?;
    Ok(target_dir.join(triple).join("fuzz/berth-libfuzzer"))
}

fn fuzz_one(root: &Path, driver: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let work = root.join("target/fuzz/corpus").join(target);
    let crashes = root.join("fuzz/crashes").join(target);
    for dir in [&work, &crashes] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let seeds = root.join("fuzz/corpus").join(target);
    eprintln!("+ fuzz {target} for {seconds} s");
    let out = Command::new(driver)
        .env("BERTH_FUZZ_TARGET", target)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", crashes.display()))
        .arg(&work)
        .arg(&seeds)
        .output()
        .map_err(|e| format!("running {}: {e}", driver.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let crashed = !out.status.success();
    if crashed {
        // The tail names the input and shows the panic.
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
    }
    Ok(Outcome {
        target: target.to_string(),
        executions: stat(&log, "stat::number_of_executed_units:"),
        coverage: last_field(&log, " cov: "),
        corpus: last_field(&log, " corp: "),
        crashed,
    })
}

/// The number after `key` in libFuzzer's final statistics.
fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// The leading number after `key` on the last status line that has it
/// (`#4096 pulse cov: 312 ft: 900 corp: 57/2Kb ...`).
fn last_field(log: &str, key: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split_once(key).map(|(_, rest)| rest))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .next_back()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "#2\tINITED cov: 120 ft: 130 corp: 7/1204b exec/s: 0 rss: 40Mb\n\
        #4096\tpulse  cov: 350 ft: 900 corp: 57/2Kb lim: 43 exec/s: 2048 rss: 45Mb\n\
        Done 5000 runs in 2 second(s)\n\
        stat::number_of_executed_units: 5000\n\
        stat::average_exec_per_sec:     2500\n";

    #[test]
    fn reads_libfuzzer_statistics() {
        assert_eq!(stat(LOG, "stat::number_of_executed_units:"), 5000);
        assert_eq!(last_field(LOG, " cov: "), 350);
        assert_eq!(last_field(LOG, " corp: "), 57);
        assert_eq!(stat("", "stat::number_of_executed_units:"), 0);
    }
}
