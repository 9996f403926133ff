//! Unpacking: an image's layers applied, bottom first, into snapshots named
//! by chain ID (containerd's `core/unpack`).
//!
//! The plain path works with every [`Snapshotter`]: prepare an active
//! snapshot on the parent chain, mount it, apply the layer, unmount,
//! commit. Drivers that declare [`DirectApply`] are written without a
//! mount, and when they also offer a staging directory (overlayfs: a layer
//! is its own upper directory) every layer above the first is applied at
//! once, in parallel, and moved into its snapshot in order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_content::{Digest, ReadCursor};
use berth_images::archive::{self, Whiteouts};
use berth_images::manifest::{self, Descriptor};
use berth_images::{Matcher, media};
use berth_snapshots::{Mount, Snapshotter};
use tokio::sync::watch;

use crate::blob::{BlobState, TailReader};
use crate::content::ContentStore;
use crate::progress::Progress;
use crate::{Error, Result, blocking};

/// The label a committed layer snapshot carries: its chain ID.
const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Unpacks images into one snapshotter.
#[derive(Clone)]
pub struct Unpacker {
    name: String,
    snapshotter: Arc<dyn Snapshotter>,
    scratch: PathBuf,
}

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacker")
            .field("name", &self.name)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// What an unpack made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The chain ID of the top layer: the committed snapshot to prepare a
    /// container's root filesystem on.
    pub chain_id: Digest,
    /// The image config of the unpacked manifest.
    pub config: Descriptor,
}

/// Layers in flight, by digest, as their downloads publish them.
pub(crate) type States = HashMap<Digest, watch::Receiver<BlobState>>;

impl Unpacker {
    /// Unpacks into `snapshotter`, known to clients as `name` (it names the
    /// garbage-collection label `containerd.io/gc.ref.snapshot.<name>` put
    /// on the image config). Snapshots without [`DirectApply`] are mounted
    /// under `scratch` (created if needed) to be written.
    ///
    /// [`DirectApply`]: berth_snapshots::DirectApply
    pub fn new(
        name: impl Into<String>,
        snapshotter: Arc<dyn Snapshotter>,
        scratch: impl Into<PathBuf>,
    ) -> Unpacker {
        Unpacker {
            name: name.into(),
            snapshotter,
            scratch: scratch.into(),
        }
    }

    /// The snapshotter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Unpacks the image at `root` (a manifest, or an index resolved for
    /// `platforms`) whose blobs are all in `content`; labels its config
    /// with the snapshot so a collector keeps both.
    ///
    /// Errors: NotFound when a blob is missing or no manifest matches,
    /// InvalidArgument for malformed images or layers.
    pub async fn unpack(
        &self,
        content: Arc<dyn ContentStore>,
        root: &Descriptor,
        platforms: &Matcher,
        progress: &Progress,
    ) -> Result<Unpacked> {
        let image =
            berth_images::handlers::image_layers_and_config(&*content, root, platforms).await?;
        // Everything is local: every layer is "downloaded".
        let mut states = States::new();
        for layer in &image.layers {
            let (_tx, rx) = watch::channel(BlobState::Done);
            states.insert(layer.digest.clone(), rx);
        }
        let chain_id = self
            .unpack_layers(&content, &image.layers, image.diff_ids(), &states, progress)
            .await?;
        self.label_config(&*content, &image.config, &chain_id)
            .await?;
        Ok(Unpacked {
            chain_id,
            config: image.config,
        })
    }

    /// Puts `containerd.io/gc.ref.snapshot.<name>` = `chain` on `config`.
    pub(crate) async fn label_config(
        &self,
        content: &dyn ContentStore,
        config: &Descriptor,
        chain: &Digest,
    ) -> Result<()> {
        let labels = BTreeMap::from([(
            format!("containerd.io/gc.ref.snapshot.{}", self.name),
            chain.to_string(),
        )]);
        content.add_labels(&config.digest, config.size, labels)?;
        Ok(())
    }

    /// Unpacks `layers` in order into snapshots named by chain ID, each
    /// reading its layer as it downloads (`states`); returns the top chain
    /// ID.
    pub(crate) async fn unpack_layers(
        &self,
        content: &Arc<dyn ContentStore>,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        states: &States,
        progress: &Progress,
    ) -> Result<Digest> {
        if diff_ids.len() != layers.len() {
            return Err(Error::invalid_argument(format!(
                "the image config lists {} diff IDs for {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        let chains = manifest::chain_ids(diff_ids);
        let mut missing = Vec::with_capacity(chains.len());
        for chain in &chains {
            let (sn, chain) = (self.snapshotter.clone(), chain.to_string());
            missing.push(blocking(move || Ok(sn.stat(&chain).is_err())).await?);
        }
        let direct = {
            let sn = self.snapshotter.clone();
            blocking(move || Ok(sn.direct_apply().map(|d| (d.whiteouts(), d.staging_dir()))))
                .await?
        };
        // Layers above the first start applying at once, each into its own
        // staging directory, as their bytes arrive; below, they are moved
        // into their snapshots in order.
        let mut staged = Staged::default();
        if let Some((whiteouts, Some(root))) = &direct {
            for (i, layer) in layers.iter().enumerate() {
                if i == 0 || !missing[i] {
                    staged.tasks.push(None);
                    continue;
                }
                let dir = root.join(uuid::Uuid::new_v4().simple().to_string());
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    staged.abort().await;
                    return Err(Error::internal(format!("{}: {e}", dir.display())));
                }
                let (layer, diff_id, states) = (layer.clone(), diff_ids[i].clone(), states.clone());
                let (content, whiteouts) = (content.clone(), convert(*whiteouts));
                staged.dirs.push(dir.clone());
                staged.tasks.push(Some(tokio::spawn(async move {
                    apply_at(content, dir.clone(), whiteouts, &layer, &diff_id, &states).await?;
                    Ok(dir)
                })));
            }
        }
        let result = self
            .unpack_in_order(
                content,
                layers,
                &chains,
                &missing,
                &mut staged,
                diff_ids,
                states,
                progress,
            )
            .await;
        staged.abort().await;
        result
    }

    /// The sequential part of [`Unpacker::unpack_layers`]: snapshots
    /// created and committed in order, each layer applied into it or moved
    /// in from its staging directory.
    #[allow(clippy::too_many_arguments)]
    async fn unpack_in_order(
        &self,
        content: &Arc<dyn ContentStore>,
        layers: &[Descriptor],
        chains: &[Digest],
        missing: &[bool],
        staged: &mut Staged,
        diff_ids: &[Digest],
        states: &States,
        progress: &Progress,
    ) -> Result<Digest> {
        let mut parent: Option<&Digest> = None;
        for (i, layer) in layers.iter().enumerate() {
            let chain = &chains[i];
            let name = format!("layer-{}", layer.digest);
            if !missing[i] {
                parent = Some(chain);
                continue;
            }
            let key = format!("extract-{} {chain}", uuid::Uuid::new_v4().simple());
            let mounts = {
                let (sn, key, parent) = (
                    self.snapshotter.clone(),
                    key.clone(),
                    parent.map(ToString::to_string),
                );
                blocking(move || Ok(sn.prepare(&key, parent.as_deref(), Default::default())?))
                    .await?
            };
            progress.event("unpacking", &name, 0, layer.size, Some(layer));
            let applied = match staged.tasks.get_mut(i).and_then(Option::take) {
                Some(task) => match task.await {
                    Ok(Ok(dir)) => self.adopt(&key, dir).await,
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(Error::internal(format!("layer apply task: {e}"))),
                },
                None => {
                    self.apply_into(content, &key, mounts, layer, &diff_ids[i], states)
                        .await
                }
            };
            let applied = match applied {
                Ok(()) => wait_downloaded(layer, states).await,
                Err(e) => Err(e),
            };
            if let Err(e) = applied {
                self.remove(&key).await;
                return Err(e);
            }
            let labels = BTreeMap::from([(LABEL_SNAPSHOT_REF.to_string(), chain.to_string())]);
            let committed = {
                let (sn, key, chain) = (self.snapshotter.clone(), key.clone(), chain.to_string());
                blocking(move || {
                    Ok(match sn.commit(&chain, &key, labels) {
                        Ok(()) => Ok(()),
                        // Another unpack committed the same layer first.
                        Err(e) if e.is_already_exists() => Err(None),
                        Err(e) => Err(Some(e)),
                    })
                })
                .await?
            };
            match committed {
                Ok(()) => {}
                Err(None) => self.remove(&key).await,
                Err(Some(e)) => {
                    self.remove(&key).await;
                    return Err(e.into());
                }
            }
            progress.event("unpacked", &name, layer.size, layer.size, Some(layer));
            parent = Some(chain);
        }
        chains
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid_argument("the image has no layers"))
    }

    async fn remove(&self, key: &str) {
        let (sn, key) = (self.snapshotter.clone(), key.to_string());
        let _ = blocking(move || {
            if let Err(e) = sn.remove(&key) {
                tracing::debug!(key, error = %e, "cannot remove a failed unpack's snapshot");
            }
            Ok(())
        })
        .await;
    }

    /// Moves staged directory `dir` in as active snapshot `key`'s changes.
    async fn adopt(&self, key: &str, dir: PathBuf) -> Result<()> {
        let (sn, key) = (self.snapshotter.clone(), key.to_string());
        blocking(move || {
            let direct = sn.direct_apply().ok_or_else(|| {
                Error::internal("a staged layer needs a snapshotter that applies directly")
            })?;
            direct.adopt(&key, &dir)?;
            Ok(())
        })
        .await
    }

    /// Applies `layer` into active snapshot `key`: directly where the
    /// driver allows it, else through a mount of `mounts`.
    async fn apply_into(
        &self,
        content: &Arc<dyn ContentStore>,
        key: &str,
        mounts: Vec<Mount>,
        layer: &Descriptor,
        diff_id: &Digest,
        states: &States,
    ) -> Result<()> {
        let direct = {
            let (sn, key) = (self.snapshotter.clone(), key.to_string());
            blocking(move || {
                sn.direct_apply()
                    .map(|d| Ok((d.writable_dir(&key)?, convert(d.whiteouts()))))
                    .transpose()
            })
            .await?
        };
        if let Some((dir, whiteouts)) = direct {
            return apply_at(content.clone(), dir, whiteouts, layer, diff_id, states).await;
        }
        let scratch = self.scratch.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::internal(format!("{}: {e}", scratch.display())))?;
        let guard = match berth_snapshots::mount::MountGuard::mount(&mounts, &scratch) {
            Ok(g) => g,
            Err(e) => {
                let _ = std::fs::remove_dir(&scratch);
                return Err(Error::failed_precondition(format!(
                    "mounting the snapshot: {e}"
                )));
            }
        };
        let result = apply_at(
            content.clone(),
            guard.target().to_path_buf(),
            Whiteouts::Remove,
            layer,
            diff_id,
            states,
        )
        .await;
        let unmounted = blocking(move || {
            guard
                .unmount()
                .map_err(|e| Error::internal(format!("unmounting the snapshot: {e}")))
        })
        .await;
        let _ = std::fs::remove_dir(&scratch);
        unmounted?;
        result
    }
}

/// The archive crate's name for a driver's whiteout format.
fn convert(w: berth_snapshots::Whiteouts) -> Whiteouts {
    match w {
        berth_snapshots::Whiteouts::Overlay => Whiteouts::Overlay,
        _ => Whiteouts::Remove,
    }
}

/// The archive compression of a layer media type.
pub(crate) fn compression(mt: &str) -> Result<archive::Compression> {
    match media::Compression::from_media_type(mt) {
        Ok(media::Compression::Gzip) => Ok(archive::Compression::Gzip),
        Ok(media::Compression::None) => Ok(archive::Compression::None),
        Ok(media::Compression::Zstd) => Ok(archive::Compression::Zstd),
        Err(e) => Err(Error::categorized(&e, "")),
    }
}

/// Waits until `layer`'s download is complete (or failed).
async fn wait_downloaded(layer: &Descriptor, states: &States) -> Result<()> {
    let Some(rx) = states.get(&layer.digest) else {
        return Ok(());
    };
    let mut rx = rx.clone();
    let state = rx
        .wait_for(|s| matches!(s, BlobState::Done | BlobState::Failed(_)))
        .await
        .map_err(|_| Error::internal("layer download vanished"))?
        .clone();
    match state {
        BlobState::Failed(why) => Err(Error::unavailable(format!(
            "downloading {}: {why}",
            layer.digest
        ))),
        _ => Ok(()),
    }
}

/// Applies `layer` (as it downloads, or from the store) into directory
/// `target`, recording deletions as `whiteouts` say.
async fn apply_at(
    content: Arc<dyn ContentStore>,
    target: PathBuf,
    whiteouts: Whiteouts,
    layer: &Descriptor,
    diff_id: &Digest,
    states: &States,
) -> Result<()> {
    let compression = compression(&layer.media_type)?;
    let mut rx = states
        .get(&layer.digest)
        .cloned()
        .ok_or_else(|| Error::internal(format!("no download for layer {}", layer.digest)))?;
    let state = rx
        .wait_for(|s| !matches!(s, BlobState::Pending))
        .await
        .map_err(|_| Error::internal("layer download vanished"))?
        .clone();
    let (digest, size, expected) = (layer.digest.clone(), layer.size, diff_id.to_string());
    let runtime = tokio::runtime::Handle::current();
    blocking(move || {
        let fail =
            |e: archive::ApplyError| Error::categorized(&e, &format!("applying layer {digest}"));
        let target: &Path = &target;
        match &state {
            BlobState::Writing { file, .. } => {
                let reader = TailReader::new(file.clone(), size, rx, runtime);
                archive::apply(target, reader, compression, whiteouts, Some(&expected))
                    .map(drop)
                    .map_err(fail)
            }
            BlobState::Done => {
                let reader = content.reader_at(&digest)?;
                let cursor = ReadCursor::new(&*reader);
                archive::apply(target, cursor, compression, whiteouts, Some(&expected))
                    .map(drop)
                    .map_err(fail)
            }
            BlobState::Failed(why) => {
                Err(Error::unavailable(format!("downloading {digest}: {why}")))
            }
            BlobState::Pending => Err(Error::internal("layer download not started")),
        }
    })
    .await
}

/// Layers being applied into staging directories, by layer index.
#[derive(Default)]
struct Staged {
    tasks: Vec<Option<tokio::task::JoinHandle<Result<PathBuf>>>>,
    dirs: Vec<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // A cancelled unpack: stop the appliers (the driver clears its
        // staging directory when it next starts).
        for task in self.tasks.iter().flatten() {
            task.abort();
        }
    }
}

impl Staged {
    /// Stops what still runs and removes every staging directory left.
    async fn abort(&mut self) {
        for task in self.tasks.drain(..).flatten() {
            task.abort();
            let _ = task.await;
        }
        for dir in self.dirs.drain(..) {
            if dir.exists() {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            }
        }
    }
}
