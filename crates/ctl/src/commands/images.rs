//! `berthctl images pull|push|import|export|ls|check|rm|tag|label` (and
//! top-level `pull`/`push`): pulls, pushes, imports and exports run in
//! berthd through the Transfer service, with progress streamed back and
//! drawn per layer. A daemon without one (containerd 1.x) answers
//! Unimplemented: berthctl then does the work itself through berth-client
//! (over the daemon's Content, Images, Snapshots and Diff services).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use berth_api::client::Client;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::images::v1 as pb;
use berth_api::containerd::services::images::v1::images_client::ImagesClient;
use berth_api::containerd::services::streaming::v1::StreamInit;
use berth_api::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_api::containerd::services::transfer::v1 as tpb;
use berth_api::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_api::containerd::types::transfer as tt;
use berth_images::{Platform, Reference};
use prost::{Message, Name};
use tokio::sync::mpsc;

use crate::context::{Global, clients};
use crate::progress::{ProgressView, Report};
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Registry flags shared by pull and push.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RegistryFlags {
    /// Talk plain HTTP to the registry (no TLS).
    #[arg(long)]
    pub(crate) plain_http: bool,
    /// Credentials as `USER[:PASSWORD]` (password read from stdin if omitted).
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    /// Directory of containerd-style `hosts.toml` registry configuration.
    #[arg(long)]
    pub(crate) hosts_dir: Option<String>,
}

impl RegistryFlags {
    /// The `--user` credentials (the password read from stdin if omitted).
    pub(crate) fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        self.user.as_deref().map(user_and_secret).transpose()
    }

    /// The flags as berth-client's options for one object.
    pub(crate) fn object_opts(&self) -> anyhow::Result<berth_client::ObjectOpts> {
        Ok(berth_client::ObjectOpts {
            plain_http: self.plain_http,
            hosts_dir: self.hosts_dir.clone(),
            credentials: self.credentials()?,
            progress: None,
        })
    }
}

/// `pull` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PullArgs {
    /// Image reference (`busybox`, `127.0.0.1:5000/x:tag`, `...@sha256:...`).
    reference: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Pull content for these platforms (`linux/arm64`); repeatable.
    #[arg(long)]
    platform: Vec<String>,
    /// Pull content for every platform (unpack the host's).
    #[arg(long)]
    all_platforms: bool,
    /// Snapshotter to unpack into.
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Fetch only; do not unpack.
    #[arg(long)]
    no_unpack: bool,
}

/// `images convert` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConvertArgs {
    /// The image to convert.
    source: String,
    /// The name of the converted image (created, or pointed at the result).
    target: String,
    /// Convert tar.gz (and zstd) layers to uncompressed tar layers.
    #[arg(long)]
    uncompress: bool,
    /// Convert Docker media types to OCI media types.
    #[arg(long)]
    oci: bool,
    /// Keep these platforms of an index (`linux/arm64`); repeatable. Default: the host's.
    #[arg(long)]
    platform: Vec<String>,
    /// Keep every platform (all their content must be in the store).
    #[arg(long)]
    all_platforms: bool,
}

/// `images convert`: done by berthctl over the Content and Images
/// services (berth-client), as ctr's by containerd's Go client.
async fn convert(global: &Global, args: ConvertArgs) -> anyhow::Result<()> {
    // As ctr: names as given (the source also found by its normalised
    // name); with neither flag only the platforms are cut.
    let (source, target) = (&args.source, &args.target);
    let raw = global.connect().await?;
    let client = berth_client::Client::from_raw(raw, "");
    let root = client
        .convert(
            source,
            target,
            berth_client::ConvertOpts {
                oci: args.oci,
                uncompress: args.uncompress,
                platforms: args.platform,
                all_platforms: args.all_platforms,
            },
        )
        .await?;
    // ctr prints the target's digest.
    println!("{}", root.digest);
    Ok(())
}

/// `push` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PushArgs {
    /// Where to push (`127.0.0.1:5000/x:tag`).
    remote: String,
    /// Local image to push (default: the remote reference).
    local: Option<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Pull an image from a registry (in berthd) and unpack it.
    Pull(PullArgs),
    /// Import an image archive (OCI layout or `docker save`) through berthd.
    Import(super::image_archive::ImportArgs),
    /// Export images as an OCI layout archive (also loadable by `docker load`).
    Export(super::image_archive::ExportArgs),
    /// Push an image to a registry (from berthd).
    Push(PushArgs),
    /// List images.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax), OR'd.
        filters: Vec<String>,
    },
    /// Check that images' content is all present and whether they are unpacked.
    Check {
        /// Snapshotter to look for the unpacked image in.
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
    },
    /// Remove images.
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Mount an image's root filesystem on a target path (unpacking it if needed).
    Mount(super::image_mount::MountArgs),
    /// Unmount an image mounted with `images mount`.
    Unmount(super::image_mount::UnmountArgs),
    /// Convert an image: Docker media types to OCI, layers uncompressed, an index cut to platforms.
    Convert(ConvertArgs),
    /// Show the disk usage of an image's snapshots.
    Usage(super::image_mount::UsageArgs),
    /// Give an image another name.
    Tag {
        /// The existing image.
        source: String,
        /// New names.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Replace a target that exists.
        #[arg(long)]
        force: bool,
    },
    /// Set labels (`k=v`; `k=` removes) on an image.
    Label {
        /// Image name.
        name: String,
        /// Labels.
        labels: Vec<String>,
    },
}

pub(crate) fn any<M: Message + Name>(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

fn images(c: &Client) -> ImagesClient<clients::Chan> {
    ImagesClient::with_interceptor(c.channel(), c.interceptor())
}

/// A stream the daemon sends progress (or auth questions) on.
pub(crate) struct OpenStream {
    /// The id transfers name it by.
    pub(crate) id: String,
    /// What berthctl sends.
    pub(crate) to_daemon: mpsc::Sender<prost_types::Any>,
    /// What berthd sends.
    pub(crate) from_daemon: tonic::Streaming<prost_types::Any>,
}

/// Opens a stream (`StreamInit`) and waits for berthd's acknowledgement.
pub(crate) async fn open_stream(c: &Client, purpose: &str) -> anyhow::Result<OpenStream> {
    let id = format!(
        "berthctl-{purpose}-{}-{}",
        std::process::id(),
        rand_suffix()
    );
    let (tx, rx) = mpsc::channel(16);
    tx.send(any(&StreamInit { id: id.clone() })).await?;
    let mut svc = StreamingClient::with_interceptor(c.channel(), c.interceptor());
    let mut from_daemon = svc
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("opening a progress stream (does the daemon serve containerd's Streaming API?)")?
        .into_inner();
    // The daemon acknowledges the stream before it is usable.
    from_daemon.message().await?;
    Ok(OpenStream {
        id,
        to_daemon: tx,
        from_daemon,
    })
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Answers the daemon's credential questions with `user`.
async fn serve_auth(c: &Client, user: &str) -> anyhow::Result<String> {
    // The stream first: a daemon without one is told apart before asking.
    let mut s = open_stream(c, "auth").await?;
    let (username, secret) = user_and_secret(user)?;
    let id = s.id.clone();
    tokio::spawn(async move {
        while let Ok(Some(_question)) = s.from_daemon.message().await {
            let answer = tt::AuthResponse {
                auth_type: tt::AuthType::Credentials as i32,
                secret: secret.clone(),
                username: username.clone(),
                expire_at: None,
            };
            if s.to_daemon.send(any(&answer)).await.is_err() {
                break;
            }
        }
    });
    Ok(id)
}

async fn resolver(c: &Client, flags: &RegistryFlags) -> anyhow::Result<tt::RegistryResolver> {
    let auth_stream = match &flags.user {
        Some(user) => serve_auth(c, user).await?,
        None => String::new(),
    };
    Ok(tt::RegistryResolver {
        auth_stream,
        headers: HashMap::new(),
        host_dir: flags.hosts_dir.clone().unwrap_or_default(),
        default_scheme: if flags.plain_http {
            "http".into()
        } else {
            String::new()
        },
        http_debug: 0,
        logs_stream: String::new(),
    })
}

/// `--user` as user name and secret, asking for the password when it is
/// not given as `user:password`.
pub(crate) fn user_and_secret(user: &str) -> anyhow::Result<(String, String)> {
    Ok(match user.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => {
            let mut line = String::new();
            eprint!("Password: ");
            std::io::stdin().read_line(&mut line)?;
            (
                user.to_string(),
                line.trim_end_matches(['\r', '\n']).to_string(),
            )
        }
    })
}

/// Whether `e` is a daemon's Unimplemented answer: it serves no Transfer
/// (or Streaming) service, as containerd 1.x.
pub(crate) fn no_transfer_service(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tonic::Status>()
            .is_some_and(|s| s.code() == tonic::Code::Unimplemented)
    })
}

/// The berth-client of `c`'s connection (its namespace and lease), told
/// that the daemon has no Transfer service: it pulls, pushes, imports and
/// exports itself, as containerd's Go client does on containerd 1.x.
pub(crate) fn client_side(c: &Client) -> berth_client::Client {
    eprintln!("the daemon has no Transfer service: berthctl does the transfer itself");
    berth_client::Client::from_raw(c.clone(), "").without_transfer_service()
}

/// Runs a transfer while drawing its progress.
pub(crate) async fn transfer(
    c: &Client,
    source: prost_types::Any,
    destination: prost_types::Any,
) -> anyhow::Result<()> {
    let mut progress = open_stream(c, "progress").await?;
    let mut svc = TransferClient::with_interceptor(c.channel(), c.interceptor());
    let req = tpb::TransferRequest {
        source: Some(source),
        destination: Some(destination),
        options: Some(tpb::TransferOptions {
            progress_stream: progress.id.clone(),
        }),
    };
    let call = svc.transfer(req);
    tokio::pin!(call);
    let mut view = ProgressView::new();
    let mut stream_open = true;
    let report = |m: prost_types::Any| {
        tt::Progress::decode(m.value.as_slice())
            .ok()
            .map(|p| Report {
                event: p.event,
                name: p.name,
                progress: p.progress,
                total: p.total,
            })
    };
    loop {
        tokio::select! {
            r = &mut call => {
                // Whatever progress is still queued, then the final picture.
                while let Ok(Ok(Some(m))) = tokio::time::timeout(std::time::Duration::from_millis(50), progress.from_daemon.message()).await {
                    if let Some(p) = report(m) { view.update(p); }
                }
                view.finish();
                r?;
                return Ok(());
            }
            m = progress.from_daemon.message(), if stream_open => match m {
                Ok(Some(m)) => if let Some(p) = report(m) { view.update(p) },
                _ => stream_open = false,
            },
        }
    }
}

pub(crate) fn normalized(reference: &str) -> anyhow::Result<String> {
    Ok(Reference::parse_normalized(reference)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string())
}

/// `--platform` values as API platforms.
pub(crate) fn platforms_of<'a>(
    specs: impl Iterator<Item = &'a String>,
) -> anyhow::Result<Vec<berth_api::containerd::types::Platform>> {
    specs
        .map(|p| {
            let p = Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform {p:?}: {e}"))?;
            Ok(berth_api::containerd::types::Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
                os_version: String::new(),
                os_features: Vec::new(),
            })
        })
        .collect()
}

/// `pull`.
pub(crate) async fn pull(global: &Global, args: PullArgs) -> anyhow::Result<()> {
    let name = normalized(&args.reference)?;
    let client = global.connect().await?;
    let platforms = platforms_of(args.platform.iter())?;
    let started = Instant::now();
    let resolver = match resolver(&client, &args.registry).await {
        Ok(r) => r,
        Err(e) if no_transfer_service(&e) => {
            return pull_client_side(&client, &name, &args, started).await;
        }
        Err(e) => return Err(e),
    };
    let source = tt::OciRegistry {
        reference: name.clone(),
        resolver: Some(resolver),
    };
    let unpacks = if args.no_unpack {
        Vec::new()
    } else {
        vec![tt::UnpackConfiguration {
            platform: platforms.first().cloned(),
            snapshotter: args.snapshotter.clone(),
        }]
    };
    let dest = tt::ImageStore {
        name: name.clone(),
        platforms,
        all_metadata: args.all_platforms,
        unpacks,
        ..Default::default()
    };
    match transfer(&client, any(&source), any(&dest)).await {
        Ok(()) => {}
        Err(e) if no_transfer_service(&e) => {
            return pull_client_side(&client, &name, &args, started).await;
        }
        Err(e) => return Err(e),
    }
    println!("{name}: pulled in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `pull` on a daemon without a Transfer service: berth-client fetches
/// into the daemon's content store and has it unpack (Diff + Snapshots).
async fn pull_client_side(
    c: &Client,
    name: &str,
    args: &PullArgs,
    started: Instant,
) -> anyhow::Result<()> {
    if args.platform.len() > 1 || args.all_platforms {
        bail!("--all-platforms and more than one --platform need the daemon's Transfer service");
    }
    let (progress, view) = crate::progress::client_side();
    let opts = berth_client::PullOpts {
        unpack: !args.no_unpack,
        snapshotter: args.snapshotter.clone(),
        platform: args.platform.first().cloned(),
        plain_http: args.registry.plain_http,
        hosts_dir: args.registry.hosts_dir.clone(),
        progress: Some(progress),
        credentials: args.registry.credentials()?,
    };
    let result = client_side(c).pull_with(name, opts).await;
    crate::progress::finish(&view);
    result?;
    println!("{name}: pulled in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `push`.
pub(crate) async fn push(global: &Global, args: PushArgs) -> anyhow::Result<()> {
    let remote = normalized(&args.remote)?;
    let local = match &args.local {
        Some(l) => normalized(l)?,
        None => remote.clone(),
    };
    let client = global.connect().await?;
    let source = tt::ImageStore {
        name: local.clone(),
        ..Default::default()
    };
    let pushed = match resolver(&client, &args.registry).await {
        Ok(resolver) => {
            let dest = tt::OciRegistry {
                reference: remote.clone(),
                resolver: Some(resolver),
            };
            transfer(&client, any(&source), any(&dest)).await
        }
        Err(e) => Err(e),
    };
    match pushed {
        Ok(()) => {}
        Err(e) if no_transfer_service(&e) => {
            // The client reads the blobs through the Content service and
            // sends them to the registry itself.
            let (progress, view) = crate::progress::client_side();
            let opts = berth_client::PushOpts {
                plain_http: args.registry.plain_http,
                hosts_dir: args.registry.hosts_dir.clone(),
                progress: Some(progress),
                credentials: args.registry.credentials()?,
            };
            let result = client_side(&client).push(&local, &remote, opts).await;
            crate::progress::finish(&view);
            result?;
        }
        Err(e) => return Err(e),
    }
    println!("{remote}: pushed");
    Ok(())
}

/// Platforms and total size of an image, read through the Content API.
async fn describe(c: &Client, target: &berth_api::containerd::types::Descriptor) -> (String, i64) {
    let mut content = ContentClient::with_interceptor(c.channel(), c.interceptor());
    let Ok(root) = super::run::read_blob(&mut content, &target.digest).await else {
        return ("-".into(), target.size);
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&root) else {
        return ("-".into(), target.size);
    };
    let layers_size = |m: &serde_json::Value| -> i64 {
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_i64())
            .sum::<i64>()
            + m["config"]["size"].as_i64().unwrap_or(0)
    };
    if let Some(entries) = json["manifests"].as_array() {
        let mut platforms = Vec::new();
        let mut size = target.size;
        for e in entries {
            let p = &e["platform"];
            platforms.push(format!(
                "{}/{}{}",
                p["os"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?"),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            ));
            if let Some(d) = e["digest"].as_str()
                && let Ok(b) = super::run::read_blob(&mut content, d).await
                && let Ok(m) = serde_json::from_slice::<serde_json::Value>(&b)
            {
                size += e["size"].as_i64().unwrap_or(0) + layers_size(&m);
            }
        }
        return (platforms.join(","), size);
    }
    let mut platform = "-".to_string();
    if let Some(cfg) = json["config"]["digest"].as_str()
        && let Ok(b) = super::run::read_blob(&mut content, cfg).await
        && let Ok(c) = serde_json::from_slice::<serde_json::Value>(&b)
    {
        platform = format!(
            "{}/{}",
            c["os"].as_str().unwrap_or("?"),
            c["architecture"].as_str().unwrap_or("?")
        );
    }
    (platform, target.size + layers_size(&json))
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Pull(a) => return pull(global, a).await,
        Command::Push(a) => return push(global, a).await,
        Command::Import(a) => return super::image_archive::import(global, a).await,
        Command::Export(a) => return super::image_archive::export(global, a).await,
        Command::Mount(a) => return super::image_mount::mount(global, a).await,
        Command::Unmount(a) => return super::image_mount::unmount(global, a).await,
        Command::Usage(a) => return super::image_mount::usage(global, a).await,
        Command::Convert(a) => return convert(global, a).await,
        _ => {}
    }
    let client = global.connect().await?;
    let mut svc = images(&client);
    match args.command {
        Command::Pull(_)
        | Command::Push(_)
        | Command::Import(_)
        | Command::Export(_)
        | Command::Mount(_)
        | Command::Unmount(_)
        | Command::Convert(_)
        | Command::Usage(_) => {
            unreachable!("handled above")
        }
        Command::Ls { quiet, filters } => {
            let mut list = svc
                .list(pb::ListImagesRequest { filters })
                .await?
                .into_inner()
                .images;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if global.json() {
                return crate::json::print_list(&list);
            }
            if quiet {
                for i in list {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            let mut rows = vec![
                ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
                    .map(String::from)
                    .to_vec(),
            ];
            for i in list {
                let target = i.target.clone().unwrap_or_default();
                let (platforms, size) = describe(&client, &target).await;
                rows.push(vec![
                    i.name.clone(),
                    target.media_type.clone(),
                    target.digest.clone(),
                    crate::format::size(size),
                    platforms,
                    crate::format::labels(&i.labels),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Check { snapshotter } => {
            let list = svc
                .list(pb::ListImagesRequest { filters: vec![] })
                .await?
                .into_inner()
                .images;
            let mut content =
                ContentClient::with_interceptor(client.channel(), client.interceptor());
            let mut rows = vec![
                ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]
                    .map(String::from)
                    .to_vec(),
            ];
            for i in list {
                let target = i.target.clone().unwrap_or_default();
                let (status, unpacked) = check(&client, &mut content, &target, &snapshotter).await;
                let (_, size) = describe(&client, &target).await;
                rows.push(vec![
                    i.name,
                    target.media_type,
                    target.digest,
                    status,
                    crate::format::size(size),
                    unpacked.to_string(),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Rm { names } => {
            // As ctr: an unknown name is a warning; the first other failure
            // is the command's error, after trying every name.
            let mut first_error: Option<String> = None;
            for name in names {
                match svc
                    .delete(pb::DeleteImageRequest {
                        name: name.clone(),
                        sync: false,
                        target: None,
                    })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        eprintln!("berthctl: {name}: image not found");
                    }
                    Err(e) => {
                        let message = format!("unable to delete {name}: {}", e.message());
                        if first_error.is_some() {
                            eprintln!("berthctl: {message}");
                        }
                        first_error.get_or_insert(message);
                    }
                }
            }
            if let Some(message) = first_error {
                bail!("{message}");
            }
        }
        Command::Tag {
            source,
            targets,
            force,
        } => {
            let image = svc
                .get(pb::GetImageRequest {
                    name: source.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("image {source:?}: {}", e.message()))?
                .into_inner()
                .image
                .unwrap_or_default();
            for target in targets {
                let mut copy = image.clone();
                copy.name = target.clone();
                copy.created_at = None;
                copy.updated_at = None;
                let created = svc
                    .create(pb::CreateImageRequest {
                        image: Some(copy.clone()),
                        source_date_epoch: None,
                    })
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if e.code() == tonic::Code::AlreadyExists && force => {
                        svc.delete(pb::DeleteImageRequest {
                            name: target.clone(),
                            sync: false,
                            target: None,
                        })
                        .await?;
                        svc.create(pb::CreateImageRequest {
                            image: Some(copy),
                            source_date_epoch: None,
                        })
                        .await?;
                    }
                    Err(e) => bail!(
                        "tag {target:?}: {} (use --force to replace it)",
                        e.message()
                    ),
                }
                println!("{target}");
            }
        }
        Command::Label { name, labels } => {
            let labels = crate::format::parse_labels(&labels);
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let image = pb::Image {
                name: name.clone(),
                labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                ..Default::default()
            };
            let updated = svc
                .update(pb::UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    source_date_epoch: None,
                })
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            let mut l: Vec<_> = updated
                .labels
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            l.sort();
            println!("{}", l.join(","));
        }
    }
    Ok(())
}

/// Whether all of an image's content (for the host) is present, and whether
/// its top snapshot exists.
async fn check(
    c: &Client,
    content: &mut ContentClient<clients::Chan>,
    target: &berth_api::containerd::types::Descriptor,
    snapshotter: &str,
) -> (String, bool) {
    use berth_api::containerd::services::content::v1 as cpb;
    let mut missing = 0;
    let mut total = 0;
    let present = |content: &mut ContentClient<clients::Chan>, d: String| {
        let mut content = content.clone();
        async move { content.info(cpb::InfoRequest { digest: d }).await.is_ok() }
    };
    let Ok(root) = super::run::read_blob(content, &target.digest).await else {
        return ("missing".into(), false);
    };
    let json: serde_json::Value = serde_json::from_slice(&root).unwrap_or_default();
    let mut manifests = Vec::new();
    if let Some(entries) = json["manifests"].as_array() {
        for e in entries {
            total += 1;
            let d = e["digest"].as_str().unwrap_or_default().to_string();
            match super::run::read_blob(content, &d).await {
                Ok(b) => manifests
                    .push(serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default()),
                Err(_) => missing += 1,
            }
        }
    } else {
        manifests.push(json);
    }
    let mut chain_ok = false;
    for m in &manifests {
        let blobs =
            std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
        for b in blobs {
            total += 1;
            if !present(
                content,
                b["digest"].as_str().unwrap_or_default().to_string(),
            )
            .await
            {
                missing += 1;
            }
        }
    }
    if let Ok((_, chain)) = super::run::image_parts_for(c, target).await {
        let mut snaps = berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient::with_interceptor(c.channel(), c.interceptor());
        chain_ok = snaps
            .stat(
                berth_api::containerd::services::snapshots::v1::StatSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: chain,
                },
            )
            .await
            .is_ok();
    }
    let status = if missing == 0 {
        "complete".to_string()
    } else {
        format!("incomplete ({}/{} present)", total - missing, total)
    };
    (status, chain_ok)
}
