//! `berthctl run`: create a container from an image (or a root filesystem
//! directory with `--rootfs`) and run its task, as `ctr run` does.

use anyhow::{Context as _, bail};
use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::content::v1 as content_pb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::images::v1 as ipb;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::containerd::types::Mount;
use berth_runtime::spec::{self, ImageProcess, SpecOpt};
use oci_spec::runtime::{LinuxNamespaceType, MountBuilder};
use sha2::Digest as _;

use crate::commands::tasks::start_task;
use crate::context::{Global, clients};

/// Type URL containerd clients give an OCI runtime spec.
pub(crate) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Remove the container when the task exits.
    #[arg(long)]
    rm: bool,
    /// Leave the task running in the background.
    #[arg(short, long)]
    detach: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment variables `KEY=value`.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Extra mounts: `type=bind,src=/host,dst=/ctr,options=rbind:ro`.
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// Share the host's network namespace.
    #[arg(long)]
    net_host: bool,
    /// Runtime name.
    #[arg(long, default_value = "io.containerd.runc.v2")]
    runtime: String,
    /// Snapshotter for the root filesystem.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// The first argument is a root filesystem directory, not an image.
    #[arg(long)]
    rootfs: bool,
    /// Image reference (or, with --rootfs, a directory).
    image: String,
    /// Container id.
    id: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn parse_mount(s: &str) -> anyhow::Result<oci_spec::runtime::Mount> {
    let (mut typ, mut src, mut dst, mut options) =
        ("bind".to_string(), String::new(), String::new(), Vec::new());
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("mount {s:?}: {part:?} is not key=value"))?;
        match k {
            "type" => typ = v.to_string(),
            "src" | "source" => src = v.to_string(),
            "dst" | "destination" | "target" => dst = v.to_string(),
            "options" => options = v.split(':').map(str::to_string).collect(),
            other => bail!("mount {s:?}: unknown key {other:?} (type, src, dst, options)"),
        }
    }
    if dst.is_empty() {
        bail!("mount {s:?}: dst is required");
    }
    Ok(MountBuilder::default()
        .typ(typ)
        .source(src)
        .destination(dst)
        .options(options)
        .build()?)
}

/// Reads a whole blob through the Content service.
pub(crate) async fn read_blob(
    content: &mut ContentClient<clients::Chan>,
    digest: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = content
        .read(content_pb::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await
        .with_context(|| format!("reading blob {digest}"))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await? {
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

/// The host platform's architecture as OCI names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The image's process settings and the chain ID of its top layer.
pub(crate) async fn image_parts(
    client: &berth_api::client::Client,
    name: &str,
) -> anyhow::Result<(ImageProcess, String)> {
    let mut images = ImagesClient::with_interceptor(client.channel(), client.interceptor());
    let image = images
        .get(ipb::GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("image {name:?}: {} (pull it first)", e.message()))?
        .into_inner()
        .image
        .unwrap_or_default();
    image_parts_for(client, &image.target.unwrap_or_default())
        .await
        .with_context(|| format!("image {name:?}"))
}

/// [`image_parts`] of an image given by its target descriptor.
pub(crate) async fn image_parts_for(
    client: &berth_api::client::Client,
    target: &berth_api::containerd::types::Descriptor,
) -> anyhow::Result<(ImageProcess, String)> {
    let name = &target.digest;
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let mut digest = target.digest.clone();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&read_blob(&mut content, &digest).await?)?;
    // Indexes (possibly nested): the host's entry, or one with no platform.
    let mut depth = 0;
    while manifest["manifests"].is_array() {
        depth += 1;
        if depth > 4 {
            bail!("image {name:?}: indexes nested too deep");
        }
        let entries: Vec<&serde_json::Value> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let chosen = entries
            .iter()
            .find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch()
            })
            .or_else(|| entries.iter().find(|m| m["platform"].is_null()))
            .with_context(|| format!("image {name:?} has no linux/{} manifest", host_arch()))?;
        digest = chosen["digest"].as_str().unwrap_or_default().to_string();
        manifest = serde_json::from_slice(&read_blob(&mut content, &digest).await?)?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .with_context(|| format!("manifest {digest} has no config"))?;
    let config: serde_json::Value =
        serde_json::from_slice(&read_blob(&mut content, config_digest).await?)?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let c = &config["config"];
    let process = ImageProcess {
        env: strings(&c["Env"]),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
        user: c["User"].as_str().unwrap_or_default().to_string(),
    };
    let mut chain = String::new();
    for diff_id in strings(&config["rootfs"]["diff_ids"]) {
        chain = if chain.is_empty() {
            diff_id
        } else {
            format!(
                "sha256:{:x}",
                sha2::Sha256::digest(format!("{chain} {diff_id}").as_bytes())
            )
        };
    }
    if chain.is_empty() {
        bail!("image {name:?} has no layers");
    }
    Ok((process, chain))
}

/// The mounts of prepared snapshots, as a task's `rootfs`.
pub(crate) fn mounts_to_proto(m: Vec<spb::PrepareSnapshotResponse>) -> Vec<Mount> {
    m.into_iter().flat_map(|r| r.mounts).collect()
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    let ns = global.namespace();
    let mut opts: Vec<SpecOpt> = Vec::new();
    let mut snapshot_key = String::new();
    let mut rootfs_mounts = Vec::new();
    let mut image_name = String::new();
    if args.rootfs {
        let path = std::fs::canonicalize(&args.image)
            .with_context(|| format!("root filesystem {:?}", args.image))?;
        opts.push(Box::new(move |s: &mut oci_spec::runtime::Spec| {
            s.set_root(Some(
                oci_spec::runtime::RootBuilder::default()
                    .path(path)
                    .readonly(false)
                    .build()?,
            ));
            Ok(())
        }));
    } else {
        let (process, chain) = image_parts(&client, &args.image).await?;
        opts.push(spec::with_image_config(process));
        let mut snapshots =
            SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
        let prepared = snapshots
            .prepare(spb::PrepareSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.id.clone(),
                parent: chain.clone(),
                labels: Default::default(),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "preparing the root filesystem on {chain}: {} (is the image unpacked for {}?)",
                    e.message(),
                    args.snapshotter
                )
            })?
            .into_inner();
        rootfs_mounts = mounts_to_proto(vec![prepared]);
        snapshot_key = args.id.clone();
        image_name = args.image.clone();
    }
    if !args.args.is_empty() {
        opts.push(spec::with_process_args(args.args.clone()));
    }
    if !args.env.is_empty() {
        opts.push(spec::with_env(args.env.clone()));
    }
    if args.tty {
        opts.push(spec::with_tty(true));
    }
    if !args.mounts.is_empty() {
        let mounts = args
            .mounts
            .iter()
            .map(|m| parse_mount(m))
            .collect::<anyhow::Result<Vec<_>>>()?;
        opts.push(spec::with_mounts(mounts));
    }
    if args.net_host {
        opts.push(spec::with_host_namespace(LinuxNamespaceType::Network));
    }
    let spec = spec::generate(&args.id, &ns, opts)?;
    let mut containers = clients::containers(&client);
    containers
        .create(cpb::CreateContainerRequest {
            container: Some(cpb::Container {
                id: args.id.clone(),
                image: image_name,
                runtime: Some(cpb::container::Runtime {
                    name: args.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_string(),
                    value: serde_json::to_vec(&spec)?,
                }),
                snapshotter: if snapshot_key.is_empty() {
                    String::new()
                } else {
                    args.snapshotter.clone()
                },
                snapshot_key: snapshot_key.clone(),
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("creating container {:?}", args.id))?;
    let status = start_task(&client, &args.id, args.tty, args.detach, rootfs_mounts).await;
    if args.detach {
        return status.map(|_| ());
    }
    let mut tasks = clients::tasks(&client);
    let _ = tasks
        .delete(tpb::DeleteTaskRequest {
            container_id: args.id.clone(),
        })
        .await;
    if args.rm {
        containers
            .delete(cpb::DeleteContainerRequest {
                id: args.id.clone(),
            })
            .await?;
        if !snapshot_key.is_empty() {
            let mut snapshots =
                SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
            let _ = snapshots
                .remove(spb::RemoveSnapshotRequest {
                    snapshotter: args.snapshotter,
                    key: snapshot_key,
                })
                .await;
        }
    }
    let status = status?;
    if status != 0 {
        return Err(crate::ExitStatus(i32::try_from(status).unwrap_or(1)).into());
    }
    Ok(())
}
