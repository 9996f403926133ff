//! Content digests: `algorithm:hex`, as in the OCI image spec.
//!
//! The types live in `berth-types` (the vocabulary every berth crate
//! shares) and are re-exported here, so `berth_content::Digest` and
//! `berth_types::Digest` are the same type.

pub use berth_types::digest::{Algorithm, Digest, DigestError, Digester};
