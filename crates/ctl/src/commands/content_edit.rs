//! `berthctl content edit`: a blob opened in `$EDITOR` (run through
//! `sh -c`, as ctr does) and written back as a new blob; prints its digest.

use anyhow::{Context as _, bail};
use berth_api::containerd::services::content::v1::content_client::ContentClient;

use crate::commands::{blob, run::read_blob};
use crate::context::Global;

/// `content edit` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct EditArgs {
    /// Validate the result against a format (not supported, as in ctr).
    #[arg(long)]
    validate: Option<String>,
    /// Editor command (vim, emacs, ...).
    #[arg(long, env = "EDITOR")]
    editor: Option<String>,
    /// Digest of the blob.
    digest: String,
}

pub(crate) async fn edit(global: &Global, args: EditArgs) -> anyhow::Result<()> {
    if args.validate.as_deref().is_some_and(|v| !v.is_empty()) {
        bail!("validating the edit result not supported");
    }
    let Some((algorithm, hex)) = args.digest.split_once(':') else {
        bail!("invalid checksum digest format");
    };
    if algorithm != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid checksum digest format: {}", args.digest);
    }
    let client = global.connect().await?;
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let data = read_blob(&mut content, &args.digest).await.map_err(|e| {
        match e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
            Some(s) => anyhow::anyhow!("{}", s.message()),
            None => e,
        }
    })?;
    let editor = args
        .editor
        .filter(|e| !e.is_empty())
        .context("editor is required")?;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let tmp = tempfile::Builder::new().prefix("edit-").tempfile_in(dir)?;
    std::fs::write(tmp.path(), &data)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} {}", tmp.path().display()))
        .status()
        .context("running the editor")?;
    if !status.success() {
        bail!("{status}");
    }
    let edited = std::fs::read(tmp.path())?;
    let d = blob::write_checked(
        &client,
        "",
        &format!("edit-{}", args.digest),
        edited,
        Default::default(),
        false,
    )
    .await?;
    println!("{}", d.digest);
    Ok(())
}
