//! `berthctl content ls|get|ingest|rm|label|active|prune` (and, in
//! their own modules, `edit`, `fetch`, `fetch-object`, `push-object`).

use std::io::{Read, Write};

use anyhow::{Context as _, bail};
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::content::v1::{
    DeleteContentRequest, Info, InfoRequest, ListContentRequest, ListStatusesRequest,
    ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use tokio_stream::wrappers::ReceiverStream;

use crate::context::Global;
use crate::{format, table};

/// Chunk size of ingest writes (containerd uses 1 MiB too).
const CHUNK: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Edit a blob in $EDITOR and store the result as a new blob.
    Edit(super::content_edit::EditArgs),
    /// Fetch all content for an image into the content store, without unpacking (done by berthctl, as ctr's).
    Fetch(super::content_fetch::FetchArgs),
    /// Retrieve an object from a registry to stdout (the reference's, or a digest in its repository).
    FetchObject(super::content_fetch::FetchObjectArgs),
    /// Retrieve blobs by digest from a registry to stdout (as ctr 2.x).
    FetchBlob(super::content_fetch::FetchBlobArgs),
    /// Push an object of the content store to a registry.
    PushObject(super::content_fetch::PushObjectArgs),
    /// List all blobs in the store.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the blob digest.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax), OR'd.
        filters: Vec<String>,
    },
    /// Write a blob's data to stdout.
    Get {
        /// The blob's digest.
        digest: String,
    },
    /// Accept content from stdin into the store under a transaction ref.
    Ingest {
        /// Validate against this size.
        #[arg(long)]
        expected_size: Option<i64>,
        /// Verify the content against this digest.
        #[arg(long)]
        expected_digest: Option<String>,
        /// The ingest ref (resumable key).
        #[arg(name = "ref")]
        reference: String,
    },
    /// Permanently delete one or more blobs.
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Digests.
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Add or clear (`key=`) labels on a blob.
    Label {
        /// The blob's digest.
        digest: String,
        /// Labels, `key=value`.
        labels: Vec<String>,
    },
    /// Display active (unfinished) ingests.
    Active {
        /// Print only refs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove content no longer referenced (runs garbage collection now).
    Prune {
        #[command(subcommand)]
        command: Option<PruneCommand>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum PruneCommand {
    /// Prunes reference labels from the content store (layers only by default), as ctr's.
    References {
        /// Return without waiting for the garbage collection.
        #[arg(long = "async")]
        asynchronous: bool,
        /// Just show the labels that would go, changing nothing.
        #[arg(long)]
        dry: bool,
    },
}

/// containerd's reference label prefixes: a layer's, and any blob's
/// (`...content.<n>`, where `0` is an image's config in older clients).
const LAYER_REF_PREFIX: &str = "containerd.io/gc.ref.content.l.";
const CONTENT_REF_PREFIX: &str = "containerd.io/gc.ref.content.";

/// Whether `key` is a label referencing a layer, as ctr's `isLayerLabel`:
/// `...content.l.<n>`, or the legacy `...content.<n>` with `n` > 0.
fn is_layer_label(key: &str) -> bool {
    if key.starts_with(LAYER_REF_PREFIX) {
        return true;
    }
    match key.strip_prefix(CONTENT_REF_PREFIX) {
        Some(rest) => rest.chars().all(|c| c.is_ascii_digit()) && rest != "0",
        None => false,
    }
}

/// Runs a garbage collection: creating a lease and deleting it, `sync`
/// unless `asynchronous`, is the API's way to ask for one.
async fn collect(client: &berth_api::client::Client, asynchronous: bool) -> anyhow::Result<()> {
    let mut leases = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    let id = format!("berthctl-prune-{}", std::process::id());
    leases
        .create(CreateRequest {
            id: id.clone(),
            labels: Default::default(),
        })
        .await?;
    leases
        .delete(DeleteRequest {
            id,
            sync: !asynchronous,
        })
        .await?;
    Ok(())
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let command = match args.command {
        Command::Edit(a) => return super::content_edit::edit(global, a).await,
        Command::Fetch(a) => return super::content_fetch::fetch(global, a).await,
        Command::FetchObject(a) => return super::content_fetch::fetch_object(global, a).await,
        Command::FetchBlob(a) => return super::content_fetch::fetch_blob(global, a).await,
        Command::PushObject(a) => return super::content_fetch::push_object(global, a).await,
        other => other,
    };
    let client = global.connect().await?;
    let mut svc = ContentClient::with_interceptor(client.channel(), client.interceptor());
    match command {
        Command::Edit(_)
        | Command::Fetch(_)
        | Command::FetchObject(_)
        | Command::FetchBlob(_)
        | Command::PushObject(_) => {
            unreachable!("handled above")
        }
        Command::Ls { quiet, filters } => {
            let mut stream = svc.list(ListContentRequest { filters }).await?.into_inner();
            let mut infos: Vec<Info> = Vec::new();
            while let Some(batch) = stream.message().await? {
                infos.extend(batch.info);
            }
            infos.sort_by(|a, b| a.digest.cmp(&b.digest));
            if global.json() {
                return crate::json::print_list(&infos);
            }
            if quiet {
                for i in infos {
                    println!("{}", i.digest);
                }
                return Ok(());
            }
            let mut rows = vec![vec![
                "DIGEST".into(),
                "SIZE".into(),
                "AGE".into(),
                "LABELS".into(),
            ]];
            for i in infos {
                rows.push(vec![
                    i.digest,
                    format::size(i.size),
                    format::age(i.created_at),
                    format::labels(&i.labels),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Get { digest } => {
            let mut stream = svc
                .read(ReadContentRequest {
                    digest: digest.clone(),
                    offset: 0,
                    size: 0,
                })
                .await
                .with_context(|| format!("reading {digest}"))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
        }
        Command::Ingest {
            expected_size,
            expected_digest,
            reference,
        } => {
            ingest(
                &mut svc,
                &reference,
                expected_size.unwrap_or(0),
                expected_digest.unwrap_or_default(),
            )
            .await?;
        }
        Command::Rm { digests } => {
            let mut failed = 0;
            for d in digests {
                match svc.delete(DeleteContentRequest { digest: d.clone() }).await {
                    Ok(_) => println!("{d}"),
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        eprintln!("berthctl: {}", e.message())
                    }
                    Err(e) => {
                        eprintln!("berthctl: could not delete {d}: {}", e.message());
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} blob(s) could not be deleted");
            }
        }
        Command::Label { digest, labels } => {
            let labels = format::parse_labels(&labels);
            let info = if labels.is_empty() {
                svc.info(InfoRequest { digest }).await?.into_inner().info
            } else {
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                svc.update(UpdateRequest {
                    info: Some(Info {
                        digest,
                        labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .info
            };
            let labels = info.map(|i| i.labels).unwrap_or_default();
            println!(
                "{}",
                if labels.is_empty() {
                    String::new()
                } else {
                    format::labels(&labels)
                }
            );
        }
        Command::Active { quiet } => {
            let mut statuses = svc
                .list_statuses(ListStatusesRequest::default())
                .await?
                .into_inner()
                .statuses;
            statuses.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
            if global.json() {
                return crate::json::print_list(&statuses);
            }
            if quiet {
                for s in statuses {
                    println!("{}", s.r#ref);
                }
                return Ok(());
            }
            let mut rows = vec![vec!["REF".into(), "SIZE".into(), "AGE".into()]];
            for s in statuses {
                rows.push(vec![
                    s.r#ref,
                    format!("{}/{}", format::size(s.offset), format::size(s.total)),
                    format::age(s.started_at),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Prune { command: None } => collect(&client, false).await?,
        Command::Prune {
            command: Some(PruneCommand::References { asynchronous, dry }),
        } => {
            let mut stream = svc
                .list(ListContentRequest { filters: vec![] })
                .await?
                .into_inner();
            let mut infos: Vec<Info> = Vec::new();
            while let Some(batch) = stream.message().await? {
                infos.extend(batch.info);
            }
            for mut info in infos {
                let mut keys: Vec<String> = info
                    .labels
                    .keys()
                    .filter(|k| is_layer_label(k))
                    .cloned()
                    .collect();
                keys.sort();
                if dry {
                    for k in &keys {
                        eprintln!("would remove label {k} from {}", info.digest);
                    }
                    continue;
                }
                if keys.is_empty() {
                    continue;
                }
                for k in &keys {
                    info.labels.remove(k);
                }
                let paths = keys.iter().map(|k| format!("labels.{k}")).collect();
                svc.update(UpdateRequest {
                    info: Some(info),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?;
            }
            if !dry {
                collect(&client, asynchronous).await?;
            }
        }
    }
    Ok(())
}

/// Streams stdin into the store as ref `reference`, resuming where a
/// previous ingest of the same ref stopped when stdin can skip ahead.
async fn ingest<T>(
    svc: &mut ContentClient<T>,
    reference: &str,
    total: i64,
    expected: String,
) -> anyhow::Result<()>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    tx.send(WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.to_string(),
        total,
        expected: expected.clone(),
        ..Default::default()
    })
    .await?;
    let mut responses = match svc.write(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let stat = match responses.message().await {
        Ok(Some(m)) => m,
        Ok(None) => bail!("server closed the write stream"),
        Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Resume: skip what the server already has.
    let mut stdin = std::io::stdin().lock();
    let mut offset = stat.offset;
    if offset > 0 {
        let skipped = std::io::copy(
            &mut (&mut stdin).take(u64::try_from(offset)?),
            &mut std::io::sink(),
        )?;
        if i64::try_from(skipped)? != offset {
            bail!("input is shorter than the {offset} bytes already ingested for {reference}");
        }
    }
    let mut buf = vec![0_u8; CHUNK];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        tx.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.to_string(),
            offset,
            data: buf[..n].to_vec(),
            ..Default::default()
        })
        .await?;
        match responses.message().await {
            Ok(Some(m)) => offset = m.offset,
            Ok(None) => bail!("server closed the write stream"),
            Err(e) => return Err(e.into()),
        }
    }
    tx.send(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.to_string(),
        total,
        expected,
        offset,
        ..Default::default()
    })
    .await?;
    match responses.message().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!("committing {reference}: {}", e.message())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn layer_labels_as_ctr_sees_them() {
        for (key, layer) in [
            ("containerd.io/gc.ref.content.l.0", true),
            ("containerd.io/gc.ref.content.l.12", true),
            ("containerd.io/gc.ref.content.3", true),
            ("containerd.io/gc.ref.content.0", false),
            ("containerd.io/gc.ref.content.config", false),
            ("containerd.io/gc.ref.content.m.0", false),
            ("containerd.io/gc.ref.snapshot.overlayfs", false),
            ("other", false),
        ] {
            assert_eq!(super::is_layer_label(key), layer, "{key}");
        }
    }
}
