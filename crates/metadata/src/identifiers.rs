//! Validation of object identifiers: namespace names, container ids, lease ids.
//!
//! The rules are containerd's (`pkg/identifiers`): an identifier is one or
//! more ASCII alphanumeric runs joined by single `.`, `_` or `-` separators,
//! i.e. it matches [`PATTERN`], and is at most [`MAX_LENGTH`] bytes long. Like
//! a DNS label (RFC 1035 §2.3.1) but mixed case, and a digit may follow a dot.
//! Identifiers that pass are safe to use as a single filesystem path
//! component: no `/`, no `..`, no leading dot, no NUL.

use crate::error::{Error, Result};

/// The longest identifier accepted, in bytes.
pub const MAX_LENGTH: usize = 76;

/// The regular expression valid identifiers match (for messages and docs).
pub const PATTERN: &str = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

/// Checks that `s` is a valid identifier; [`Error::InvalidArgument`] if not.
///
/// ```
/// use berth_metadata::identifiers;
/// assert!(identifiers::validate("k8s.io").is_ok());
/// assert!(identifiers::validate("-leading-dash").is_err());
/// ```
pub fn validate(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::InvalidArgument(
            "identifier must not be empty".to_owned(),
        ));
    }
    if s.len() > MAX_LENGTH {
        return Err(Error::InvalidArgument(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    if !matches_pattern(s) {
        return Err(Error::InvalidArgument(format!(
            "identifier {s:?} must match {PATTERN}"
        )));
    }
    Ok(())
}

/// Whether `s` is a valid identifier (the boolean form of [`validate`]).
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LENGTH && matches_pattern(s)
}

/// Hand-written matcher for [`PATTERN`]: starts and ends with an alphanumeric,
/// and every separator sits between two alphanumerics.
fn matches_pattern(s: &str) -> bool {
    let mut prev_was_alnum = false;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            prev_was_alnum = true;
        } else if matches!(b, b'.' | b'_' | b'-') && prev_was_alnum {
            prev_was_alnum = false;
        } else {
            return false;
        }
    }
    prev_was_alnum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_examples() {
        for s in [
            "default",
            "k8s.io",
            "moby",
            "a",
            "0",
            "foo.0",
            "foo-bar_baz.qux",
            "CamelCase",
            "a.b.c-d_e",
            "1.2.3",
            &"a".repeat(MAX_LENGTH),
        ] {
            assert!(validate(s).is_ok(), "{s:?} should be valid");
            assert!(is_valid(s), "{s:?} should be valid");
        }
    }

    #[test]
    fn rejects_bad_identifiers() {
        for s in [
            "",
            ".",
            "..",
            "-foo",
            "foo-",
            "foo.",
            "_foo",
            "foo..bar",
            "foo-.bar",
            "foo/bar",
            "../escape",
            "foo bar",
            "foo\0",
            "naïve",
            "émoji🙂",
            &"a".repeat(MAX_LENGTH + 1),
        ] {
            let err = validate(s).expect_err(s);
            assert!(matches!(err, Error::InvalidArgument(_)), "{s:?}: {err}");
            assert!(!is_valid(s), "{s:?} should be invalid");
        }
    }

    #[test]
    fn messages_match_containerd() {
        assert_eq!(
            validate("").unwrap_err().to_string(),
            "identifier must not be empty: invalid argument"
        );
        assert_eq!(
            validate("-x").unwrap_err().to_string(),
            format!("identifier \"-x\" must match {PATTERN}: invalid argument")
        );
        let long = "a".repeat(77);
        assert_eq!(
            validate(&long).unwrap_err().to_string(),
            format!(
                "identifier \"{long}\" greater than maximum length (76 characters): invalid argument"
            )
        );
    }
}
