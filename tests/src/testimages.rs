//! berth's test images, built here from Debian's `busybox-static`, never
//! downloaded.
//!
//! Each image is written as an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/...`) with gzip layers, so it can be pushed
//! to a registry, imported, or read directly by tests.
//!
//! - [`busybox`]: one layer, `/bin/busybox` and its applet links, `sh` as
//!   the default command.
//! - [`layered`]: three layers with a whiteout (`/data/.wh.gone`) and an
//!   opaque directory (`/opq/.wh..wh..opq`) over the busybox base.
//! - [`two_platform`]: an index with linux/amd64 (the busybox image) and
//!   linux/arm64 (a config-only variant whose layer is a small file).
//! - [`big`]: six layers, about `total_mib` MiB of incompressible files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Where Debian's `busybox-static` installs the static busybox.
const BUSYBOX: &str = "/bin/busybox";

/// OCI media types used by the builder.
pub mod media {
    /// OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl Descriptor {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An image written as an OCI layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The layout directory.
    pub dir: PathBuf,
    /// The top descriptor (a manifest, or an index for multi-platform images).
    pub root: Descriptor,
    /// Every manifest, with its platform (`os/arch`).
    pub manifests: Vec<(String, Descriptor)>,
    /// Layer descriptors of the first manifest, base first.
    pub layers: Vec<Descriptor>,
    /// Uncompressed digests of those layers.
    pub diff_ids: Vec<String>,
}

impl Layout {
    /// The path of blob `digest`.
    pub fn blob(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Writes the layout as an uncompressed tar archive at `path` (what
    /// `ctr images import` reads).
    pub fn write_archive(&self, path: &Path) -> Result<()> {
        let mut b = tar::Builder::new(std::fs::File::create(path)?);
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir_all(".", &self.dir)?;
        b.into_inner()?.sync_all()?;
        Ok(())
    }

    /// Writes the image as a `docker save` archive at `path`, tagged
    /// `repo_tag` (what Docker Engine 20.10's `docker load` reads: it does
    /// not read OCI layouts). Layers are stored uncompressed, as `docker
    /// save` writes them, so each `layer.tar` hashes to its diffID.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> Result<()> {
        let Some((_, manifest)) = self
            .manifests
            .iter()
            .find(|(p, _)| p.as_str() == format!("linux/{}", host_arch()))
        else {
            bail!("the layout has no manifest for linux/{}", host_arch());
        };
        let manifest = read_json(self, &manifest.digest)?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .context("manifest without config digest")?;
        let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
        let mut b = tar::Builder::new(std::fs::File::create(path)?);
        let mut append = |name: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data)?;
            Ok(())
        };
        append(&config_name, &std::fs::read(self.blob(config_digest))?)?;
        let mut layer_names = Vec::new();
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let digest = layer["digest"].as_str().context("layer without digest")?;
            let mut raw = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(self.blob(digest))?),
                &mut raw,
            )?;
            let name = format!("{}/layer.tar", sha256(&raw).trim_start_matches("sha256:"));
            append(&name, &raw)?;
            layer_names.push(name);
        }
        let index = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]);
        append("manifest.json", &serde_json::to_vec(&index)?)?;
        b.into_inner()?.sync_all()?;
        Ok(())
    }

    /// Every blob digest in the layout.
    pub fn blobs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.join("blobs/sha256"))? {
            out.push(format!("sha256:{}", e?.file_name().to_string_lossy()));
        }
        out.sort();
        Ok(out)
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes `data` as a blob of the layout at `dir`.
pub fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> Result<Descriptor> {
    let digest = sha256(data);
    let path = blob_path(dir, &digest);
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: data.len() as u64,
    })
}

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with a mode.
    Dir(&'static str, u32),
    /// A regular file with contents and a mode.
    File(String, Vec<u8>, u32),
    /// A symlink `path -> target`.
    Symlink(String, String),
    /// A hardlink `path` to the earlier entry `target`.
    Hardlink(String, String),
}

/// Builds a gzip layer of `entries` in the layout at `dir`; returns
/// (descriptor, diffID).
pub fn put_layer(dir: &Path, entries: &[Entry]) -> Result<(Descriptor, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::Dir(path, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(
                    &mut h,
                    format!("{}/", path.trim_end_matches('/')),
                    std::io::empty(),
                )?;
            }
            Entry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
            Entry::Hardlink(path, target) => {
                // A hard link's header carries its file's mode, as tar
                // writes it: containerd applies that mode to the file.
                let mode = entries
                    .iter()
                    .find_map(|e| match e {
                        Entry::File(p, _, m) if p == target => Some(*m),
                        _ => None,
                    })
                    .unwrap_or(0o644);
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(mode);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
        }
    }
    let raw = tar.into_inner()?;
    let diff_id = sha256(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw)?;
    let compressed = gz.finish()?;
    Ok((put_blob(dir, media::LAYER_GZIP, &compressed)?, diff_id))
}

/// The runtime settings of an image's config (`config` in the OCI image
/// config): what a container of it runs, and as whom.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint` (left out when empty).
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` besides `PATH`.
    pub env: Vec<String>,
    /// `User` (left out when empty).
    pub user: String,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
}

/// Writes config + manifest for `layers`; returns the manifest descriptor.
fn put_image(
    dir: &Path,
    arch: &str,
    layers: &[(Descriptor, String)],
    cmd: &[&str],
) -> Result<Descriptor> {
    let config = ImageConfig {
        cmd: cmd.iter().map(|c| (*c).to_string()).collect(),
        ..ImageConfig::default()
    };
    put_image_config(dir, arch, layers, &config)
}

/// Writes config + manifest for `layers` with the runtime settings
/// `settings`; returns the manifest descriptor.
pub fn put_image_config(
    dir: &Path,
    arch: &str,
    layers: &[(Descriptor, String)],
    settings: &ImageConfig,
) -> Result<Descriptor> {
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    env.extend(settings.env.iter().cloned());
    let mut runtime = serde_json::json!({
        "Env": env,
        "Cmd": settings.cmd,
        "WorkingDir": "/",
    });
    if !settings.entrypoint.is_empty() {
        runtime["Entrypoint"] = serde_json::json!(settings.entrypoint);
    }
    if !settings.user.is_empty() {
        runtime["User"] = serde_json::json!(settings.user);
    }
    if !settings.labels.is_empty() {
        runtime["Labels"] = serde_json::json!(settings.labels);
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "berth xtask"})).collect::<Vec<_>>(),
    });
    let config = put_blob(dir, media::CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": config.json(),
        "layers": layers.iter().map(|(d, _)| d.json()).collect::<Vec<_>>(),
    });
    put_blob(dir, media::MANIFEST, &serde_json::to_vec(&manifest)?)
}

/// Writes `oci-layout` and `index.json` (naming the image `name`) for the
/// image whose top descriptor is `root`; returns the layout.
pub fn finish(
    dir: &Path,
    root: Descriptor,
    manifests: Vec<(String, Descriptor)>,
    layers: &[(Descriptor, String)],
    name: &str,
) -> Result<Layout> {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut top = root.json();
    // containerd's importer names the image from its own annotation; the
    // OCI one carries the tag alone, as the image-layout spec says.
    let tag = name.rsplit(':').next().unwrap_or("latest");
    let full = format!("docker.io/library/{name}");
    top["annotations"] = serde_json::json!({
        "io.containerd.image.name": full,
        "org.opencontainers.image.ref.name": tag,
    });
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": media::INDEX, "manifests": [top]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(Layout {
        dir: dir.to_path_buf(),
        root,
        manifests,
        layers: layers.iter().map(|(d, _)| d.clone()).collect(),
        diff_ids: layers.iter().map(|(_, d)| d.clone()).collect(),
    })
}

/// The host architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The busybox root filesystem: the binary, applet links, a few files.
fn busybox_entries() -> Result<Vec<Entry>> {
    let bin = std::fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX}: run `cargo xtask deps` (Debian package busybox-static)")
    })?;
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("dev", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("proc", 0o755),
        Entry::Dir("sys", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("root", 0o700),
        Entry::Dir("var", 0o755),
        Entry::File("bin/busybox".into(), bin, 0o755),
        Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group".into(),
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    ];
    let applets = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&applets.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|a| !a.is_empty() && a != "busybox")
        .collect();
    names.sort();
    names.dedup();
    for a in names {
        entries.push(Entry::Symlink(format!("bin/{a}"), "busybox".into()));
    }
    Ok(entries)
}

/// Empties (or creates) the layout directory `dir`.
pub fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The one-layer busybox image, for the host architecture.
pub fn busybox(dir: &Path) -> Result<Layout> {
    fresh(dir)?;
    let layer = put_layer(dir, &busybox_entries()?)?;
    let m = put_image(dir, host_arch(), std::slice::from_ref(&layer), &["sh"])?;
    let manifests = vec![(format!("linux/{}", host_arch()), m.clone())];
    finish(dir, m, manifests, &[layer], "busybox:latest")
}

/// Busybox plus two layers exercising whiteouts and opaque directories.
///
/// After unpacking: `/data/kept` and `/data/new` exist, `/data/gone` does
/// not; `/opq` holds only `fresh` (its earlier `old1`, `old2` are hidden);
/// `/links/hard` is a hardlink of `/links/target`.
pub fn layered(dir: &Path) -> Result<Layout> {
    fresh(dir)?;
    let base = put_layer(dir, &busybox_entries()?)?;
    let middle = put_layer(
        dir,
        &[
            Entry::Dir("data", 0o755),
            Entry::File("data/kept".into(), b"kept\n".to_vec(), 0o644),
            Entry::File("data/gone".into(), b"gone\n".to_vec(), 0o644),
            Entry::Dir("opq", 0o755),
            Entry::File("opq/old1".into(), b"1\n".to_vec(), 0o644),
            Entry::File("opq/old2".into(), b"2\n".to_vec(), 0o644),
            Entry::Dir("links", 0o755),
            Entry::File("links/target".into(), b"shared\n".to_vec(), 0o644),
            Entry::Hardlink("links/hard".into(), "links/target".into()),
        ],
    )?;
    let top = put_layer(
        dir,
        &[
            Entry::Dir("data", 0o755),
            Entry::File("data/.wh.gone".into(), Vec::new(), 0o644),
            Entry::File("data/new".into(), b"new\n".to_vec(), 0o644),
            Entry::Dir("opq", 0o755),
            Entry::File("opq/.wh..wh..opq".into(), Vec::new(), 0o644),
            Entry::File("opq/fresh".into(), b"fresh\n".to_vec(), 0o644),
        ],
    )?;
    let layers = [base, middle, top];
    let m = put_image(dir, host_arch(), &layers, &["sh"])?;
    let manifests = vec![(format!("linux/{}", host_arch()), m.clone())];
    finish(dir, m, manifests, &layers, "layered:latest")
}

/// An index with the busybox image for the host and a second platform.
pub fn two_platform(dir: &Path) -> Result<Layout> {
    fresh(dir)?;
    let host = put_layer(dir, &busybox_entries()?)?;
    let host_m = put_image(dir, host_arch(), std::slice::from_ref(&host), &["sh"])?;
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let other = put_layer(
        dir,
        &[Entry::File(
            "platform".into(),
            format!("linux/{other_arch}\n").into_bytes(),
            0o644,
        )],
    )?;
    let other_m = put_image(dir, other_arch, std::slice::from_ref(&other), &["sh"])?;
    let entry = |d: &Descriptor, arch: &str| {
        let mut j = d.json();
        j["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        j
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [entry(&host_m, host_arch()), entry(&other_m, other_arch)],
    });
    let root = put_blob(dir, media::INDEX, &serde_json::to_vec(&index)?)?;
    let manifests = vec![
        (format!("linux/{}", host_arch()), host_m),
        (format!("linux/{other_arch}"), other_m),
    ];
    finish(dir, root, manifests, &[host], "multi:latest")
}

/// Fast deterministic bytes that gzip cannot shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Busybox plus five layers of incompressible files, about `total_mib` MiB
/// in all (250 for the pull benchmark): six layers.
pub fn big(dir: &Path, total_mib: usize) -> Result<Layout> {
    if total_mib < 5 {
        bail!("the big image needs at least 5 MiB");
    }
    fresh(dir)?;
    let mut layers = vec![put_layer(dir, &busybox_entries()?)?];
    let per_layer = total_mib * (1 << 20) / 5;
    for l in 0..5_u64 {
        // Files from 4 KiB to 8 MiB, as real layers mix small and large.
        let mut entries = vec![Entry::Dir("payload", 0o755)];
        let mut used = 0;
        let mut i = 0_u64;
        let dir_name = format!("payload/l{l}");
        entries.push(Entry::File(format!("{dir_name}/.keep"), Vec::new(), 0o644));
        while used < per_layer {
            let size = match i % 4 {
                0 => 4 << 10,
                1 => 64 << 10,
                2 => 1 << 20,
                _ => 8 << 20,
            }
            .min(per_layer - used);
            entries.push(Entry::File(
                format!("{dir_name}/f{i}"),
                noise(size, l * 1_000_003 + i),
                0o644,
            ));
            used += size;
            i += 1;
        }
        layers.push(put_layer(dir, &entries)?);
    }
    let m = put_image(dir, host_arch(), &layers, &["sh"])?;
    let manifests = vec![(format!("linux/{}", host_arch()), m.clone())];
    finish(dir, m, manifests, &layers, "big:latest")
}

/// The JSON bytes of blob `digest` in `layout`, parsed.
pub fn read_json(layout: &Layout, digest: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_slice(&std::fs::read(
        layout.blob(digest),
    )?)?)
}

/// Media type of each blob in `layout`, from its manifests (for pushing).
pub fn media_types(layout: &Layout) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    out.insert(layout.root.digest.clone(), layout.root.media_type.clone());
    for (_, m) in &layout.manifests {
        out.insert(m.digest.clone(), m.media_type.clone());
        let j = read_json(layout, &m.digest)?;
        let config = &j["config"];
        out.insert(
            config["digest"].as_str().unwrap_or_default().to_owned(),
            config["mediaType"].as_str().unwrap_or_default().to_owned(),
        );
        for l in j["layers"].as_array().into_iter().flatten() {
            out.insert(
                l["digest"].as_str().unwrap_or_default().to_owned(),
                l["mediaType"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    Ok(out)
}
