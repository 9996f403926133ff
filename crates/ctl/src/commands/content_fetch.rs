//! `berthctl content fetch|fetch-object|push-object`: registry access done
//! by berthctl itself through berth-client, as ctr's are done by
//! containerd's Go client (whatever the daemon serves): `fetch` brings an
//! image's content into the daemon's store without unpacking it,
//! `fetch-object` and `push-object` move one object by reference and digest.

use anyhow::Context as _;

use super::images::RegistryFlags;
use crate::context::Global;

/// `content fetch` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// Image reference (`busybox`, `127.0.0.1:5000/x:tag`, `...@sha256:...`).
    reference: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Labels to attach to the image (`key=value`); repeatable.
    #[arg(long)]
    label: Vec<String>,
    /// Fetch content for these platforms (`linux/arm64`); repeatable.
    #[arg(long)]
    platform: Vec<String>,
    /// Fetch content for every platform.
    #[arg(long)]
    all_platforms: bool,
}

/// `content fetch-object` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchObjectArgs {
    /// The remote reference (`127.0.0.1:5000/x:tag`).
    remote: String,
    /// A digest in the reference's repository (manifest or blob); without
    /// it, what the reference resolves to.
    object: Option<String>,
    /// Accepted for ctr's syntax (`[<hint>, ...]`); not used.
    #[arg(hide = true)]
    hints: Vec<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

/// `content fetch-blob` arguments (ctr 2.x).
#[derive(Debug, clap::Args)]
pub(crate) struct FetchBlobArgs {
    /// The remote reference (`127.0.0.1:5000/x:tag`).
    remote: String,
    /// Digests of blobs in the reference's repository, written one after
    /// the other.
    #[arg(required = true)]
    digests: Vec<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

/// `content push-object` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PushObjectArgs {
    /// The remote reference (`127.0.0.1:5000/x:tag`; a manifest is put under its tag).
    remote: String,
    /// The object's digest in the content store.
    object: String,
    /// Its media type (`application/vnd.oci.image.layer.v1.tar+gzip`).
    #[arg(name = "type")]
    media_type: String,
    #[command(flatten)]
    registry: RegistryFlags,
}

fn client(c: &berth_api::client::Client) -> berth_client::Client {
    berth_client::Client::from_raw(c.clone(), "").without_transfer_service()
}

/// `content fetch`.
pub(crate) async fn fetch(global: &Global, args: FetchArgs) -> anyhow::Result<()> {
    let raw = global.connect().await?;
    let started = std::time::Instant::now();
    let (progress, view) = crate::progress::client_side();
    let opts = berth_client::FetchOpts {
        platforms: args.platform.clone(),
        all_platforms: args.all_platforms,
        labels: crate::format::parse_labels(&args.label)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        plain_http: args.registry.plain_http,
        hosts_dir: args.registry.hosts_dir.clone(),
        progress: Some(progress),
        credentials: args.registry.credentials()?,
    };
    let result = client(&raw).fetch(&args.reference, opts).await;
    crate::progress::finish(&view);
    let name = result?;
    println!("{name}: fetched in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `content fetch-object`: the object's bytes to stdout.
pub(crate) async fn fetch_object(global: &Global, args: FetchObjectArgs) -> anyhow::Result<()> {
    let raw = global.connect().await?;
    let opts = args.registry.object_opts()?;
    client(&raw)
        .fetch_object(
            &args.remote,
            args.object.as_deref(),
            tokio::io::stdout(),
            &opts,
        )
        .await
        .with_context(|| format!("fetch-object {}", args.remote))?;
    Ok(())
}

/// `content fetch-blob`: each blob's bytes to stdout, in order.
pub(crate) async fn fetch_blob(global: &Global, args: FetchBlobArgs) -> anyhow::Result<()> {
    let raw = global.connect().await?;
    let opts = args.registry.object_opts()?;
    let client = client(&raw);
    for digest in &args.digests {
        client
            .fetch_object(&args.remote, Some(digest), tokio::io::stdout(), &opts)
            .await
            .with_context(|| format!("fetch-blob {digest}"))?;
    }
    Ok(())
}

/// `content push-object`.
pub(crate) async fn push_object(global: &Global, args: PushObjectArgs) -> anyhow::Result<()> {
    let raw = global.connect().await?;
    let opts = args.registry.object_opts()?;
    let uploaded = client(&raw)
        .push_object(&args.remote, &args.object, &args.media_type, &opts)
        .await?;
    // ctr's line; berthctl adds whether the registry had it already.
    println!(
        "Pushed {} {}{}",
        args.object,
        args.media_type,
        if uploaded { "" } else { " (already present)" }
    );
    Ok(())
}
