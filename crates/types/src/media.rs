//! Media types of image content: OCI and Docker schema 2.
//!
//! A descriptor's media type says what its blob is: a manifest (one image),
//! an index (a list of manifests, usually one per platform), an image config,
//! or a layer (a tar archive, maybe compressed). Docker schema 2 and OCI name
//! the same things differently; berth treats each Docker type like its OCI
//! twin. Docker schema 1 (signed, pre-2017) is named here so it can be
//! recognised ([`is_schema1`]) and refused.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty JSON blob (`{}`), the config of artifacts that need none.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed (deprecated by OCI 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip (deprecated by OCI 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd (deprecated by OCI 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list (Docker's index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker container image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar (the usual one).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, uncompressed tar.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, zstd (written by some tools; containerd reads it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign layer (fetched from its `urls`, e.g. Windows base layers), gzip.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker foreign layer, uncompressed.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
/// Docker schema 1 manifest, signed: unsupported.
pub const DOCKER_SCHEMA1_MANIFEST_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema 1 manifest, unsigned: unsupported.
pub const DOCKER_SCHEMA1_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// containerd checkpoint: the container's config (a protobuf `Container`).
pub const CONTAINERD_CHECKPOINT_CONFIG: &str =
    "application/vnd.containerd.container.checkpoint.config.v1+proto";
/// containerd checkpoint: the checkpoint options (protobuf).
pub const CONTAINERD_CHECKPOINT_OPTIONS: &str =
    "application/vnd.containerd.container.checkpoint.options.v1+proto";
/// containerd checkpoint: the runtime's options (protobuf).
pub const CONTAINERD_CHECKPOINT_RUNTIME_OPTIONS: &str =
    "application/vnd.containerd.container.checkpoint.runtime.options+proto";
/// containerd checkpoint: the runtime's name.
pub const CONTAINERD_CHECKPOINT_RUNTIME_NAME: &str =
    "application/vnd.containerd.container.checkpoint.runtime.name";
/// containerd checkpoint: CRIU's image of the process tree (a tar).
pub const CONTAINERD_CHECKPOINT_CRIU: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";

/// Whether `mt` is an image manifest (OCI or Docker schema 2).
pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// Whether `mt` is an index (OCI index or Docker manifest list).
pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
}

/// Whether `mt` is an image config (OCI or Docker).
pub fn is_config(mt: &str) -> bool {
    mt == OCI_CONFIG || mt == DOCKER_CONFIG
}

/// Whether `mt` is a Docker schema 1 manifest.
pub fn is_schema1(mt: &str) -> bool {
    mt == DOCKER_SCHEMA1_MANIFEST || mt == DOCKER_SCHEMA1_MANIFEST_SIGNED
}

/// Whether `mt` is a layer: any OCI `layer.` type (also with `+` suffixes
/// such as `+encrypted`) or a Docker rootfs diff.
pub fn is_layer(mt: &str) -> bool {
    if mt.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    let base = mt.split('+').next().unwrap_or(mt);
    matches!(
        base,
        DOCKER_LAYER
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_ZSTD
            | DOCKER_FOREIGN_LAYER
            | DOCKER_FOREIGN_LAYER_GZIP
    )
}

/// Whether `mt` is a non-distributable (OCI) or foreign (Docker) layer:
/// registries do not serve it, so pull and push skip it.
pub fn is_non_distributable(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || mt.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_media_types() {
        for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
            assert!(is_manifest(mt) && !is_index(mt) && !is_layer(mt) && !is_config(mt));
        }
        for mt in [OCI_INDEX, DOCKER_MANIFEST_LIST] {
            assert!(is_index(mt) && !is_manifest(mt));
        }
        for mt in [OCI_CONFIG, DOCKER_CONFIG] {
            assert!(is_config(mt) && !is_layer(mt));
        }
        let layers = [
            OCI_LAYER,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_LAYER_NONDISTRIBUTABLE,
            OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
            DOCKER_LAYER,
            DOCKER_LAYER_GZIP,
            DOCKER_LAYER_ZSTD,
            DOCKER_FOREIGN_LAYER,
            DOCKER_FOREIGN_LAYER_GZIP,
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        ];
        for mt in layers {
            assert!(is_layer(mt), "{mt}");
            assert!(!is_manifest(mt) && !is_config(mt));
        }
        assert!(!is_layer(OCI_EMPTY));
        assert!(!is_layer("application/json"));
    }

    #[test]
    fn non_distributable_layers_are_recognised() {
        for mt in [
            OCI_LAYER_NONDISTRIBUTABLE,
            OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
            DOCKER_FOREIGN_LAYER,
            DOCKER_FOREIGN_LAYER_GZIP,
        ] {
            assert!(is_non_distributable(mt), "{mt}");
        }
        for mt in [OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, OCI_MANIFEST] {
            assert!(!is_non_distributable(mt), "{mt}");
        }
    }
}
