//! Image archives: OCI image layouts and `docker save` archives read into
//! the content store (import), and images written out as an OCI layout that
//! `docker load` also understands (export).
//!
//! Import streams: every blob is verified against its digest as it is
//! written, so a corrupt archive stores nothing under a wrong name; the
//! small index files are kept in memory and read at the end.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Write};

use crate::{ContentStore, Error, Result};
use berth_content::Digest;
use berth_images::manifest::{self, Descriptor, Index, Manifest};
use berth_images::{Matcher, Reference, media};
use serde::{Deserialize, Serialize};

/// Largest index file (`index.json`, `manifest.json`) an archive may carry.
const MAX_INDEX_FILE: u64 = 4 << 20;
/// One name an import gives what it reads (containerd's
/// `types.transfer.ImageReference`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageReference {
    /// A complete reference, or a prefix (`is_prefix`) under which the
    /// archive's entries are named by their tags.
    pub name: String,
    /// `name` is a prefix for the archive's entries.
    pub is_prefix: bool,
    /// A prefix may be replaced by an entry's own complete name.
    pub allow_overwrite: bool,
    /// Also name each image `<name>@<digest>`.
    pub add_digest: bool,
    /// With `add_digest`: not for entries that got a name from their tag.
    pub skip_named_digest: bool,
}

/// The fetcher of an import: everything is in the content store already,
/// so a blob that is not is missing from the archive.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveOnly;

#[async_trait::async_trait]
impl berth_remotes::Fetcher for ArchiveOnly {
    async fn fetch_from(
        &self,
        desc: &berth_remotes::Descriptor,
        _offset: u64,
    ) -> berth_remotes::Result<berth_remotes::ByteStream> {
        Err(berth_remotes::Error::NotFound {
            what: format!(
                "{} (not in the archive: an archive must hold every blob of the platforms it is imported for; export with --all-platforms, or import for the archive's platform)",
                desc.digest
            ),
            errors: Default::default(),
        })
    }
}

/// containerd's annotation naming the image an index entry is.
const IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation with the entry's reference (or just its tag).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What an archive held.
#[derive(Debug, Default)]
pub struct Imported {
    /// The images it names: (normalised name, root descriptor).
    pub images: Vec<(String, Descriptor)>,
    /// Blobs written into the store (already present ones not counted).
    pub blobs_written: u64,
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn bad_archive(what: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("image archive: {what}"))
}

/// `./a//b` → `a/b`.
fn clean(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes `r` into the store; with `expected`, verified against it.
fn ingest(
    store: &dyn ContentStore,
    ref_: &str,
    r: &mut dyn Read,
    size: u64,
    expected: Option<&Digest>,
) -> Result<(Digest, bool)> {
    let mut w = match store.writer(ref_, Some(size), expected) {
        Ok(w) => w,
        Err(berth_content::Error::AlreadyExists(_)) => {
            io::copy(r, &mut io::sink()).map_err(bad_archive)?;
            return Ok((
                expected
                    .cloned()
                    .ok_or_else(|| Error::internal("no digest"))?,
                false,
            ));
        }
        Err(e) => return Err(Error::from(e)),
    };
    // Start over whatever an earlier, interrupted import left.
    w.truncate(0).map_err(Error::from)?;
    let mut buf = vec![0_u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(bad_archive)?;
        if n == 0 {
            break;
        }
        berth_content::Writer::write(&mut *w, &buf[..n]).map_err(Error::from)?;
    }
    let digest = w.digest();
    match w.commit(size, expected, Default::default()) {
        Ok(()) => Ok((digest, true)),
        Err(berth_content::Error::AlreadyExists(_)) => Ok((digest, false)),
        Err(berth_content::Error::FailedPrecondition(m)) => Err(bad_archive(format!(
            "{ref_}: {m}; the archive is corrupt and nothing of this blob was kept"
        ))),
        Err(e) => Err(Error::from(e)),
    }
}

/// How an import names what it reads: the request's image store (its
/// `name` and `extra_references`), as containerd's transfer image store
/// names images.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// The name of the whole archive's index (`--index-name`).
    pub index_name: Option<String>,
    /// Further references: complete names for the index, prefixes for
    /// the archive's entries (`--base-name`, `--digests`).
    pub references: Vec<ImageReference>,
}

impl Naming {
    /// What `ctr import` asks for by default: each entry named by its own
    /// complete name (`io.containerd.image.name`), or `<prefix>:<tag>` for
    /// an entry that only has a tag.
    pub fn with_prefix(prefix: impl Into<String>) -> Naming {
        Naming {
            index_name: None,
            references: vec![ImageReference {
                name: prefix.into(),
                is_prefix: true,
                allow_overwrite: true,
                ..ImageReference::default()
            }],
        }
    }

    /// The names of the archive's index: the index name, then every
    /// complete (non-prefix) reference, `@digest` added where asked.
    fn for_index(&self, digest: &Digest) -> Vec<String> {
        let mut names: Vec<String> = self.index_name.iter().cloned().collect();
        for r in self.references.iter().filter(|r| !r.is_prefix) {
            names.push(if r.add_digest {
                format!("{}@{digest}", r.name)
            } else {
                r.name.clone()
            });
        }
        names
    }

    /// The names of one index entry, from its annotations and each prefix
    /// reference: `io.containerd.image.name` when complete (and under the
    /// prefix unless the prefix may be overwritten), else
    /// `org.opencontainers.image.ref.name` (a tag gets the prefix), and
    /// `<prefix>@<digest>` where asked.
    fn for_entry(&self, annotations: &BTreeMap<String, String>, digest: &Digest) -> Vec<String> {
        let mut names = Vec::new();
        for r in self.references.iter().filter(|r| r.is_prefix) {
            let translate = |name: &str| translate_ref(&r.name, name, !r.allow_overwrite);
            let name = match annotations.get(IMAGE_NAME).filter(|n| !n.is_empty()) {
                Some(full) => Some(full.clone()).filter(|f| translate(f).as_deref() == Some(f)),
                None => annotations
                    .get(REF_NAME)
                    .filter(|n| !n.is_empty())
                    .and_then(|n| translate(n)),
            };
            match name {
                None => {
                    if r.add_digest {
                        names.push(format!("{}@{digest}", r.name));
                    }
                }
                Some(name) => {
                    names.push(name);
                    if r.add_digest && !r.skip_named_digest {
                        names.push(format!("{}@{digest}", r.name));
                    }
                }
            }
        }
        names
    }
}

/// containerd's reference translation under an import prefix: a complete
/// reference stays (if `check_prefix`, only when under `prefix`), a bare
/// tag becomes `prefix:tag`.
fn translate_ref(prefix: &str, reference: &str, check_prefix: bool) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if reference.contains(['/', ':', '@']) {
        if check_prefix && !under_prefix(reference, prefix) {
            return None;
        }
        return Some(reference.to_string());
    }
    Some(format!("{prefix}:{reference}"))
}

/// Whether `reference` names `prefix` itself (with a tag or digest) or
/// something below it.
fn under_prefix(reference: &str, prefix: &str) -> bool {
    let Some(rest) = reference.strip_prefix(prefix) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    if prefix.ends_with('/') {
        return true;
    }
    rest.starts_with([':', '@', '/'])
}

/// Reads an archive (plain or gzip-compressed tar) into `store`, naming
/// its index and entries as `naming` says (containerd's transfer import).
pub fn import(
    store: &dyn ContentStore,
    reader: impl Read,
    ref_prefix: &str,
    naming: &Naming,
) -> Result<Imported> {
    let mut reader = io::BufReader::with_capacity(1 << 20, reader);
    let gzip = reader
        .fill_buf()
        .map_err(bad_archive)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Imported::default();
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    // Path in the archive → the blob it holds.
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut n = 0_u64;
    for entry in archive.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(|e| bad_archive(format!("not a tar stream: {e}")))?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let size = entry.size();
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                // docker save links identical layers to one copy.
                if let Ok(Some(target)) = entry.link_name() {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    let joined = format!("{dir}/{}", target.display());
                    let mut parts: Vec<&str> = Vec::new();
                    for p in joined.split('/') {
                        match p {
                            "" | "." => {}
                            ".." => {
                                parts.pop();
                            }
                            p => parts.push(p),
                        }
                    }
                    links.push((path, parts.join("/")));
                }
                continue;
            }
            t if !t.is_file() => continue,
            _ => {}
        }
        n += 1;
        let ref_ = format!("{ref_prefix}-{n}");
        match path.as_str() {
            "index.json" | "manifest.json" | "oci-layout" | "repositories" => {
                if size > MAX_INDEX_FILE {
                    return Err(bad_archive(format!(
                        "{path} is {size} bytes, more than the {MAX_INDEX_FILE} an index may have"
                    )));
                }
                let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry.read_to_end(&mut data).map_err(bad_archive)?;
                small.insert(path, data);
            }
            p if p.starts_with("blobs/") => {
                let name = p.trim_start_matches("blobs/").replacen('/', ":", 1);
                let digest = Digest::parse(&name)
                    .map_err(|e| bad_archive(format!("{p} is not named by a digest: {e}")))?;
                let (d, written) = ingest(store, &ref_, &mut entry, size, Some(&digest))?;
                out.blobs_written += u64::from(written);
                files.insert(path, (d, size));
            }
            p if p.ends_with("/json") || p.ends_with("/VERSION") => {
                // docker's legacy per-layer metadata: not content.
            }
            _ => {
                let (d, written) = ingest(store, &ref_, &mut entry, size, None)?;
                out.blobs_written += u64::from(written);
                files.insert(path, (d, size));
            }
        }
    }
    for (link, target) in links {
        if let Some(blob) = files.get(&target).cloned() {
            files.insert(link, blob);
        }
    }

    if let Some(index) = small.get("index.json") {
        let desc = Descriptor::new(media::OCI_INDEX, Digest::of(index), index.len() as u64);
        let parsed = manifest::parse_index(&desc, index)
            .map_err(|e| bad_archive(format!("index.json: {e}")))?;
        let index_names = naming.for_index(&desc.digest);
        if !index_names.is_empty() {
            berth_content::write_blob(
                store,
                &format!("{ref_prefix}-index"),
                index,
                &desc.digest,
                Default::default(),
            )
            .or_else(|e| match e {
                berth_content::Error::AlreadyExists(_) => Ok(()),
                e => Err(e),
            })
            .map_err(Error::from)?;
            for name in index_names {
                out.images.push((name, desc.clone()));
            }
        }
        for m in parsed.manifests {
            let mut root = Descriptor::new(m.media_type.clone(), m.digest.clone(), m.size);
            root.platform = None;
            for name in naming.for_entry(&m.annotations, &m.digest) {
                out.images.push((name, root.clone()));
            }
        }
    } else if let Some(list) = small.get("manifest.json") {
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(list).map_err(|e| bad_archive(format!("manifest.json: {e}")))?;
        for (i, e) in entries.iter().enumerate() {
            let lookup = |p: &str| {
                files.get(&clean(p)).cloned().ok_or_else(|| {
                    bad_archive(format!(
                        "manifest.json names {p}, which the archive does not hold"
                    ))
                })
            };
            let (config, config_size) = lookup(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size) = lookup(l)?;
                let mut head = [0_u8; 2];
                let gz = store
                    .reader_at(&digest)
                    .ok()
                    .and_then(|r| r.read_at(&mut head, 0).ok())
                    == Some(2)
                    && head == [0x1f, 0x8b];
                let mt = if gz {
                    media::DOCKER_LAYER_GZIP
                } else {
                    media::DOCKER_LAYER
                };
                layers.push(Descriptor::new(mt, digest, size));
            }
            let m = Manifest {
                schema_version: 2,
                media_type: Some(media::DOCKER_MANIFEST.to_string()),
                artifact_type: None,
                config: Descriptor::new(media::DOCKER_CONFIG, config, config_size),
                layers,
                subject: None,
                annotations: BTreeMap::new(),
            };
            let bytes = serde_json::to_vec(&m).map_err(|e| Error::internal(e.to_string()))?;
            let digest = Digest::of(&bytes);
            berth_content::write_blob(
                store,
                &format!("{ref_prefix}-m{i}"),
                &bytes,
                &digest,
                Default::default(),
            )
            .or_else(|e| match e {
                berth_content::Error::AlreadyExists(_) => Ok(()),
                e => Err(e),
            })
            .map_err(Error::from)?;
            let root = Descriptor::new(media::DOCKER_MANIFEST, digest, bytes.len() as u64);
            // containerd lists each tag as an index entry named by its
            // normalised reference, the tag as the OCI ref name; an
            // untagged image is one entry without names.
            if e.repo_tags.as_ref().is_none_or(Vec::is_empty) {
                for name in naming.for_entry(&BTreeMap::new(), &root.digest) {
                    out.images.push((name, root.clone()));
                }
            }
            for tag in e.repo_tags.iter().flatten() {
                let full = normalized(tag)?;
                let short = full
                    .rsplit_once(':')
                    .map_or("latest", |(_, t)| t)
                    .to_string();
                let annotations = BTreeMap::from([
                    (IMAGE_NAME.to_string(), full),
                    (REF_NAME.to_string(), short),
                ]);
                for name in naming.for_entry(&annotations, &root.digest) {
                    out.images.push((name, root.clone()));
                }
            }
            if i == 0 {
                for name in naming.for_index(&root.digest) {
                    out.images.push((name, root.clone()));
                }
            }
        }
    } else {
        return Err(bad_archive(
            "neither index.json (OCI layout) nor manifest.json (docker save) found; is this an image archive?",
        ));
    }
    if out.images.is_empty() {
        // As containerd: the content is read, and nothing names it.
        tracing::info!(
            "no image in the archive got a name (give one with --index-name or --base-name)"
        );
    }
    Ok(out)
}

fn normalized(name: &str) -> Result<String> {
    Reference::parse_normalized(name)
        .map(|r| r.to_string())
        .map_err(|e| bad_archive(format!("image name {name:?}: {e}")))
}

/// Reads a small blob (manifest, index) whole.
fn read_small(store: &dyn ContentStore, d: &Descriptor) -> Result<Vec<u8>> {
    manifest::check_size(d).map_err(|e| Error::invalid_argument(e.to_string()))?;
    let missing = |e: berth_content::Error| {
        Error::not_found(format!("{}: not in the content store ({e})", d.digest))
    };
    let reader = store.reader_at(&d.digest).map_err(missing)?;
    let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
    reader.read_exact_at(&mut data, 0).map_err(missing)?;
    Ok(data)
}

/// Writes `images` (name, root) as one OCI layout tar to `out`, with the
/// manifests `matcher` selects from each index (all with `all_platforms`),
/// and a docker-compatible `manifest.json` for single-manifest images.
pub fn export(
    store: &dyn ContentStore,
    images: &[(String, Descriptor)],
    matcher: &Matcher,
    all_platforms: bool,
    out: impl Write,
) -> Result<()> {
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        artifact_type: None,
        manifests: Vec::new(),
        subject: None,
        annotations: BTreeMap::new(),
    };
    let mut docker: Vec<DockerEntry> = Vec::new();
    let mut add = |d: &Descriptor, blobs: &mut Vec<Descriptor>| {
        if seen.insert(d.digest.clone()) {
            blobs.push(d.clone());
        }
    };
    for (name, root) in images {
        let mut chosen: Vec<(Descriptor, Manifest)> = Vec::new();
        if media::is_index(&root.media_type) {
            let bytes = read_small(store, root)?;
            let idx =
                manifest::parse_index(root, &bytes).map_err(|e| Error::internal(e.to_string()))?;
            for m in idx
                .manifests
                .iter()
                .filter(|m| media::is_manifest(&m.media_type))
            {
                let wanted =
                    all_platforms || m.platform.as_ref().is_none_or(|p| matcher.matches(p));
                let local = store.reader_at(&m.digest).is_ok();
                if !wanted || (!local && !all_platforms) {
                    continue;
                }
                let bytes = read_small(store, m)?;
                chosen.push((
                    m.clone(),
                    manifest::parse_manifest(m, &bytes)
                        .map_err(|e| Error::internal(e.to_string()))?,
                ));
            }
            if chosen.is_empty() {
                return Err(Error::not_found(format!(
                    "{name}: no manifest for the wanted platform is in the content store; pull it first or export with --all-platforms"
                )));
            }
            add(root, &mut blobs);
        } else {
            let bytes = read_small(store, root)?;
            chosen.push((
                root.clone(),
                manifest::parse_manifest(root, &bytes)
                    .map_err(|e| Error::internal(e.to_string()))?,
            ));
        }
        for (d, m) in &chosen {
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if store.reader_at(&b.digest).is_err() {
                    return Err(Error::not_found(format!(
                        "{name}: blob {} of manifest {} is not in the content store; pull the image again",
                        b.digest, d.digest
                    )));
                }
                add(b, &mut blobs);
            }
            add(d, &mut blobs);
        }
        let path =
            |d: &Descriptor| format!("blobs/{}/{}", d.digest.algorithm().as_str(), d.digest.hex());
        if let [(_, m)] = chosen.as_slice() {
            docker.push(DockerEntry {
                config: path(&m.config),
                repo_tags: Some(vec![name.clone()]),
                layers: m.layers.iter().map(path).collect(),
            });
        }
        let mut entry = root.clone();
        entry
            .annotations
            .insert(IMAGE_NAME.to_string(), name.clone());
        if let Ok(r) = Reference::parse_normalized(name)
            && let Some(tag) = r.tag()
        {
            entry
                .annotations
                .insert(REF_NAME.to_string(), tag.to_string());
        }
        index.manifests.push(entry);
    }

    let mut tar = tar::Builder::new(out);
    let put = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o444);
        h.set_size(size);
        tar.append_data(&mut h, path, data)
            .map_err(|e| Error::unavailable(format!("writing the archive: {e}")))
    };
    let mut dirs = std::collections::BTreeSet::new();
    for b in &blobs {
        let alg = b.digest.algorithm().as_str().to_string();
        if dirs.insert(alg.clone()) {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("blobs/{alg}/"), io::empty())
                .map_err(|e| Error::unavailable(format!("writing the archive: {e}")))?;
        }
        let reader = store
            .reader_at(&b.digest)
            .map_err(|e| Error::not_found(format!("{}: {e}", b.digest)))?;
        let size = reader.size();
        let mut file = berth_content::ReadCursor::new(&*reader);
        put(
            &mut tar,
            &format!("blobs/{alg}/{}", b.digest.hex()),
            size,
            &mut file,
        )?;
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    put(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )?;
    let index = serde_json::to_vec(&index).map_err(|e| Error::internal(e.to_string()))?;
    put(
        &mut tar,
        "index.json",
        index.len() as u64,
        &mut index.as_slice(),
    )?;
    if !docker.is_empty() {
        let list = serde_json::to_vec(&docker).map_err(|e| Error::internal(e.to_string()))?;
        put(
            &mut tar,
            "manifest.json",
            list.len() as u64,
            &mut list.as_slice(),
        )?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::unavailable(format!("writing the archive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(name: &str, allow_overwrite: bool, add_digest: bool) -> ImageReference {
        ImageReference {
            name: name.into(),
            is_prefix: true,
            allow_overwrite,
            add_digest,
            skip_named_digest: false,
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn entries_are_named_as_containerds_image_store_names_them() {
        let digest = Digest::of(b"x");
        let default = Naming {
            index_name: None,
            references: vec![prefix("import-2026-01-01", true, false)],
        };
        // A bare tag gets the prefix; a complete name overrides it.
        assert_eq!(
            default.for_entry(&annotations(&[(REF_NAME, "v1")]), &digest),
            ["import-2026-01-01:v1"]
        );
        assert_eq!(
            default.for_entry(
                &annotations(&[(IMAGE_NAME, "docker.io/library/a:1"), (REF_NAME, "1")]),
                &digest
            ),
            ["docker.io/library/a:1"]
        );
        // A user's base name keeps only names under it, and adds digests.
        let based = Naming {
            index_name: Some("example.com/idx:1".into()),
            references: vec![prefix("example.com/b", false, true)],
        };
        assert_eq!(
            based.for_entry(
                &annotations(&[(IMAGE_NAME, "docker.io/library/a:1")]),
                &digest
            ),
            [format!("example.com/b@{digest}")]
        );
        assert_eq!(
            based.for_entry(&annotations(&[(REF_NAME, "example.com/b:2")]), &digest),
            [
                "example.com/b:2".to_string(),
                format!("example.com/b@{digest}")
            ]
        );
        assert_eq!(based.for_index(&digest), ["example.com/idx:1"]);
        assert!(
            Naming::default()
                .for_entry(&annotations(&[(REF_NAME, "v1")]), &digest)
                .is_empty()
        );
    }
}
