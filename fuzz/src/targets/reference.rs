//! Image references and platform specifiers.

use berth_images::{Platform, Reference};

use super::{Def, PARSER_ITERS, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "reference",
            default_iters: PARSER_ITERS,
            dictionary: &[
                "docker.io/",
                "library/",
                "localhost:5000/",
                ":latest",
                "@sha256:",
                "sha256:",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "[::1]:5000/",
                "__",
                "--",
            ],
            max_len: 512,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let s = text(data);
    for parse in [Reference::parse, Reference::parse_normalized] {
        let Ok(r) = parse(&s) else { continue };
        // What a parsed reference prints must parse again, the same.
        let again = parse(&r.to_string()).expect("reparse");
        assert_eq!(again.to_string(), r.to_string());
        let _ = (r.familiar(), r.locator(), r.object(), r.name_only());
        let _ = r.with_tag("v1");
    }
    let _ = Platform::parse(&s).map(|p| p.normalize());
}
