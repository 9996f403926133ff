//! The error type of references, manifests, platforms and image walks.
//!
//! Layer apply has its own error, [`crate::archive::ApplyError`]. Variants
//! name what was being read (`manifest sha256:...`) and, for limits, the
//! numbers; [`Error::is_not_found`] and [`Error::is_invalid_argument`] give
//! the containerd category for the RPC boundary.

use berth_types::{Category, Digest, ErrorCategory};

use crate::platform::PlatformError;
use crate::reference::ReferenceError;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while reading image content or parsing names.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference does not parse (invalid argument).
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// A platform specifier does not parse (invalid argument).
    #[error(transparent)]
    Platform(#[from] PlatformError),

    /// A manifest, index or config is over its size limit; checked before it
    /// is read or parsed (failed precondition).
    #[error("{what} {digest} is {}, over the {} limit", human_size(*size), human_size(*limit))]
    TooLarge {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// Its size (from the descriptor, or the bytes actually read).
        size: u64,
        /// The limit for that kind of blob.
        limit: u64,
    },

    /// The blob's length is not the size its descriptor gives (failed precondition).
    #[error("{what} {digest} is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },

    /// A descriptor's media type is not the kind of blob the caller asked
    /// for (invalid argument).
    #[error("{digest} has media type {media_type:?}, not a{} {want}", if want.starts_with(['a', 'e', 'i', 'o', 'u']) { "n" } else { "" })]
    UnexpectedMediaType {
        /// The blob.
        digest: Digest,
        /// The descriptor's media type.
        media_type: String,
        /// What was wanted: `manifest`, `index`, `config`.
        want: &'static str,
    },

    /// The content says it is something else than its descriptor says: a
    /// different `mediaType` field, or an index's fields in a manifest
    /// (failed precondition; containerd's `validateMediaType`).
    #[error("{digest}: descriptor says {expected} but the content {found}")]
    MediaTypeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor's media type.
        expected: String,
        /// What the content turned out to be, as a phrase.
        found: String,
    },

    /// A media type or format berth does not read (not implemented).
    #[error("{media_type}: {why}")]
    Unsupported {
        /// The media type.
        media_type: String,
        /// Why, and what to do.
        why: &'static str,
    },

    /// The blob is not valid JSON for its kind (invalid argument).
    #[error("{what} {digest} is not valid: {source}")]
    Json {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// An index has no manifest for the wanted platform (not found).
    #[error(
        "no manifest for platform {platform} in index {index}; available: {}",
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    NoMatchingManifest {
        /// The wanted platform, as a specifier (`linux/amd64`).
        platform: String,
        /// The index (the root that was resolved).
        index: Digest,
        /// The platforms the index offers.
        available: Vec<String>,
    },

    /// A manifest's layers and its config's `rootfs.diff_ids` differ in
    /// number (failed precondition).
    #[error(
        "manifest {manifest} has {layers} layers but its config {config} lists {diff_ids} diff IDs"
    )]
    LayerCountMismatch {
        /// The manifest.
        manifest: Digest,
        /// The config.
        config: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },

    /// Reading from the content store failed.
    #[error(transparent)]
    Content(#[from] berth_content::Error),

    /// A [`crate::handlers::ReadBlob`] other than the content store failed
    /// (a registry fetch, say).
    #[error("reading {digest}: {source}")]
    Read {
        /// The blob.
        digest: Digest,
        /// What kind of failure the reader's error is (a registry's
        /// "not found" stays [`Category::NotFound`]).
        category: Category,
        /// The reader's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether this is containerd's "not found": a missing blob, or no
    /// manifest for the platform.
    pub fn is_not_found(&self) -> bool {
        self.category() == Category::NotFound
    }

    /// Whether this is containerd's "invalid argument": a bad reference,
    /// platform, media type or JSON.
    pub fn is_invalid_argument(&self) -> bool {
        self.category() == Category::InvalidArgument
    }
}

impl ErrorCategory for Error {
    fn category(&self) -> Category {
        match self {
            Error::Reference(e) => e.category(),
            Error::Platform(e) => e.category(),
            Error::UnexpectedMediaType { .. } | Error::Json { .. } => Category::InvalidArgument,
            Error::TooLarge { .. }
            | Error::SizeMismatch { .. }
            | Error::MediaTypeMismatch { .. }
            | Error::LayerCountMismatch { .. } => Category::FailedPrecondition,
            Error::Unsupported { .. } => Category::NotImplemented,
            Error::NoMatchingManifest { .. } => Category::NotFound,
            Error::Content(e) => e.category(),
            Error::Read { category, .. } => *category,
        }
    }
}

/// The category of an I/O failure: a full disk or quota is "free space"
/// (resource exhausted), anything else internal.
pub(crate) fn io_category(e: &std::io::Error) -> Category {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            Category::ResourceExhausted
        }
        _ => Category::Internal,
    }
}

const MIB: u64 = 1 << 20;

/// `9 MiB` for whole MiB, `12.5 MiB` from 10 MiB on, exact bytes below.
pub(crate) fn human_size(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 10 * MIB {
        // Display only: f64 is exact enough for a size in a message.
        #[allow(clippy::cast_precision_loss)]
        let mib = n as f64 / MIB as f64;
        format!("{mib:.1} MiB")
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(4 * MIB), "4 MiB");
        assert_eq!(human_size(9 * MIB), "9 MiB");
        assert_eq!(human_size(4 * MIB + 1), "4194305 bytes");
        assert_eq!(human_size(25 * MIB / 2), "12.5 MiB");
        assert_eq!(human_size(512), "512 bytes");
    }

    #[test]
    fn no_match_lists_what_is_available() {
        let e = Error::NoMatchingManifest {
            platform: "linux/amd64".into(),
            index: Digest::of(b"x"),
            available: vec!["linux/arm64".into(), "linux/arm/v7".into()],
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("no manifest for platform linux/amd64 in index sha256:"),
            "{msg}"
        );
        assert!(
            msg.ends_with("; available: linux/arm64, linux/arm/v7"),
            "{msg}"
        );
        assert!(e.is_not_found());
    }
}
