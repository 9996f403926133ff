//! Validation of labels, the free-form `key=value` pairs on every object.
//!
//! containerd (`pkg/labels`) limits the size: a key and its value together
//! may take at most [`MAX_SIZE`] bytes. It also refuses an empty key with a
//! value, though only by accident: bolt refuses the empty key ("key
//! required", an Unknown error on the wire); berth says so as an invalid
//! argument. An empty key with an empty value means "no label" and is
//! dropped, as containerd drops every empty value. Keys and values are
//! otherwise opaque here; conventions such as `containerd.io/gc.ref.*` are
//! for the garbage collector to read.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A set of labels, ordered by key so listings are deterministic.
pub type Labels = BTreeMap<String, String>;

/// The largest size, in bytes, of a label's key and value together.
pub const MAX_SIZE: usize = 4096;

/// How much of an oversized key the error message quotes, in characters.
const QUOTED_KEY_CHARS: usize = 10;

/// Checks one label; [`Error::InvalidArgument`] if key plus value exceed
/// [`MAX_SIZE`] bytes, or the key is empty and the value is not.
///
/// ```
/// use berth_metadata::labels;
/// assert!(labels::validate("io.example/owner", "ops").is_ok());
/// assert!(labels::validate("big", &"x".repeat(5000)).is_err());
/// assert!(labels::validate("", "x").is_err());
/// ```
pub fn validate(key: &str, value: &str) -> Result<()> {
    if key.is_empty() && !value.is_empty() {
        let short: String = value.chars().take(QUOTED_KEY_CHARS).collect();
        return Err(Error::InvalidArgument(format!(
            "label key must not be empty (value {short:?}); key required"
        )));
    }
    if key.len() + value.len() > MAX_SIZE {
        // Quote only the start of the key: it may itself be huge.
        let short: String = key.chars().take(QUOTED_KEY_CHARS).collect();
        return Err(Error::InvalidArgument(format!(
            "label key and value greater than maximum size ({MAX_SIZE} bytes), key: {short}"
        )));
    }
    Ok(())
}

/// Checks every label of a set, stopping at the first invalid one.
pub fn validate_all<K, V>(labels: impl IntoIterator<Item = (K, V)>) -> Result<()>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    labels
        .into_iter()
        .try_for_each(|(k, v)| validate(k.as_ref(), v.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_is_key_plus_value() {
        let key = "k".repeat(96);
        assert!(validate(&key, &"v".repeat(MAX_SIZE - 96)).is_ok());
        let err = validate(&key, &"v".repeat(MAX_SIZE - 95)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(
            err.to_string(),
            "label key and value greater than maximum size (4096 bytes), key: kkkkkkkkkk: invalid argument"
        );
    }

    #[test]
    fn empty_key_and_value_are_allowed() {
        // An empty value means "no label": the stores drop it.
        assert!(validate("", "").is_ok());
    }

    #[test]
    fn empty_key_with_a_value_is_refused() {
        let err = validate("", "x").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(
            err.to_string().contains("label key must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn multibyte_keys_are_quoted_without_splitting_characters() {
        let key = "é".repeat(3000); // 6000 bytes
        let msg = validate(&key, "").unwrap_err().to_string();
        assert!(msg.contains(&"é".repeat(10)), "{msg}");
    }

    #[test]
    fn validate_all_takes_any_map() {
        let mut ok = std::collections::HashMap::new();
        ok.insert("a".to_owned(), "b".to_owned());
        assert!(validate_all(&ok).is_ok());
        assert!(validate_all([("a", "b"), ("big", &*"x".repeat(MAX_SIZE))]).is_err());
    }
}
