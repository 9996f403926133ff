//! The Diff gRPC service: containerd's `diff.v1.Diff`. `Apply` unpacks a
//! layer blob from the content store onto a snapshot's mounts, which is
//! how clients that pull client-side (Debian's `ctr pull`, `ctr images
//! import`) unpack images.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_api::containerd::services::diff::v1 as pb;
use berth_api::containerd::services::diff::v1::diff_server::Diff;
use berth_api::containerd::types::{Descriptor, Mount};
use berth_content::{Digest, ReadCursor, Store};
use berth_images::archive::{Compression, Whiteouts, apply};
use berth_metadata::NamespacedContent;
use berth_snapshots::mount::MountGuard;
use tonic::{Request, Response, Status};

/// Media type of an uncompressed OCI layer (what `Apply` reports).
const LAYER_TAR: &str = berth_images::media::OCI_LAYER;
/// Media type of a gzip-compressed OCI layer (what `Diff` makes by default).
const LAYER_TAR_GZIP: &str = berth_images::media::OCI_LAYER_GZIP;

/// Serves the diff API.
pub(crate) struct DiffService {
    store: Arc<dyn Store>,
    db: berth_metadata::Db,
    /// Where mounts that cannot be applied to directly are mounted.
    tmp_mounts: PathBuf,
    next: AtomicU64,
    /// Layers unpacked as soon as Content.Write committed them.
    early: Option<Arc<super::early::EarlyApply>>,
}

impl std::fmt::Debug for DiffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffService")
            .field("tmp_mounts", &self.tmp_mounts)
            .finish_non_exhaustive()
    }
}

impl DiffService {
    /// A service reading layers from `store` (each call through its
    /// namespace's view, recorded in `db`), mounting under `tmp_mounts`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        db: berth_metadata::Db,
        tmp_mounts: PathBuf,
    ) -> DiffService {
        DiffService {
            store,
            db,
            tmp_mounts,
            next: AtomicU64::new(0),
            early: None,
        }
    }

    /// Namespace `ns`'s view of the store, writing into `lease`.
    fn view(&self, ns: &str, lease: Option<String>) -> NamespacedContent<dyn Store> {
        NamespacedContent::new(self.store.clone(), self.db.clone(), ns).with_lease(lease)
    }

    /// Takes layers `early` has unpacked already where they fit (see
    /// [`super::early`]).
    pub(crate) fn with_early_apply(mut self, early: Arc<super::early::EarlyApply>) -> DiffService {
        self.early = Some(early);
        self
    }
}

/// The compression a layer media type implies.
fn compression_of(media_type: &str) -> Result<Compression, Status> {
    if media_type.ends_with("+gzip")
        || media_type.ends_with(".tar.gzip")
        || media_type.ends_with("tar.gz")
    {
        Ok(Compression::Gzip)
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Ok(Compression::Zstd)
    } else if media_type.ends_with(".tar")
        || media_type.ends_with("diff.tar")
        || media_type.ends_with("layer.v1.tar")
    {
        Ok(Compression::None)
    } else {
        Err(Status::invalid_argument(format!(
            "{media_type:?} is not a layer media type this differ can apply"
        )))
    }
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Where to write: an overlay's upper directory, a bind mount's source, or
/// (for anything else) `None`, meaning "mount it first".
fn direct_target(mounts: &[Mount]) -> Option<(PathBuf, Whiteouts)> {
    let [m] = mounts else { return None };
    match m.r#type.as_str() {
        "overlay" => option(m, "upperdir").map(|u| (PathBuf::from(u), Whiteouts::Overlay)),
        "bind" | "rbind" if !m.options.iter().any(|o| o == "ro") => {
            Some((PathBuf::from(&m.source), Whiteouts::Remove))
        }
        _ => None,
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        r: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = super::namespace_of(&r)?;
        let r = r.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("apply needs the layer's descriptor"))?;
        let compression = compression_of(&desc.media_type)?;
        let digest = Digest::parse(&desc.digest).map_err(|e| {
            Status::invalid_argument(format!("layer digest {:?}: {e}", desc.digest))
        })?;
        // The namespace's blobs only, as containerd's differ reads them.
        let store = self.view(&ns, None);
        let mounts = r.mounts;
        // Options ask for something else than a plain unpack.
        let early = self.early.clone().filter(|_| r.payloads.is_empty());
        let scratch = self
            .tmp_mounts
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
        let stats = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let not_found = |e: berth_content::Error| match e {
                berth_content::Error::NotFound(_) => {
                    Status::not_found(format!("layer {digest} is not in the content store"))
                }
                other => Status::unavailable(other.to_string()),
            };
            // The caller's namespace must hold the layer, staged or not.
            berth_content::Manager::info(&store, &digest).map_err(not_found)?;
            if let (Some(early), Some((target, _))) = (&early, direct_target(&mounts)) {
                let taken = early.take(&digest, compression, &target).map_err(|e| {
                    Status::internal(format!(
                        "applying layer {digest} from its early unpack: {e}"
                    ))
                })?;
                if let Some(stats) = taken {
                    return Ok(stats);
                }
            }
            let reader = store.backend().reader_at(&digest).map_err(not_found)?;
            let cursor = ReadCursor::new(&*reader);
            let fail = |e: berth_images::archive::ApplyError| {
                Status::invalid_argument(format!("applying layer {digest}: {e}"))
            };
            if let Some((target, whiteouts)) = direct_target(&mounts) {
                return apply(&target, cursor, compression, whiteouts, None).map_err(fail);
            }
            std::fs::create_dir_all(&scratch)
                .map_err(|e| Status::internal(format!("{}: {e}", scratch.display())))?;
            let snap_mounts: Vec<berth_snapshots::Mount> = mounts
                .into_iter()
                .map(berth_snapshots::proxy::mount_from_proto)
                .collect();
            let guard = MountGuard::mount(&snap_mounts, &scratch)
                .map_err(|e| Status::failed_precondition(format!("mounting the snapshot: {e}")))?;
            let result =
                apply(guard.target(), cursor, compression, Whiteouts::Remove, None).map_err(fail);
            let unmounted = guard.unmount();
            let _ = std::fs::remove_dir(&scratch);
            unmounted.map_err(|e| Status::internal(format!("unmounting the snapshot: {e}")))?;
            result
        })
        .await
        .map_err(|e| Status::internal(format!("apply task failed: {e}")))??;
        tracing::debug!(layer = %desc.digest, diff_id = %stats.diff_id, size = stats.size, "applied layer");
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(Descriptor {
                media_type: LAYER_TAR.to_string(),
                digest: stats.diff_id,
                size: i64::try_from(stats.size).unwrap_or(i64::MAX),
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(
        &self,
        r: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ns = super::namespace_of(&r)?;
        let lease = super::content::lease_of(&r);
        let r = r.into_inner();
        let media_type = if r.media_type.is_empty() {
            LAYER_TAR_GZIP.to_string()
        } else {
            r.media_type.clone()
        };
        let compression = compression_of(&media_type)?;
        if r.left.is_empty() || r.right.is_empty() {
            return Err(Status::invalid_argument(
                "diff needs the mounts of both sides (left: the parent, right: the changed snapshot)",
            ));
        }
        let scratch = self.tmp_mounts.join(format!(
            "diff-{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let ref_ = if r.r#ref.is_empty() {
            format!("diff-{}", uuid::Uuid::new_v4().simple())
        } else {
            r.r#ref.clone()
        };
        let store = self.view(&ns, lease);
        let mut labels: std::collections::BTreeMap<String, String> = r.labels.into_iter().collect();
        let (left, right) = (r.left, r.right);
        let (digest, size_i) = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let read_only = |mounts: Vec<Mount>| -> Vec<berth_snapshots::Mount> {
                mounts
                    .into_iter()
                    .map(berth_snapshots::proxy::mount_from_proto)
                    .map(|mut m| {
                        m.options.retain(|o| o != "rw");
                        if !m.options.iter().any(|o| o == "ro") {
                            m.options.push("ro".into());
                        }
                        m
                    })
                    .collect()
            };
            let (l, rt) = (scratch.join("left"), scratch.join("right"));
            for d in [&l, &rt] {
                std::fs::create_dir_all(d)
                    .map_err(|e| Status::internal(format!("{}: {e}", d.display())))?;
            }
            let mount = |m: Vec<berth_snapshots::Mount>, at: &Path| {
                MountGuard::mount(&m, at)
                    .map_err(|e| Status::failed_precondition(format!("mounting a diff side: {e}")))
            };
            let left_guard = mount(read_only(left), &l)?;
            let right_guard = mount(read_only(right), &rt)?;
            let mut writer = store.open_writer(&ref_, None, None).map_err(|e| match e {
                berth_content::Error::NotFound(_) => crate::wire::status(e),
                e => Status::unavailable(format!("content ingest {ref_:?}: {e}")),
            })?;
            let written = berth_images::archive::write_layer(
                left_guard.target(),
                right_guard.target(),
                &mut writer as &mut dyn berth_content::Writer,
                compression,
            );
            let _ = right_guard.unmount();
            let _ = left_guard.unmount();
            let _ = std::fs::remove_dir_all(&scratch);
            let stats = written.map_err(|e| Status::internal(e.to_string()))?;
            labels.insert("containerd.io/uncompressed".into(), stats.diff_id.clone());
            let digest = berth_content::Writer::digest(&writer);
            let size = berth_content::Writer::status(&writer)
                .map_err(|e| Status::internal(e.to_string()))?
                .offset;
            let size_i = i64::try_from(size).unwrap_or(i64::MAX);
            // Stored and recorded in the namespace and the lease (which
            // holds a diff made before all the same, as containerd's does).
            match writer.commit_fresh(size, Some(&digest), labels) {
                Ok(_) | Err(berth_content::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(Status::internal(format!("committing the diff: {e}"))),
            }
            Ok((digest, size_i))
        })
        .await
        .map_err(|e| Status::internal(format!("diff task failed: {e}")))??;
        tracing::debug!(digest = %digest, size = size_i, "computed diff");
        Ok(Response::new(pb::DiffResponse {
            diff: Some(Descriptor {
                media_type,
                digest: digest.to_string(),
                size: size_i,
                annotations: Default::default(),
            }),
        }))
    }
}

/// The temp-mount directory of the differ under the daemon's state.
pub(crate) fn tmp_mounts(state: &Path) -> PathBuf {
    state
        .join("io.containerd.differ.v1.walking")
        .join("tmpmounts")
}
