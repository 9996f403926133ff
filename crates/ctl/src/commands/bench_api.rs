//! `berthctl bench-api` (hidden): small-call throughput of a daemon's API,
//! for `cargo xtask bench api`.
//!
//! - `setup --containers N`: N container records (no tasks, no snapshots)
//!   with a default spec, ids `bench-api-<i>`.
//! - `run --call version|list|tasks|info`: that call in a loop on
//!   `--concurrency` connections (one per worker) for `--duration`; calls/s
//!   and the per-call latency (median, 90th percentile) as JSON.
//! - `blobs --count N`: writes N distinct small blobs through
//!   Content.Write (one stream per blob, its one message committing the
//!   data), under the global `--lease` if given; blobs/s as JSON.
//! - `gc --samples N`: N times, a lease holding one new blob is deleted
//!   with `sync` (the call returns after a garbage collection); the
//!   latency of those deletions as JSON.
//! - `teardown`: removes the `bench-api-*` containers.
//!
//! The load runs on a multi-threaded runtime of its own so that the client
//! is not a single-core bottleneck.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::content::v1 as content_pb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::leases::v1 as leases_pb;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::tasks::v1 as tasks_pb;
use berth_api::containerd::services::version::v1::version_client::VersionClient;
use sha2::Digest as _;

use crate::commands::run::SPEC_TYPE_URL;
use crate::context::{Global, clients};

/// Id prefix of the records `setup` makes.
const PREFIX: &str = "bench-api-";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Call {
    /// Version.Version.
    Version,
    /// Containers.List (of every container in the namespace).
    List,
    /// Tasks.List (of every task in the namespace).
    Tasks,
    /// Content.Info of one blob.
    Info,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Creates container records `bench-api-<i>` (no tasks).
    Setup {
        /// How many.
        #[arg(long, default_value_t = 1000)]
        containers: usize,
    },
    /// Calls one method in a loop and prints calls/s as JSON.
    Run {
        /// The call.
        #[arg(long, value_enum)]
        call: Call,
        /// Workers, each with its own connection.
        #[arg(short = 'c', long, default_value_t = 1)]
        concurrency: usize,
        /// How long.
        #[arg(short = 'd', long, default_value = "3s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Blob for `info` (default: the first the daemon lists).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Writes distinct small blobs through Content.Write.
    Blobs {
        /// How many.
        #[arg(long)]
        count: usize,
        /// Bytes per blob (at least enough for its distinct header).
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Makes this run's blobs differ from other runs' (same seed, same
        /// blobs).
        #[arg(long, default_value = "")]
        seed: String,
        /// Writes in flight, each worker on its own connection.
        #[arg(short = 'c', long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Times synchronous garbage collections (Leases.Delete with `sync`).
    Gc {
        /// Collections timed.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
    /// Removes the `bench-api-*` containers.
    Teardown,
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    match args.command {
        Command::Setup { containers } => setup(&client, &global.namespace(), containers).await,
        Command::Teardown => teardown(&client).await,
        Command::Blobs {
            count,
            size,
            seed,
            concurrency,
        } => {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let global = global.clone();
            let started = Instant::now();
            let last = std::thread::spawn(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("starting the load runtime")?
                    .block_on(write_blobs(global, count, size, seed, concurrency))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
            let elapsed = started.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = count as f64 / elapsed.max(1e-9);
            println!(
                "{}",
                serde_json::json!({
                    "blobs": count,
                    "seconds": elapsed,
                    "per_second": rate,
                    "last_digest": last,
                })
            );
            Ok(())
        }
        Command::Gc { samples } => {
            let mut ms = Vec::with_capacity(samples);
            for i in 0..samples {
                ms.push(gc_once(global, i).await?);
            }
            let (p50, p90) = percentiles(&mut ms);
            println!(
                "{}",
                serde_json::json!({
                    "samples": ms,
                    "p50_ms": p50,
                    "p90_ms": p90,
                })
            );
            Ok(())
        }
        Command::Run {
            call,
            concurrency,
            duration,
            digest,
        } => {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let digest = match (call, digest) {
                (Call::Info, None) => first_digest(&client).await?,
                (_, d) => d.unwrap_or_default(),
            };
            let global = global.clone();
            // A runtime of its own: the command's is single-threaded.
            let load = std::thread::spawn(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("starting the load runtime")?
                    .block_on(load(global, call, concurrency, duration, digest))
            });
            let (calls, errors, first_error, elapsed, mut latencies) = load
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            #[allow(clippy::cast_precision_loss)]
            let rate = calls as f64 / elapsed.as_secs_f64().max(1e-9);
            let (p50, p90) = percentiles(&mut latencies);
            println!(
                "{}",
                serde_json::json!({
                    "call": format!("{call:?}").to_lowercase(),
                    "concurrency": concurrency,
                    "duration_s": elapsed.as_secs_f64(),
                    "calls": calls,
                    "errors": errors,
                    "first_error": first_error,
                    "per_second": rate,
                    "p50_ms": p50,
                    "p90_ms": p90,
                })
            );
            if errors > 0 {
                bail!("{errors} call(s) failed");
            }
            Ok(())
        }
    }
}

/// The first blob the daemon lists in the namespace.
async fn first_digest(client: &Client) -> anyhow::Result<String> {
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let mut stream = content
        .list(content_pb::ListContentRequest::default())
        .await?
        .into_inner();
    while let Some(batch) = stream.message().await? {
        if let Some(info) = batch.info.into_iter().next() {
            return Ok(info.digest);
        }
    }
    bail!("the namespace has no content; import an image first")
}

async fn setup(client: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        let id = format!("{PREFIX}{i:05}");
        let spec = berth_spec::generate(&id, ns, Vec::new())?;
        let mut containers = clients::containers(client);
        pending.spawn(async move {
            containers
                .create(cpb::CreateContainerRequest {
                    container: Some(cpb::Container {
                        id: id.clone(),
                        image: "docker.io/library/busybox:latest".into(),
                        runtime: Some(cpb::container::Runtime {
                            name: "io.containerd.runc.v2".into(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: SPEC_TYPE_URL.to_string(),
                            value: serde_json::to_vec(&spec)?,
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .with_context(|| format!("creating container {id}"))?;
            anyhow::Ok(())
        });
        // At most 8 creates in flight.
        if pending.len() >= 8
            && let Some(r) = pending.join_next().await
        {
            r??;
        }
    }
    while let Some(r) = pending.join_next().await {
        r??;
    }
    Ok(())
}

async fn teardown(client: &Client) -> anyhow::Result<()> {
    let mut containers = clients::containers(client);
    let list = containers
        .list(cpb::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    for c in list.into_iter().filter(|c| c.id.starts_with(PREFIX)) {
        containers
            .delete(cpb::DeleteContainerRequest { id: c.id.clone() })
            .await
            .with_context(|| format!("deleting container {}", c.id))?;
    }
    Ok(())
}

/// The median and the 90th percentile of `v` (sorted in place); zeros
/// when empty.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let at = |q: usize| v[(v.len() - 1) * q / 100];
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, at(90))
}

/// The bytes of blob `i` of a `blobs` run with `seed`: a distinct header,
/// padded to `size`.
fn blob_bytes(seed: &str, i: usize, size: usize) -> Vec<u8> {
    let mut data = format!("berth bench blob {seed} {i}\n").into_bytes();
    if data.len() < size {
        data.resize(size, b'.');
    }
    data
}

/// Writes blob `data` in one Content.Write stream: a single message with
/// the data, its size and digest, committing it. Returns the digest.
async fn write_blob(
    content: &mut ContentClient<crate::context::clients::Chan>,
    data: Vec<u8>,
) -> anyhow::Result<String> {
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&data));
    let total = i64::try_from(data.len()).context("blob too large")?;
    let req = content_pb::WriteContentRequest {
        action: content_pb::WriteAction::Commit as i32,
        r#ref: format!("bench-blob-{digest}"),
        total,
        expected: digest.clone(),
        offset: 0,
        data,
        labels: Default::default(),
    };
    let mut responses = content
        .write(tokio_stream::iter([req]))
        .await
        .with_context(|| format!("writing {digest}"))?
        .into_inner();
    while responses
        .message()
        .await
        .with_context(|| format!("committing {digest}"))?
        .is_some()
    {}
    Ok(digest)
}

/// Writes `count` blobs on `concurrency` connections; the last digest.
async fn write_blobs(
    global: Global,
    count: usize,
    size: usize,
    seed: String,
    concurrency: usize,
) -> anyhow::Result<String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let client = global.connect().await?;
        let (next, seed) = (next.clone(), seed.clone());
        workers.spawn(async move {
            let mut content =
                ContentClient::with_interceptor(client.channel(), client.interceptor());
            let mut last = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let digest = write_blob(&mut content, blob_bytes(&seed, i, size)).await?;
                if i + 1 == count {
                    last = Some(digest);
                }
            }
            anyhow::Ok(last)
        });
    }
    let mut last = None;
    while let Some(r) = workers.join_next().await {
        if let Some(d) = r.context("writer task")?? {
            last = Some(d);
        }
    }
    last.ok_or_else(|| anyhow::anyhow!("no blob written"))
}

/// One timed synchronous collection: lease `bench-gc-<pid>-<i>` holding
/// one new blob is deleted with `sync`; the milliseconds the delete took.
async fn gc_once(global: &Global, i: usize) -> anyhow::Result<f64> {
    let id = format!("bench-gc-{}-{i}", std::process::id());
    let client = global.connect().await?;
    let mut leases = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    leases
        .create(leases_pb::CreateRequest {
            id: id.clone(),
            labels: Default::default(),
        })
        .await
        .with_context(|| format!("creating lease {id}"))?;
    let leased = client.clone().with_lease(id.clone());
    let mut content = ContentClient::with_interceptor(leased.channel(), leased.interceptor());
    write_blob(&mut content, blob_bytes(&id, 0, 128)).await?;
    let started = Instant::now();
    leases
        .delete(leases_pb::DeleteRequest {
            id: id.clone(),
            sync: true,
        })
        .await
        .with_context(|| format!("deleting lease {id} (sync)"))?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Calls, errors, the first error, the time taken and each successful
/// call's latency in milliseconds.
type LoadResult = (u64, u64, Option<String>, Duration, Vec<f64>);

async fn load(
    global: Global,
    call: Call,
    concurrency: usize,
    duration: Duration,
    digest: String,
) -> anyhow::Result<LoadResult> {
    let mut connections = Vec::new();
    for _ in 0..concurrency {
        connections.push(global.connect().await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for client in connections {
        let digest = digest.clone();
        workers.spawn(async move {
            let mut version =
                VersionClient::with_interceptor(client.channel(), client.interceptor());
            let mut containers = clients::containers(&client);
            let mut content =
                ContentClient::with_interceptor(client.channel(), client.interceptor());
            let mut tasks = clients::tasks(&client);
            let (mut calls, mut errors, mut first_error) = (0_u64, 0_u64, None::<String>);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let call_started = Instant::now();
                let r = match call {
                    Call::Version => version.version(()).await.map(|_| ()),
                    Call::List => containers
                        .list(cpb::ListContainersRequest::default())
                        .await
                        .map(|_| ()),
                    Call::Tasks => tasks
                        .list(tasks_pb::ListTasksRequest::default())
                        .await
                        .map(|_| ()),
                    Call::Info => content
                        .info(content_pb::InfoRequest {
                            digest: digest.clone(),
                        })
                        .await
                        .map(|_| ()),
                };
                match r {
                    Ok(()) => {
                        calls += 1;
                        latencies.push(call_started.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.message().to_string());
                    }
                }
            }
            (calls, errors, first_error, latencies)
        });
    }
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    let mut latencies = Vec::new();
    while let Some(r) = workers.join_next().await {
        let (c, e, f, mut l) = r.context("load worker")?;
        calls += c;
        errors += e;
        latencies.append(&mut l);
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok((calls, errors, first_error, started.elapsed(), latencies))
}
