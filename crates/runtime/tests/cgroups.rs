//! The cgroup collector against real cgroups this test creates: a child
//! process burning CPU and holding memory is moved in, read twice, then
//! killed, and the cgroups are removed whether the test passes or not.
//! Needs root; skipped (with a message) where the hierarchies are missing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{self, Cgroup, Stats};

/// A child process in freshly created cgroups; killed and cleaned up on drop.
struct Scratch {
    child: Option<Child>,
    dirs: Vec<PathBuf>,
}

impl Scratch {
    /// Creates `dirs`, starts a CPU-burning, memory-holding child and moves
    /// it into each.
    fn start(dirs: Vec<PathBuf>) -> Scratch {
        let mut s = Scratch {
            child: None,
            dirs: Vec::new(),
        };
        for d in dirs {
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            s.dirs.push(d);
        }
        // Holds ~24 MB in a shell variable, then spins. The child is moved
        // before it allocates: it waits for a line on stdin first.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "read go; x=$(head -c 24000000 /dev/zero | tr '\\0' a); while :; do :; done",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stdin = child.stdin.take();
        s.child = Some(child);
        for d in &s.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", d.display()));
        }
        if let Some(mut stdin) = stdin {
            use std::io::Write;
            stdin.write_all(b"go\n").unwrap();
        }
        s
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Every process in the cgroups (the shell and what it started).
            for d in &self.dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            // The kernel takes a moment to empty a cgroup of a killed task.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(d).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn name() -> String {
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Reports a skipped test: printed, and recorded where `cargo xtask test`
/// collects skips (`BERTH_SKIP_LOG`) so CI shows it.
fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP: berth-runtime::cgroups {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn v1_cgroup_with_a_busy_child() {
    let root = Path::new(cgroups::DEFAULT_ROOT);
    let controllers = ["cpu", "cpuacct", "memory", "pids"];
    if !is_root() || cgroups::mode() == cgroups::Mode::Unified {
        skip("needs root and cgroup v1 hierarchies");
        return;
    }
    if controllers
        .iter()
        .any(|c| !root.join(c).join("cgroup.procs").exists())
    {
        skip(&format!(
            "not every v1 controller of {controllers:?} is mounted"
        ));
        return;
    }
    let n = name();
    // cpu and cpuacct may be one co-mounted hierarchy: create each directory once.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for c in controllers {
        let real = std::fs::canonicalize(root.join(c)).unwrap();
        if !seen.contains(&real) {
            seen.push(real);
            dirs.push(root.join(c).join(&n));
        }
    }
    let scratch = Scratch::start(dirs);
    let cg = cgroups::v1::Cgroup::new(format!("/{n}"));

    let read = || cg.stats().unwrap();
    wait_until("24 MB charged to the memory cgroup", || {
        read().memory.and_then(|m| m.usage).map_or(0, |u| u.usage) > 20_000_000
    });
    let total = |m: &berth_api::cgroups::v1::Metrics| {
        m.cpu
            .as_ref()
            .and_then(|c| c.usage.as_ref())
            .map_or(0, |u| u.total)
    };
    let first = read();
    assert!(total(&first) > 0, "{first:?}");
    // The spinning child's usage keeps growing (however loaded the machine).
    wait_until("0.1 s more CPU charged to the cgroup", || {
        total(&read()) > total(&first) + 100_000_000
    });
    let second = read();
    let usage = second.cpu.clone().unwrap().usage.unwrap();
    assert!(usage.user > 0, "{usage:?}");
    assert!(!usage.per_cpu.is_empty());
    let per_cpu: u64 = usage.per_cpu.iter().sum();
    assert!(per_cpu.abs_diff(usage.total) < 50_000_000, "{usage:?}");
    let mem = second.memory.unwrap();
    assert!(mem.rss + mem.cache > 20_000_000, "{mem:?}");
    assert!(mem.usage.unwrap().limit > 0);
    let pids = second.pids.unwrap();
    assert!(pids.current >= 1, "{pids:?}");

    // The same cgroup found through the child's /proc entry.
    match Cgroup::for_pid(scratch.pid()).unwrap() {
        Cgroup::V1(found) => {
            assert_eq!(found.dir("memory"), cg.dir("memory"));
            let s = Cgroup::V1(found).stats().unwrap();
            let Stats::V1(s) = Stats::from_any(&s.to_any()).unwrap() else {
                panic!("v1 stats expected");
            };
            assert!(total(&s) >= total(&second));
        }
        Cgroup::V2(_) => panic!("a v1 host gave a v2 cgroup"),
    }
}

#[test]
fn v2_cgroup_with_a_busy_child() {
    let unified = match cgroups::mode() {
        cgroups::Mode::Unified => PathBuf::from(cgroups::DEFAULT_ROOT),
        cgroups::Mode::Hybrid => Path::new(cgroups::DEFAULT_ROOT).join("unified"),
        cgroups::Mode::Legacy => {
            skip("no cgroup v2 hierarchy");
            return;
        }
    };
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = unified.join(name());
    let _scratch = Scratch::start(vec![dir.clone()]);
    let cg = cgroups::v2::Cgroup::new(&dir);
    // cpu.stat's usage is there even with no controller enabled.
    let usage = || cg.stats().unwrap().cpu.unwrap().usage_usec;
    let first = usage();
    // The spinning child's usage keeps growing (however loaded the machine).
    wait_until("0.1 s more CPU charged to the cgroup", || {
        usage() > first + 100_000
    });
    let s = cg.stats().unwrap();
    if let Some(m) = s.memory {
        // Only when the memory controller is enabled for the hierarchy.
        assert!(m.usage > 0);
    }
}
