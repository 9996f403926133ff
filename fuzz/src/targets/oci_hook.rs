//! `berthd oci-hook`: the OCI state a runtime writes on the hook's stdin
//! and the templates of the hook's arguments (`{{.Root}}`, `{{.Pid}}`...).

use berth_daemon::oci_hook::{Context, State};

use super::{Def, PARSER_ITERS, split2, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "oci_hook",
            default_iters: PARSER_ITERS,
            dictionary: &[
                "{{.Root}}",
                "{{.Pid}}",
                "{{.ID}}",
                "{{.Bundle}}",
                "{{.Annotations}}",
                "{{index .Annotations \"",
                "\"}}",
                "{{",
                "}}",
                r#""pid":"#,
                r#""bundle":"#,
                r#""annotations":{}"#,
            ],
            max_len: 4 << 10,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let (state, template) = split2(data);
    let Ok(state) = serde_json::from_slice::<State>(state) else {
        return;
    };
    let _ = Context::new(state, "/rootfs").render(&text(template));
}
