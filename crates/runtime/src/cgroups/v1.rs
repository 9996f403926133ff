//! cgroup v1: one path under each controller's hierarchy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_api::cgroups::v1 as pb;

use super::{Error, join, read_keyed, read_optional, read_u64};

/// Nanoseconds in one USER_HZ tick (the unit of `cpuacct.stat`; USER_HZ is
/// 100 on every Linux architecture's user ABI).
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

/// The controllers read, by the directory names of their hierarchies.
const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"];

/// A v1 cgroup: for each controller, a path inside that controller's hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    root: PathBuf,
    paths: BTreeMap<String, PathBuf>,
}

impl Cgroup {
    /// The same `path` (e.g. `/berth/default/web`) under every controller
    /// mounted at `/sys/fs/cgroup/<controller>`, as runc creates them.
    pub fn new(path: impl AsRef<Path>) -> Cgroup {
        Cgroup::with_root(super::DEFAULT_ROOT, path)
    }

    /// The same `path` under every controller mounted at `<root>/<controller>`.
    pub fn with_root(root: impl AsRef<Path>, path: impl AsRef<Path>) -> Cgroup {
        let path = path.as_ref().to_path_buf();
        Cgroup {
            root: root.as_ref().to_path_buf(),
            paths: CONTROLLERS
                .iter()
                .map(|c| ((*c).to_string(), path.clone()))
                .collect(),
        }
    }

    /// One path per controller (as `/proc/<pid>/cgroup` lists them), under `root`.
    pub fn with_paths(root: impl AsRef<Path>, paths: BTreeMap<String, PathBuf>) -> Cgroup {
        Cgroup {
            root: root.as_ref().to_path_buf(),
            paths,
        }
    }

    /// The directory of `controller`'s cgroup, if that controller is mounted
    /// and the cgroup exists in it.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        let path = self.paths.get(controller)?;
        let dir = join(&self.root.join(controller), &path.to_string_lossy());
        dir.is_dir().then_some(dir)
    }

    /// Reads every controller's statistics now.
    pub fn stats(&self) -> Result<pb::Metrics, Error> {
        let mut m = pb::Metrics::default();
        if let Some(dir) = self.dir("pids") {
            m.pids = Some(pb::PidsStat {
                current: read_u64(&dir.join("pids.current"), 0)?,
                limit: read_u64(&dir.join("pids.max"), 0)?,
            });
        }
        let cpuacct = self.dir("cpuacct");
        let cpu = self.dir("cpu");
        if cpuacct.is_some() || cpu.is_some() {
            m.cpu = Some(cpu_stat(cpuacct.as_deref(), cpu.as_deref())?);
        }
        if let Some(dir) = self.dir("memory") {
            let (memory, oom) = memory_stat(&dir)?;
            m.memory = Some(memory);
            m.memory_oom_control = oom;
        }
        if let Some(dir) = self.dir("blkio") {
            m.blkio = Some(blkio_stat(&dir)?);
        }
        if let Some(dir) = self.dir("hugetlb") {
            m.hugetlb = super::hugepage_sizes()
                .into_iter()
                .map(|size| {
                    let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
                    Ok(pb::HugetlbStat {
                        usage: read_u64(&file("usage_in_bytes"), u64::MAX)?,
                        max: read_u64(&file("max_usage_in_bytes"), u64::MAX)?,
                        failcnt: read_u64(&file("failcnt"), 0)?,
                        pagesize: size,
                    })
                })
                .collect::<Result<_, Error>>()?;
        }
        Ok(m)
    }
}

fn cpu_stat(cpuacct: Option<&Path>, cpu: Option<&Path>) -> Result<pb::CpuStat, Error> {
    let mut usage = pb::CpuUsage::default();
    if let Some(dir) = cpuacct {
        usage.total = read_u64(&dir.join("cpuacct.usage"), 0)?;
        let user = read_optional(&dir.join("cpuacct.usage_user"))?;
        let sys = read_optional(&dir.join("cpuacct.usage_sys"))?;
        if let (Some(user), Some(sys)) = (user, sys) {
            usage.user = super::parse_u64(&dir.join("cpuacct.usage_user"), &user, 0)?;
            usage.kernel = super::parse_u64(&dir.join("cpuacct.usage_sys"), &sys, 0)?;
        } else {
            let stat = read_keyed(&dir.join("cpuacct.stat"))?;
            usage.user = stat.get("user").copied().unwrap_or(0) * NANOS_PER_TICK;
            usage.kernel = stat.get("system").copied().unwrap_or(0) * NANOS_PER_TICK;
        }
        let percpu = dir.join("cpuacct.usage_percpu");
        if let Some(text) = read_optional(&percpu)? {
            usage.per_cpu = text
                .split_whitespace()
                .map(|v| super::parse_u64(&percpu, v, 0))
                .collect::<Result<_, _>>()?;
        }
    }
    let mut throttling = pb::Throttle::default();
    // cpu.stat lives in the cpu hierarchy (co-mounted with cpuacct on many hosts).
    if let Some(dir) = cpu.or(cpuacct) {
        let stat = read_keyed(&dir.join("cpu.stat"))?;
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        throttling.periods = get("nr_periods");
        throttling.throttled_periods = get("nr_throttled");
        throttling.throttled_time = get("throttled_time");
    }
    Ok(pb::CpuStat {
        usage: Some(usage),
        throttling: Some(throttling),
    })
}

fn memory_entry(dir: &Path, prefix: &str) -> Result<Option<pb::MemoryEntry>, Error> {
    let file = |name: &str| dir.join(format!("{prefix}.{name}"));
    if !file("usage_in_bytes").exists() {
        return Ok(None);
    }
    Ok(Some(pb::MemoryEntry {
        limit: read_u64(&file("limit_in_bytes"), u64::MAX)?,
        usage: read_u64(&file("usage_in_bytes"), 0)?,
        max: read_u64(&file("max_usage_in_bytes"), 0)?,
        failcnt: read_u64(&file("failcnt"), 0)?,
    }))
}

fn memory_stat(dir: &Path) -> Result<(pb::MemoryStat, Option<pb::MemoryOomControl>), Error> {
    let stat = read_keyed(&dir.join("memory.stat"))?;
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let m = pb::MemoryStat {
        cache: get("cache"),
        rss: get("rss"),
        rss_huge: get("rss_huge"),
        mapped_file: get("mapped_file"),
        dirty: get("dirty"),
        writeback: get("writeback"),
        pg_pg_in: get("pgpgin"),
        pg_pg_out: get("pgpgout"),
        pg_fault: get("pgfault"),
        pg_maj_fault: get("pgmajfault"),
        inactive_anon: get("inactive_anon"),
        active_anon: get("active_anon"),
        inactive_file: get("inactive_file"),
        active_file: get("active_file"),
        unevictable: get("unevictable"),
        hierarchical_memory_limit: get("hierarchical_memory_limit"),
        hierarchical_swap_limit: get("hierarchical_memsw_limit"),
        total_cache: get("total_cache"),
        total_rss: get("total_rss"),
        total_rss_huge: get("total_rss_huge"),
        total_mapped_file: get("total_mapped_file"),
        total_dirty: get("total_dirty"),
        total_writeback: get("total_writeback"),
        total_pg_pg_in: get("total_pgpgin"),
        total_pg_pg_out: get("total_pgpgout"),
        total_pg_fault: get("total_pgfault"),
        total_pg_maj_fault: get("total_pgmajfault"),
        total_inactive_anon: get("total_inactive_anon"),
        total_active_anon: get("total_active_anon"),
        total_inactive_file: get("total_inactive_file"),
        total_active_file: get("total_active_file"),
        total_unevictable: get("total_unevictable"),
        usage: memory_entry(dir, "memory")?,
        swap: memory_entry(dir, "memory.memsw")?,
        kernel: memory_entry(dir, "memory.kmem")?,
        kernel_tcp: memory_entry(dir, "memory.kmem.tcp")?,
    };
    let oom_file = dir.join("memory.oom_control");
    let oom = if oom_file.exists() {
        let o = read_keyed(&oom_file)?;
        let get = |k: &str| o.get(k).copied().unwrap_or(0);
        Some(pb::MemoryOomControl {
            oom_kill_disable: get("oom_kill_disable"),
            under_oom: get("under_oom"),
            oom_kill: get("oom_kill"),
        })
    } else {
        None
    };
    Ok((m, oom))
}

/// The `/dev` path of block device `major:minor`, from sysfs.
fn device_name(major: u64, minor: u64, cache: &mut BTreeMap<(u64, u64), String>) -> String {
    cache
        .entry((major, minor))
        .or_insert_with(|| {
            std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
                })
                .unwrap_or_default()
        })
        .clone()
}

/// Parses a blkio file: `MAJ:MIN [Op] value` lines; `Total` summary lines
/// (no device) are left out.
fn parse_blkio(
    path: &Path,
    text: &str,
    devices: &mut BTreeMap<(u64, u64), String>,
) -> Result<Vec<pb::BlkIoEntry>, Error> {
    let bad = |l: &str| Error::Parse {
        path: path.to_path_buf(),
        content: l.to_string(),
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields.as_slice() {
            [dev, op, value] => (*dev, *op, *value),
            [dev, value] if dev.contains(':') => (*dev, "", *value),
            _ => continue,
        };
        let (major, minor) = dev.split_once(':').ok_or_else(|| bad(line))?;
        let major: u64 = major.parse().map_err(|_| bad(line))?;
        let minor: u64 = minor.parse().map_err(|_| bad(line))?;
        out.push(pb::BlkIoEntry {
            op: op.to_string(),
            device: device_name(major, minor, devices),
            major,
            minor,
            value: value.parse().map_err(|_| bad(line))?,
        });
    }
    Ok(out)
}

fn blkio_stat(dir: &Path) -> Result<pb::BlkIoStat, Error> {
    let mut devices = BTreeMap::new();
    let mut read = |name: &str| -> Result<Vec<pb::BlkIoEntry>, Error> {
        let path = dir.join(format!("blkio.{name}"));
        match read_optional(&path)? {
            Some(text) => parse_blkio(&path, &text, &mut devices),
            None => Ok(Vec::new()),
        }
    };
    let mut s = pb::BlkIoStat {
        io_service_bytes_recursive: read("io_service_bytes_recursive")?,
        io_serviced_recursive: read("io_serviced_recursive")?,
        io_queued_recursive: read("io_queued_recursive")?,
        io_service_time_recursive: read("io_service_time_recursive")?,
        io_wait_time_recursive: read("io_wait_time_recursive")?,
        io_merged_recursive: read("io_merged_recursive")?,
        io_time_recursive: read("io_time_recursive")?,
        sectors_recursive: read("sectors_recursive")?,
    };
    // Without the CFQ/BFQ scheduler files, the throttle layer still counts
    // bytes and operations (containerd falls back the same way).
    if s.io_service_bytes_recursive.is_empty() {
        s.io_service_bytes_recursive = read("throttle.io_service_bytes_recursive")?;
        if s.io_service_bytes_recursive.is_empty() {
            s.io_service_bytes_recursive = read("throttle.io_service_bytes")?;
        }
    }
    if s.io_serviced_recursive.is_empty() {
        s.io_serviced_recursive = read("throttle.io_serviced_recursive")?;
        if s.io_serviced_recursive.is_empty() {
            s.io_serviced_recursive = read("throttle.io_serviced")?;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn reads_a_fake_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let path = "/berth/c1";
        let cg = |c: &str| r.join(c).join("berth/c1");
        write(&cg("pids"), "pids.current", "4\n");
        write(&cg("pids"), "pids.max", "max\n");
        write(&cg("cpuacct"), "cpuacct.usage", "123456789\n");
        write(&cg("cpuacct"), "cpuacct.stat", "user 7\nsystem 3\n");
        write(&cg("cpuacct"), "cpuacct.usage_percpu", "100 200 \n");
        write(
            &cg("cpu"),
            "cpu.stat",
            "nr_periods 5\nnr_throttled 2\nthrottled_time 999\n",
        );
        let m = cg("memory");
        write(
            &m,
            "memory.stat",
            "cache 4096\nrss 8192\npgfault 12\nhierarchical_memory_limit 1048576\ntotal_rss 8192\n",
        );
        write(&m, "memory.usage_in_bytes", "65536\n");
        write(&m, "memory.limit_in_bytes", "1048576\n");
        write(&m, "memory.max_usage_in_bytes", "70000\n");
        write(&m, "memory.failcnt", "1\n");
        write(
            &m,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(
            &cg("blkio"),
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
        );
        write(
            &cg("blkio"),
            "blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 1\nTotal 2\n",
        );

        let s = Cgroup::with_root(r, path).stats().unwrap();
        assert_eq!(s.pids.unwrap().current, 4);
        let cpu = s.cpu.unwrap();
        let usage = cpu.usage.unwrap();
        assert_eq!(usage.total, 123_456_789);
        assert_eq!(usage.user, 70_000_000);
        assert_eq!(usage.kernel, 30_000_000);
        assert_eq!(usage.per_cpu, [100, 200]);
        assert_eq!(cpu.throttling.unwrap().throttled_time, 999);
        let mem = s.memory.unwrap();
        assert_eq!((mem.cache, mem.rss, mem.pg_fault), (4096, 8192, 12));
        assert_eq!(mem.hierarchical_memory_limit, 1_048_576);
        let usage = mem.usage.unwrap();
        assert_eq!(
            (usage.usage, usage.limit, usage.max, usage.failcnt),
            (65536, 1_048_576, 70000, 1)
        );
        assert!(mem.swap.is_none(), "no memsw files: no swap entry");
        assert_eq!(s.memory_oom_control.unwrap().oom_kill, 2);
        let blkio = s.blkio.unwrap();
        assert_eq!(blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(blkio.io_service_bytes_recursive[0].op, "Read");
        assert_eq!(blkio.io_service_bytes_recursive[0].value, 4096);
        assert_eq!(blkio.io_serviced_recursive[1].major, 8);
        assert!(s.hugetlb.is_empty());
    }

    #[test]
    fn missing_controllers_are_left_out() {
        let root = tempfile::tempdir().unwrap();
        let s = Cgroup::with_root(root.path(), "/nothing").stats().unwrap();
        assert_eq!(s, pb::Metrics::default());
    }

    #[test]
    fn malformed_numbers_are_errors() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("pids/x"),
            "pids.current",
            "not a number\n",
        );
        let err = Cgroup::with_root(root.path(), "/x").stats().unwrap_err();
        assert!(err.to_string().contains("pids.current"), "{err}");
    }
}
