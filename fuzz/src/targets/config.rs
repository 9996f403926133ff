//! The daemon's `config.toml`.

use std::path::Path;

use super::{Def, PARSER_ITERS, text};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "config",
            default_iters: PARSER_ITERS / 4,
            dictionary: &[
                "version = 2\n",
                "version = 3\n",
                "[grpc]\n",
                "[plugins.\"io.containerd.grpc.v1.cri\"]\n",
                "[proxy_plugins.p]\n",
                "address = ",
                "\"\"",
                "= -1\n",
                "= 9223372036854775807\n",
                "= \"1h\"\n",
                "= \"-5s\"\n",
                "= \"99999999999999h\"\n",
                "= [",
                "]\n",
                "= {}\n",
                "imports = [\"/nonexistent/*.toml\"]\n",
            ],
            max_len: 8 << 10,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let s = text(data);
    if let Ok(config) = berth_daemon::config::Config::parse(&s, Path::new("config.toml")) {
        let _ = config.to_toml();
    }
}
