//! `berthctl leases create|ls|rm`.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::leases::v1::{CreateRequest, DeleteRequest, ListRequest};

use crate::context::Global;
use crate::{format, table};

/// Label holding a lease's expiry time, as containerd names it.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a lease; prints its id.
    Create {
        /// Lease id (generated if empty).
        #[arg(short = 'i', long, default_value = "")]
        id: String,
        /// Expire the lease after this long (`24h`, `30m`; `0` never).
        #[arg(short = 'x', long, default_value = "24h", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Labels, `key=value`.
        labels: Vec<String>,
    },
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax), OR'd.
        filters: Vec<String>,
    },
    /// Delete leases.
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Run garbage collection before returning.
        #[arg(long)]
        sync: bool,
        /// Lease ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Creates a lease that expires in a day, for what one command creates
/// (ctr's `WithLease`): held until the command has made its records refer
/// to what it created, so a collection in between cannot take it.
pub(crate) async fn temporary(client: &berth_api::client::Client) -> anyhow::Result<String> {
    let mut svc = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let id = format!("berthctl-{nanos}-{}", std::process::id());
    let at = SystemTime::now() + Duration::from_secs(24 * 3600);
    let labels = [(
        EXPIRE_LABEL.to_string(),
        humantime::format_rfc3339_seconds(at).to_string(),
    )]
    .into();
    svc.create(CreateRequest {
        id: id.clone(),
        labels,
    })
    .await
    .context("creating a lease for the command")?;
    Ok(id)
}

/// Deletes lease `id` (without waiting for a collection).
pub(crate) async fn release(client: &berth_api::client::Client, id: &str) {
    let mut svc = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    let req = DeleteRequest {
        id: id.to_string(),
        sync: false,
    };
    if let Err(e) = svc.delete(req).await {
        eprintln!("berthctl: releasing lease {id}: {}", e.message());
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    let mut svc = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    match args.command {
        Command::Create {
            id,
            expires,
            labels,
        } => {
            let mut labels = format::parse_labels(&labels);
            if !expires.is_zero() {
                let at = SystemTime::now() + expires;
                labels.insert(
                    EXPIRE_LABEL.to_string(),
                    humantime::format_rfc3339_seconds(at).to_string(),
                );
            }
            let id = if id.is_empty() {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("{nanos}-{}", std::process::id())
            } else {
                id
            };
            let lease = svc
                .create(CreateRequest { id, labels })
                .await?
                .into_inner()
                .lease;
            println!("{}", lease.map(|l| l.id).unwrap_or_default());
        }
        Command::Ls { quiet, filters } => {
            let mut leases = svc.list(ListRequest { filters }).await?.into_inner().leases;
            leases.sort_by(|a, b| a.id.cmp(&b.id));
            if global.json() {
                return crate::json::print_list(&leases);
            }
            if quiet {
                for l in leases {
                    println!("{}", l.id);
                }
                return Ok(());
            }
            let mut rows = vec![vec!["ID".into(), "CREATED AT".into(), "LABELS".into()]];
            for l in leases {
                rows.push(vec![
                    l.id,
                    format::time(l.created_at),
                    format::labels(&l.labels),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Rm { sync, ids } => {
            let mut failed = 0;
            for id in ids {
                match svc
                    .delete(DeleteRequest {
                        id: id.clone(),
                        sync,
                    })
                    .await
                {
                    Ok(_) => println!("{id}"),
                    Err(e) => {
                        eprintln!("berthctl: unable to delete lease {id}: {}", e.message());
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} lease(s) could not be deleted");
            }
        }
    }
    Ok(())
}
