//! Pulls an image from a registry (or imports an OCI / `docker save`
//! archive) and unpacks it into a directory of its own, with no daemon:
//! berth-transfer over berth-content's `LocalStore` and a berth-snapshots
//! driver.
//!
//! ```text
//! pull_unpack [--plain-http] [--overlayfs] DIR REFERENCE
//! pull_unpack [--overlayfs] --archive FILE DIR
//! ```
//!
//! `DIR` gets `content/` (the blobs), `snapshots/` (the layers, native
//! driver by default) and `tmp/`. The last line printed is the root
//! filesystem's directory (native), or the mounts to use (overlayfs).
//! Unpacking writes files owned by the image's users: run it as root.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_content::local::LocalStore;
use berth_remotes::registry::RegistryOptions;
use berth_snapshots::Snapshotter;
use berth_snapshots::native::NativeSnapshotter;
use berth_snapshots::overlay::OverlaySnapshotter;
use berth_transfer::archive::{self, ArchiveOnly, Naming};
use berth_transfer::{Progress, PullOptions, Puller, Unpacker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| {
        let found = args.iter().position(|a| a == flag);
        found.map(|i| args.remove(i)).is_some()
    };
    let (plain_http, overlay) = (take("--plain-http"), take("--overlayfs"));
    let archive_file = match args.iter().position(|a| a == "--archive") {
        Some(i) if i + 1 < args.len() => {
            let file = args.remove(i + 1);
            args.remove(i);
            Some(PathBuf::from(file))
        }
        Some(_) => bail!("--archive needs a file"),
        None => None,
    };
    let (dir, reference) = match (args.as_slice(), &archive_file) {
        ([dir, reference], None) => (PathBuf::from(dir), Some(reference.clone())),
        ([dir], Some(_)) => (PathBuf::from(dir), None),
        _ => bail!(
            "usage: pull_unpack [--plain-http] [--overlayfs] DIR REFERENCE\n       pull_unpack [--overlayfs] --archive FILE DIR"
        ),
    };

    let store = Arc::new(LocalStore::open(dir.join("content")).context("content store")?);
    let (name, snapshotter): (&str, Arc<dyn Snapshotter>) = if overlay {
        (
            "overlayfs",
            Arc::new(OverlaySnapshotter::new(dir.join("snapshots"))?),
        )
    } else {
        (
            "native",
            Arc::new(NativeSnapshotter::new(dir.join("snapshots"))?),
        )
    };
    let options = PullOptions {
        unpack: Some(Unpacker::new(name, snapshotter.clone(), dir.join("tmp"))),
        registry: RegistryOptions::default().with_plain_http(plain_http),
        progress: Progress::to(|e| {
            if !e.event.starts_with("download") {
                eprintln!("{:<11} {}", e.event, e.name);
            }
        }),
        ..PullOptions::default()
    };
    let puller = Puller::new(store.clone());
    let pulled = match (reference, archive_file) {
        (Some(reference), _) => puller.pull(&reference, &options).await?,
        (None, Some(file)) => {
            let reader = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
            let imported = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    archive::import(&*store, reader, "import", &Naming::with_prefix("import"))
                })
                .await??
            };
            let (name, root) = imported
                .images
                .into_iter()
                .next()
                .context("the archive names no image")?;
            puller
                .fetch(&name, &root, Arc::new(ArchiveOnly), None, &options)
                .await?
        }
        (None, None) => unreachable!("checked above"),
    };
    let chain = pulled.chain_id.context("nothing was unpacked")?;
    eprintln!(
        "{} {} ({} bytes downloaded), top layer {chain}",
        pulled.name, pulled.root.digest, pulled.downloaded
    );
    // A read-only view of the top layer: a bind of its directory with the
    // native driver, an overlay of every layer with overlayfs.
    let view = format!("rootfs-{}", chain.hex());
    let mounts = match snapshotter.view(&view, Some(chain.as_str()), Default::default()) {
        Ok(m) => m,
        Err(e) if e.is_already_exists() => snapshotter.mounts(&view)?,
        Err(e) => return Err(e.into()),
    };
    match mounts.as_slice() {
        [m] if m.kind == "bind" => println!("{}", m.source),
        _ => println!("{mounts:?}"),
    }
    Ok(())
}
