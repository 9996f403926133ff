//! Prometheus metrics of the daemon: one [`Metrics`] handle per daemon,
//! reachable by every plugin (it is the `io.containerd.internal.v1.metrics`
//! plugin's instance), encoded in the OpenMetrics text format by
//! `prometheus-client` when `/v1/metrics` is scraped.
//!
//! - gRPC server metrics ([`grpc`]): calls started and handled by service,
//!   method, type and code, and (with `[metrics] grpc_histogram = true`) a
//!   latency histogram, named as containerd's go-grpc-prometheus names them.
//! - daemon metrics: running tasks, shims, GC runs and durations, bytes
//!   ingested into the content store (pulls).
//! - per-container cgroup metrics ([`cgroups`]), collected from each task's
//!   shim (`Stats`) at scrape time, with containerd's family names and the
//!   labels `container_id` and `namespace`.

pub(crate) mod cgroups;
pub(crate) mod grpc;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Buckets of latency histograms, in seconds (Prometheus' defaults, as
/// containerd's gRPC histogram uses).
pub(crate) const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The daemon's metrics: what services record into, and the registry the
/// endpoint encodes. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// gRPC server metrics, recorded by the [`grpc::MetricsLayer`].
    pub grpc: grpc::GrpcMetrics,
    /// Garbage collections run.
    pub gc_runs: Counter,
    /// Duration of garbage collections, in seconds.
    pub gc_duration: Histogram,
    /// Bytes written into the content store by ingests (image pulls, imports).
    pub pull_bytes: Counter,
    /// Tasks whose status is running (set at each scrape).
    pub tasks_running: Gauge,
    /// Shims the daemon is connected to (set at each scrape).
    pub shims: Gauge,
    /// Task statistics that could not be read at the last scrapes.
    pub stats_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(false)
    }
}

impl Metrics {
    /// A fresh registry; `grpc_histogram` turns on the gRPC latency histogram.
    pub(crate) fn new(grpc_histogram: bool) -> Metrics {
        let mut registry = Registry::default();
        let grpc = grpc::GrpcMetrics::new(grpc_histogram);
        grpc.register(&mut registry);
        let gc_runs = Counter::default();
        let gc_duration = Histogram::new(LATENCY_BUCKETS);
        let pull_bytes = Counter::default();
        let tasks_running = Gauge::default();
        let shims = Gauge::default();
        let stats_errors = Counter::default();
        registry.register("berth_gc_runs", "Garbage collections run", gc_runs.clone());
        registry.register_with_unit(
            "berth_gc_duration",
            "Duration of garbage collections",
            Unit::Seconds,
            gc_duration.clone(),
        );
        registry.register_with_unit(
            "berth_pull",
            "Bytes written into the content store by ingests (image pulls and imports)",
            Unit::Bytes,
            pull_bytes.clone(),
        );
        registry.register(
            "berth_tasks_running",
            "Tasks in the running state",
            tasks_running.clone(),
        );
        registry.register(
            "berth_shims",
            "Shims the daemon is connected to",
            shims.clone(),
        );
        registry.register(
            "berth_task_stats_errors",
            "Task statistics that could not be read from their shims during scrapes",
            stats_errors.clone(),
        );
        Metrics {
            registry,
            grpc,
            gc_runs,
            gc_duration,
            pull_bytes,
            tasks_running,
            shims,
            stats_errors,
        }
    }

    /// Records one garbage collection that took `took`.
    pub(crate) fn observe_gc(&self, took: Duration) {
        self.gc_runs.inc();
        self.gc_duration.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of the daemon's metrics followed by `tasks`'
    /// cgroup metrics, ending with `# EOF`.
    pub(crate) fn encode(&self, tasks: &[cgroups::TaskStats]) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        let mut containers = Registry::default();
        containers.register_collector(Box::new(cgroups::Collector::new(tasks.to_vec())));
        encode_registry(&mut out, &containers)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics handle shared by plugins and servers.
pub(crate) type Handle = Arc<Metrics>;
