//! containerd's filter expressions, matched against a fixed object.

use std::borrow::Cow;

use super::{Def, PARSER_ITERS, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "filters",
            default_iters: PARSER_ITERS,
            dictionary: &[
                "==", "!=", "~=", ",", "|", ".", "\"", "\\", "/", "labels.", "topic", "(", ")",
                "*", "^", "$", "[", "]", "{", "}", "\\x",
            ],
            max_len: 512,
        },
        check,
    }
}

/// The object filters are matched against.
struct Object;

impl berth_filters::Adaptor for Object {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        match fieldpath {
            ["topic"] => Some("/tasks/exit".into()),
            ["namespace"] => Some("default".into()),
            ["labels", "a.b"] => Some("c,d".into()),
            ["name"] => Some("".into()),
            _ => None,
        }
    }
}

fn check(data: &[u8]) {
    let s = text(data);
    if let Ok(f) = berth_filters::parse(&s) {
        let _ = f.matches(&Object);
    }
    let parts: Vec<&str> = s.split('\n').collect();
    if let Ok(f) = berth_filters::parse_all(&parts) {
        let _ = f.matches(&Object);
    }
}
