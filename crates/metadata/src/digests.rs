//! Validation of content digests, the keys of content records.
//!
//! This crate stores digests as plain strings and does not depend on
//! `berth-content`; it only checks that a digest has the canonical form
//! that store accepts: `sha256:` followed by 64, or `sha512:` followed by
//! 128, lowercase hex characters (the OCI image spec's registered
//! algorithms, as go-digest encodes them).

use crate::error::{Error, Result};

/// The algorithms accepted, with the length of their hex encoding.
const ALGORITHMS: [(&str, usize); 2] = [("sha256", 64), ("sha512", 128)];

/// Checks that `digest` is `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase);
/// [`Error::InvalidArgument`] if not.
///
/// ```
/// use berth_metadata::digests;
/// let d = format!("sha256:{}", "a".repeat(64));
/// assert!(digests::validate(&d).is_ok());
/// assert!(digests::validate("sha256:ABC").is_err());
/// ```
pub fn validate(digest: &str) -> Result<()> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(invalid(
            digest,
            "missing ':' between algorithm and encoding",
        ));
    };
    let Some(&(_, len)) = ALGORITHMS.iter().find(|(a, _)| *a == algorithm) else {
        return Err(invalid(
            digest,
            "unsupported digest algorithm (supported: sha256, sha512)",
        ));
    };
    if encoded.len() != len {
        return Err(invalid(
            digest,
            &format!(
                "{algorithm} needs {len} hex characters, got {}",
                encoded.len()
            ),
        ));
    }
    if !encoded
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid(digest, "encoding must be lowercase hex"));
    }
    Ok(())
}

/// Whether `digest` is valid (the boolean form of [`validate`]).
pub fn is_valid(digest: &str) -> bool {
    validate(digest).is_ok()
}

fn invalid(digest: &str, why: &str) -> Error {
    // Quote only the start: the value comes from outside and may be huge.
    let short: String = digest.chars().take(140).collect();
    Error::InvalidArgument(format!("invalid digest {short:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sha256_and_sha512() {
        assert!(validate(&format!("sha256:{}", "0123456789abcdef".repeat(4))).is_ok());
        assert!(validate(&format!("sha512:{}", "f".repeat(128))).is_ok());
        assert!(is_valid(&format!("sha256:{}", "9".repeat(64))));
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            String::new(),
            "sha256".to_owned(),
            format!("sha256{}", "a".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}g", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            format!("md5:{}", "a".repeat(32)),
            format!("sha384:{}", "a".repeat(96)),
            format!("SHA256:{}", "a".repeat(64)),
            format!("sha256:{}/", "a".repeat(63)),
        ] {
            let err = validate(&bad).expect_err(&bad);
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        let msg = validate("sha256:abc").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid digest \"sha256:abc\": sha256 needs 64 hex characters, got 3: invalid argument"
        );
    }
}
