//! Runtime and task options as clients send them (`Any`-typed): runc's
//! options and the legacy runctypes ones, merged as the Tasks service does.

use prost_types::Any;

use super::{Def, PARSER_ITERS, split2};
use crate::Target;

const TYPES: [&str; 4] = [
    "containerd.runc.v1.Options",
    "containerd.linux.runc.RuncOptions",
    "containerd.linux.runc.CreateOptions",
    "types.containerd.io/opentelemetry.proto.Other",
];

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "options",
            default_iters: PARSER_ITERS,
            dictionary: &["\u{0}", "runc", "/usr/bin/runc", "systemd"],
            max_len: 2 << 10,
        },
        check,
    }
}

/// One byte picks the type URL, the rest is the message.
fn any(data: &[u8]) -> Option<Any> {
    let (first, value) = data.split_first()?;
    Some(Any {
        type_url: TYPES[usize::from(*first) % TYPES.len()].to_string(),
        value: value.to_vec(),
    })
}

fn check(data: &[u8]) {
    let (task, runtime) = split2(data);
    let _ = berth_daemon::services::legacy_options::task_options(any(task), any(runtime));
}
