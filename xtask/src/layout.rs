//! `cargo xtask layout [--no-build] [--no-faults]`: regenerates the code
//! layout of berthd and `containerd-shim-berth-v2`
//! (`crates/daemon/layout/berthd.ld`,
//! `crates/shim/layout/containerd-shim-berth-v2.ld`).
//!
//! A daemon at rest keeps resident the file pages of the code it has run,
//! and the kernel maps a whole 64 KiB window around every touched page that
//! is in the page cache ("fault-around"): code run at start scattered over
//! the binary makes most of it resident. The layout files are linker
//! scripts that place the functions a daemon and a shim actually run, in
//! the order they first run them, in one `.text.hot` output section before
//! `.text`; the crates' build scripts pass them to release links only.
//!
//! How the lists are made:
//! 1. the release binaries are built (as `bench` builds them);
//! 2. callgrind records every function berthd runs: startup with its
//!    defaults (CRI included, metrics served, as `bench memory` runs it) on
//!    a temporary root holding the busybox test
//!    image, the first list calls and idling (phase 1), an image import
//!    (phase 2), `ctr run -d`, `ctr run --rm`, kill and delete (phase 3),
//!    shutdown (last); the shims of those containers run under callgrind
//!    too (a wrapper in a copy of the binary directory). The import of the
//!    image itself runs natively first: valgrind 3.19 lacks `openat2`,
//!    which unpacking uses;
//! 3. unless `--no-faults`, `perf` then records the page faults of the
//!    native binaries through the same steps: a fault outside `.text.hot`
//!    names a function callgrind missed (code that runs only natively, such
//!    as the string functions glibc picks for this CPU), added at the end;
//! 4. each function becomes one input-section pattern. Rust's legacy symbol
//!    names end in a hash of the crate's metadata, which changes with code
//!    and dependency changes; the hash is written as `*` wherever the rest
//!    of the name is unique in the binary, so the script keeps matching
//!    across such changes (a name shared by several instances of a generic
//!    function keeps its hash, and a stale one just matches nothing). glibc
//!    functions are placed by their archive member.
//!
//! Needs valgrind, binutils' `nm` and `readelf`, Debian's `ctr` and runc
//! (and `perf` for step 3); runs as root, as the benchmarks do.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::daemons;
use crate::{Result, bench, cleanup, workspace_root};

/// The image the lifecycle runs.
const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// The static glibc whose archive members hold the C functions.
const LIBC_A: &str = "/usr/lib/x86_64-linux-gnu/libc.a";

/// One binary whose layout is generated: its name and its layout file.
struct Target {
    bin: &'static str,
    file: &'static str,
}

const BERTHD: Target = Target {
    bin: "berthd",
    file: "crates/daemon/layout/berthd.ld",
};
const SHIM: Target = Target {
    bin: "containerd-shim-berth-v2",
    file: "crates/shim/layout/containerd-shim-berth-v2.ld",
};

/// `cargo xtask layout`.
pub(crate) fn layout(args: &[String]) -> Result<()> {
    let mut build = true;
    let mut faults = true;
    for a in args {
        match a.as_str() {
            "--no-build" => build = false,
            "--no-faults" => faults = false,
            other => return Err(format!("layout: unknown argument {other}")),
        }
    }
    for tool in [
        "valgrind",
        "callgrind_control",
        "nm",
        "readelf",
        "/usr/bin/ctr",
    ] {
        if !on_path(tool) {
            return Err(format!(
                "layout needs {tool} (valgrind, binutils, containerd)"
            ));
        }
    }
    if faults && !on_path("perf") {
        return Err("layout needs perf for its fault pass (or pass --no-faults)".into());
    }
    cleanup::on_signals()?;
    if build {
        crate::build_release()?;
    }
    let release = bench::target_dir().join("release");
    let work = bench::target_dir().join("layout-profile");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    cleanup::dir(&work);
    let result = profile_and_write(&release, &work, faults);
    cleanup::remove_dir(&work);
    result
}

fn profile_and_write(release: &Path, work: &Path, faults: bool) -> Result<()> {
    let archive = work.join("busybox.tar");
    berth_tests::testimages::busybox(&work.join("busybox"))
        .and_then(|l| l.write_archive(&archive))
        .map_err(|e| format!("busybox image: {e:#}"))?;
    let cg = work.join("cg");
    let bin = work.join("bin");
    for d in [&cg, &bin] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    copy(&release.join(BERTHD.bin), &bin.join(BERTHD.bin))?;
    copy(&release.join(SHIM.bin), &bin.join("shim.real"))?;
    // berthd starts the shim found next to its own executable: this wrapper
    // runs it (and the shim it starts) under callgrind; runc runs natively.
    let wrapper = format!(
        "#!/bin/sh\nexec valgrind {} --trace-children=yes --trace-children-skip='*runc*' \
         --callgrind-out-file={cg}/shim.%p.out --log-file={cg}/shim.%p.log {real} \"$@\"\n",
        CALLGRIND.join(" "),
        cg = cg.display(),
        real = bin.join("shim.real").display(),
    );
    let wrapper_path = bin.join(SHIM.bin);
    std::fs::write(&wrapper_path, wrapper).map_err(|e| e.to_string())?;
    set_executable(&wrapper_path)?;

    // The image, imported natively (valgrind 3.19 has no openat2).
    let dir = work.join("cg-run");
    let mut native = Berthd::start(Command::new(release.join(BERTHD.bin)), &dir)?;
    native.ctr(&["images", "import", &archive.display().to_string()])?;
    native.stop()?;

    eprintln!("layout: berthd and its shims under callgrind (a minute or two)");
    let mut vg = Command::new("valgrind");
    vg.args(CALLGRIND)
        .arg(format!(
            "--callgrind-out-file={}",
            cg.join("berthd.out").display()
        ))
        .arg(format!("--log-file={}", cg.join("berthd.log").display()))
        .arg(bin.join(BERTHD.bin));
    let mut d = Berthd::start(vg, &dir)?;
    let pid = d.child.id().to_string();
    let dump = |phase: &str| run_quiet(Command::new("callgrind_control").args(["-d", phase, &pid]));
    let run = d.phases(&archive, Some(&dump));
    d.stop()?;
    run?;

    // Phases in order: a function is placed where it first ran.
    let berthd_runs: Vec<PathBuf> = ["berthd.out.1", "berthd.out.2", "berthd.out.3", "berthd.out"]
        .iter()
        .map(|f| cg.join(f))
        .collect();
    let mut shim_runs: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(&cg).map_err(|e| e.to_string())?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("shim.") && name.ends_with(".out") {
            let n = callgrind_functions(&p)?.len();
            shim_runs.push((n, p));
        }
    }
    if shim_runs.is_empty() {
        return Err("layout: no shim ran under callgrind".into());
    }
    // The long-running shims (the most functions) first, then `start`.
    shim_runs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let shim_runs: Vec<PathBuf> = shim_runs.into_iter().map(|(_, p)| p).collect();

    let fault_syms = if faults {
        eprintln!("layout: page faults of the native binaries");
        fault_pass(release, work, &archive)?
    } else {
        HashMap::new()
    };

    let libc = libc_members()?;
    for (target, runs) in [(&BERTHD, &berthd_runs), (&SHIM, &shim_runs)] {
        let binary = release.join(target.bin);
        let mut order = Vec::new();
        for r in runs {
            if r.exists() {
                order.extend(callgrind_functions(r)?);
            }
        }
        let extra = fault_syms.get(target.bin).cloned().unwrap_or_default();
        let out = workspace_root().join(target.file);
        let kept = std::fs::read_to_string(&out)
            .map(|t| fault_lines(&t))
            .unwrap_or_default();
        let script = linker_script(&binary, &order, &extra, &kept, &libc)?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&out, script.text).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!(
            "layout: {}: {} functions ({} KiB, {} from page faults), {} patterns",
            out.display(),
            script.functions,
            script.bytes / 1024,
            script.from_faults,
            script.patterns
        );
    }
    Ok(())
}

/// The callgrind options of every profiled process.
const CALLGRIND: &[&str] = &[
    "--tool=callgrind",
    "--demangle=no",
    "--dump-instr=no",
    "--compress-strings=no",
    "--compress-pos=no",
];

/// What ends a phase of [`Berthd::phases`], given the phase's name.
type Mark<'a> = dyn Fn(&str) -> Result<()> + 'a;

/// A berthd on a temporary root, stopped with SIGTERM (callgrind writes its
/// last profile on exit).
struct Berthd {
    child: Child,
    address: PathBuf,
}

impl Berthd {
    fn start(mut cmd: Command, dir: &Path) -> Result<Berthd> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let address = dir.join("berthd.sock");
        let log = std::fs::File::create(dir.join("berthd.log")).map_err(|e| e.to_string())?;
        // As `bench memory` runs it: defaults, and metrics served.
        let config = dir.join("config.toml");
        std::fs::write(&config, daemons::metrics_config(daemons::free_port()?))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        daemons::berthd_args(&mut cmd, dir, &config, &address);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let mut child = cmd.spawn().map_err(|e| format!("starting berthd: {e}"))?;
        cleanup::daemon(child.id(), &address, &dir.join("state"), dir);
        // Under valgrind berthd starts some 30 times slower.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(&address).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("berthd exited with {status} during startup"));
            }
            if Instant::now() > deadline {
                return Err("berthd did not serve its socket within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let d = Berthd { child, address };
        d.ctr(&["version"])?;
        Ok(d)
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ctr: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What the layout is made for, in phases; `mark`, when given, is
    /// called at the end of each (callgrind then starts a new profile).
    fn phases(&mut self, archive: &Path, mark: Option<&Mark>) -> Result<()> {
        let mark = |p: &str| mark.map_or(Ok(()), |m| m(p));
        // 1. start (done), first calls, idle.
        for args in [
            &["images", "ls", "-q"][..],
            &["containers", "ls", "-q"],
            &["tasks", "ls", "-q"],
            &["namespaces", "ls", "-q"],
        ] {
            self.ctr(args)?;
        }
        std::thread::sleep(Duration::from_secs(3));
        mark("idle")?;
        // 2. an import (its blobs and layer exist already).
        self.ctr(&["images", "import", &archive.display().to_string()])?;
        mark("import")?;
        // 3. a container's lifecycle, and a `run --rm`.
        self.ctr(&["run", "-d", BUSYBOX, "layout0", "sleep", "1000"])?;
        self.ctr(&["tasks", "ls"])?;
        self.ctr(&["run", "--rm", BUSYBOX, "layout1", "/bin/true"])?;
        self.ctr(&["tasks", "kill", "-s", "KILL", "layout0"])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ctr(&["tasks", "ls"])?.contains("STOPPED") {
            if Instant::now() > deadline {
                return Err("layout0 did not stop within 60 s of SIGKILL".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ctr(&["tasks", "delete", "layout0"])?;
        self.ctr(&["containers", "delete", "layout0"])?;
        mark("lifecycle")
    }

    /// SIGTERM, then waits (two minutes at most) for berthd to exit.
    fn stop(&mut self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left (a shim, mounts) goes with the registration.
        cleanup::stop_pid(self.child.id());
        Ok(())
    }
}

/// The native binaries under `perf record -e page-faults` through the same
/// phases: per binary, the functions at faulting addresses outside
/// `.text.hot`.
fn fault_pass(
    release: &Path,
    work: &Path,
    archive: &Path,
) -> Result<HashMap<&'static str, Vec<String>>> {
    let data = work.join("faults.data");
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-a",
            "-e",
            "page-faults",
            "-c",
            "1",
            "-d",
            "-o",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf: {e}"))?;
    cleanup::process(perf.id());
    // perf has started when its output file exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let run = (|| {
        let mut d = Berthd::start(Command::new(release.join(BERTHD.bin)), &work.join("pf-run"))?;
        d.ctr(&["images", "import", &archive.display().to_string()])?;
        let r = d.phases(archive, None);
        d.stop()?;
        r
    })();
    cleanup::forget(perf.id());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(perf.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = perf.wait();
    run?;
    let out = Command::new("perf")
        .args(["script", "-F", "addr,ip,dso", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result = HashMap::new();
    for target in [&BERTHD, &SHIM] {
        let binary = release.join(target.bin);
        let syms = Symbols::of(&binary)?;
        let cold = cold_text(&binary)?;
        // `<addr> (<file mapped there>) <ip> (<its file>)`: faults in this
        // binary's own mapping (other berthds may run on the machine).
        let real = binary.canonicalize().unwrap_or_else(|_| binary.clone());
        let mapped = format!("({})", real.display());
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(a), Some(file)) = (f.next(), f.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(a, 16) else {
                continue;
            };
            if file != mapped || !cold.iter().any(|(s, e)| (*s..*e).contains(&addr)) {
                continue;
            }
            if let Some(name) = syms.at(addr)
                && seen.insert(name.to_string())
            {
                list.push(name.to_string());
            }
        }
        result.insert(target.bin, list);
    }
    Ok(result)
}

/// Address ranges of `binary`'s executable sections other than `.text.hot`.
fn cold_text(binary: &Path) -> Result<Vec<(u64, u64)>> {
    let out = tool_output(Command::new("readelf").arg("-SW").arg(binary))?;
    let mut ranges = Vec::new();
    for line in out.lines() {
        // `[Nr] Name Type Address Off Size ES Flg ...`, `[ 1]` split in two.
        let line = line.replace("[ ", "[");
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || !f[0].starts_with('[') || f[1] == ".text.hot" {
            continue;
        }
        if !f[7].contains('X') {
            continue;
        }
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(f[3], 16), u64::from_str_radix(f[5], 16))
        else {
            continue;
        };
        ranges.push((addr, addr + size));
    }
    Ok(ranges)
}

/// The functions of one callgrind profile, in the order it names them.
fn callgrind_functions(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("fn=") {
            let name = name.trim();
            if seen.insert(name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// The function symbols of a binary: name → (address, size); by address.
struct Symbols {
    sizes: HashMap<String, u64>,
    by_addr: Vec<(u64, u64, String)>,
}

impl Symbols {
    fn of(binary: &Path) -> Result<Symbols> {
        let out = tool_output(
            Command::new("nm")
                .args(["-S", "-n", "--defined-only"])
                .arg(binary),
        )?;
        let mut sizes = HashMap::new();
        let mut by_addr = Vec::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, size, kind, name) = match f.as_slice() {
                [a, s, k, n] => (*a, *s, *k, *n),
                [a, k, n] => (*a, "0", *k, *n),
                _ => continue,
            };
            if !matches!(kind, "t" | "T" | "w" | "W" | "i") {
                continue;
            }
            let (Ok(addr), Ok(size)) =
                (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16))
            else {
                continue;
            };
            sizes.insert(name.to_string(), size);
            by_addr.push((addr, size, name.to_string()));
        }
        Ok(Symbols { sizes, by_addr })
    }

    /// The function containing `addr`.
    fn at(&self, addr: u64) -> Option<&str> {
        let i = self.by_addr.partition_point(|(a, _, _)| *a <= addr);
        let (a, size, name) = self.by_addr.get(i.checked_sub(1)?)?;
        (addr < a + size.max(&1)).then_some(name.as_str())
    }
}

/// glibc's function symbols → the archive member defining them.
fn libc_members() -> Result<HashMap<String, String>> {
    let out = tool_output(Command::new("nm").args(["-A", "--defined-only", LIBC_A]))?;
    let mut map = HashMap::new();
    for line in out.lines() {
        // `/usr/lib/.../libc.a:member.o:0000000000000000 T name`
        let f: Vec<&str> = line.split_whitespace().collect();
        let [loc, kind, name] = f.as_slice() else {
            continue;
        };
        if !matches!(*kind, "t" | "T" | "w" | "W" | "i") {
            continue;
        }
        let Some(member) = loc.split(':').nth(1) else {
            continue;
        };
        map.entry(name.to_string())
            .or_insert_with(|| member.to_string());
    }
    Ok(map)
}

/// The comment before the lines found by page faults.
const FAULTS_MARKER: &str = "    /* Found by page faults (kept across runs): */";

/// The pattern lines after [`FAULTS_MARKER`] in an earlier layout file.
fn fault_lines(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != FAULTS_MARKER)
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('*'))
        .map(str::to_string)
        .collect()
}

/// A generated layout file and what it holds.
struct Script {
    text: String,
    functions: usize,
    bytes: u64,
    from_faults: usize,
    patterns: usize,
}

/// The pattern a function's name becomes: the legacy hash (`17h<16 hex>E`)
/// and an LTO suffix (`.llvm.N`, `.N`) as `*`.
fn pattern_of(name: &str) -> String {
    let mut out = name.to_string();
    if let Some(i) = out.rfind("17h")
        && out.len() >= i + 20
        && out[i + 3..i + 19].bytes().all(|b| b.is_ascii_hexdigit())
        && &out[i + 19..i + 20] == "E"
        && out[i + 20..]
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_alphanumeric())
    {
        out.replace_range(i + 3..i + 19, "*");
    }
    // `name.123`, `name.llvm.123`: numbered by LTO.
    if let Some(dot) = out.rfind('.')
        && dot > 0
        && dot + 1 < out.len()
        && out[dot + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        out.truncate(dot);
        if out.ends_with(".llvm") {
            out.truncate(out.len() - ".llvm".len());
        }
        out.push('*');
    }
    out
}

fn linker_script(
    binary: &Path,
    order: &[String],
    extra: &[String],
    kept: &[String],
    libc: &HashMap<String, String>,
) -> Result<Script> {
    let syms = Symbols::of(binary)?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in syms.sizes.keys() {
        *counts.entry(pattern_of(name)).or_default() += 1;
    }
    let mut lines = Vec::new();
    let mut done = HashSet::new();
    let mut members = HashSet::new();
    let mut functions = 0;
    let mut bytes = 0;
    let mut from_faults = 0;
    let callgrind_len = order.len();
    for (i, name) in order.iter().chain(extra).enumerate() {
        let Some(size) = syms.sizes.get(name) else {
            continue;
        };
        if !done.insert(name.as_str()) {
            continue;
        }
        let line = if name.starts_with("_ZN") || name.starts_with("_R") {
            let p = pattern_of(name);
            let p = if counts.get(&p) == Some(&1) {
                p
            } else {
                name.clone()
            };
            // `.text.unlikely.<name>` for cold-marked functions too.
            format!("    *(.text*.{p})")
        } else if let Some(member) = libc.get(name) {
            if !members.insert(member.clone()) {
                continue;
            }
            format!("    *libc.a:{member}(.text .text.*)")
        } else {
            format!("    *(.text*.{})", pattern_of(name))
        };
        functions += 1;
        bytes += size;
        if i >= callgrind_len {
            from_faults += 1;
        }
        lines.push(line);
    }
    let mut text = String::new();
    text.push_str(&format!(
        "/* Generated by `cargo xtask layout`; do not edit. The functions {} runs\n   \
         at start, idle, on an image import and a container's lifecycle, in the\n   \
         order they first ran, placed together before .text: see xtask/src/layout.rs. */\n",
        binary
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    text.push_str("SECTIONS\n{\n  .text.hot :\n  {\n");
    // Lines from page faults, this run's and earlier runs' (a fault shows
    // only the first function touched in a window that was not mapped yet,
    // so each run on a binary linked with the last layout finds more).
    let (profiled, faulted) = lines.split_at(lines.len() - from_faults);
    let mut written: HashSet<&str> = HashSet::new();
    for l in profiled.iter().map(String::as_str) {
        if written.insert(l) {
            text.push_str(l);
            text.push('\n');
        }
    }
    text.push_str(FAULTS_MARKER);
    text.push('\n');
    for l in faulted
        .iter()
        .map(String::as_str)
        .chain(kept.iter().map(String::as_str))
    {
        if written.insert(l) {
            text.push_str(l);
            text.push('\n');
        }
    }
    let patterns = written.len();
    text.push_str("  }\n}\nINSERT BEFORE .text;\n");
    Ok(Script {
        text,
        functions,
        bytes,
        from_faults,
        patterns,
    })
}

fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tool_output(cmd: &mut Command) -> Result<String> {
    // nm complains of every symbol-less archive member on stderr.
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::pattern_of;

    #[test]
    fn hashes_and_lto_suffixes_become_wildcards() {
        assert_eq!(
            pattern_of("_ZN6berthd4main17h1c235b9eb0a5d697E"),
            "_ZN6berthd4main17h*E"
        );
        assert_eq!(
            pattern_of("_ZN3foo3bar17h0123456789abcdefE.llvm.12345"),
            "_ZN3foo3bar17h*E*"
        );
        assert_eq!(
            pattern_of("_RNvNtCs1_3std2io5write.3800"),
            "_RNvNtCs1_3std2io5write*"
        );
        assert_eq!(pattern_of("malloc"), "malloc");
        assert_eq!(pattern_of("systrim.constprop.0"), "systrim.constprop*");
    }
}
