//! containerd's rules for namespaces and topics.

use crate::{Error, Result};

/// Longest identifier containerd accepts.
const MAX_IDENTIFIER_LEN: usize = 76;

/// The identifier rule, as containerd spells it in its messages.
const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

/// Checks a string against containerd's identifier rules (its
/// `identifiers.Validate`): 1 to 76 characters, runs of ASCII letters and
/// digits joined by single `.`, `_` or `-`.
fn check_identifier(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "must be at most {MAX_IDENTIFIER_LEN} characters long"
        ));
    }
    // True at the start and after a separator: the next byte must be
    // alphanumeric.
    let mut need_alnum = true;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            need_alnum = false;
        } else if matches!(b, b'.' | b'_' | b'-') && !need_alnum {
            need_alnum = true;
        } else {
            return Err(format!("must match {IDENTIFIER_PATTERN}"));
        }
    }
    if need_alnum {
        return Err(format!("must match {IDENTIFIER_PATTERN}"));
    }
    Ok(())
}

/// Checks that `namespace` is a valid containerd namespace name (an
/// identifier such as `default`, `k8s.io` or `moby`).
pub fn validate_namespace(namespace: &str) -> Result<()> {
    check_identifier(namespace).map_err(|reason| Error::InvalidNamespace {
        namespace: namespace.to_owned(),
        reason,
    })
}

/// Checks that `topic` is a valid event topic: `/` followed by one or more
/// identifiers separated by `/`, such as `/tasks/exit` or
/// `/tasks/exec-started`.
pub fn validate_topic(topic: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidTopic {
        topic: topic.to_owned(),
        reason,
    };
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(invalid(if topic.is_empty() {
            "must not be empty".to_owned()
        } else {
            "must start with '/'".to_owned()
        }));
    };
    if rest.is_empty() {
        return Err(invalid("must have at least one component".to_owned()));
    }
    for component in rest.split('/') {
        check_identifier(component)
            .map_err(|reason| invalid(format!("component {component:?} {reason}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_namespaces() {
        for ns in [
            "default",
            "k8s.io",
            "moby",
            "TestExchangeBasic",
            "a",
            "0",
            "a-b_c.d",
            "a1.b2-c3",
            &"x".repeat(76),
        ] {
            assert!(validate_namespace(ns).is_ok(), "{ns:?}");
        }
    }

    #[test]
    fn invalid_namespaces() {
        for (ns, reason) in [
            ("", "must not be empty"),
            (&"x".repeat(77), "must be at most 76 characters long"),
            ("-a", "must match"),
            ("a-", "must match"),
            ("a..b", "must match"),
            ("a.-b", "must match"),
            ("a/b", "must match"),
            ("a b", "must match"),
            ("ünï", "must match"),
            (".", "must match"),
        ] {
            match validate_namespace(ns) {
                Err(Error::InvalidNamespace {
                    namespace,
                    reason: got,
                }) => {
                    assert_eq!(namespace, ns);
                    assert!(got.starts_with(reason), "{ns:?}: {got}");
                }
                other => panic!("{ns:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn valid_topics() {
        for topic in [
            "/test",
            "/test/test",
            "/tasks/exec-added",
            "/snapshot/prepare",
            "/a.b/c_d/e-f/0",
        ] {
            assert!(validate_topic(topic).is_ok(), "{topic:?}");
        }
    }

    #[test]
    fn invalid_topics() {
        for (topic, reason) in [
            ("", "must not be empty"),
            ("test", "must start with '/'"),
            ("tasks/exit", "must start with '/'"),
            ("/", "must have at least one component"),
            ("//a", "component \"\" must not be empty"),
            ("/a//b", "component \"\" must not be empty"),
            ("/a/", "component \"\" must not be empty"),
            ("/tasks/?", "component \"?\" must match"),
            ("/a b", "component \"a b\" must match"),
        ] {
            match validate_topic(topic) {
                Err(Error::InvalidTopic {
                    topic: t,
                    reason: got,
                }) => {
                    assert_eq!(t, topic);
                    assert!(got.starts_with(reason), "{topic:?}: {got}");
                }
                other => panic!("{topic:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            validate_topic("test").unwrap_err().to_string(),
            r#"invalid topic "test": must start with '/'"#
        );
        assert_eq!(
            validate_namespace("a..b").unwrap_err().to_string(),
            r#"invalid namespace "a..b": must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"#
        );
    }
}
