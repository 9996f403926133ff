//! cgroup statistics: reads a container's cgroup into containerd's
//! `io.containerd.cgroups.v1.Metrics` / `io.containerd.cgroups.v2.Metrics`
//! messages, the payload of a shim's `Stats` answer.
//!
//! - [`v1::Cgroup`]: one path under each v1 controller hierarchy
//!   (`/sys/fs/cgroup/<controller>/<path>`).
//! - [`v2::Cgroup`]: one directory of the unified hierarchy.
//! - [`Cgroup::for_pid`]: the cgroup a process is in, in the hierarchy this
//!   host uses for containers ([`mode`]).
//!
//! Every read goes to the control files at the moment of the call; a
//! controller that is not mounted, or a file the kernel does not offer
//! (swap accounting off), leaves its part of the message empty or zero.
//!
//! ```no_run
//! # fn demo() -> Result<(), berth_runtime::cgroups::Error> {
//! use berth_runtime::cgroups::Cgroup;
//! let stats = Cgroup::for_pid(std::process::id())?.stats()?;
//! let any = stats.to_any(); // what the shim's Stats call returns
//! # let _ = any; Ok(()) }
//! ```

pub mod place;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

/// Where cgroup hierarchies are mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Errors reading a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A control file held something other than what the kernel writes.
    #[error("{path}: unexpected content {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The part that did not parse.
        content: String,
    },
    /// The process is in no cgroup berth can read.
    #[error("process {pid}: no cgroup found in /proc/{pid}/cgroup")]
    NoCgroup {
        /// The process.
        pid: u32,
    },
    /// An `Any` holds a type that is not cgroup statistics, or does not decode.
    #[error("not cgroup statistics: {0}")]
    NotStats(String),
}

/// How this host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies for the controllers, plus a controller-less v2
    /// hierarchy at `/sys/fs/cgroup/unified`; containers use v1.
    Hybrid,
    /// Only the v2 unified hierarchy at `/sys/fs/cgroup`.
    Unified,
}

/// The cgroup mode of this host.
pub fn mode() -> Mode {
    mode_at(Path::new(DEFAULT_ROOT))
}

/// The cgroup mode of the hierarchies mounted under `root`.
pub fn mode_at(root: &Path) -> Mode {
    let is_v2 = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    };
    if is_v2(root) {
        Mode::Unified
    } else if is_v2(&root.join("unified")) {
        Mode::Hybrid
    } else {
        Mode::Legacy
    }
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    /// Hierarchy id (0 for the unified hierarchy).
    pub hierarchy: u32,
    /// Controllers bound to the hierarchy (empty for v2; `name=systemd` kept as is).
    pub controllers: Vec<String>,
    /// Path of the cgroup inside the hierarchy, starting with `/`.
    pub path: String,
}

/// Parses the text of `/proc/<pid>/cgroup`; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?.to_string();
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some(ProcCgroup {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// A cgroup of either version.
#[derive(Debug, Clone)]
pub enum Cgroup {
    /// Paths under the v1 controller hierarchies.
    V1(v1::Cgroup),
    /// A directory of the unified hierarchy.
    V2(v2::Cgroup),
}

impl Cgroup {
    /// The cgroup process `pid` is in: its v1 cgroups on a legacy or hybrid
    /// host, its unified-hierarchy cgroup on a unified host.
    pub fn for_pid(pid: u32) -> Result<Cgroup, Error> {
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        let lines = parse_proc_cgroup(&text);
        let root = Path::new(DEFAULT_ROOT);
        match mode() {
            Mode::Unified => lines
                .iter()
                .find(|l| l.hierarchy == 0)
                .map(|l| Cgroup::V2(v2::Cgroup::new(join(root, &l.path))))
                .ok_or(Error::NoCgroup { pid }),
            Mode::Legacy | Mode::Hybrid => {
                let paths: BTreeMap<String, PathBuf> = lines
                    .iter()
                    .filter(|l| l.hierarchy != 0)
                    .flat_map(|l| {
                        l.controllers
                            .iter()
                            .map(move |c| (c.clone(), PathBuf::from(&l.path)))
                    })
                    .collect();
                if paths.is_empty() {
                    return Err(Error::NoCgroup { pid });
                }
                Ok(Cgroup::V1(v1::Cgroup::with_paths(root, paths)))
            }
        }
    }

    /// Reads the cgroup's statistics now.
    pub fn stats(&self) -> Result<Stats, Error> {
        match self {
            Cgroup::V1(c) => c.stats().map(Stats::V1),
            Cgroup::V2(c) => c.stats().map(Stats::V2),
        }
    }
}

/// Statistics of either version.
#[derive(Debug, Clone, PartialEq)]
pub enum Stats {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(berth_api::cgroups::v1::Metrics),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(berth_api::cgroups::v2::Metrics),
}

impl Stats {
    /// The statistics packed as containerd packs them for `Stats` answers.
    pub fn to_any(&self) -> prost_types::Any {
        match self {
            Stats::V1(m) => prost_types::Any {
                type_url: berth_api::CGROUPS_V1_METRICS_URL.to_string(),
                value: m.encode_to_vec(),
            },
            Stats::V2(m) => prost_types::Any {
                type_url: berth_api::CGROUPS_V2_METRICS_URL.to_string(),
                value: m.encode_to_vec(),
            },
        }
    }

    /// Unpacks a `Stats` answer's `Any` (type URL with or without a host part).
    pub fn from_any(any: &prost_types::Any) -> Result<Stats, Error> {
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        let bad = |e: prost::DecodeError| Error::NotStats(format!("{name}: {e}"));
        if name == berth_api::CGROUPS_V1_METRICS_URL {
            berth_api::cgroups::v1::Metrics::decode(any.value.as_slice())
                .map(Stats::V1)
                .map_err(bad)
        } else if name == berth_api::CGROUPS_V2_METRICS_URL {
            berth_api::cgroups::v2::Metrics::decode(any.value.as_slice())
                .map(Stats::V2)
                .map_err(bad)
        } else {
            Err(Error::NotStats(format!("type {:?}", any.type_url)))
        }
    }
}

/// `root` joined with a cgroup path that starts with `/`.
fn join(root: &Path, cgroup_path: &str) -> PathBuf {
    root.join(cgroup_path.trim_start_matches('/'))
}

/// Reads a control file; `None` if the kernel does not offer it.
fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                // Some files exist but refuse reads on some kernels.
                || e.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
                || e.raw_os_error() == Some(nix::libc::EINVAL) =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses one unsigned number; `max` reads as `max`.
fn parse_u64(path: &Path, s: &str, max: u64) -> Result<u64, Error> {
    let s = s.trim();
    if s == "max" {
        return Ok(max);
    }
    // Some limits read as -1 (unlimited) on v1.
    if s == "-1" {
        return Ok(max);
    }
    s.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: s.to_string(),
    })
}

/// Reads a file holding one number; 0 if absent, `max` for "max".
fn read_u64(path: &Path, max: u64) -> Result<u64, Error> {
    match read_optional(path)? {
        Some(s) => parse_u64(path, &s, max),
        None => Ok(0),
    }
}

/// Reads a flat-keyed file (`key value` per line), as memory.stat and
/// cpu.stat are; absent file: empty map. Values that are not numbers are skipped.
fn read_keyed(path: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let Some(text) = read_optional(path)? else {
        return Ok(BTreeMap::new());
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect())
}

/// Page-size names as hugetlb control files spell them ("2MB", "1GB"),
/// from `/sys/kernel/mm/hugepages`.
fn hugepage_sizes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kb, hugepage_name(kb)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, n)| n).collect()
}

/// "2048" kB -> "2MB", as the kernel names hugetlb files.
fn hugepage_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_lines() {
        let text = "12:cpu,cpuacct:/berth/a\n0::/user.slice\nbad\n1:name=systemd:/x\n";
        let l = parse_proc_cgroup(text);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(l[0].path, "/berth/a");
        assert_eq!(l[1].hierarchy, 0);
        assert!(l[1].controllers.is_empty());
        assert_eq!(l[2].controllers, ["name=systemd"]);
    }

    #[test]
    fn hugepage_names() {
        assert_eq!(hugepage_name(2048), "2MB");
        assert_eq!(hugepage_name(1_048_576), "1GB");
        assert_eq!(hugepage_name(64), "64KB");
    }

    #[test]
    fn any_round_trip() {
        let m = berth_api::cgroups::v1::Metrics {
            pids: Some(berth_api::cgroups::v1::PidsStat {
                current: 3,
                limit: 10,
            }),
            ..Default::default()
        };
        let s = Stats::V1(m);
        let any = s.to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(Stats::from_any(&any).unwrap(), s);
        let v2 = Stats::V2(berth_api::cgroups::v2::Metrics::default());
        let mut any = v2.to_any();
        any.type_url = format!("types.example/{}", any.type_url);
        assert_eq!(Stats::from_any(&any).unwrap(), v2);
        any.type_url = "x.Other".to_string();
        assert!(Stats::from_any(&any).is_err());
    }

    #[test]
    fn keyed_files_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.stat");
        std::fs::write(&p, "cache 10\nrss 20\nweird x\n").unwrap();
        let m = read_keyed(&p).unwrap();
        assert_eq!(m["cache"], 10);
        assert_eq!(m["rss"], 20);
        assert!(!m.contains_key("weird"));
        assert!(read_keyed(&dir.path().join("none")).unwrap().is_empty());
        let n = dir.path().join("pids.max");
        std::fs::write(&n, "max\n").unwrap();
        assert_eq!(read_u64(&n, 0).unwrap(), 0);
        assert_eq!(read_u64(&n, u64::MAX).unwrap(), u64::MAX);
        std::fs::write(&n, "garbage\n").unwrap();
        assert!(read_u64(&n, 0).is_err());
    }
}
