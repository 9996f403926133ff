//! Registries' `WWW-Authenticate` challenges (one header value a line).

use super::{Def, PARSER_ITERS, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "auth",
            default_iters: PARSER_ITERS,
            dictionary: &[
                "Bearer ", "Basic ", "realm=", "service=", "scope=", "error=", "\"", "\\", ",",
                "=", " ", "\t", "é",
            ],
            max_len: 1024,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let s = text(data);
    for challenge in berth_remotes::auth::parse_challenges(s.split('\n')) {
        let _ = challenge.params.get("realm");
    }
}
