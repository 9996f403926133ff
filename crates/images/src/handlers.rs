//! Walking an image's graph of blobs: index → manifests → config + layers.
//!
//! This is containerd's `images.Children`, `Walk`, `FilterPlatforms` +
//! `LimitManifests`, `Manifest` and `Image.Size` for berth. Blobs are read
//! through [`ReadBlob`], which every content store [`Provider`] implements
//! and which a registry fetcher can implement to walk an image before it is
//! pulled.
//!
//! Every blob that is read whole (manifests, indexes, configs) is checked
//! against the size limits in [`crate::manifest`] *before* it is read, using
//! the size its descriptor claims, and again after.
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! use berth_content::local::LocalStore;
//! use berth_images::handlers::{image_layers_and_config, walk, Visit, WalkOptions};
//! use berth_images::platform::Matcher;
//! # use berth_content::{Ingester, Labels};
//! # use berth_images::manifest::Descriptor;
//! # use berth_images::media;
//! let store = LocalStore::open(dir.path())?;
//! # let put = |mt: &str, data: &[u8]| -> Descriptor {
//! #     let d = Descriptor::of(mt, data);
//! #     berth_content::write_blob(&store, d.digest.as_str(), data, &d.digest, Labels::new()).unwrap();
//! #     d
//! # };
//! # let layer = put(media::OCI_LAYER, b"not really a tar");
//! # let diff_id = layer.digest.clone();
//! # let cfg = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#);
//! # let config = put(media::OCI_CONFIG, cfg.as_bytes());
//! # let m = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
//! #     "config": config, "layers": [layer]});
//! # let root = put(media::OCI_MANIFEST, &serde_json::to_vec(&m)?);
//! // `root` is the descriptor of an image's manifest or index in `store`.
//! let image = futures::executor::block_on(image_layers_and_config(&store, &root, &Matcher::all()))?;
//! assert_eq!(image.layers.len(), image.image_config.rootfs.diff_ids.len());
//!
//! let mut seen = 0;
//! futures::executor::block_on(walk(&store, &root, &WalkOptions::default(), |_desc| {
//!     seen += 1;
//!     Ok(Visit::Children)
//! }))?;
//! assert_eq!(seen, 3); // manifest, config, layer
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;

use async_trait::async_trait;
use berth_content::{Digest, Provider};

use crate::error::{Error, Result};
use crate::manifest::{
    self, Descriptor, ImageConfig, Manifest, check_size, parse_config, parse_index, parse_manifest,
};
use crate::media;
use crate::platform::Matcher;

/// Reads whole blobs by descriptor: the manifests, indexes and configs of a
/// walk (never layers).
///
/// Implemented for every content store [`Provider`] (a blocking read of a
/// small local file, at most [`manifest::MAX_CONFIG_SIZE`]); implement it
/// for a registry fetcher to walk remote images, mapping failures to
/// [`Error::Read`].
#[async_trait]
pub trait ReadBlob: Send + Sync {
    /// The bytes of blob `desc`; callers check their size and digest.
    async fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>>;
}

#[async_trait]
impl<P: Provider + ?Sized> ReadBlob for P {
    async fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let reader = self.reader_at(&desc.digest)?;
        let what = manifest::size_limit(&desc.media_type).map_or("blob", |(w, _)| w);
        let size = reader.size();
        if size != desc.size {
            // Never allocate what the store has if it is not what was asked.
            return Err(Error::SizeMismatch {
                what,
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: size,
            });
        }
        let len = usize::try_from(size).map_err(|_| Error::SizeMismatch {
            what,
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: size,
        })?;
        let mut buf = vec![0; len];
        reader.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// Reads `desc` after checking its claimed size against its limit.
async fn fetch<R: ReadBlob + ?Sized>(reader: &R, desc: &Descriptor) -> Result<Vec<u8>> {
    check_size(desc)?;
    reader.read_blob(desc).await
}

/// Whether blobs of media type `mt` have children (and so must be read).
fn has_children(mt: &str) -> bool {
    media::is_manifest(mt) || media::is_index(mt) || media::is_schema1(mt)
}

/// The direct children of blob `desc`, whose content is `bytes`: a
/// manifest's config then its layers, or an index's manifests. Every child,
/// unfiltered; layers and configs (and unknown types) have none.
///
/// Errors are those of [`manifest::parse_manifest`] / [`manifest::parse_index`],
/// size limits included.
pub fn children(desc: &Descriptor, bytes: &[u8]) -> Result<Vec<Descriptor>> {
    let mt = desc.media_type.as_str();
    if media::is_manifest(mt) || media::is_schema1(mt) {
        let m = parse_manifest(desc, bytes)?;
        let mut out = Vec::with_capacity(1 + m.layers.len());
        out.push(m.config);
        out.extend(m.layers);
        Ok(out)
    } else if media::is_index(mt) {
        Ok(parse_index(desc, bytes)?.manifests)
    } else {
        if !media::is_layer(mt) && !media::is_config(mt) {
            tracing::debug!(digest = %desc.digest, media_type = mt, "unknown media type, no children");
        }
        Ok(Vec::new())
    }
}

/// Which children a [`walk`] follows.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Index entries whose platform this rejects are left out (entries
    /// without a platform are kept, as containerd keeps them).
    pub platforms: Matcher,
    /// At most this many entries of each index are followed, the best
    /// matches first (containerd's `LimitManifests`); `None` for all.
    /// With a limit, an index with no matching entry is an error.
    pub manifest_limit: Option<usize>,
    /// Leave out non-distributable and foreign layers, which registries do
    /// not serve and pulls and pushes skip.
    pub skip_non_distributable: bool,
}

impl Default for WalkOptions {
    /// The host's best platform only, skipping non-distributable layers:
    /// what a pull fetches.
    fn default() -> WalkOptions {
        WalkOptions::platform(Matcher::host())
    }
}

impl WalkOptions {
    /// The best manifest for `platforms` only, skipping non-distributable layers.
    pub fn platform(platforms: Matcher) -> WalkOptions {
        WalkOptions {
            platforms,
            manifest_limit: Some(1),
            skip_non_distributable: true,
        }
    }

    /// Every manifest of every platform, skipping non-distributable layers.
    pub fn all() -> WalkOptions {
        WalkOptions {
            platforms: Matcher::all(),
            manifest_limit: None,
            skip_non_distributable: true,
        }
    }

    /// Applies these options to the `children` of `parent`.
    pub fn filter(
        &self,
        parent: &Descriptor,
        mut children: Vec<Descriptor>,
    ) -> Result<Vec<Descriptor>> {
        if media::is_index(&parent.media_type) {
            let available = platforms_of(&children);
            children.retain(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| self.platforms.matches(p))
            });
            self.platforms.sort_descriptors(&mut children);
            if let Some(limit) = self.manifest_limit {
                if children.is_empty() {
                    return Err(Error::NoMatchingManifest {
                        platform: self.platforms.to_string(),
                        index: parent.digest.clone(),
                        available,
                    });
                }
                children.truncate(limit);
            }
        }
        if self.skip_non_distributable {
            children.retain(|d| !media::is_non_distributable(&d.media_type));
        }
        Ok(children)
    }
}

/// The distinct platforms of index entries, as specifiers, in order.
fn platforms_of(entries: &[Descriptor]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in entries.iter().filter_map(|d| d.platform.as_ref()) {
        let s = p.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// What [`walk`] does after visiting a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Go on to its children.
    Children,
    /// Do not read it or walk below it (containerd's `ErrSkipDesc`).
    SkipChildren,
}

/// Visits every descriptor of the image graph below `root` once (the same
/// digest reached twice is visited once), parents before children, level by
/// level; the blobs of one level are read concurrently.
///
/// Children are chosen by `options`. `visit` may stop the walk by returning
/// an error, which `walk` returns.
pub async fn walk<R, F>(
    reader: &R,
    root: &Descriptor,
    options: &WalkOptions,
    mut visit: F,
) -> Result<()>
where
    R: ReadBlob + ?Sized,
    F: FnMut(&Descriptor) -> Result<Visit>,
{
    let mut seen: HashSet<Digest> = HashSet::new();
    seen.insert(root.digest.clone());
    let mut level = vec![root.clone()];
    while !level.is_empty() {
        let mut parents = Vec::new();
        for desc in level {
            if visit(&desc)? == Visit::Children && has_children(&desc.media_type) {
                parents.push(desc);
            }
        }
        let blobs = futures::future::try_join_all(parents.iter().map(|d| fetch(reader, d))).await?;
        let mut next = Vec::new();
        for (parent, bytes) in parents.iter().zip(blobs) {
            let kids = options.filter(parent, children(parent, &bytes)?)?;
            tracing::trace!(digest = %parent.digest, children = kids.len(), "walked");
            next.extend(kids.into_iter().filter(|k| seen.insert(k.digest.clone())));
        }
        level = next;
    }
    Ok(())
}

/// The parts of one image, resolved for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The manifest chosen (the root itself, or an entry of the root index).
    pub manifest: Descriptor,
    /// The image config's descriptor.
    pub config: Descriptor,
    /// Every layer, bottom first, non-distributable ones included: they line
    /// up with `image_config.rootfs.diff_ids`. Filter them with
    /// [`media::is_non_distributable`] to fetch.
    pub layers: Vec<Descriptor>,
    /// The parsed image config.
    pub image_config: ImageConfig,
}

impl ResolvedImage {
    /// The layers' diff IDs, bottom first.
    pub fn diff_ids(&self) -> &[Digest] {
        &self.image_config.rootfs.diff_ids
    }

    /// The chain ID of the whole stack (the top snapshot's name).
    pub fn chain_id(&self) -> Option<Digest> {
        manifest::chain_id(self.diff_ids())
    }
}

/// Finds the manifest for `platforms` under `root`: `root` itself if it is a
/// manifest (its platform is not checked, as in containerd), or the best
/// match of an index, searched depth first through nested indexes. An index
/// entry with no platform is judged by its config's platform.
///
/// Errors: [`Error::NoMatchingManifest`] listing the platforms there are,
/// [`Error::UnexpectedMediaType`] if `root` is neither, and read and parse
/// errors.
pub async fn resolve_manifest<R: ReadBlob + ?Sized>(
    reader: &R,
    root: &Descriptor,
    platforms: &Matcher,
) -> Result<(Descriptor, Manifest)> {
    media::check_supported(&root.media_type)?;
    if !media::is_manifest(&root.media_type) && !media::is_index(&root.media_type) {
        return Err(Error::UnexpectedMediaType {
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            want: "manifest or index",
        });
    }
    let mut available: Vec<String> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack = vec![root.clone()];
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if media::is_index(&desc.media_type) {
            let index = parse_index(&desc, &fetch(reader, &desc).await?)?;
            for p in platforms_of(&index.manifests) {
                if !available.contains(&p) {
                    available.push(p);
                }
            }
            let mut entries: Vec<Descriptor> = index
                .manifests
                .into_iter()
                .filter(|d| d.platform.as_ref().is_none_or(|p| platforms.matches(p)))
                .collect();
            platforms.sort_descriptors(&mut entries);
            // Best last, so it is popped first.
            stack.extend(entries.into_iter().rev());
        } else if media::is_manifest(&desc.media_type) {
            let m = parse_manifest(&desc, &fetch(reader, &desc).await?)?;
            if desc.digest != root.digest && desc.platform.is_none() && !platforms.is_all() {
                let config = parse_config(&m.config, &fetch(reader, &m.config).await?)?;
                let p = config.platform();
                if !platforms.matches(&p) {
                    let s = p.to_string();
                    if !available.contains(&s) {
                        available.push(s);
                    }
                    continue;
                }
            }
            tracing::debug!(manifest = %desc.digest, platform = %platforms, "resolved manifest");
            return Ok((desc, m));
        } else {
            tracing::debug!(digest = %desc.digest, media_type = %desc.media_type, "skipping index entry of unknown type");
        }
    }
    Err(Error::NoMatchingManifest {
        platform: platforms.to_string(),
        index: root.digest.clone(),
        available,
    })
}

/// The config and layers of the image at `root` for `platforms`: resolves
/// an index to its best manifest ([`resolve_manifest`]), reads and parses the
/// config, and checks that layers and diff IDs line up.
///
/// Errors: those of [`resolve_manifest`], config read/parse errors, and
/// [`Error::LayerCountMismatch`].
pub async fn image_layers_and_config<R: ReadBlob + ?Sized>(
    reader: &R,
    root: &Descriptor,
    platforms: &Matcher,
) -> Result<ResolvedImage> {
    let (manifest_desc, m) = resolve_manifest(reader, root, platforms).await?;
    let image_config = parse_config(&m.config, &fetch(reader, &m.config).await?)?;
    if image_config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::LayerCountMismatch {
            manifest: manifest_desc.digest,
            config: m.config.digest,
            layers: m.layers.len(),
            diff_ids: image_config.rootfs.diff_ids.len(),
        });
    }
    Ok(ResolvedImage {
        manifest: manifest_desc,
        config: m.config,
        layers: m.layers,
        image_config,
    })
}

/// The packed size of the image at `root` for `platforms`: the sizes of the
/// root, the best manifest, its config and layers, each blob counted once
/// (containerd's `Image.Size`; foreign layers count too).
pub async fn image_size<R: ReadBlob + ?Sized>(
    reader: &R,
    root: &Descriptor,
    platforms: &Matcher,
) -> Result<u64> {
    let options = WalkOptions {
        platforms: platforms.clone(),
        manifest_limit: Some(1),
        skip_non_distributable: false,
    };
    let mut size = 0u64;
    walk(reader, root, &options, |d| {
        size = size.saturating_add(d.size);
        Ok(Visit::Children)
    })
    .await?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use berth_content::{Labels, local::LocalStore};
    use futures::executor::block_on;
    use serde_json::json;

    use super::*;
    use crate::platform::Platform;

    /// Blobs in memory, counting reads.
    #[derive(Default)]
    struct Mem {
        blobs: HashMap<Digest, Vec<u8>>,
        reads: Mutex<Vec<Digest>>,
    }

    #[async_trait]
    impl ReadBlob for Mem {
        async fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
            self.reads.lock().unwrap().push(desc.digest.clone());
            self.blobs.get(&desc.digest).cloned().ok_or_else(|| {
                Error::Content(berth_content::Error::NotFound(format!(
                    "content {}",
                    desc.digest
                )))
            })
        }
    }

    impl Mem {
        fn put(&mut self, mt: &str, data: &[u8]) -> Descriptor {
            let d = Descriptor::of(mt, data);
            self.blobs.insert(d.digest.clone(), data.to_vec());
            d
        }

        fn json(&mut self, mt: &str, v: serde_json::Value) -> Descriptor {
            self.put(mt, &serde_json::to_vec(&v).unwrap())
        }

        /// One image for `platform`: config + the given layers.
        fn image(&mut self, platform: &str, layers: &[Descriptor], docker: bool) -> Descriptor {
            let p = Platform::parse(platform).unwrap();
            let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
            let (cmt, mmt) = if docker {
                (media::DOCKER_CONFIG, media::DOCKER_MANIFEST)
            } else {
                (media::OCI_CONFIG, media::OCI_MANIFEST)
            };
            let config = self.json(
                cmt,
                json!({"architecture": p.architecture, "os": p.os, "variant": p.variant,
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
            );
            self.json(
                mmt,
                json!({"schemaVersion": 2, "mediaType": mmt, "config": config, "layers": layers}),
            )
        }
    }

    fn with_platform(mut d: Descriptor, p: &str) -> Descriptor {
        d.platform = Some(Platform::parse(p).unwrap());
        d
    }

    /// An index for amd64, arm64 and arm/v7 sharing a base layer, plus an
    /// attestation-style entry (unknown/unknown).
    struct Fixture {
        mem: Mem,
        root: Descriptor,
        base: Descriptor,
        amd64: Descriptor,
        arm64: Descriptor,
    }

    fn fixture() -> Fixture {
        let mut mem = Mem::default();
        let base = mem.put(media::OCI_LAYER_GZIP, b"base layer");
        let top_amd = mem.put(media::OCI_LAYER_GZIP, b"amd64 layer");
        let top_arm = mem.put(media::OCI_LAYER_GZIP, b"arm64 layer");
        let amd64 = with_platform(
            mem.image("linux/amd64", &[base.clone(), top_amd], false),
            "linux/amd64",
        );
        let arm64 = with_platform(
            mem.image("linux/arm64/v8", &[base.clone(), top_arm], false),
            "linux/arm64/v8",
        );
        let armv7 = with_platform(
            mem.image("linux/arm/v7", std::slice::from_ref(&base), false),
            "linux/arm/v7",
        );
        let mut att = mem.image("linux/amd64", &[], false);
        att.platform = Some(Platform::new("unknown", "unknown", ""));
        let root = mem.json(
            media::OCI_INDEX,
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                   "manifests": [armv7, arm64, amd64, att]}),
        );
        Fixture {
            mem,
            root,
            base,
            amd64,
            arm64,
        }
    }

    fn walked(mem: &Mem, root: &Descriptor, options: &WalkOptions) -> Result<Vec<Descriptor>> {
        let mut out = Vec::new();
        block_on(walk(mem, root, options, |d| {
            out.push(d.clone());
            Ok(Visit::Children)
        }))?;
        Ok(out)
    }

    #[test]
    fn walk_follows_the_best_platform_only() {
        let f = fixture();
        let opts = WalkOptions::platform(Matcher::only(&Platform::parse("linux/arm64").unwrap()));
        let seen = walked(&f.mem, &f.root, &opts).unwrap();
        // index, arm64 manifest, its config and two layers.
        assert_eq!(seen.len(), 5, "{seen:#?}");
        assert_eq!(seen[0], f.root);
        assert_eq!(seen[1].digest, f.arm64.digest);
        assert_eq!(seen[2].media_type, media::OCI_CONFIG);
        assert_eq!(seen[3], f.base);
        assert!(!seen.iter().any(|d| d.digest == f.amd64.digest));
    }

    #[test]
    fn walk_all_visits_each_digest_once() {
        let f = fixture();
        let seen = walked(&f.mem, &f.root, &WalkOptions::all()).unwrap();
        let mut digests: Vec<_> = seen.iter().map(|d| d.digest.clone()).collect();
        let n = digests.len();
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), n, "no digest visited twice");
        // index + 4 manifests + 4 configs + base + 2 tops (attestation has no layers)
        assert_eq!(n, 12);
        assert_eq!(seen.iter().filter(|d| d.digest == f.base.digest).count(), 1);
    }

    #[test]
    fn walk_without_a_match_names_what_is_there() {
        let f = fixture();
        let opts = WalkOptions::platform(Matcher::strict(&Platform::parse("linux/s390x").unwrap()));
        let err = walked(&f.mem, &f.root, &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no manifest for platform linux/s390x in index {}; available: linux/arm/v7, linux/arm64/v8, linux/amd64, unknown/unknown",
                f.root.digest
            )
        );
        assert!(err.is_not_found());
    }

    #[test]
    fn walk_skips_foreign_layers_unless_asked() {
        let mut mem = Mem::default();
        let mut foreign = Descriptor::of(media::DOCKER_FOREIGN_LAYER_GZIP, b"windows base");
        foreign.urls = vec!["https://example.com/base.tar.gz".into()];
        let own = mem.put(media::DOCKER_LAYER_GZIP, b"app");
        let root = mem.image("windows/amd64", &[foreign.clone(), own.clone()], true);
        let seen = walked(&mem, &root, &WalkOptions::all()).unwrap();
        assert!(seen.iter().any(|d| d.digest == own.digest));
        assert!(!seen.iter().any(|d| d.digest == foreign.digest));
        let keep = WalkOptions {
            skip_non_distributable: false,
            ..WalkOptions::all()
        };
        let seen = walked(&mem, &root, &keep).unwrap();
        assert!(seen.iter().any(|d| d.digest == foreign.digest));
        // The resolved image keeps it, in line with the diff IDs.
        let img = block_on(image_layers_and_config(&mem, &root, &Matcher::all())).unwrap();
        assert_eq!(img.layers, vec![foreign, own]);
    }

    #[test]
    fn skip_children_does_not_read_the_blob() {
        let f = fixture();
        let mut n = 0;
        block_on(walk(&f.mem, &f.root, &WalkOptions::all(), |_| {
            n += 1;
            Ok(Visit::SkipChildren)
        }))
        .unwrap();
        assert_eq!(n, 1);
        assert!(f.mem.reads.lock().unwrap().is_empty());
    }

    #[test]
    fn visit_errors_stop_the_walk() {
        let f = fixture();
        let err = block_on(walk(&f.mem, &f.root, &WalkOptions::all(), |d| {
            if media::is_config(&d.media_type) {
                Err(Error::Content(berth_content::Error::Unavailable(
                    "stop".into(),
                )))
            } else {
                Ok(Visit::Children)
            }
        }))
        .unwrap_err();
        assert!(err.to_string().contains("stop"), "{err}");
    }

    #[test]
    fn resolves_the_host_compatible_manifest() {
        let f = fixture();
        let arm64 = Matcher::only(&Platform::parse("linux/arm64").unwrap());
        let img = block_on(image_layers_and_config(&f.mem, &f.root, &arm64)).unwrap();
        assert_eq!(img.manifest.digest, f.arm64.digest);
        assert_eq!(img.image_config.platform().to_string(), "linux/arm64");
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.layers[0], f.base);
        assert_eq!(img.diff_ids()[0], f.base.digest);
        assert_eq!(img.chain_id(), manifest::chain_id(img.diff_ids()));

        // An arm/v8 host has no arm64 image to take; it gets arm/v7.
        let armv8 = Matcher::only(&Platform::parse("linux/arm/v8").unwrap());
        let img = block_on(image_layers_and_config(&f.mem, &f.root, &armv8)).unwrap();
        assert_eq!(img.image_config.platform().to_string(), "linux/arm/v7");

        let err = block_on(image_layers_and_config(
            &f.mem,
            &f.root,
            &Matcher::strict(&Platform::parse("windows/amd64").unwrap()),
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("no manifest for platform windows/amd64 in index sha256:"),
            "{msg}"
        );
        assert!(
            msg.contains("available: linux/arm/v7, linux/arm64/v8, linux/amd64"),
            "{msg}"
        );
    }

    #[test]
    fn entries_without_platform_are_judged_by_their_config() {
        let mut mem = Mem::default();
        let l = mem.put(media::DOCKER_LAYER_GZIP, b"l");
        let arm = mem.image("linux/arm64", std::slice::from_ref(&l), true);
        let amd = mem.image("linux/amd64", std::slice::from_ref(&l), true);
        let root = mem.json(
            media::DOCKER_MANIFEST_LIST,
            json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST_LIST, "manifests": [arm, amd]}),
        );
        let m = Matcher::strict(&Platform::parse("linux/amd64").unwrap());
        let (desc, _) = block_on(resolve_manifest(&mem, &root, &m)).unwrap();
        assert_eq!(desc.digest, amd.digest);
    }

    #[test]
    fn nested_indexes_are_searched() {
        let f = fixture();
        let mut mem = f.mem;
        let outer = mem.json(
            media::OCI_INDEX,
            json!({"schemaVersion": 2, "manifests": [f.root]}),
        );
        let m = Matcher::only(&Platform::parse("linux/amd64").unwrap());
        let (desc, _) = block_on(resolve_manifest(&mem, &outer, &m)).unwrap();
        assert_eq!(desc.digest, f.amd64.digest);
    }

    #[test]
    fn layer_and_diff_id_counts_must_agree() {
        let mut mem = Mem::default();
        let l = mem.put(media::OCI_LAYER, b"l");
        let config = mem.json(
            media::OCI_CONFIG,
            json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
        );
        let root = mem.json(
            media::OCI_MANIFEST,
            json!({"schemaVersion": 2, "config": config, "layers": [l]}),
        );
        let err = block_on(image_layers_and_config(&mem, &root, &Matcher::all())).unwrap_err();
        assert!(
            err.to_string().contains("has 1 layers but its config"),
            "{err}"
        );
        assert!(err.to_string().contains("lists 0 diff IDs"), "{err}");
    }

    #[test]
    fn oversized_descriptors_are_refused_before_reading() {
        let f = fixture();
        let mut big = f.amd64.clone();
        big.size = 9 << 20;
        let err = walked(&f.mem, &big, &WalkOptions::all()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("manifest {} is 9 MiB, over the 4 MiB limit", big.digest)
        );
        assert!(f.mem.reads.lock().unwrap().is_empty(), "nothing was read");
    }

    #[test]
    fn image_size_counts_the_chosen_platform_once_per_blob() {
        let f = fixture();
        let m = Matcher::only(&Platform::parse("linux/amd64").unwrap());
        let size = block_on(image_size(&f.mem, &f.root, &m)).unwrap();
        let (desc, man) = block_on(resolve_manifest(&f.mem, &f.root, &m)).unwrap();
        let want = f.root.size
            + desc.size
            + man.config.size
            + man.layers.iter().map(|l| l.size).sum::<u64>();
        assert_eq!(size, want);
    }

    #[test]
    fn futures_are_send_for_use_in_spawned_tasks() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let root = Descriptor::of(media::OCI_MANIFEST, b"{}");
        let m = Matcher::all();
        assert_send(&walk(&store, &root, &WalkOptions::all(), |_| {
            Ok(Visit::Children)
        }));
        assert_send(&image_layers_and_config(&store, &root, &m));
        assert_send(&image_size(&store as &dyn Provider, &root, &m));
    }

    #[test]
    fn children_of_each_kind() {
        let f = fixture();
        let bytes = &f.mem.blobs[&f.root.digest];
        assert_eq!(children(&f.root, bytes).unwrap().len(), 4);
        let bytes = &f.mem.blobs[&f.amd64.digest];
        let kids = children(&f.amd64, bytes).unwrap();
        assert_eq!(kids.len(), 3);
        assert!(media::is_config(&kids[0].media_type));
        assert!(children(&f.base, b"whatever").unwrap().is_empty());
    }

    #[test]
    fn content_store_providers_are_read_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let f = fixture();
        for (digest, data) in &f.mem.blobs {
            berth_content::write_blob(&store, digest.as_str(), data, digest, Labels::new())
                .unwrap();
        }
        let m = Matcher::only(&Platform::parse("linux/amd64").unwrap());
        let img = block_on(image_layers_and_config(&store, &f.root, &m)).unwrap();
        assert_eq!(img.manifest.digest, f.amd64.digest);

        // A descriptor whose size disagrees with the store is refused.
        let mut wrong = f.amd64.clone();
        wrong.size -= 1;
        let err = block_on(store.read_blob(&wrong)).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        // Missing blobs are not found.
        let missing = Descriptor::of(media::OCI_MANIFEST, b"absent");
        assert!(
            block_on(store.read_blob(&missing))
                .unwrap_err()
                .is_not_found()
        );
    }
}
