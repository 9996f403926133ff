//! Per-container cgroup metrics, with containerd's family names
//! (`container_<name>_<unit>`) and labels (`container_id`, `namespace`,
//! plus per-family ones), from the statistics each task's shim reports.
//!
//! cgroup v1 and v2 statistics have their own family tables, as in
//! containerd; families both versions share (`container_pids_current`,
//! `container_memory_usage_limit_bytes`, ...) are written once.

use berth_api::cgroups::{v1, v2};
use berth_runtime::cgroups::Stats;
use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// The statistics of one task, as read at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskStats {
    /// The task's namespace.
    pub namespace: String,
    /// The task (container) id.
    pub id: String,
    /// The runtime it was created with: containerd labels a task's
    /// families with it (`runtime`), berth also after a restart.
    pub runtime: Option<String>,
    /// What its shim reported.
    pub stats: Stats,
}

/// The unit suffix of a family, as containerd's names carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum U {
    /// `_bytes`.
    Bytes,
    /// `_nanoseconds`.
    Nanos,
    /// `_microseconds`.
    Micros,
    /// `_total` (a count, still a gauge as in containerd).
    Total,
    /// No suffix (`container_pids_limit`).
    None,
}

/// One value of a family: extra label values and the number.
type Sample = (Vec<String>, f64);

/// A family read from one version's statistics.
struct Family<M: 'static> {
    name: &'static str,
    help: &'static str,
    unit: U,
    labels: &'static [&'static str],
    values: fn(&M) -> Vec<Sample>,
}

#[allow(clippy::cast_precision_loss)]
fn f(v: u64) -> f64 {
    v as f64
}

/// A family with one unlabelled value.
macro_rules! one {
    ($name:literal, $help:literal, $unit:expr, |$m:ident| $value:expr) => {
        Family {
            name: $name,
            help: $help,
            unit: $unit,
            labels: &[],
            values: |$m| $value.map(|v| vec![(Vec::new(), f(v))]).unwrap_or_default(),
        }
    };
}

/// A v1 `memory.stat` field as a bytes family (containerd's units, even for counts).
macro_rules! mem1 {
    ($name:literal, $field:ident) => {
        one!($name, "A memory.stat value (cgroup v1)", U::Bytes, |m| m
            .memory
            .as_ref()
            .map(|x| x.$field))
    };
}

/// A v1 memory usage entry field.
macro_rules! entry1 {
    ($name:literal, $help:literal, $unit:expr, $entry:ident, $field:ident) => {
        one!($name, $help, $unit, |m| m
            .memory
            .as_ref()
            .and_then(|x| x.$entry.as_ref())
            .map(|e| e.$field))
    };
}

/// A v2 `memory.stat` field as a bytes family.
macro_rules! mem2 {
    ($name:literal, $field:ident) => {
        one!($name, "A memory.stat value (cgroup v2)", U::Bytes, |m| m
            .memory
            .as_ref()
            .map(|x| x.$field))
    };
}

fn blkio(entries: &[v1::BlkIoEntry]) -> Vec<Sample> {
    entries
        .iter()
        .map(|e| {
            (
                vec![
                    e.op.clone(),
                    e.device.clone(),
                    e.major.to_string(),
                    e.minor.to_string(),
                ],
                f(e.value),
            )
        })
        .collect()
}

const BLKIO_LABELS: &[&str] = &["op", "device", "major", "minor"];

/// A v1 blkio family.
macro_rules! blkio1 {
    ($name:literal, $help:literal, $unit:expr, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            unit: $unit,
            labels: BLKIO_LABELS,
            values: |m: &v1::Metrics| {
                m.blkio
                    .as_ref()
                    .map(|b| blkio(&b.$field))
                    .unwrap_or_default()
            },
        }
    };
}

fn cpu1(m: &v1::Metrics) -> Option<&v1::CpuUsage> {
    m.cpu.as_ref().and_then(|c| c.usage.as_ref())
}

fn throttle1(m: &v1::Metrics) -> Option<&v1::Throttle> {
    m.cpu.as_ref().and_then(|c| c.throttling.as_ref())
}

/// containerd's cgroup v1 families.
fn v1_families() -> Vec<Family<v1::Metrics>> {
    vec![
        one!(
            "pids_limit",
            "The limit to the number of pids allowed",
            U::None,
            |m| m.pids.map(|p| p.limit)
        ),
        one!("pids_current", "The current number of pids", U::None, |m| m
            .pids
            .map(|p| p.current)),
        one!("cpu_total", "The total cpu time", U::Nanos, |m| cpu1(m)
            .map(|u| u.total)),
        one!("cpu_kernel", "The total kernel cpu time", U::Nanos, |m| {
            cpu1(m).map(|u| u.kernel)
        }),
        one!("cpu_user", "The total user cpu time", U::Nanos, |m| cpu1(m)
            .map(|u| u.user)),
        Family {
            name: "per_cpu",
            help: "The total cpu time per cpu",
            unit: U::Nanos,
            labels: &["cpu"],
            values: |m| {
                cpu1(m)
                    .map(|u| {
                        u.per_cpu
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (vec![i.to_string()], f(*v)))
                            .collect()
                    })
                    .unwrap_or_default()
            },
        },
        one!(
            "cpu_throttle_periods",
            "The total cpu throttle periods",
            U::Total,
            |m| throttle1(m).map(|t| t.periods)
        ),
        one!(
            "cpu_throttled_periods",
            "The total cpu throttled periods",
            U::Total,
            |m| throttle1(m).map(|t| t.throttled_periods)
        ),
        one!(
            "cpu_throttled_time",
            "The total cpu throttled time",
            U::Nanos,
            |m| throttle1(m).map(|t| t.throttled_time)
        ),
        mem1!("memory_cache", cache),
        mem1!("memory_rss", rss),
        mem1!("memory_rss_huge", rss_huge),
        mem1!("memory_mapped_file", mapped_file),
        mem1!("memory_dirty", dirty),
        mem1!("memory_writeback", writeback),
        mem1!("memory_pgpgin", pg_pg_in),
        mem1!("memory_pgpgout", pg_pg_out),
        mem1!("memory_pgfault", pg_fault),
        mem1!("memory_pgmajfault", pg_maj_fault),
        mem1!("memory_inactive_anon", inactive_anon),
        mem1!("memory_active_anon", active_anon),
        mem1!("memory_inactive_file", inactive_file),
        mem1!("memory_active_file", active_file),
        mem1!("memory_unevictable", unevictable),
        mem1!(
            "memory_hierarchical_memory_limit",
            hierarchical_memory_limit
        ),
        mem1!("memory_hierarchical_memsw_limit", hierarchical_swap_limit),
        mem1!("memory_total_cache", total_cache),
        mem1!("memory_total_rss", total_rss),
        mem1!("memory_total_rss_huge", total_rss_huge),
        mem1!("memory_total_mapped_file", total_mapped_file),
        mem1!("memory_total_dirty", total_dirty),
        mem1!("memory_total_writeback", total_writeback),
        mem1!("memory_total_pgpgin", total_pg_pg_in),
        mem1!("memory_total_pgpgout", total_pg_pg_out),
        mem1!("memory_total_pgfault", total_pg_fault),
        mem1!("memory_total_pgmajfault", total_pg_maj_fault),
        mem1!("memory_total_inactive_anon", total_inactive_anon),
        mem1!("memory_total_active_anon", total_active_anon),
        mem1!("memory_total_inactive_file", total_inactive_file),
        mem1!("memory_total_active_file", total_active_file),
        mem1!("memory_total_unevictable", total_unevictable),
        entry1!(
            "memory_usage_failcnt",
            "The usage failcnt",
            U::Total,
            usage,
            failcnt
        ),
        entry1!(
            "memory_usage_limit",
            "The memory limit",
            U::Bytes,
            usage,
            limit
        ),
        entry1!(
            "memory_usage_max",
            "The memory maximum usage",
            U::Bytes,
            usage,
            max
        ),
        entry1!(
            "memory_usage_usage",
            "The memory usage",
            U::Bytes,
            usage,
            usage
        ),
        entry1!(
            "memory_swap_failcnt",
            "The swap failcnt",
            U::Total,
            swap,
            failcnt
        ),
        entry1!("memory_swap_limit", "The swap limit", U::Bytes, swap, limit),
        entry1!(
            "memory_swap_max",
            "The swap maximum usage",
            U::Bytes,
            swap,
            max
        ),
        entry1!("memory_swap_usage", "The swap usage", U::Bytes, swap, usage),
        entry1!(
            "memory_kernel_failcnt",
            "The kernel failcnt",
            U::Total,
            kernel,
            failcnt
        ),
        entry1!(
            "memory_kernel_limit",
            "The kernel limit",
            U::Bytes,
            kernel,
            limit
        ),
        entry1!(
            "memory_kernel_max",
            "The kernel maximum usage",
            U::Bytes,
            kernel,
            max
        ),
        entry1!(
            "memory_kernel_usage",
            "The kernel usage",
            U::Bytes,
            kernel,
            usage
        ),
        entry1!(
            "memory_kerneltcp_failcnt",
            "The kerneltcp failcnt",
            U::Total,
            kernel_tcp,
            failcnt
        ),
        entry1!(
            "memory_kerneltcp_limit",
            "The kerneltcp limit",
            U::Bytes,
            kernel_tcp,
            limit
        ),
        entry1!(
            "memory_kerneltcp_max",
            "The kerneltcp maximum usage",
            U::Bytes,
            kernel_tcp,
            max
        ),
        entry1!(
            "memory_kerneltcp_usage",
            "The kerneltcp usage",
            U::Bytes,
            kernel_tcp,
            usage
        ),
        // No `memory_oom` on cgroup v1: containerd declares it there, but
        // its OOM collector is never given a task, so it never exports it.
        Family {
            name: "hugetlb_usage",
            help: "The hugetlb usage",
            unit: U::Bytes,
            labels: &["page"],
            values: |m| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], f(h.usage)))
                    .collect()
            },
        },
        Family {
            name: "hugetlb_failcnt",
            help: "The hugetlb failcnt",
            unit: U::Total,
            labels: &["page"],
            values: |m| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], f(h.failcnt)))
                    .collect()
            },
        },
        Family {
            name: "hugetlb_max",
            help: "The hugetlb maximum usage",
            unit: U::Bytes,
            labels: &["page"],
            values: |m| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], f(h.max)))
                    .collect()
            },
        },
        blkio1!(
            "blkio_io_merged_recursive",
            "The blkio io merged recursive",
            U::Total,
            io_merged_recursive
        ),
        blkio1!(
            "blkio_io_queued_recursive",
            "The blkio io queued recursive",
            U::Total,
            io_queued_recursive
        ),
        blkio1!(
            "blkio_io_service_bytes_recursive",
            "The blkio io service bytes recursive",
            U::Bytes,
            io_service_bytes_recursive
        ),
        blkio1!(
            "blkio_io_service_time_recursive",
            "The blkio io service time recursive",
            U::Total,
            io_service_time_recursive
        ),
        blkio1!(
            "blkio_io_serviced_recursive",
            "The blkio io serviced recursive",
            U::Total,
            io_serviced_recursive
        ),
        blkio1!(
            "blkio_io_time_recursive",
            "The blkio io time recursive",
            U::Total,
            io_time_recursive
        ),
        blkio1!(
            "blkio_sectors_recursive",
            "The blkio sectors recursive",
            U::Total,
            sectors_recursive
        ),
    ]
}

fn io2(m: &v2::Metrics, value: fn(&v2::IoEntry) -> u64) -> Vec<Sample> {
    m.io.as_ref()
        .map(|io| {
            io.usage
                .iter()
                .map(|e| (vec![e.major.to_string(), e.minor.to_string()], f(value(e))))
                .collect()
        })
        .unwrap_or_default()
}

/// containerd's cgroup v2 families (plus hugetlb, under the v1 names).
fn v2_families() -> Vec<Family<v2::Metrics>> {
    vec![
        one!(
            "pids_limit",
            "The limit to the number of pids allowed",
            U::None,
            |m| m.pids.map(|p| p.limit)
        ),
        one!("pids_current", "The current number of pids", U::None, |m| m
            .pids
            .map(|p| p.current)),
        one!(
            "cpu_usage_usec",
            "Total cpu usage (cgroup v2)",
            U::Micros,
            |m| m.cpu.map(|c| c.usage_usec)
        ),
        one!(
            "cpu_user_usec",
            "Current cpu usage in user space (cgroup v2)",
            U::Micros,
            |m| m.cpu.map(|c| c.user_usec)
        ),
        one!(
            "cpu_system_usec",
            "Current cpu usage in kernel space (cgroup v2)",
            U::Micros,
            |m| m.cpu.map(|c| c.system_usec)
        ),
        one!(
            "cpu_nr_periods",
            "Current cpu number of periods (only if controller is enabled)",
            U::Total,
            |m| m.cpu.map(|c| c.nr_periods)
        ),
        one!(
            "cpu_nr_throttled",
            "Total number of times tasks have been throttled (only if controller is enabled)",
            U::Total,
            |m| m.cpu.map(|c| c.nr_throttled)
        ),
        one!(
            "cpu_throttled_usec",
            "Total time duration for which tasks have been throttled (only if controller is enabled)",
            U::Micros,
            |m| m.cpu.map(|c| c.throttled_usec)
        ),
        one!(
            "memory_usage",
            "Current memory usage (cgroup v2)",
            U::Bytes,
            |m| m.memory.as_ref().map(|x| x.usage)
        ),
        one!(
            "memory_usage_limit",
            "Current memory usage limit (cgroup v2)",
            U::Bytes,
            |m| m.memory.as_ref().map(|x| x.usage_limit)
        ),
        one!(
            "memory_swap_usage",
            "Current swap usage (cgroup v2)",
            U::Bytes,
            |m| m.memory.as_ref().map(|x| x.swap_usage)
        ),
        one!(
            "memory_swap_limit",
            "Current swap usage limit (cgroup v2)",
            U::Bytes,
            |m| m.memory.as_ref().map(|x| x.swap_limit)
        ),
        mem2!("memory_file_mapped", file_mapped),
        mem2!("memory_file_dirty", file_dirty),
        mem2!("memory_file_writeback", file_writeback),
        mem2!("memory_pgactivate", pgactivate),
        mem2!("memory_pgdeactivate", pgdeactivate),
        mem2!("memory_pgfault", pgfault),
        mem2!("memory_pgmajfault", pgmajfault),
        mem2!("memory_pglazyfree", pglazyfree),
        mem2!("memory_pgrefill", pgrefill),
        mem2!("memory_pglazyfreed", pglazyfreed),
        mem2!("memory_pgscan", pgscan),
        mem2!("memory_pgsteal", pgsteal),
        mem2!("memory_inactive_anon", inactive_anon),
        mem2!("memory_active_anon", active_anon),
        mem2!("memory_inactive_file", inactive_file),
        mem2!("memory_active_file", active_file),
        mem2!("memory_unevictable", unevictable),
        mem2!("memory_anon", anon),
        mem2!("memory_file", file),
        mem2!("memory_kernel_stack", kernel_stack),
        mem2!("memory_slab", slab),
        mem2!("memory_sock", sock),
        mem2!("memory_shmem", shmem),
        mem2!("memory_anon_thp", anon_thp),
        mem2!("memory_slab_reclaimable", slab_reclaimable),
        mem2!("memory_slab_unreclaimable", slab_unreclaimable),
        mem2!("memory_workingset_refault", workingset_refault),
        mem2!("memory_workingset_activate", workingset_activate),
        mem2!("memory_workingset_nodereclaim", workingset_nodereclaim),
        mem2!("memory_thp_fault_alloc", thp_fault_alloc),
        mem2!("memory_thp_collapse_alloc", thp_collapse_alloc),
        one!(
            "memory_oom",
            "The number of times a container has received an oom event",
            U::Total,
            |m| m.memory_events.map(|e| e.oom)
        ),
        Family {
            name: "io_rbytes",
            help: "IO bytes read",
            unit: U::Bytes,
            labels: &["major", "minor"],
            values: |m| io2(m, |e| e.rbytes),
        },
        Family {
            name: "io_wbytes",
            help: "IO bytes written",
            unit: U::Bytes,
            labels: &["major", "minor"],
            values: |m| io2(m, |e| e.wbytes),
        },
        Family {
            name: "io_rios",
            help: "Number of read IOs",
            unit: U::Total,
            labels: &["major", "minor"],
            values: |m| io2(m, |e| e.rios),
        },
        Family {
            name: "io_wios",
            help: "Number of write IOs",
            unit: U::Total,
            labels: &["major", "minor"],
            values: |m| io2(m, |e| e.wios),
        },
        Family {
            name: "hugetlb_usage",
            help: "The hugetlb usage",
            unit: U::Bytes,
            labels: &["page"],
            values: |m| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], f(h.current)))
                    .collect()
            },
        },
        Family {
            name: "hugetlb_max",
            help: "The hugetlb maximum usage",
            unit: U::Bytes,
            labels: &["page"],
            values: |m| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], f(h.max)))
                    .collect()
            },
        },
    ]
}

/// The samples of one output family, gathered over every task.
struct Output {
    /// `container_<name>` (the unit is added by the encoder, `_total` here).
    name: String,
    help: &'static str,
    unit: Option<Unit>,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

fn gather<M>(out: &mut Vec<Output>, families: &[Family<M>], task: &TaskStats, m: &M) {
    for fam in families {
        let values = (fam.values)(m);
        if values.is_empty() {
            continue;
        }
        let (name, unit) = match fam.unit {
            U::Bytes => (format!("container_{}", fam.name), Some(Unit::Bytes)),
            U::Nanos => (
                format!("container_{}", fam.name),
                Some(Unit::Other("nanoseconds".to_string())),
            ),
            U::Micros => (
                format!("container_{}", fam.name),
                Some(Unit::Other("microseconds".to_string())),
            ),
            U::Total => (format!("container_{}_total", fam.name), None),
            U::None => (format!("container_{}", fam.name), None),
        };
        let idx = match out.iter().position(|o| o.name == name) {
            Some(i) => i,
            None => {
                out.push(Output {
                    name,
                    help: fam.help,
                    unit,
                    samples: Vec::new(),
                });
                out.len() - 1
            }
        };
        for (extra, value) in values {
            let mut labels = vec![
                ("container_id".to_string(), task.id.clone()),
                ("namespace".to_string(), task.namespace.clone()),
            ];
            if let Some(r) = &task.runtime {
                labels.push(("runtime".to_string(), r.clone()));
            }
            labels.extend(fam.labels.iter().map(|l| (*l).to_string()).zip(extra));
            out[idx].samples.push((labels, value));
        }
    }
}

/// A `prometheus-client` collector over one scrape's task statistics.
#[derive(Debug)]
pub(crate) struct Collector {
    tasks: Vec<TaskStats>,
}

impl Collector {
    /// Encodes `tasks` when the registry holding it is encoded.
    pub(crate) fn new(tasks: Vec<TaskStats>) -> Collector {
        Collector { tasks }
    }

    fn outputs(&self) -> Vec<Output> {
        let (f1, f2) = (v1_families(), v2_families());
        let mut out = Vec::new();
        for t in &self.tasks {
            match &t.stats {
                Stats::V1(m) => gather(&mut out, &f1, t, m),
                Stats::V2(m) => gather(&mut out, &f2, t, m),
            }
        }
        out
    }
}

/// One constant gauge value.
#[derive(Debug)]
struct Value(f64);

impl EncodeMetric for Value {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl PromCollector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for o in self.outputs() {
            let mut family =
                encoder.encode_descriptor(&o.name, o.help, o.unit.as_ref(), MetricType::Gauge)?;
            for (labels, value) in &o.samples {
                Value(*value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_stats() -> v1::Metrics {
        v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 2,
                limit: 0,
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 1_500,
                    kernel: 500,
                    user: 1_000,
                    per_cpu: vec![700, 800],
                }),
                throttling: Some(v1::Throttle::default()),
            }),
            memory: Some(v1::MemoryStat {
                rss: 4096,
                usage: Some(v1::MemoryEntry {
                    limit: 1 << 30,
                    usage: 8192,
                    max: 9000,
                    failcnt: 0,
                }),
                ..Default::default()
            }),
            blkio: Some(v1::BlkIoStat {
                io_service_bytes_recursive: vec![v1::BlkIoEntry {
                    op: "Read".into(),
                    device: "/dev/vda".into(),
                    major: 254,
                    minor: 0,
                    value: 4096,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn encode(tasks: Vec<TaskStats>) -> String {
        crate::metrics::Metrics::new(false).encode(&tasks).unwrap()
    }

    #[test]
    fn v1_families_carry_containerd_names_and_labels() {
        let text = encode(vec![
            TaskStats {
                namespace: "default".into(),
                id: "a".into(),
                runtime: Some("io.containerd.runc.v2".into()),
                stats: Stats::V1(v1_stats()),
            },
            TaskStats {
                namespace: "k8s.io".into(),
                id: "b".into(),
                runtime: None,
                stats: Stats::V1(v1_stats()),
            },
        ]);
        for line in [
            "container_cpu_total_nanoseconds{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\"} 1500.0",
            "container_cpu_total_nanoseconds{container_id=\"b\",namespace=\"k8s.io\"} 1500.0",
            "container_per_cpu_nanoseconds{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\",cpu=\"1\"} 800.0",
            "container_memory_usage_usage_bytes{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\"} 8192.0",
            "container_memory_rss_bytes{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\"} 4096.0",
            "container_pids_current{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\"} 2",
            "container_memory_usage_failcnt_total{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\"} 0.0",
            "container_blkio_io_service_bytes_recursive_bytes{container_id=\"a\",namespace=\"default\",runtime=\"io.containerd.runc.v2\",op=\"Read\",device=\"/dev/vda\",major=\"254\",minor=\"0\"} 4096.0",
        ] {
            let name = line.split('{').next().unwrap();
            let found = text.lines().any(|l| {
                l.starts_with(line.split(' ').next().unwrap())
                    && l.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok())
                        == line.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok())
            });
            assert!(found, "{name}: {line:?} not in\n{text}");
        }
        // One descriptor per family, whatever the number of tasks.
        assert_eq!(
            text.matches("# TYPE container_cpu_total_nanoseconds gauge")
                .count(),
            1
        );
        // No swap entry: no swap families.
        assert!(!text.contains("container_memory_swap_usage_bytes"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn v2_families() {
        let m = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 42,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 100,
                usage_limit: u64::MAX,
                ..Default::default()
            }),
            memory_events: Some(v2::MemoryEvents {
                oom: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = encode(vec![TaskStats {
            namespace: "default".into(),
            id: "c".into(),
            runtime: None,
            stats: Stats::V2(m),
        }]);
        assert!(
            text.contains(
                "container_cpu_usage_usec_microseconds{container_id=\"c\",namespace=\"default\"} 42"
            ),
            "{text}"
        );
        assert!(text.contains(
            "container_memory_usage_bytes{container_id=\"c\",namespace=\"default\"} 100"
        ));
        assert!(
            text.contains("container_memory_oom_total{container_id=\"c\",namespace=\"default\"} 3")
        );
        assert!(!text.contains("container_cpu_total_nanoseconds"));
    }
}
