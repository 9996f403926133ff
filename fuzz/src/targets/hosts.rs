//! Registry `hosts.toml` (mirrors, TLS, headers).

use std::path::Path;

use super::{Def, PARSER_ITERS, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "hosts",
            default_iters: PARSER_ITERS / 4,
            dictionary: &[
                "server = ",
                "[host.\"https://mirror:5000\"]\n",
                "[host.\"http://[::1]\"]\n",
                "capabilities = [\"pull\", \"resolve\", \"push\"]\n",
                "skip_verify = true\n",
                "ca = ",
                "client = [[\"a.crt\", \"a.key\"]]\n",
                "override_path = true\n",
                "[header]\n",
                "\"\"",
                "://",
                "\n",
            ],
            max_len: 8 << 10,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let s = text(data);
    if let Ok(hosts) = berth_remotes::hosts::parse_hosts_toml(&s, Path::new("/etc/hosts.d")) {
        for h in &hosts {
            let _ = h.is_mirror_of("docker.io");
        }
    }
}
