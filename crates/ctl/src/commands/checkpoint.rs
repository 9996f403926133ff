//! `berthctl tasks checkpoint`, `containers checkpoint|restore`: CRIU
//! checkpoints through the Tasks service, stored as an OCI index image the
//! way containerd's client writes them (same media types and annotations),
//! so ctr and berthctl can restore each other's checkpoints.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use berth_api::client::Client;
use berth_api::containerd::runc::v1::CheckpointOptions;
use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::diff::v1 as dpb;
use berth_api::containerd::services::images::v1 as ipb;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::containerd::types::Descriptor;
use berth_api::containerd::v1::types::Status as TaskStatus;
use berth_images::media;
use prost::Message as _;

use crate::commands::{blob, images::any, run, snapshot_diff, unpack};
use crate::context::{Global, clients};

const IMAGE_NAME: &str = "org.opencontainers.image.ref.name";
const RUNTIME_NAME: &str = "io.containerd.checkpoint.runtime";
const SNAPSHOTTER_NAME: &str = "io.containerd.checkpoint.snapshotter";
const CHECKPOINT_OPTIONS: &str = media::CONTAINERD_CHECKPOINT_OPTIONS;
const RUNTIME_OPTIONS: &str = media::CONTAINERD_CHECKPOINT_RUNTIME_OPTIONS;
const CHECKPOINT_CONFIG: &str = media::CONTAINERD_CHECKPOINT_CONFIG;
const LAYER_GZIP: &str = media::OCI_LAYER_GZIP;
const INDEX: &str = media::OCI_INDEX;

/// `tasks checkpoint` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct TaskCheckpointArgs {
    /// Stop the container after the checkpoint.
    #[arg(long)]
    exit: bool,
    /// Path to criu image files (no checkpoint image is made).
    #[arg(long, default_value = "")]
    image_path: String,
    /// Path to criu work files and logs.
    #[arg(long, default_value = "")]
    work_path: String,
    /// Container id.
    id: String,
}

/// `containers checkpoint` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ContainerCheckpointArgs {
    /// Include the rw layer in the checkpoint.
    #[arg(long)]
    rw: bool,
    /// Include the image in the checkpoint.
    #[arg(long)]
    image: bool,
    /// Checkpoint the container's task.
    #[arg(long)]
    task: bool,
    /// Container id.
    id: String,
    /// Name of the checkpoint image.
    reference: String,
}

/// `containers restore` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// Restore the rw layer from the checkpoint.
    #[arg(long)]
    rw: bool,
    /// Restore the runtime and memory data from the checkpoint.
    #[arg(long)]
    live: bool,
    /// Container id.
    id: String,
    /// Name of the checkpoint image.
    reference: String,
}

/// An index entry for this platform, as containerd adds checkpoint parts.
fn with_platform(mut v: serde_json::Value) -> serde_json::Value {
    v["platform"] = serde_json::json!({"architecture": run::host_arch(), "os": "linux"});
    v
}

/// The index as containerd's client encodes it (field order of Go's structs).
/// `newline`: the task's index ends with one (json.Encoder), the
/// container's not (json.Marshal).
fn index_bytes(
    manifests: &[serde_json::Value],
    annotations: &HashMap<String, String>,
    newline: bool,
) -> Vec<u8> {
    let entries: Vec<String> = manifests
        .iter()
        .map(|m| {
            let mut s = format!(
                "{{\"mediaType\":{},\"digest\":{},\"size\":{}",
                m["mediaType"], m["digest"], m["size"]
            );
            if m["annotations"].is_object() {
                s.push_str(&format!(",\"annotations\":{}", m["annotations"]));
            }
            if m["platform"].is_object() {
                s.push_str(&format!(
                    ",\"platform\":{{\"architecture\":{},\"os\":{}}}",
                    m["platform"]["architecture"], m["platform"]["os"]
                ));
            }
            s.push('}');
            s
        })
        .collect();
    let mut s = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{}]",
        entries.join(",")
    );
    if !annotations.is_empty() {
        s.push_str(&format!(
            ",\"annotations\":{}",
            serde_json::json!(annotations)
        ));
    }
    s.push('}');
    if newline {
        s.push('\n');
    }
    s.into_bytes()
}

/// Writes the index with gc references to what it lists.
async fn write_index(
    client: &Client,
    reference: &str,
    manifests: &[serde_json::Value],
    annotations: &HashMap<String, String>,
    newline: bool,
) -> anyhow::Result<Descriptor> {
    let labels = manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("containerd.io/gc.ref.content.{i}"),
                m["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    blob::write(
        client,
        INDEX,
        reference,
        index_bytes(manifests, annotations, newline),
        labels,
    )
    .await
}

async fn task_status(client: &Client, id: &str) -> anyhow::Result<Option<i32>> {
    match clients::tasks(client)
        .get(tpb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner().process.unwrap_or_default().status)),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => bail!("{}", e.message()),
    }
}

async fn container(client: &Client, id: &str) -> anyhow::Result<cpb::Container> {
    Ok(clients::containers(client)
        .get(cpb::GetContainerRequest { id: id.to_string() })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// Calls Tasks.Checkpoint; returns its descriptors as index entries.
async fn checkpoint_task(
    client: &Client,
    id: &str,
    options: &CheckpointOptions,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let response = clients::tasks(client)
        .checkpoint(tpb::CheckpointTaskRequest {
            container_id: id.to_string(),
            parent_checkpoint: String::new(),
            options: Some(any(options)),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner();
    Ok(response
        .descriptors
        .iter()
        .map(|d| with_platform(blob::descriptor_json(d)))
        .collect())
}

async fn pause(client: &Client, id: &str) -> anyhow::Result<()> {
    clients::tasks(client)
        .pause(tpb::PauseTaskRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(())
}

async fn resume(client: &Client, id: &str) {
    if let Err(e) = clients::tasks(client)
        .resume(tpb::ResumeTaskRequest {
            container_id: id.to_string(),
        })
        .await
    {
        println!("error resuming task: {}", e.message());
    }
}

/// Go's `01-02-2006-15:04:05` of now (UTC), as checkpoint names use.
fn checkpoint_date() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // 2006-01-02T15:04:05Z
    format!("{}-{}-{}-{}", &t[5..7], &t[8..10], &t[0..4], &t[11..19])
}

async fn create_image(
    client: &Client,
    name: &str,
    target: Descriptor,
    labels: HashMap<String, String>,
) -> anyhow::Result<()> {
    ImagesClient::with_interceptor(client.channel(), client.interceptor())
        .create(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: name.to_string(),
                labels,
                target: Some(target),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(())
}

/// `tasks checkpoint`: pauses the task, checkpoints it with CRIU, resumes
/// it, and stores the checkpoint as image `containerd.io/checkpoint/<id>:<date>`.
pub(crate) async fn task_checkpoint(
    global: &Global,
    args: TaskCheckpointArgs,
) -> anyhow::Result<()> {
    let base = global.connect().await?;
    let lease = crate::commands::leases::temporary(&base).await?;
    let client = base.clone().with_lease(lease.clone());
    let result = task_checkpoint_leased(&client, &args).await;
    crate::commands::leases::release(&base, &lease).await;
    if let Some(name) = result? {
        println!("{name}");
    }
    Ok(())
}

async fn task_checkpoint_leased(
    client: &Client,
    args: &TaskCheckpointArgs,
) -> anyhow::Result<Option<String>> {
    let id = &args.id;
    let c = container(client, id).await?;
    let Some(status) = task_status(client, id).await? else {
        bail!("no running task found: task {id} not found");
    };
    let runc = matches!(
        c.runtime.as_ref().map(|r| r.name.as_str()),
        Some("io.containerd.runc.v1" | "io.containerd.runc.v2")
    );
    let options = CheckpointOptions {
        exit: args.exit && runc,
        image_path: if runc {
            args.image_path.clone()
        } else {
            String::new()
        },
        work_path: if runc {
            args.work_path.clone()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let paused = status != TaskStatus::Paused as i32;
    if paused {
        pause(client, id).await?;
    }
    let result = async {
        let mut manifests = checkpoint_task(client, id, &options).await?;
        if !options.image_path.is_empty() {
            return Ok(None);
        }
        let mut annotations = HashMap::new();
        if !c.image.is_empty() {
            manifests.push(blob::descriptor_json(
                &image_target(client, &c.image).await?,
            ));
            annotations.insert("image.name".to_string(), c.image.clone());
        }
        if !c.snapshot_key.is_empty() {
            let rw = snapshot_diff::create_diff(
                client,
                &c.snapshotter,
                &c.snapshot_key,
                None,
                dpb::DiffRequest {
                    r#ref: format!("checkpoint-rw-{}", c.snapshot_key),
                    ..Default::default()
                },
            )
            .await?;
            manifests.push(with_platform(blob::descriptor_json(&rw)));
        }
        let index = write_index(client, id, &manifests, &annotations, true).await?;
        let name = format!("containerd.io/checkpoint/{id}:{}", checkpoint_date());
        create_image(
            client,
            &name,
            index,
            [("containerd.io/checkpoint".to_string(), "true".to_string())].into(),
        )
        .await?;
        Ok(Some(name))
    }
    .await;
    if paused {
        let _ = clients::tasks(client)
            .resume(tpb::ResumeTaskRequest {
                container_id: id.clone(),
            })
            .await;
    }
    result
}

async fn image_target(client: &Client, name: &str) -> anyhow::Result<Descriptor> {
    crate::commands::image_mount::image_target(client, name).await
}

/// `containers checkpoint`: the container's runtime options and, on
/// request, its image, rw layer and task, as image `reference`.
pub(crate) async fn container_checkpoint(
    global: &Global,
    args: ContainerCheckpointArgs,
) -> anyhow::Result<()> {
    let base = global.connect().await?;
    let c = container(&base, &args.id).await?;
    let running = task_status(&base, &args.id).await?.is_some();
    if running {
        pause(&base, &args.id).await?;
    }
    let lease = crate::commands::leases::temporary(&base).await?;
    let client = base.clone().with_lease(lease.clone());
    let result = container_checkpoint_leased(&client, &c, &args).await;
    crate::commands::leases::release(&base, &lease).await;
    if running {
        resume(&base, &args.id).await;
    }
    result
}

async fn container_checkpoint_leased(
    client: &Client,
    c: &cpb::Container,
    args: &ContainerCheckpointArgs,
) -> anyhow::Result<()> {
    // As containerd's client, the image must exist even when not included.
    image_target(client, &c.image).await?;
    let runtime = c.runtime.clone().unwrap_or_default();
    let annotations: HashMap<String, String> = [
        (IMAGE_NAME.to_string(), c.image.clone()),
        (RUNTIME_NAME.to_string(), runtime.name.clone()),
        (SNAPSHOTTER_NAME.to_string(), c.snapshotter.clone()),
    ]
    .into();
    let mut manifests = Vec::new();
    if let Some(options) = &runtime.options {
        let d = blob::write(
            client,
            RUNTIME_OPTIONS,
            &format!("{}-runtime-options", c.id),
            options.encode_to_vec(),
            HashMap::new(),
        )
        .await?;
        manifests.push(with_platform(blob::descriptor_json(&d)));
    }
    if args.image {
        manifests.push(blob::descriptor_json(
            &image_target(client, &c.image).await?,
        ));
    }
    if args.rw {
        let rw = snapshot_diff::create_diff(
            client,
            &c.snapshotter,
            &c.snapshot_key,
            None,
            dpb::DiffRequest {
                r#ref: format!("checkpoint-rw-{}", c.snapshot_key),
                ..Default::default()
            },
        )
        .await?;
        manifests.push(with_platform(blob::descriptor_json(&rw)));
    }
    if args.task {
        let options = CheckpointOptions {
            file_locks: true,
            ..Default::default()
        };
        manifests.extend(checkpoint_task(client, &c.id, &options).await?);
        let d = blob::write(
            client,
            CHECKPOINT_OPTIONS,
            &format!("{}-checkpoint-options", c.id),
            any(&options).encode_to_vec(),
            HashMap::new(),
        )
        .await?;
        manifests.push(with_platform(blob::descriptor_json(&d)));
    }
    let index = write_index(
        client,
        &format!("{}index", c.id),
        &manifests,
        &annotations,
        false,
    )
    .await?;
    create_image(client, &args.reference, index, HashMap::new()).await
}

/// `containers restore`: a container (and started task; with `--live`
/// from the checkpoint's CRIU image) from checkpoint image `reference`.
pub(crate) async fn restore(global: &Global, args: RestoreArgs) -> anyhow::Result<()> {
    let base = global.connect().await?;
    let lease = crate::commands::leases::temporary(&base).await?;
    let result = restore_leased(&base.clone().with_lease(lease.clone()), &args).await;
    crate::commands::leases::release(&base, &lease).await;
    result
}

async fn restore_leased(client: &Client, args: &RestoreArgs) -> anyhow::Result<()> {
    let client = client.clone();
    let target = image_target(&client, &args.reference).await?;
    let mut content = berth_api::containerd::services::content::v1::content_client::ContentClient::with_interceptor(
        client.channel(),
        client.interceptor(),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&run::read_blob(&mut content, &target.digest).await?)?;
    let annotation = |k: &str| {
        index["annotations"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let find = |mt: &str| {
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mediaType"] == mt)
            .cloned()
    };
    let image = annotation(IMAGE_NAME);
    if image.is_empty() {
        bail!("image name not found in index");
    }
    let snapshotter = annotation(SNAPSHOTTER_NAME);
    let layers = unpack::image_layers(&client, &image_target(&client, &image).await?).await?;
    let parent = layers.chain.last().cloned().unwrap_or_default();
    let mut sn = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    sn.prepare(spb::PrepareSnapshotRequest {
        snapshotter: snapshotter.clone(),
        key: args.id.clone(),
        parent,
        labels: HashMap::new(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let spec_entry = find(CHECKPOINT_CONFIG).context("media type not found")?;
    let spec_bytes = run::read_blob(
        &mut content,
        spec_entry["digest"].as_str().unwrap_or_default(),
    )
    .await?;
    let spec = prost_types::Any::decode(spec_bytes.as_slice())?;
    if !index["annotations"][RUNTIME_NAME].is_string() {
        bail!("runtime not found in index");
    }
    let runtime_options = match find(RUNTIME_OPTIONS) {
        Some(m) => {
            let data = run::read_blob(&mut content, m["digest"].as_str().unwrap_or_default())
                .await
                .context("unable to read checkpoint runtime")?;
            Some(prost_types::Any::decode(data.as_slice())?)
        }
        None => Some(prost_types::Any::default()),
    };
    if args.rw {
        let rw = find(LAYER_GZIP).context("media type not found")?;
        let mounts = sn
            .mounts(spb::MountsRequest {
                snapshotter: snapshotter.clone(),
                key: args.id.clone(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
            .into_inner()
            .mounts;
        berth_api::containerd::services::diff::v1::diff_client::DiffClient::with_interceptor(
            client.channel(),
            client.interceptor(),
        )
        .apply(dpb::ApplyRequest {
            diff: Some(json_descriptor(&rw)),
            mounts,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    }
    clients::containers(&client)
        .create(cpb::CreateContainerRequest {
            container: Some(cpb::Container {
                id: args.id.clone(),
                image,
                runtime: Some(cpb::container::Runtime {
                    name: annotation(RUNTIME_NAME),
                    options: runtime_options,
                }),
                spec: Some(spec),
                snapshotter,
                snapshot_key: args.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let rootfs = crate::commands::tasks::container_rootfs(&client, &args.id).await?;
    let mut tasks = clients::tasks(&client);
    tasks
        .create(tpb::CreateTaskRequest {
            container_id: args.id.clone(),
            rootfs,
            checkpoint: args.live.then(|| target.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    tasks
        .start(tpb::StartRequest {
            container_id: args.id.clone(),
            exec_id: String::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(())
}

fn json_descriptor(v: &serde_json::Value) -> Descriptor {
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_i64().unwrap_or_default(),
        annotations: HashMap::new(),
    }
}
