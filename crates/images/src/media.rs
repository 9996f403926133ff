//! Media types of image content: OCI and Docker schema 2.
//!
//! A descriptor's media type says what its blob is: a manifest (one image),
//! an index (a list of manifests, usually one per platform), an image config,
//! or a layer (a tar archive, maybe compressed). Docker schema 2 and OCI name
//! the same things differently; berth treats each Docker type like its OCI
//! twin. Docker schema 1 (signed, pre-2017) is not supported, as in current
//! containerd: [`check_supported`] says so.
//!
//! The constants and the `is_*` predicates live in `berth-types` (one set
//! for every berth crate) and are re-exported here; what needs this crate's
//! [`Error`] (compression of a layer, refusing schema 1) stays.

use crate::error::{Error, Result};

pub use berth_types::media::*;

/// Fails with [`Error::Unsupported`] for Docker schema 1 manifests, which
/// berth (like containerd 2) does not read.
pub fn check_supported(mt: &str) -> Result<()> {
    if is_schema1(mt) {
        return Err(Error::Unsupported {
            media_type: mt.to_owned(),
            why: SCHEMA1_UNSUPPORTED,
        });
    }
    Ok(())
}

pub(crate) const SCHEMA1_UNSUPPORTED: &str = "Docker schema 1 images are not supported; \
     push the image again with a current Docker or BuildKit to convert it to schema 2 or OCI";

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of layer media type `mt` (containerd's
    /// `DiffCompression`).
    ///
    /// Errors: [`Error::Unsupported`] for a type that is not a layer, or a
    /// layer with a suffix berth cannot undo (`+encrypted`).
    pub fn from_media_type(mt: &str) -> Result<Compression> {
        let unsupported = |why| Error::Unsupported {
            media_type: mt.to_owned(),
            why,
        };
        let mut parts = mt.split('+');
        let base = parts.next().unwrap_or(mt);
        let ext: Vec<&str> = parts.collect();
        match base {
            DOCKER_LAYER | DOCKER_FOREIGN_LAYER if ext.is_empty() => Ok(Compression::None),
            DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP if ext.is_empty() => {
                Ok(Compression::Gzip)
            }
            DOCKER_LAYER_ZSTD if ext.is_empty() => Ok(Compression::Zstd),
            OCI_LAYER | OCI_LAYER_NONDISTRIBUTABLE => match ext.as_slice() {
                [] => Ok(Compression::None),
                ["gzip"] => Ok(Compression::Gzip),
                ["zstd"] => Ok(Compression::Zstd),
                _ => Err(unsupported(
                    "layer suffix not supported (only +gzip and +zstd; encrypted layers are not)",
                )),
            },
            _ if is_layer(mt) => Err(unsupported(
                "layer suffix not supported (only +gzip and +zstd; encrypted layers are not)",
            )),
            _ => Err(unsupported("not a layer media type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_from_layer_media_type() {
        let cases = [
            (OCI_LAYER, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (OCI_LAYER_ZSTD, Compression::Zstd),
            (OCI_LAYER_NONDISTRIBUTABLE_GZIP, Compression::Gzip),
            (OCI_LAYER_NONDISTRIBUTABLE_ZSTD, Compression::Zstd),
            (DOCKER_LAYER, Compression::None),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_ZSTD, Compression::Zstd),
            (DOCKER_FOREIGN_LAYER_GZIP, Compression::Gzip),
        ];
        for (mt, want) in cases {
            assert_eq!(Compression::from_media_type(mt).unwrap(), want, "{mt}");
        }
        let err =
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
                .unwrap_err();
        assert!(
            err.to_string().contains("encrypted layers are not"),
            "{err}"
        );
        let err = Compression::from_media_type(OCI_CONFIG).unwrap_err();
        assert!(err.to_string().contains("not a layer media type"), "{err}");
    }

    #[test]
    fn schema1_is_rejected_with_advice() {
        for mt in [DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_MANIFEST_SIGNED] {
            let err = check_supported(mt).unwrap_err();
            assert!(
                err.to_string()
                    .contains("schema 1 images are not supported"),
                "{err}"
            );
            assert!(err.to_string().contains("push the image again"), "{err}");
        }
        check_supported(OCI_MANIFEST).unwrap();
    }
}
