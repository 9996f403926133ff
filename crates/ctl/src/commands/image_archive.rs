//! `berthctl images import|export`: image archives streamed to and from
//! berthd, which reads and writes them (Transfer with import and export
//! streams); on a daemon without a Transfer service (containerd 1.x)
//! berth-client reads and writes them over the Content service. Flow control is containerd's: the receiving side grants bytes
//! with `WindowUpdate`, the sending side sends `Data` within the grants.

use anyhow::{Context, bail};
use berth_api::client::Client;
use berth_api::containerd::types::transfer as tt;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::images::{any, client_side, no_transfer_service, open_stream, platforms_of, transfer};
use crate::context::Global;

/// Bytes berthctl lets berthd have in flight on an export.
const WINDOW: i32 = 1 << 20;

/// `images import` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The archive (an OCI layout or `docker save` tar, optionally gzipped); `-` for stdin.
    file: String,
    /// Name the archive's index (or its only image) as this image too.
    #[arg(long)]
    index_name: Option<String>,
    /// Name entries whose annotation is a bare tag `<base-name>:<tag>`, and
    /// keep only complete names under it (default: `import-<date>`, which
    /// any complete name overrides).
    #[arg(long)]
    base_name: Option<String>,
    /// Import the content of every platform (unpack the host's).
    #[arg(long)]
    all_platforms: bool,
    /// Unpack for this platform instead of the host's (`linux/arm64`).
    #[arg(long)]
    platform: Option<String>,
    /// Snapshotter to unpack into.
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Store the content only; do not unpack.
    #[arg(long)]
    no_unpack: bool,
}

/// `images export` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Where to write the archive; `-` for stdout.
    file: String,
    /// Images to put in it.
    #[arg(required = true)]
    names: Vec<String>,
    /// Only these platforms' manifests (`linux/amd64`); repeatable.
    #[arg(long)]
    platform: Vec<String>,
    /// Every platform's manifests (all must be in the content store).
    #[arg(long)]
    all_platforms: bool,
}

/// Sends `input` as `Data` within the daemon's grants, then ends the stream.
async fn send_archive(
    mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    to_daemon: tokio::sync::mpsc::Sender<prost_types::Any>,
    mut from_daemon: tonic::Streaming<prost_types::Any>,
) -> anyhow::Result<u64> {
    let mut window: i64 = 0;
    let mut sent = 0_u64;
    let mut buf = vec![0_u8; 256 << 10];
    loop {
        while window <= 0 {
            match from_daemon.message().await? {
                Some(m) if m.type_url.ends_with("WindowUpdate") => {
                    window += i64::from(tt::WindowUpdate::decode(m.value.as_slice())?.update);
                }
                Some(_) => {}
                None => bail!("berthd closed the import stream after {sent} bytes"),
            }
        }
        let want = buf.len().min(usize::try_from(window).unwrap_or(buf.len()));
        let n = input.read(&mut buf[..want]).await?;
        if n == 0 {
            // End our side, then wait for berthd to end its: dropping the
            // response early would reset the stream and lose queued data.
            drop(to_daemon);
            while from_daemon.message().await?.is_some() {}
            return Ok(sent);
        }
        to_daemon
            .send(any(&tt::Data {
                data: buf[..n].to_vec(),
            }))
            .await
            .context("the import stream closed")?;
        window -= n as i64;
        sent += n as u64;
    }
}

/// `images import`.
pub(crate) async fn import(global: &Global, args: ImportArgs) -> anyhow::Result<()> {
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if args.file == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("opening {}", args.file))?,
        )
    };
    let client = global.connect().await?;
    let platforms = platforms_of(args.platform.iter())?;
    // ctr's naming: a prefix reference for the archive's entries.
    let (prefix, overwrite) = match &args.base_name {
        Some(b) => (b.clone(), false),
        None => {
            let now = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
            (format!("import-{}", now.get(..10).unwrap_or("today")), true)
        }
    };
    let data = match open_stream(&client, "import").await {
        Ok(d) => d,
        Err(e) if no_transfer_service(&e) => {
            if args.all_platforms {
                bail!("--all-platforms needs the daemon's Transfer service");
            }
            let opts = berth_client::ImportOpts {
                index_name: args.index_name.clone(),
                base_name: Some(prefix),
                allow_overwrite: overwrite,
                unpack: !args.no_unpack,
                snapshotter: args.snapshotter.clone(),
                platform: args.platform.clone(),
            };
            client_side(&client)
                .import(input, opts)
                .await
                .with_context(|| format!("importing {}", args.file))?;
            println!("{}: imported", args.file);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let source = tt::ImageImportStream {
        stream: data.id.clone(),
        ..Default::default()
    };
    let dest = tt::ImageStore {
        name: args.index_name.clone().unwrap_or_default(),
        extra_references: vec![tt::ImageReference {
            name: prefix,
            is_prefix: true,
            allow_overwrite: overwrite,
            ..Default::default()
        }],
        platforms: platforms.clone(),
        all_metadata: args.all_platforms,
        unpacks: if args.no_unpack {
            Vec::new()
        } else {
            vec![tt::UnpackConfiguration {
                platform: platforms.first().cloned(),
                snapshotter: args.snapshotter.clone(),
            }]
        },
        ..Default::default()
    };
    let sender = tokio::spawn(send_archive(input, data.to_daemon, data.from_daemon));
    let result = transfer(&client, any(&source), any(&dest)).await;
    // berthd stops reading at the archive's end marker; whatever the sender
    // still waits for is not needed.
    sender.abort();
    result.with_context(|| format!("importing {}", args.file))?;
    println!("{}: imported", args.file);
    Ok(())
}

/// Writes what berthd streams to `out`, granting it room as it goes.
async fn receive_archive(
    mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    to_daemon: tokio::sync::mpsc::Sender<prost_types::Any>,
    mut from_daemon: tonic::Streaming<prost_types::Any>,
) -> anyhow::Result<u64> {
    to_daemon
        .send(any(&tt::WindowUpdate { update: WINDOW }))
        .await?;
    let (mut received, mut consumed) = (0_u64, 0_i64);
    while let Some(m) = from_daemon.message().await? {
        if !m.type_url.ends_with("Data") {
            continue;
        }
        let d = tt::Data::decode(m.value.as_slice())?;
        out.write_all(&d.data).await?;
        received += d.data.len() as u64;
        consumed += d.data.len() as i64;
        if consumed >= i64::from(WINDOW / 2) {
            let update = i32::try_from(consumed).unwrap_or(WINDOW);
            consumed = 0;
            // berthd may have finished and closed its side: not an error.
            let _ = to_daemon.send(any(&tt::WindowUpdate { update })).await;
        }
    }
    out.flush().await?;
    Ok(received)
}

/// `images export`.
pub(crate) async fn export(global: &Global, args: ExportArgs) -> anyhow::Result<()> {
    let names = args
        .names
        .iter()
        .map(|n| super::images::normalized(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to_stdout = args.file == "-";
    let out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&args.file)
                .await
                .with_context(|| format!("creating {}", args.file))?,
        )
    };
    let client: Client = global.connect().await?;
    let data = match open_stream(&client, "export").await {
        Ok(d) => d,
        Err(e) if no_transfer_service(&e) => {
            let opts = berth_client::ExportOpts {
                platforms: args.platform.clone(),
                all_platforms: args.all_platforms,
            };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let bytes = match client_side(&client).export(&names, out, opts).await {
                Ok(n) => n,
                Err(e) => {
                    if !to_stdout {
                        let _ = std::fs::remove_file(&args.file);
                    }
                    return Err(anyhow::Error::new(e));
                }
            };
            if !to_stdout {
                eprintln!(
                    "{}: {} written",
                    args.file,
                    crate::format::size(i64::try_from(bytes).unwrap_or(i64::MAX))
                );
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let source = tt::ImageStore {
        name: names[0].clone(),
        extra_references: names[1..]
            .iter()
            .map(|n| tt::ImageReference {
                name: n.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let dest = tt::ImageExportStream {
        stream: data.id.clone(),
        platforms: platforms_of(args.platform.iter())?,
        all_platforms: args.all_platforms,
        ..Default::default()
    };
    let receiver = tokio::spawn(receive_archive(out, data.to_daemon, data.from_daemon));
    if let Err(e) = transfer(&client, any(&source), any(&dest)).await {
        receiver.abort();
        if !to_stdout {
            let _ = std::fs::remove_file(&args.file);
        }
        // berthd's answer names the image already.
        if e.chain().any(|c| c.is::<tonic::Status>()) {
            return Err(e);
        }
        return Err(e.context(format!("exporting {}", names.join(", "))));
    }
    let bytes = receiver.await.context("export writer")??;
    if !to_stdout {
        eprintln!(
            "{}: {} written",
            args.file,
            crate::format::size(bytes as i64)
        );
    }
    Ok(())
}
