//! cgroup v2: one directory of the unified hierarchy.

use std::path::{Path, PathBuf};

use berth_api::cgroups::v2 as pb;

use super::{Error, read_keyed, read_optional, read_u64};

/// A cgroup of the unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// The cgroup at directory `dir` (e.g. `/sys/fs/cgroup/berth/web`).
    pub fn new(dir: impl AsRef<Path>) -> Cgroup {
        Cgroup {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the statistics of every controller enabled for the cgroup now.
    pub fn stats(&self) -> Result<pb::Metrics, Error> {
        let dir = &self.dir;
        if !dir.is_dir() {
            return Err(Error::Read {
                path: dir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let mut m = pb::Metrics::default();
        if dir.join("pids.current").exists() {
            m.pids = Some(pb::PidsStat {
                current: read_u64(&dir.join("pids.current"), 0)?,
                limit: read_u64(&dir.join("pids.max"), 0)?,
            });
        }
        m.cpu = Some(cpu_stat(dir)?);
        if dir.join("memory.current").exists() {
            m.memory = Some(memory_stat(dir)?);
            let events = read_keyed(&dir.join("memory.events"))?;
            let get = |k: &str| events.get(k).copied().unwrap_or(0);
            m.memory_events = Some(pb::MemoryEvents {
                low: get("low"),
                high: get("high"),
                max: get("max"),
                oom: get("oom"),
                oom_kill: get("oom_kill"),
                oom_group_kill: get("oom_group_kill"),
            });
        }
        let io_stat = dir.join("io.stat");
        if let Some(text) = read_optional(&io_stat)? {
            m.io = Some(pb::IoStat {
                usage: parse_io_stat(&io_stat, &text)?,
                psi: psi(&dir.join("io.pressure"))?,
            });
        }
        m.hugetlb = super::hugepage_sizes()
            .into_iter()
            .filter(|size| dir.join(format!("hugetlb.{size}.current")).exists())
            .map(|size| {
                Ok(pb::HugeTlbStat {
                    current: read_u64(&dir.join(format!("hugetlb.{size}.current")), 0)?,
                    max: read_u64(&dir.join(format!("hugetlb.{size}.max")), u64::MAX)?,
                    failcnt: read_keyed(&dir.join(format!("hugetlb.{size}.events")))?
                        .get("max")
                        .copied()
                        .unwrap_or(0),
                    pagesize: size,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(m)
    }
}

fn cpu_stat(dir: &Path) -> Result<pb::CpuStat, Error> {
    let stat = read_keyed(&dir.join("cpu.stat"))?;
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    Ok(pb::CpuStat {
        usage_usec: get("usage_usec"),
        user_usec: get("user_usec"),
        system_usec: get("system_usec"),
        nr_periods: get("nr_periods"),
        nr_throttled: get("nr_throttled"),
        throttled_usec: get("throttled_usec"),
        psi: psi(&dir.join("cpu.pressure"))?,
        nr_bursts: get("nr_bursts"),
        burst_usec: get("burst_usec"),
    })
}

fn memory_stat(dir: &Path) -> Result<pb::MemoryStat, Error> {
    let stat = read_keyed(&dir.join("memory.stat"))?;
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    Ok(pb::MemoryStat {
        anon: get("anon"),
        file: get("file"),
        kernel_stack: get("kernel_stack"),
        slab: get("slab"),
        sock: get("sock"),
        shmem: get("shmem"),
        file_mapped: get("file_mapped"),
        file_dirty: get("file_dirty"),
        file_writeback: get("file_writeback"),
        anon_thp: get("anon_thp"),
        inactive_anon: get("inactive_anon"),
        active_anon: get("active_anon"),
        inactive_file: get("inactive_file"),
        active_file: get("active_file"),
        unevictable: get("unevictable"),
        slab_reclaimable: get("slab_reclaimable"),
        slab_unreclaimable: get("slab_unreclaimable"),
        pgfault: get("pgfault"),
        pgmajfault: get("pgmajfault"),
        workingset_refault: get("workingset_refault")
            .max(get("workingset_refault_anon") + get("workingset_refault_file")),
        workingset_activate: get("workingset_activate")
            .max(get("workingset_activate_anon") + get("workingset_activate_file")),
        workingset_refault_anon: get("workingset_refault_anon"),
        workingset_refault_file: get("workingset_refault_file"),
        workingset_activate_anon: get("workingset_activate_anon"),
        workingset_activate_file: get("workingset_activate_file"),
        workingset_nodereclaim: get("workingset_nodereclaim"),
        pgrefill: get("pgrefill"),
        pgscan: get("pgscan"),
        pgsteal: get("pgsteal"),
        pgactivate: get("pgactivate"),
        pgdeactivate: get("pgdeactivate"),
        pglazyfree: get("pglazyfree"),
        pglazyfreed: get("pglazyfreed"),
        thp_fault_alloc: get("thp_fault_alloc"),
        thp_collapse_alloc: get("thp_collapse_alloc"),
        usage: read_u64(&dir.join("memory.current"), 0)?,
        usage_limit: read_u64(&dir.join("memory.max"), u64::MAX)?,
        swap_usage: read_u64(&dir.join("memory.swap.current"), 0)?,
        swap_limit: read_u64(&dir.join("memory.swap.max"), u64::MAX)?,
        max_usage: read_u64(&dir.join("memory.peak"), 0)?,
        swap_max_usage: read_u64(&dir.join("memory.swap.peak"), 0)?,
        psi: psi(&dir.join("memory.pressure"))?,
    })
}

/// Parses io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...` per device.
fn parse_io_stat(path: &Path, text: &str) -> Result<Vec<pb::IoEntry>, Error> {
    let bad = |l: &str| Error::Parse {
        path: path.to_path_buf(),
        content: l.to_string(),
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let dev = fields.next().ok_or_else(|| bad(line))?;
        let (major, minor) = dev.split_once(':').ok_or_else(|| bad(line))?;
        let mut e = pb::IoEntry {
            major: major.parse().map_err(|_| bad(line))?,
            minor: minor.parse().map_err(|_| bad(line))?,
            ..Default::default()
        };
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Parses a `*.pressure` file; `None` when the kernel has no PSI.
fn psi(path: &Path) -> Result<Option<pb::PsiStats>, Error> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let mut stats = pb::PsiStats::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = pb::PsiData::default();
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => data.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = v.parse().unwrap_or(0.0),
                "total" => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => stats.some = Some(data),
            Some("full") => stats.full = Some(data),
            _ => {}
        }
    }
    Ok(Some(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w = |n: &str, t: &str| std::fs::write(d.join(n), t).unwrap();
        w(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        );
        w(
            "cpu.pressure",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        w("pids.current", "2\n");
        w("pids.max", "max\n");
        w("memory.current", "1048576\n");
        w("memory.max", "max\n");
        w(
            "memory.stat",
            "anon 4096\nfile 8192\npgfault 3\nworkingset_refault_anon 5\nworkingset_refault_file 6\n",
        );
        w(
            "memory.events",
            "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 4\n",
        );
        w(
            "io.stat",
            "8:0 rbytes=4096 wbytes=512 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let m = Cgroup::new(d).stats().unwrap();
        let cpu = m.cpu.unwrap();
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (1500, 1000, 500)
        );
        let psi = cpu.psi.unwrap();
        assert_eq!(psi.some.unwrap().total, 42);
        assert!((psi.some.unwrap().avg10 - 1.5).abs() < 1e-9);
        assert_eq!(psi.full.unwrap().total, 7);
        assert_eq!(
            m.pids.unwrap(),
            pb::PidsStat {
                current: 2,
                limit: 0
            }
        );
        let mem = m.memory.unwrap();
        assert_eq!((mem.usage, mem.usage_limit), (1_048_576, u64::MAX));
        assert_eq!((mem.anon, mem.file, mem.pgfault), (4096, 8192, 3));
        assert_eq!(
            (
                mem.workingset_refault_anon,
                mem.workingset_refault_file,
                mem.workingset_refault
            ),
            (5, 6, 11)
        );
        let events = m.memory_events.unwrap();
        assert_eq!((events.oom_kill, events.oom_group_kill), (1, 4));
        let io = m.io.unwrap();
        assert_eq!(io.usage.len(), 1);
        assert_eq!(
            (io.usage[0].major, io.usage[0].rbytes, io.usage[0].wios),
            (8, 4096, 2)
        );
    }

    #[test]
    fn only_cpu_without_controllers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 10\n").unwrap();
        let m = Cgroup::new(dir.path()).stats().unwrap();
        assert_eq!(m.cpu.unwrap().usage_usec, 10);
        assert!(m.memory.is_none() && m.pids.is_none() && m.io.is_none());
        assert!(Cgroup::new(dir.path().join("gone")).stats().is_err());
    }
}
