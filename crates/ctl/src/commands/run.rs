//! `berthctl run`: create a container from an image (or a root filesystem
//! directory with `--rootfs`) and run its task, as `ctr run` does.

use anyhow::{Context as _, bail};
use berth_api::containerd::services::containers::v1 as cpb;
use berth_api::containerd::services::content::v1 as content_pb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::snapshots::v1 as spb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::services::tasks::v1 as tpb;
use berth_api::containerd::types::Mount;
use berth_spec::{self as spec, ImageProcess, SpecOpt};
use oci_spec::runtime::{LinuxNamespaceType, MountBuilder};

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
    /// Files of `KEY=value` lines (`#` comments and blank lines skipped).
    #[arg(long = "env-file")]
    env_files: Vec<std::path::PathBuf>,
    /// Container labels `key=value`.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Spec annotations `key=value`.
    #[arg(long = "annotation")]
    annotations: Vec<String>,
    /// Extra mounts: `type=bind,src=/host,dst=/ctr,options=rbind:ro`.
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// Share the host's network namespace.
    #[arg(long)]
    net_host: bool,
    /// Join an existing namespace: `type:path` (e.g. `network:/proc/1/ns/net`).
    #[arg(long = "with-ns")]
    with_ns: Vec<String>,
    /// User: `uid`, `name`, `uid:gid` or `name:group` (names from the
    /// image's /etc/passwd and /etc/group).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory of the process.
    #[arg(long)]
    cwd: Option<String>,
    /// Hostname of the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Every capability, no masked paths, all devices allowed.
    #[arg(long)]
    privileged: bool,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Add capabilities (`NET_ADMIN`, `CAP_SYS_TIME`, `ALL`).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop capabilities.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory_limit: Option<i64>,
    /// CPUs' worth of time (`1.5`).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPUs to run on (`0-1,3`).
    #[arg(long, default_value = "")]
    cpuset_cpus: String,
    /// Memory nodes to use.
    #[arg(long, default_value = "")]
    cpuset_mems: String,
    /// Cgroup path (default `/<namespace>/<id>`).
    #[arg(long)]
    cgroup: Option<String>,
    /// Runtime name (or an absolute path to a shim binary).
    #[arg(long, default_value = "io.containerd.runc.v2")]
    runtime: String,
    /// The runc binary the runc shim uses.
    #[arg(long)]
    runc_binary: Option<String>,
    /// runc's state root.
    #[arg(long)]
    runc_root: Option<String>,
    /// Let runc manage cgroups through systemd.
    #[arg(long)]
    runc_systemd_cgroup: bool,
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

/// `KEY=value` lines of an env file, as ctr reads them.
fn read_env_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading env file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The runc options the `--runc-*` flags ask for, as the runtime's
/// `Any` (`containerd.runc.v1.Options`), or none.
fn runc_options(args: &Args) -> Option<prost_types::Any> {
    if args.runc_binary.is_none() && args.runc_root.is_none() && !args.runc_systemd_cgroup {
        return None;
    }
    let options = berth_api::containerd::runc::v1::Options {
        binary_name: args.runc_binary.clone().unwrap_or_default(),
        root: args.runc_root.clone().unwrap_or_default(),
        systemd_cgroup: args.runc_systemd_cgroup,
        ..Default::default()
    };
    Some(prost_types::Any {
        type_url: "containerd.runc.v1.Options".to_string(),
        value: prost::Message::encode_to_vec(&options),
    })
}

/// Resolves `user` through the files of the root filesystem `mounts`
/// describe, as containerd's `WithUser` does (berth-client's lookup).
fn resolve_user_in_mounts(
    user: &str,
    mounts: &[Mount],
) -> anyhow::Result<berth_spec::user::ResolvedUser> {
    Ok(berth_client::user::resolve_in_mounts(user, mounts)?)
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
pub(crate) use berth_images::platform::host_arch;

/// The image's process settings and the chain ID of its top layer.
pub(crate) async fn image_parts(
    client: &berth_api::client::Client,
    name: &str,
) -> anyhow::Result<(ImageProcess, String)> {
    let (process, chain, _) = find_image(client, name).await?;
    Ok((process, chain))
}

/// [`image_parts`], and the name of the image record found (`name`, or
/// its normalised form, as berth-client looks it up).
async fn find_image(
    client: &berth_api::client::Client,
    name: &str,
) -> anyhow::Result<(ImageProcess, String, String)> {
    let shared = berth_client::Client::from_raw(client.clone(), "");
    let record = shared.get_image_record(name).await.map_err(|e| {
        // ctr's `image "x": not found`, naming the image as the user
        // gave it (the daemon's message names the normalised one).
        if e.is_not_found() {
            anyhow::anyhow!("image {name:?}: not found (pull it first)")
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let found = record.name.clone();
    let image = shared.resolve_image(record).await?;
    let (process, chain) = parts(image);
    Ok((process, chain, found))
}

/// berth-client's image as the spec builder's process and a chain ID.
fn parts(image: berth_client::Image) -> (ImageProcess, String) {
    let c = image.config;
    let process = ImageProcess {
        env: c.env,
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        working_dir: c.working_dir,
        user: c.user,
    };
    (process, image.chain_id)
}

/// [`image_parts`] of an image given by its target descriptor.
pub(crate) async fn image_parts_for(
    client: &berth_api::client::Client,
    target: &berth_api::containerd::types::Descriptor,
) -> anyhow::Result<(ImageProcess, String)> {
    let shared = berth_client::Client::from_raw(client.clone(), "");
    let record = berth_client::ImageRecord {
        name: target.digest.clone(),
        target: berth_client::descriptor_from_wire(target.clone())?,
        labels: Default::default(),
        created_at: None,
        updated_at: None,
    };
    Ok(parts(shared.resolve_image(record).await?))
}

/// The container label holding the image's stop signal.
const STOP_SIGNAL_LABEL: &str = "io.containerd.image.config.stop-signal";

/// The image's `StopSignal`, or SIGTERM.
async fn stop_signal(client: &berth_api::client::Client, image: &str) -> anyhow::Result<String> {
    let target = crate::commands::image_mount::image_target(client, image).await?;
    let parts = crate::commands::unpack::image_layers(client, &target).await?;
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let config: serde_json::Value =
        serde_json::from_slice(&read_blob(&mut content, &parts.config).await?)?;
    Ok(config["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("SIGTERM")
        .to_string())
}

/// Removes the snapshot `key` this run prepared (none when empty); a
/// failure leaves it to garbage collection, so it is not reported.
async fn remove_snapshot(client: &berth_api::client::Client, snapshotter: &str, key: &str) {
    if key.is_empty() {
        return;
    }
    let mut snapshots = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let _ = snapshots
        .remove(spb::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
        .await;
}

/// The mounts of prepared snapshots, as a task's `rootfs`.
pub(crate) fn mounts_to_proto(m: Vec<spb::PrepareSnapshotResponse>) -> Vec<Mount> {
    m.into_iter().flat_map(|r| r.mounts).collect()
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    if global.lease.is_some() {
        return run_leased(global, &client, args).await;
    }
    // As ctr: what the run creates is held by a lease until the container
    // record refers to it.
    let lease = crate::commands::leases::temporary(&client).await?;
    let result = run_leased(global, &client.clone().with_lease(lease.clone()), args).await;
    crate::commands::leases::release(&client, &lease).await;
    result
}

/// What [`create_container`] made that the task needs.
pub(crate) struct Created {
    /// The root filesystem's mounts (empty with `--rootfs`).
    pub(crate) rootfs: Vec<Mount>,
    /// The snapshot prepared for it (empty with `--rootfs`).
    pub(crate) snapshot_key: String,
}

/// `containers create`: the container `run` would make, without a task.
pub(crate) async fn create(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    if global.lease.is_some() {
        return create_container(global, &client, &args).await.map(|_| ());
    }
    let lease = crate::commands::leases::temporary(&client).await?;
    let result = create_container(global, &client.clone().with_lease(lease.clone()), &args).await;
    crate::commands::leases::release(&client, &lease).await;
    result.map(|_| ())
}

async fn run_leased(
    global: &Global,
    client: &berth_api::client::Client,
    args: Args,
) -> anyhow::Result<()> {
    let Created {
        rootfs: rootfs_mounts,
        snapshot_key,
    } = create_container(global, client, &args).await?;
    let client = client.clone();
    let mut containers = clients::containers(&client);
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
        remove_snapshot(&client, &args.snapshotter, &snapshot_key).await;
    }
    let status = status?;
    if status != 0 {
        return Err(crate::ExitStatus(i32::try_from(status).unwrap_or(1)).into());
    }
    Ok(())
}

/// Builds the spec from `args` (the image's config and ctr's flags) and
/// creates the container, preparing its root filesystem snapshot: the part
/// `run` and `containers create` share.
pub(crate) async fn create_container(
    global: &Global,
    client: &berth_api::client::Client,
    args: &Args,
) -> anyhow::Result<Created> {
    let client = client.clone();
    let ns = global.namespace();
    let mut opts: Vec<SpecOpt> = Vec::new();
    let mut snapshot_key = String::new();
    let mut rootfs_mounts = Vec::new();
    let mut image_name = String::new();
    // Where the user named by the image or --user is looked up.
    let mut image_user = String::new();
    let rootfs_dir;
    if args.rootfs {
        let path = std::fs::canonicalize(&args.image)
            .with_context(|| format!("root filesystem {:?}", args.image))?;
        rootfs_dir = Some(path.clone());
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
        rootfs_dir = None;
        let (mut process, chain, found) = find_image(&client, &args.image).await?;
        // The user is resolved below, against the image's own files.
        image_user = std::mem::take(&mut process.user);
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
        image_name = found;
    }
    let mut labels = crate::format::parse_labels(&args.labels);
    if !image_name.is_empty() {
        // As ctr (WithImageStopSignal): the image's stop signal, SIGTERM
        // when it names none, for clients that stop the container later.
        let signal = stop_signal(&client, &image_name).await?;
        labels.insert(STOP_SIGNAL_LABEL.to_string(), signal);
    }
    let user = args.user.clone().unwrap_or(image_user);
    let resolved = match &rootfs_dir {
        Some(dir) => berth_spec::user::resolve(&user, dir).map_err(anyhow::Error::from),
        None => resolve_user_in_mounts(&user, &rootfs_mounts),
    };
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) => {
            remove_snapshot(&client, &args.snapshotter, &snapshot_key).await;
            return Err(e.context(format!("user {user:?}")));
        }
    };
    opts.push(spec::with_resolved_user(resolved));
    if !args.args.is_empty() {
        opts.push(spec::with_process_args(args.args.clone()));
    }
    let mut env = Vec::new();
    for f in &args.env_files {
        env.extend(read_env_file(f)?);
    }
    env.extend(args.env.iter().cloned());
    if !env.is_empty() {
        opts.push(spec::with_env(env));
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
    for ns_arg in &args.with_ns {
        let (typ, path) = ns_arg
            .split_once(':')
            .with_context(|| format!("--with-ns {ns_arg:?}: expected type:path"))?;
        opts.push(spec::with_namespace_path(spec::namespace_type(typ)?, path));
    }
    if let Some(cwd) = &args.cwd {
        opts.push(spec::with_cwd(cwd.clone()));
    }
    if let Some(h) = &args.hostname {
        opts.push(spec::with_hostname(h.clone()));
    }
    if args.privileged {
        opts.push(spec::with_privileged());
    }
    if !args.cap_add.is_empty() || !args.cap_drop.is_empty() {
        opts.push(spec::with_capabilities(
            args.cap_add.clone(),
            args.cap_drop.clone(),
        ));
    }
    if args.read_only {
        opts.push(spec::with_readonly_rootfs());
    }
    if let Some(m) = args.memory_limit {
        opts.push(spec::with_memory_limit(m));
    }
    if let Some(c) = args.cpus {
        opts.push(spec::with_cpus(c));
    }
    if let Some(s) = args.cpu_shares {
        opts.push(spec::with_cpu_shares(s));
    }
    if !args.cpuset_cpus.is_empty() || !args.cpuset_mems.is_empty() {
        opts.push(spec::with_cpuset(
            args.cpuset_cpus.clone(),
            args.cpuset_mems.clone(),
        ));
    }
    if let Some(c) = &args.cgroup {
        opts.push(spec::with_cgroups_path(c.clone()));
    }
    if !args.annotations.is_empty() {
        let annotations = crate::format::parse_labels(&args.annotations);
        opts.push(Box::new(move |s: &mut oci_spec::runtime::Spec| {
            let mut all = s.annotations().clone().unwrap_or_default();
            all.extend(annotations);
            s.set_annotations(Some(all));
            Ok(())
        }));
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
                    options: runc_options(args),
                }),
                labels,
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
    Ok(Created {
        rootfs: rootfs_mounts,
        snapshot_key,
    })
}
