//! `cargo xtask <command>`: developer automation for berth.
//!
//! - `deps`: install the Debian packages berth builds and tests with.
//! - `test`: deps, build once, fmt, clippy, rustdoc and packaging checks,
//!   then the whole suite.
//! - `up`: deps, build, start berthd on its default paths and talk to it.
//! - `install [--prefix P] [--destdir D] [--bin-dir B]`: binaries, systemd
//!   unit, default config, completions and man pages (see `install.rs`).
//! - `bench [--rounds N] [SCENARIO...]`: berthd against Debian's containerd,
//!   side by side (`run`, `pull`, `unpack`, `stress`, `memory`, `api`,
//!   `limit`, `docker`; all by default; `unpack` per snapshotter).
//! - `package [--verify]`: every publishable crate packaged as crates.io
//!   would take it (see `package.rs`).
//! - `layout [--no-build] [--no-faults]`: regenerates the linker scripts
//!   that place the code berthd and the shim run together (see
//!   `layout.rs`).

mod bench;
mod cleanup;
mod deps;
mod fuzz;
mod install;
mod layout;
mod package;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub(crate) use deps::{deps, run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps(),
        Some("test") => test(&args[1..]),
        Some("up") => up(),
        Some("bench") => bench::bench(&args[1..]),
        Some("install") => install::install(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("package") => package::package(&args[1..]),
        Some("layout") => layout::layout(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <deps|test|up|fuzz [--seconds N] [TARGET...]|install [--prefix P] [--destdir D] [--bin-dir B]|package [--verify]|layout [--no-build] [--no-faults]|bench [--rounds N] [run|pull|unpack|stress|memory|api|limit|docker]...>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, String>;

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds the release binaries, then relinks berth's shim and berthd
/// statically (the flags reach the final crate only, so no dependency is
/// rebuilt for them).
pub(crate) fn build_release() -> Result<()> {
    // berthd and the shim are built by the static links below only: a plain
    // build of them would undo those (other flags) and relink every time.
    run(cargo().args(["build", "--release", "-p", "berth-ctl", "--bins"]))?;
    // The daemon and the shim are linked statically and not
    // position-independent: no shared libc pages to map, no relocations
    // to apply at start, so less resident memory per process.
    for (package, bin) in [
        ("berth-shim", "containerd-shim-berth-v2"),
        ("berth-daemon", "berthd"),
    ] {
        run(cargo().args([
            "rustc",
            "--release",
            "-p",
            package,
            "--bin",
            bin,
            "--",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "relocation-model=static",
        ]))?;
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The whole suite: one build, style checks, every test.
fn test(extra: &[String]) -> Result<()> {
    deps()?;
    warn_if_disk_low();
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["build", "--workspace", "--all-targets"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The optional OpenTelemetry export: checked and its test run once more
    // with the feature (the rest of the suite is the default build).
    let otel = ["-p", "berth-daemon", "--features", "otel"];
    run(cargo()
        .args(["clippy"])
        .args(otel)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    // The API docs build without a warning (a broken link, a stray `<tag>`).
    run(cargo()
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps"]))?;
    // Every publishable crate still packages (a versioned path dependency
    // on an unpublished crate, a file outside the crate, a missing README
    // or LICENSE fail here, not at release time).
    package::package(&[])?;
    // Tests that skip say why in this file; it is printed after the run so
    // skips are visible in CI rather than passing silently.
    let skips = bench::target_dir().join("berth-test-skips.log");
    let _ = std::fs::remove_file(&skips);
    let result = run_tests(extra, &skips);
    report_skips(&skips);
    // A short coverage-guided run of every fuzz target (its own
    // instrumented build), unless only some tests were asked for.
    let fuzzed = if extra.is_empty() {
        fuzz::fuzz(&["--seconds".to_string(), CI_FUZZ_SECONDS.to_string()])
    } else {
        Ok(())
    };
    result.and(fuzzed)
}

/// Seconds of libFuzzer per target in `cargo xtask test`.
const CI_FUZZ_SECONDS: u64 = 10;

/// Prints every skip the tests recorded in `skips`.
fn report_skips(skips: &std::path::Path) {
    let text = std::fs::read_to_string(skips).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        eprintln!("xtask: no test was skipped");
        return;
    }
    eprintln!("xtask: {} skipped test(s):", lines.len());
    for l in lines {
        eprintln!("  {l}");
    }
}

/// Runs the doctests, the otel test and the workspace suite.
fn run_tests(extra: &[String], skips: &std::path::Path) -> Result<()> {
    let otel = ["-p", "berth-daemon", "--features", "otel"];
    let cargo = || {
        let mut c = cargo();
        c.env("BERTH_SKIP_LOG", skips);
        c
    };
    let nextest = Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok();
    if nextest {
        // nextest does not run doctests; run them first so the suite's
        // closing summary is nextest's count of every test.
        run(cargo().args(["test", "--workspace", "--doc"]))?;
        run(cargo()
            .args(["nextest", "run"])
            .args(otel)
            .args(["--test", "otlp_export"]))?;
        run(cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(extra))
    } else {
        run(cargo()
            .args(["test"])
            .args(otel)
            .args(["--test", "otlp_export"]))?;
        run(cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra))
    }
}

/// Space a clean build of every target and a test run need, with margin.
const DISK_NEEDED: u64 = 4 << 30;

/// Says so up front when the build would run out of disk: the linker then
/// dies of SIGBUS with a message that does not mention space.
fn warn_if_disk_low() {
    let mut dir = bench::target_dir();
    while !dir.exists() {
        if !dir.pop() {
            return;
        }
    }
    let Ok(stat) = nix::sys::statvfs::statvfs(&dir) else {
        return;
    };
    let free = stat.blocks_available() * stat.fragment_size();
    if free < DISK_NEEDED {
        eprintln!(
            "xtask: warning: only {} MiB free under {}; a clean build and the suite need about {} MiB. \
             Free space (cargo clean, old target dirs) or point CARGO_TARGET_DIR at a larger disk.",
            free >> 20,
            dir.display(),
            DISK_NEEDED >> 20
        );
    }
}

/// Builds berth, starts berthd on its defaults and shows it answering.
fn up() -> Result<()> {
    deps()?;
    build_release()?;
    let bin = bench::target_dir().join("release");
    let berthd = bin.join("berthd");
    let berthctl = bin.join("berthctl");
    let socket = "/run/berth/berthd.sock";
    let log = "/run/berth/berthd.log";
    std::fs::create_dir_all("/run/berth").map_err(|e| format!("cannot create /run/berth: {e}"))?;
    let alive = std::os::unix::net::UnixStream::connect(socket).is_ok();
    if alive {
        eprintln!("berthd already serving {socket}");
    } else {
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("cannot create {log}: {e}"))?;
        let child = Command::new(&berthd)
            .stdin(std::process::Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| format!("cannot open {log}: {e}"))?,
            )
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", berthd.display()))?;
        eprintln!("started berthd (pid {}), log in {log}", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("berthd did not start; see {log}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    run(Command::new(&berthctl).args(["version"]))?;
    run(Command::new(&berthctl).args(["plugins", "ls"]))?;
    run(Command::new(&berthctl).args(["namespaces", "ls"]))?;
    // A container from the bundled busybox test image: built here from
    // Debian's busybox-static, imported with ctr (client-side, through
    // berthd's content, images, snapshots and diff services), then run.
    let images = Path::new("/var/lib/berth/images");
    std::fs::create_dir_all(images)
        .map_err(|e| format!("cannot create {}: {e}", images.display()))?;
    let layout = berth_tests::testimages::busybox(&images.join("busybox"))
        .map_err(|e| format!("building the busybox image: {e:#}"))?;
    let archive = images.join("busybox.tar");
    layout
        .write_archive(&archive)
        .map_err(|e| format!("writing {}: {e:#}", archive.display()))?;
    run(Command::new("/usr/bin/ctr")
        .args(["--address", socket, "images", "import"])
        .arg(&archive))?;
    run(Command::new(&berthctl).args([
        "run",
        "--rm",
        "docker.io/library/busybox:latest",
        "hello",
        "sh",
        "-c",
        "echo hello from a berth container; uname -sr",
    ]))?;
    eprintln!("berthd is serving {socket}; stop it with: kill $(pidof berthd)");
    Ok(())
}
