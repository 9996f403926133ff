//! Image conversion inside one content store (containerd's
//! `core/images/converter` with its `uncompress` layer converter, what
//! `ctr images convert` runs): Docker media types to OCI ones, compressed
//! layers to plain tars, an index cut down to some platforms. New
//! manifests, indexes and layers are written to the store, labelled so the
//! collector keeps what they name; what needs no change keeps its
//! descriptor. The caller records the returned root as the target image.
//!
//! Manifests and indexes are edited as JSON, so fields berth does not model
//! (annotations, `subject`, `artifactType`) survive. Image configs are never
//! rewritten: uncompressing a layer keeps its diff ID.

use std::collections::BTreeMap;
use std::io::Read;

use berth_content::{Digest, ReadCursor};
use berth_images::archive::Compression;
use berth_images::manifest::{self, Descriptor};
use berth_images::{Matcher, media};
use serde_json::Value;

use crate::{ContentStore, Error, Result};

/// The label naming a blob's uncompressed digest.
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// What a conversion does.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Docker media types become OCI ones (ctr's `--oci`).
    pub oci: bool,
    /// gzip and zstd layers become plain tars (ctr's `--uncompress`).
    pub uncompress: bool,
    /// Index entries kept: those whose platform matches (entries without
    /// a platform are kept). [`Matcher::all`] keeps every one.
    pub platforms: Matcher,
}

/// Converts the image whose root is `root` in `store`; returns the new
/// root (`root` itself when nothing changed).
///
/// Errors: NotFound when a blob of the image is missing (a platform's
/// manifests must be in the store), InvalidArgument for a malformed
/// manifest or an index left with no manifest for the platforms asked.
pub fn convert(
    store: &dyn ContentStore,
    root: &Descriptor,
    options: &ConvertOptions,
) -> Result<Descriptor> {
    convert_descriptor(store, root, options)
}

fn convert_descriptor(
    store: &dyn ContentStore,
    desc: &Descriptor,
    options: &ConvertOptions,
) -> Result<Descriptor> {
    if media::is_index(&desc.media_type) {
        convert_index(store, desc, options)
    } else if media::is_manifest(&desc.media_type) {
        convert_manifest(store, desc, options)
    } else {
        Ok(desc.clone())
    }
}

fn read_json(store: &dyn ContentStore, desc: &Descriptor) -> Result<Value> {
    manifest::check_size(desc)?;
    let reader = store
        .reader_at(&desc.digest)
        .map_err(|e| Error::not_found(format!("{}: {e}", desc.digest)))?;
    let mut data = vec![0; usize::try_from(reader.size()).unwrap_or(0)];
    reader.read_exact_at(&mut data, 0)?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::invalid_argument(format!("{}: not JSON: {e}", desc.digest)))
}

/// `desc` as it appears in a manifest or index.
fn to_value(desc: &Descriptor) -> Result<Value> {
    serde_json::to_value(desc).map_err(|e| Error::internal(format!("descriptor: {e}")))
}

fn from_value(v: &Value) -> Result<Descriptor> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid_argument(format!("malformed descriptor {v}: {e}")))
}

/// Writes `json` as a new blob of type `media_type` with `labels`; its
/// descriptor keeps `like`'s platform and annotations.
fn write_json(
    store: &dyn ContentStore,
    like: &Descriptor,
    media_type: &str,
    json: &Value,
    labels: BTreeMap<String, String>,
) -> Result<Descriptor> {
    let data = serde_json::to_vec_pretty(json)
        .map_err(|e| Error::internal(format!("encoding a manifest: {e}")))?;
    let digest = Digest::of(&data);
    berth_content::write_blob(
        store,
        &format!("convert-{digest}"),
        &data,
        &digest,
        labels.clone(),
    )?;
    // Present already (say, converted before): the labels still hold.
    store.add_labels(&digest, data.len() as u64, labels)?;
    let mut out = like.clone();
    out.media_type = media_type.to_string();
    out.digest = digest;
    out.size = data.len() as u64;
    Ok(out)
}

/// The OCI media type of a Docker one (containerd's
/// `ConvertDockerMediaTypeToOCI`); others unchanged.
fn docker_to_oci(mt: &str) -> &str {
    match mt {
        media::DOCKER_MANIFEST_LIST => media::OCI_INDEX,
        media::DOCKER_MANIFEST => media::OCI_MANIFEST,
        media::DOCKER_CONFIG => media::OCI_CONFIG,
        media::DOCKER_LAYER => media::OCI_LAYER,
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_LAYER_ZSTD => media::OCI_LAYER_ZSTD,
        media::DOCKER_FOREIGN_LAYER => media::OCI_LAYER_NONDISTRIBUTABLE,
        media::DOCKER_FOREIGN_LAYER_GZIP => media::OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        other => other,
    }
}

/// The uncompressed layer type of a compressed one (containerd's
/// `uncompress.convertMediaType`) and how it is compressed; `None` for a
/// plain tar (or a type berth cannot undo).
fn uncompressed_type(mt: &str) -> Option<(&'static str, Compression)> {
    use Compression::{Gzip, Zstd};
    Some(match mt {
        media::DOCKER_LAYER_GZIP => (media::DOCKER_LAYER, Gzip),
        media::DOCKER_LAYER_ZSTD => (media::DOCKER_LAYER, Zstd),
        media::DOCKER_FOREIGN_LAYER_GZIP => (media::DOCKER_FOREIGN_LAYER, Gzip),
        media::OCI_LAYER_GZIP => (media::OCI_LAYER, Gzip),
        media::OCI_LAYER_ZSTD => (media::OCI_LAYER, Zstd),
        media::OCI_LAYER_NONDISTRIBUTABLE_GZIP => (media::OCI_LAYER_NONDISTRIBUTABLE, Gzip),
        media::OCI_LAYER_NONDISTRIBUTABLE_ZSTD => (media::OCI_LAYER_NONDISTRIBUTABLE, Zstd),
        _ => return None,
    })
}

fn convert_index(
    store: &dyn ContentStore,
    desc: &Descriptor,
    options: &ConvertOptions,
) -> Result<Descriptor> {
    let mut json = read_json(store, desc)?;
    let entries = json
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut changed = false;
    let mut kept = Vec::new();
    let mut labels = BTreeMap::new();
    for entry in &entries {
        let child = from_value(entry)?;
        if let Some(p) = &child.platform
            && !options.platforms.matches(p)
        {
            changed = true;
            continue;
        }
        let converted = convert_descriptor(store, &child, options)?;
        if converted != child {
            changed = true;
        }
        labels.insert(
            format!("containerd.io/gc.ref.content.m.{}", kept.len()),
            converted.digest.to_string(),
        );
        kept.push(to_value(&converted)?);
    }
    if kept.is_empty() {
        return Err(Error::invalid_argument(format!(
            "index {} has no manifest for the platforms asked",
            desc.digest
        )));
    }
    let media_type = if options.oci {
        docker_to_oci(&desc.media_type)
    } else {
        &desc.media_type
    };
    if !changed && media_type == desc.media_type {
        return Ok(desc.clone());
    }
    json["manifests"] = Value::Array(kept);
    if json.get("mediaType").is_some() || media_type != desc.media_type {
        json["mediaType"] = Value::String(media_type.to_string());
    }
    write_json(store, desc, media_type, &json, labels)
}

fn convert_manifest(
    store: &dyn ContentStore,
    desc: &Descriptor,
    options: &ConvertOptions,
) -> Result<Descriptor> {
    let mut json = read_json(store, desc)?;
    let mut changed = false;
    let mut labels = BTreeMap::new();

    let mut config = from_value(json.get("config").unwrap_or(&Value::Null))?;
    if options.oci {
        let mt = docker_to_oci(&config.media_type).to_string();
        if mt != config.media_type {
            config.media_type = mt;
            changed = true;
        }
    }
    labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        config.digest.to_string(),
    );
    json["config"] = to_value(&config)?;

    let layers = json
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut new_layers = Vec::new();
    for (i, entry) in layers.iter().enumerate() {
        let layer = from_value(entry)?;
        let mut converted = if options.uncompress {
            uncompress_layer(store, &layer)?
        } else {
            layer.clone()
        };
        if options.oci {
            converted.media_type = docker_to_oci(&converted.media_type).to_string();
        }
        if converted != layer {
            changed = true;
        }
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            converted.digest.to_string(),
        );
        new_layers.push(to_value(&converted)?);
    }
    json["layers"] = Value::Array(new_layers);

    let media_type = if options.oci {
        docker_to_oci(&desc.media_type)
    } else {
        &desc.media_type
    };
    if !changed && media_type == desc.media_type {
        return Ok(desc.clone());
    }
    if json.get("mediaType").is_some() || media_type != desc.media_type {
        json["mediaType"] = Value::String(media_type.to_string());
    }
    write_json(store, desc, media_type, &json, labels)
}

/// Writes the plain tar of a compressed layer, labelled with its own
/// digest as the uncompressed one; a plain layer is returned as it is.
fn uncompress_layer(store: &dyn ContentStore, layer: &Descriptor) -> Result<Descriptor> {
    let Some((new_type, compression)) = uncompressed_type(&layer.media_type) else {
        return Ok(layer.clone());
    };
    let reader = store
        .reader_at(&layer.digest)
        .map_err(|e| Error::not_found(format!("layer {}: {e}", layer.digest)))?;
    let io = |e: std::io::Error| Error::invalid_argument(format!("layer {}: {e}", layer.digest));
    let mut plain =
        berth_images::archive::apply::decompress(ReadCursor::new(&*reader), compression)
            .map_err(io)?;
    let ref_ = format!("convert-uncompress-{}", layer.digest);
    let mut writer = store.writer(&ref_, None, None)?;
    // Start over: a half-written earlier try has no known prefix here.
    writer.truncate(0)?;
    let mut buf = vec![0_u8; 1 << 20];
    let mut size = 0_u64;
    loop {
        let n = plain.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
        size += n as u64;
    }
    let digest = writer.digest();
    let labels = BTreeMap::from([(LABEL_UNCOMPRESSED.to_string(), digest.to_string())]);
    match writer.commit(size, Some(&digest), labels.clone()) {
        Ok(()) | Err(berth_content::Error::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    store.add_labels(&digest, size, labels)?;
    let mut out = layer.clone();
    out.media_type = new_type.to_string();
    out.digest = digest;
    out.size = size;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Compression, docker_to_oci, uncompressed_type};
    use berth_images::media;

    #[test]
    fn media_types_map_as_containerd_maps_them() {
        assert_eq!(docker_to_oci(media::DOCKER_MANIFEST), media::OCI_MANIFEST);
        assert_eq!(docker_to_oci(media::DOCKER_MANIFEST_LIST), media::OCI_INDEX);
        assert_eq!(docker_to_oci(media::DOCKER_CONFIG), media::OCI_CONFIG);
        assert_eq!(
            docker_to_oci(media::DOCKER_LAYER_GZIP),
            media::OCI_LAYER_GZIP
        );
        assert_eq!(docker_to_oci(media::OCI_LAYER_GZIP), media::OCI_LAYER_GZIP);
        assert_eq!(
            uncompressed_type(media::DOCKER_LAYER_GZIP),
            Some((media::DOCKER_LAYER, Compression::Gzip))
        );
        assert_eq!(
            uncompressed_type(media::OCI_LAYER_ZSTD),
            Some((media::OCI_LAYER, Compression::Zstd))
        );
        assert_eq!(uncompressed_type(media::OCI_LAYER), None);
    }
}
