//! Container statistics from the shims' cgroup metrics (what the Tasks
//! service's Metrics call returns), as the CRI's CPU and memory usage.

use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::runtime::v1 as cri;
use prost::Message;

use crate::Cri;
use crate::error::{CriError, Result};
use crate::meta;

impl Cri {
    /// Stats of the given running containers (by id).
    pub(crate) async fn stats_of(
        &self,
        ids: &[(String, cri::ContainerAttributes)],
    ) -> Result<Vec<cri::ContainerStats>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filters = ids.iter().map(|(id, _)| format!("id=={id}")).collect();
        let metrics = self
            .inner
            .backend
            .tasks()
            .metrics(tpb::MetricsRequest { filters })
            .await
            .map_err(CriError::service("reading task metrics"))?
            .into_inner()
            .metrics;
        let now = meta::now_nanos();
        let mut out = Vec::new();
        for (id, attributes) in ids {
            let mut stats = cri::ContainerStats {
                attributes: Some(attributes.clone()),
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    ..Default::default()
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    ..Default::default()
                }),
                ..Default::default()
            };
            if let Some(data) = metrics
                .iter()
                .find(|m| &m.id == id)
                .and_then(|m| m.data.as_ref())
            {
                let (cpu_ns, mem_usage, working_set) = decode(data);
                let u = |value| Some(cri::UInt64Value { value });
                stats.cpu = Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u(cpu_ns),
                    usage_nano_cores: None,
                });
                stats.memory = Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u(working_set),
                    usage_bytes: u(mem_usage),
                    ..Default::default()
                });
            }
            out.push(stats);
        }
        Ok(out)
    }
}

/// (CPU nanoseconds, memory usage, working set) of cgroup v1 or v2 metrics.
fn decode(any: &prost_types::Any) -> (u64, u64, u64) {
    if any.type_url.ends_with(berth_api::CGROUPS_V2_METRICS_URL) {
        if let Ok(m) = berth_api::cgroups::v2::Metrics::decode(any.value.as_slice()) {
            let cpu = m.cpu.map_or(0, |c| c.usage_usec.saturating_mul(1000));
            let (usage, inactive) = m
                .memory
                .map_or((0, 0), |mem| (mem.usage, mem.inactive_file));
            return (cpu, usage, usage.saturating_sub(inactive));
        }
    } else if let Ok(m) = berth_api::cgroups::v1::Metrics::decode(any.value.as_slice()) {
        let cpu = m.cpu.and_then(|c| c.usage).map_or(0, |u| u.total);
        let (usage, inactive) = m.memory.map_or((0, 0), |mem| {
            (mem.usage.map_or(0, |u| u.usage), mem.total_inactive_file)
        });
        return (cpu, usage, usage.saturating_sub(inactive));
    }
    (0, 0, 0)
}
