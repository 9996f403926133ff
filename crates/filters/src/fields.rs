//! [`Fields`], a ready-made adaptor for records made of a few named strings
//! and string maps such as `labels`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use crate::Adaptor;

/// A string-to-string map that [`Fields`] can look keys up in.
pub trait StringMap: fmt::Debug {
    /// Returns the value stored under `key`.
    fn get_str(&self, key: &str) -> Option<&str>;
}

impl<S: BuildHasher> StringMap for HashMap<String, String, S> {
    fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl StringMap for BTreeMap<String, String> {
    fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// An [`Adaptor`] over borrowed named string fields and string maps, which
/// is what containerd's List filters look at (`name`, `target.digest`,
/// `labels."io.x"`).
///
/// Rules, as in containerd's adaptors:
/// - a named field matches a field path equal to its dotted name
///   (`.with("runtime.name", ..)` answers `runtime.name`); an empty value
///   counts as absent;
/// - a map answers paths that start with its name; the rest of the path is
///   joined with `.` to form the key, so `labels.com.example.key` and
///   `labels."com.example.key"` look up the same label. A key that exists
///   is present even when its value is empty.
///
/// ```
/// use std::collections::HashMap;
/// use berth_filters::{Fields, parse};
///
/// let labels = HashMap::from([("com.example.tier".to_owned(), "web".to_owned())]);
/// let image = Fields::new().with("name", "docker.io/library/nginx:latest").with_labels(&labels);
/// assert!(parse(r#"name~=/nginx/,labels."com.example.tier"==web"#).unwrap().matches(&image));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    values: Vec<(&'a str, &'a str)>,
    maps: Vec<(&'a str, &'a dyn StringMap)>,
}

impl<'a> Fields<'a> {
    /// An adaptor with no fields: every path is absent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named string field; `path` may be dotted (`"target.digest"`).
    pub fn with(mut self, path: &'a str, value: &'a str) -> Self {
        self.values.push((path, value));
        self
    }

    /// Adds a string map answering paths that start with `name`.
    pub fn with_map(mut self, name: &'a str, map: &'a dyn StringMap) -> Self {
        self.maps.push((name, map));
        self
    }

    /// Adds `labels` as the map answering `labels.<key>`.
    pub fn with_labels(self, labels: &'a dyn StringMap) -> Self {
        self.with_map("labels", labels)
    }
}

impl Adaptor for Fields<'_> {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        let (first, rest) = fieldpath.split_first()?;
        for (name, map) in &self.maps {
            if name == first {
                let value = match rest {
                    [key] => map.get_str(key),
                    _ => map.get_str(&rest.join(".")),
                };
                return value.map(Cow::Borrowed);
            }
        }
        self.values
            .iter()
            .find(|(path, _)| path.split('.').eq(fieldpath.iter().copied()))
            .and_then(|(_, value)| (!value.is_empty()).then_some(Cow::Borrowed(*value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(a: &'a Fields<'_>, path: &[&str]) -> Option<Cow<'a, str>> {
        a.field(path)
    }

    #[test]
    fn named_fields_match_dotted_paths() {
        let a = Fields::new()
            .with("name", "busybox")
            .with("target.digest", "sha256:abc")
            .with("empty", "");
        assert_eq!(get(&a, &["name"]).as_deref(), Some("busybox"));
        assert_eq!(
            get(&a, &["target", "digest"]).as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(get(&a, &["target"]), None);
        assert_eq!(get(&a, &["target", "digest", "x"]), None);
        assert_eq!(get(&a, &["empty"]), None, "empty values count as absent");
        assert_eq!(get(&a, &["nope"]), None);
        assert_eq!(get(&a, &[]), None);
    }

    #[test]
    fn maps_join_the_rest_of_the_path() {
        let labels = HashMap::from([
            ("a.b.c".to_owned(), "1".to_owned()),
            ("x".to_owned(), String::new()),
        ]);
        let annotations = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let a = Fields::new()
            .with_labels(&labels)
            .with_map("annotations", &annotations);
        assert_eq!(get(&a, &["labels", "a", "b", "c"]).as_deref(), Some("1"));
        assert_eq!(get(&a, &["labels", "a.b.c"]).as_deref(), Some("1"));
        assert_eq!(
            get(&a, &["labels", "x"]).as_deref(),
            Some(""),
            "present though empty"
        );
        assert_eq!(get(&a, &["labels"]), None);
        assert_eq!(get(&a, &["labels", "y"]), None);
        assert_eq!(get(&a, &["annotations", "k"]).as_deref(), Some("v"));
    }

    #[test]
    fn filters_over_fields() {
        let labels = HashMap::from([("foo".to_owned(), "true".to_owned())]);
        let a = Fields::new().with("name", "foo").with_labels(&labels);
        for (filter, expected) in [
            ("name==foo,labels.foo==true", true),
            ("labels.foo", true),
            ("labels.bar", false),
            ("labels.bar!=x", true),
            (r#"labels."foo"~=^t"#, true),
        ] {
            assert_eq!(
                crate::parse(filter).unwrap().matches(&a),
                expected,
                "{filter}"
            );
        }
    }
}
