//! `berthctl snapshots diff|unpack`: a layer from the difference of two
//! snapshots (the Diff service's Compare, as containerd's `rootfs.CreateDiff`),
//! and an image's layers applied to snapshots.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::services::content::v1 as cpb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::diff::v1 as dpb;
use berth_api::containerd::services::diff::v1::diff_client::DiffClient;
use berth_api::containerd::services::images::v1 as ipb;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::types::{Descriptor, Mount};

use crate::commands::unpack;
use crate::context::Global;

/// The gzip layer media type ctr's diff defaults to.
const LAYER_GZIP: &str = berth_images::media::OCI_LAYER_GZIP;

/// `snapshots diff` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// Media type of the diff.
    #[arg(long, default_value = LAYER_GZIP)]
    media_type: String,
    /// Content upload reference to use.
    #[arg(long = "ref", default_value = "")]
    reference: String,
    /// Keep the diff in the content store (a gc root; up to you to delete it).
    #[arg(long)]
    keep: bool,
    /// Labels `key=value` for the diff's content.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The snapshot whose changes to take.
    id_a: String,
    /// The snapshot to compare with (default: `id_a`'s parent).
    id_b: Option<String>,
}

/// `snapshots unpack` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct UnpackArgs {
    /// Digest of the image's target (its manifest or index).
    digest: String,
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// Mounts of `key`: its own if active, else of a temporary view (returned
/// so the caller removes it).
async fn mounts_of(
    sn: &mut SnapshotsClient<crate::context::clients::Chan>,
    snapshotter: &str,
    key: &str,
) -> anyhow::Result<(Vec<Mount>, Option<String>)> {
    let info = sn
        .stat(spb::StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .info
        .unwrap_or_default();
    if info.kind == spb::Kind::Active as i32 {
        let m = sn
            .mounts(spb::MountsRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
            .into_inner()
            .mounts;
        return Ok((m, None));
    }
    let view = format!("{key}-view-{}", unique());
    let m = sn
        .view(spb::ViewSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: view.clone(),
            parent: key.to_string(),
            labels: HashMap::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .mounts;
    Ok((m, Some(view)))
}

async fn remove_view(
    sn: &mut SnapshotsClient<crate::context::clients::Chan>,
    snapshotter: &str,
    view: Option<String>,
) {
    if let Some(key) = view {
        let _ = sn
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key,
            })
            .await;
    }
}

/// The diff of snapshot `a` against `b` (default: `a`'s parent, through a
/// temporary view), computed and stored by the Diff service.
pub(crate) async fn create_diff(
    client: &Client,
    snapshotter: &str,
    a: &str,
    b: Option<&str>,
    request: dpb::DiffRequest,
) -> anyhow::Result<Descriptor> {
    let mut sn = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let (lower, lower_view) = match b {
        Some(b) => mounts_of(&mut sn, snapshotter, b).await?,
        None => {
            let parent = sn
                .stat(spb::StatSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: a.to_string(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                .into_inner()
                .info
                .unwrap_or_default()
                .parent;
            let view = format!("{parent}-parent-view-{}", unique());
            let m = sn
                .view(spb::ViewSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: view.clone(),
                    parent,
                    labels: HashMap::new(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                .into_inner()
                .mounts;
            (m, Some(view))
        }
    };
    let upper = mounts_of(&mut sn, snapshotter, a).await;
    let (upper, upper_view) = match upper {
        Ok(u) => u,
        Err(e) => {
            remove_view(&mut sn, snapshotter, lower_view).await;
            return Err(e);
        }
    };
    let mut diff = DiffClient::with_interceptor(client.channel(), client.interceptor());
    let made = diff
        .diff(dpb::DiffRequest {
            left: lower,
            right: upper,
            ..request
        })
        .await;
    remove_view(&mut sn, snapshotter, upper_view).await;
    remove_view(&mut sn, snapshotter, lower_view).await;
    let made = made.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    made.into_inner()
        .diff
        .context("the diff service returned no descriptor")
}

/// `snapshots diff`: writes the diff's content to stdout.
pub(crate) async fn diff(global: &Global, snapshotter: &str, args: DiffArgs) -> anyhow::Result<()> {
    let base = global.connect().await?;
    let lease = crate::commands::leases::temporary(&base).await?;
    let client = base.clone().with_lease(lease.clone());
    let result = async {
        let mut labels = crate::format::parse_labels(&args.labels);
        if args.keep {
            labels.insert(
                "containerd.io/gc.root".to_string(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            );
        }
        let desc = create_diff(
            &client,
            snapshotter,
            &args.id_a,
            args.id_b.as_deref(),
            dpb::DiffRequest {
                media_type: args.media_type.clone(),
                r#ref: args.reference.clone(),
                labels,
                ..Default::default()
            },
        )
        .await?;
        let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
        let mut stream = content
            .read(cpb::ReadContentRequest {
                digest: desc.digest.clone(),
                offset: 0,
                size: 0,
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await? {
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        Ok(())
    }
    .await;
    crate::commands::leases::release(&base, &lease).await;
    result
}

/// `snapshots unpack`: unpacks the image whose target is `digest`.
pub(crate) async fn unpack(
    global: &Global,
    snapshotter: &str,
    args: UnpackArgs,
) -> anyhow::Result<()> {
    let base = global.connect().await?;
    if !args.digest.contains(':') {
        bail!("invalid checksum digest format");
    }
    let mut images = ImagesClient::with_interceptor(base.channel(), base.interceptor());
    let list = images
        .list(ipb::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    let Some(target) = list
        .into_iter()
        .filter_map(|i| i.target)
        .find(|t| t.digest == args.digest)
    else {
        bail!("manifest not found");
    };
    let lease = crate::commands::leases::temporary(&base).await?;
    let client = base.clone().with_lease(lease.clone());
    print!("unpacking {} ({})...", args.digest, target.media_type);
    let _ = std::io::stdout().flush();
    let result = async {
        let layers = unpack::image_layers(&client, &target).await?;
        unpack::unpack(&client, snapshotter, &layers).await
    }
    .await;
    crate::commands::leases::release(&base, &lease).await;
    match result {
        Ok(_) => {
            println!("done");
            Ok(())
        }
        Err(e) => {
            println!();
            Err(e)
        }
    }
}
