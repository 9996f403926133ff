//! `berthctl images mount|unmount|usage`: an image's root filesystem on a
//! host path through a snapshot (a view, or an active snapshot with
//! `--rw`) held by a lease named after the target, as `ctr images mount`.

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::services::images::v1 as ipb;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::leases::v1 as lpb;
use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::types::Descriptor;

use crate::commands::unpack;
use crate::context::Global;
use crate::{format, table};

/// `images mount` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct MountArgs {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// Mount an active (writable) snapshot instead of a view.
    #[arg(long)]
    rw: bool,
    /// Image reference.
    reference: String,
    /// Where to mount it.
    target: String,
}

/// `images unmount` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct UnmountArgs {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// Remove the snapshot (and its lease) after unmounting.
    #[arg(long)]
    rm: bool,
    /// The mount point.
    target: String,
}

/// `images usage` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct UsageArgs {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// Image reference.
    reference: String,
}

/// The image record `name`, by its exact name as ctr looks it up.
pub(crate) async fn image_target(client: &Client, name: &str) -> anyhow::Result<Descriptor> {
    let mut images = ImagesClient::with_interceptor(client.channel(), client.interceptor());
    let image = images
        .get(ipb::GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .image
        .unwrap_or_default();
    Ok(image.target.unwrap_or_default())
}

/// `images mount`: unpacks what is missing, prints the chain ID, mounts.
pub(crate) async fn mount(global: &Global, args: MountArgs) -> anyhow::Result<()> {
    let base = global.connect().await?;
    let target = args.target.clone();
    let mut leases = LeasesClient::with_interceptor(base.channel(), base.interceptor());
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    let created = leases
        .create(lpb::CreateRequest {
            id: target.clone(),
            labels: [
                (
                    "containerd.io/gc.expire".to_string(),
                    humantime::format_rfc3339_seconds(at).to_string(),
                ),
                (
                    format!("containerd.io/gc.ref.snapshot.{}", args.snapshotter),
                    target.clone(),
                ),
            ]
            .into(),
        })
        .await;
    let new_lease = match created {
        Ok(_) => true,
        Err(e) if e.code() == tonic::Code::AlreadyExists => false,
        Err(e) => return Err(e).context("creating the mount's lease"),
    };
    let client = base.clone().with_lease(target.clone());
    let result = mount_leased(&client, &args).await;
    if result.is_err() && new_lease {
        let _ = leases
            .delete(lpb::DeleteRequest {
                id: target,
                sync: false,
            })
            .await;
    }
    result
}

async fn mount_leased(client: &Client, args: &MountArgs) -> anyhow::Result<()> {
    let image = unpack::image_layers(client, &image_target(client, &args.reference).await?).await?;
    let chain = unpack::unpack(client, &args.snapshotter, &image)
        .await
        .context("error unpacking image")?;
    println!("{chain}");
    let mut snapshots = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let made = if args.rw {
        snapshots
            .prepare(spb::PrepareSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.target.clone(),
                parent: chain.clone(),
                labels: Default::default(),
            })
            .await
            .map(|r| r.into_inner().mounts)
    } else {
        snapshots
            .view(spb::ViewSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.target.clone(),
                parent: chain.clone(),
                labels: Default::default(),
            })
            .await
            .map(|r| r.into_inner().mounts)
    };
    let mounts = match made {
        Ok(m) => m,
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            snapshots
                .mounts(spb::MountsRequest {
                    snapshotter: args.snapshotter.clone(),
                    key: args.target.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                .into_inner()
                .mounts
        }
        Err(e) => bail!("{}", e.message()),
    };
    let mounts: Vec<berth_snapshots::Mount> = mounts
        .into_iter()
        .map(berth_snapshots::proxy::mount_from_proto)
        .collect();
    if let Err(e) = berth_snapshots::mount::mount_all(&mounts, &args.target) {
        if let Err(r) = snapshots
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.target.clone(),
            })
            .await
            && r.code() != tonic::Code::NotFound
        {
            eprintln!(
                "Error cleaning up snapshot after mount error: {}",
                r.message()
            );
        }
        return Err(anyhow::Error::from(e).context(format!("mounting on {}", args.target)));
    }
    println!("{}", args.target);
    Ok(())
}

/// `images unmount`: unmounts everything at the target; `--rm` drops the
/// lease and the snapshot.
pub(crate) async fn unmount(global: &Global, args: UnmountArgs) -> anyhow::Result<()> {
    let client = global.connect().await?;
    berth_snapshots::mount::unmount_all(&args.target)
        .with_context(|| format!("unmounting {}", args.target))?;
    if args.rm {
        let mut leases = LeasesClient::with_interceptor(client.channel(), client.interceptor());
        if let Err(e) = leases
            .delete(lpb::DeleteRequest {
                id: args.target.clone(),
                sync: false,
            })
            .await
            && e.code() != tonic::Code::NotFound
        {
            bail!("error deleting lease: {}", e.message());
        }
        let mut snapshots =
            SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
        if let Err(e) = snapshots
            .remove(spb::RemoveSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.target.clone(),
            })
            .await
            && e.code() != tonic::Code::NotFound
        {
            bail!("error removing snapshot: {}", e.message());
        }
    }
    println!("{}", args.target);
    Ok(())
}

/// `images usage`: size and inodes of each snapshot of the image's chain,
/// top first (ctr 2.x).
pub(crate) async fn usage(global: &Global, args: UsageArgs) -> anyhow::Result<()> {
    let client = global.connect().await?;
    let reference = &args.reference;
    let target = image_target(&client, reference)
        .await
        .with_context(|| format!("failed to ensure if image {reference} exists"))?;
    let image = unpack::image_layers(&client, &target).await?;
    let sn = args.snapshotter.clone();
    let mut snapshots = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let mut key = image.chain.last().cloned().unwrap_or_default();
    if snapshots
        .stat(spb::StatSnapshotRequest {
            snapshotter: sn.clone(),
            key: key.clone(),
        })
        .await
        .is_err()
    {
        bail!("image {reference} isn't unpacked in snapshotter {sn}");
    }
    let mut rows = vec![vec!["KEY".into(), "SIZE".into(), "INODES".into()]];
    while !key.is_empty() {
        let u = snapshots
            .usage(spb::UsageRequest {
                snapshotter: sn.clone(),
                key: key.clone(),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!("failed to get usage for snapshot {key}: {}", e.message())
            })?
            .into_inner();
        let info = snapshots
            .stat(spb::StatSnapshotRequest {
                snapshotter: sn.clone(),
                key: key.clone(),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "failed to ensure if snapshot {key} has parent or not: {}",
                    e.message()
                )
            })?
            .into_inner()
            .info
            .unwrap_or_default();
        rows.push(vec![key, format::size(u.size), u.inodes.to_string()]);
        key = info.parent;
    }
    print!("{}", table::render(&rows, 1));
    Ok(())
}
