//! cgroup v1 statistics of a process's cgroups, read from the cgroup
//! filesystem into containerd's `io.containerd.cgroups.v1.Metrics`.
//!
//! The cgroups are found through `/proc/<pid>/cgroup`, so whatever path
//! runc chose (cgroupfs or systemd driver) is the one read. Files a kernel
//! does not have (swap accounting off, no hugetlb) leave their fields zero.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use berth_api::cgroups::v1 as m;

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Kernel clock ticks per second in `cpuacct.stat` (USER_HZ).
const USER_HZ: u64 = 100;

/// Each v1 controller of `pid` and its cgroup directory.
fn controllers(pid: u32) -> io::Result<HashMap<String, PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if names.is_empty() {
            continue; // the v2 line of a hybrid host
        }
        let rel = path.trim_start_matches('/');
        // The hierarchy is mounted under its joined name (`cpu,cpuacct`);
        // each controller name is a symlink to it on most systems.
        let mount = [names, names.split(',').next().unwrap_or(names)]
            .iter()
            .map(|n| Path::new(CGROUP_ROOT).join(n.trim_start_matches("name=")))
            .find(|p| p.is_dir());
        if let Some(mount) = mount {
            for name in names.split(',') {
                out.insert(name.to_string(), mount.join(rel));
            }
        }
    }
    Ok(out)
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines of a stat file.
fn read_kv(dir: &Path, file: &str) -> HashMap<String, u64> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn memory_entry(dir: &Path, prefix: &str) -> m::MemoryEntry {
    m::MemoryEntry {
        limit: read_u64(dir, &format!("{prefix}.limit_in_bytes")),
        usage: read_u64(dir, &format!("{prefix}.usage_in_bytes")),
        max: read_u64(dir, &format!("{prefix}.max_usage_in_bytes")),
        failcnt: read_u64(dir, &format!("{prefix}.failcnt")),
    }
}

fn memory(dir: &Path) -> m::MemoryStat {
    let s = read_kv(dir, "memory.stat");
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: Some(memory_entry(dir, "memory")),
        swap: Some(memory_entry(dir, "memory.memsw")),
        kernel: Some(memory_entry(dir, "memory.kmem")),
        kernel_tcp: Some(memory_entry(dir, "memory.kmem.tcp")),
    }
}

fn cpu(acct: Option<&PathBuf>, cpu: Option<&PathBuf>) -> m::CpuStat {
    let mut usage = m::CpuUsage::default();
    if let Some(dir) = acct {
        usage.total = read_u64(dir, "cpuacct.usage");
        let stat = read_kv(dir, "cpuacct.stat");
        let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
        usage.user = ns(stat.get("user").copied().unwrap_or(0));
        usage.kernel = ns(stat.get("system").copied().unwrap_or(0));
        usage.per_cpu = std::fs::read_to_string(dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
    }
    let throttling = cpu.map(|dir| {
        let s = read_kv(dir, "cpu.stat");
        m::Throttle {
            periods: s.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: s.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: s.get("throttled_time").copied().unwrap_or(0),
        }
    });
    m::CpuStat {
        usage: Some(usage),
        throttling,
    }
}

/// `MAJ:MIN Op value` lines of a blkio file.
fn blkio_entries(dir: &Path, file: &str) -> Vec<m::BlkIoEntry> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (dev, op, value) = (w.next()?, w.next()?, w.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(m::BlkIoEntry {
                op: op.to_string(),
                device: String::new(),
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn blkio(dir: &Path) -> m::BlkIoStat {
    // Without CFQ the plain files are empty; the throttle ones still count.
    let pick = |name: &str| {
        let v = blkio_entries(dir, &format!("blkio.{name}"));
        if v.is_empty() {
            blkio_entries(
                dir,
                &format!("blkio.throttle.{}", name.trim_end_matches("_recursive")),
            )
        } else {
            v
        }
    };
    m::BlkIoStat {
        io_service_bytes_recursive: pick("io_service_bytes_recursive"),
        io_serviced_recursive: pick("io_serviced_recursive"),
        io_queued_recursive: blkio_entries(dir, "blkio.io_queued_recursive"),
        io_service_time_recursive: blkio_entries(dir, "blkio.io_service_time_recursive"),
        io_wait_time_recursive: blkio_entries(dir, "blkio.io_wait_time_recursive"),
        io_merged_recursive: blkio_entries(dir, "blkio.io_merged_recursive"),
        io_time_recursive: blkio_entries(dir, "blkio.time_recursive"),
        sectors_recursive: blkio_entries(dir, "blkio.sectors_recursive"),
    }
}

fn hugetlb(dir: &Path) -> Vec<m::HugetlbStat> {
    let mut sizes: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name
                .strip_prefix("hugetlb.")?
                .strip_suffix(".usage_in_bytes")?;
            Some(size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| m::HugetlbStat {
            usage: read_u64(dir, &format!("hugetlb.{size}.usage_in_bytes")),
            max: read_u64(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
            failcnt: read_u64(dir, &format!("hugetlb.{size}.failcnt")),
            pagesize: size,
        })
        .collect()
}

/// The cgroup v1 metrics of the cgroups `pid` is in.
pub fn v1_metrics(pid: u32) -> io::Result<m::Metrics> {
    let c = controllers(pid)?;
    if c.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("process {pid} is in no cgroup v1 hierarchy (a cgroup v2-only host)"),
        ));
    }
    let pids = c.get("pids").map(|dir| m::PidsStat {
        current: read_u64(dir, "pids.current"),
        limit: read_u64(dir, "pids.max"),
    });
    Ok(m::Metrics {
        hugetlb: c.get("hugetlb").map(|d| hugetlb(d)).unwrap_or_default(),
        pids,
        cpu: Some(cpu(c.get("cpuacct"), c.get("cpu"))),
        memory: c.get("memory").map(|d| memory(d)),
        blkio: c.get("blkio").map(|d| blkio(d)),
        rdma: None,
        network: Vec::new(),
        cgroup_stats: None,
        memory_oom_control: c.get("memory").map(|d| {
            let s = read_kv(d, "memory.oom_control");
            m::MemoryOomControl {
                oom_kill_disable: s.get("oom_kill_disable").copied().unwrap_or(0),
                under_oom: s.get("under_oom").copied().unwrap_or(0),
                oom_kill: s.get("oom_kill").copied().unwrap_or(0),
            }
        }),
    })
}

/// The type URL of [`v1_metrics`]' message inside an `Any`.
pub const V1_METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_process_has_cpu_and_memory_figures() {
        let Ok(metrics) = v1_metrics(std::process::id()) else {
            eprintln!("skipping: no cgroup v1 hierarchy here");
            return;
        };
        let cpu = metrics.cpu.unwrap_or_default().usage.unwrap_or_default();
        assert!(cpu.total > 0, "a running test has used CPU");
        if let Some(mem) = metrics.memory {
            assert!(mem.usage.unwrap_or_default().usage > 0);
        }
    }
}
