//! `berthctl bench-api` (hidden): small-call throughput of a daemon's API,
//! for `cargo xtask bench api`.
//!
//! - `setup --containers N`: N container records (no tasks, no snapshots)
//!   with a default spec, ids `bench-api-<i>`.
//! - `run --call version|list|info`: that call in a loop on `--concurrency`
//!   connections (one per worker) for `--duration`; calls/s as JSON.
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
use berth_api::containerd::services::version::v1::version_client::VersionClient;

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
    /// Removes the `bench-api-*` containers.
    Teardown,
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    match args.command {
        Command::Setup { containers } => setup(&client, &global.namespace(), containers).await,
        Command::Teardown => teardown(&client).await,
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
            let (calls, errors, first_error, elapsed) = load
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            #[allow(clippy::cast_precision_loss)]
            let rate = calls as f64 / elapsed.as_secs_f64().max(1e-9);
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
        if pending.len() >= 8 {
            if let Some(r) = pending.join_next().await {
                r??;
            }
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

/// Calls, errors, the first error and the time taken.
type LoadResult = (u64, u64, Option<String>, Duration);

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
            let (mut calls, mut errors, mut first_error) = (0_u64, 0_u64, None::<String>);
            while Instant::now() < deadline {
                let r = match call {
                    Call::Version => version.version(()).await.map(|_| ()),
                    Call::List => containers
                        .list(cpb::ListContainersRequest::default())
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
                    Ok(()) => calls += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.message().to_string());
                    }
                }
            }
            (calls, errors, first_error)
        });
    }
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    while let Some(r) = workers.join_next().await {
        let (c, e, f) = r.context("load worker")?;
        calls += c;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok((calls, errors, first_error, started.elapsed()))
}
