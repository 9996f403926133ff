//! `containerd-shim-berth-v2 -info`: what containerd 2.x's
//! `Introspection.PluginInfo` for the runtime plugin asks a shim. The
//! runtime options arrive on stdin as an encoded `Any` (nothing when the
//! client gave none); the answer is an encoded `containerd.types.RuntimeInfo`
//! on stdout, with runc's own `runc features` document as the features.

use std::io::{Read, Write};
use std::process::Command;

use berth_api::containerd::runc::v1::Options;
use berth_api::containerd::types::{RuntimeInfo, RuntimeVersion};
use prost::Message;

/// The runtime name berth's shim answers as: it serves runc's runtime.
const RUNTIME_NAME: &str = "io.containerd.runc.v2";
/// Type URL of runc's shim options.
const OPTIONS_URL: &str = "containerd.runc.v1.Options";
/// Type URL containerd registers for the OCI runtime features document
/// (carried as JSON).
const FEATURES_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Reads the options on stdin and prints the runtime info.
pub(crate) fn print() -> Result<(), String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("failed to read config bytes from stdin: {e}"))?;
    let info = runtime_info(&input)?;
    std::io::stdout()
        .write_all(&info.encode_to_vec())
        .map_err(|e| format!("writing the runtime info: {e}"))
}

/// The runtime info for the encoded options `input`.
fn runtime_info(input: &[u8]) -> Result<RuntimeInfo, String> {
    let mut info = RuntimeInfo {
        name: RUNTIME_NAME.to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
        }),
        ..Default::default()
    };
    let mut binary = "runc".to_string();
    if !input.is_empty() {
        let any = prost_types::Any::decode(input)
            .map_err(|e| format!("failed to read runtime options: {e}"))?;
        if !(any.type_url == OPTIONS_URL || any.type_url.ends_with(&format!("/{OPTIONS_URL}"))) {
            return Err(format!(
                "failed to read runtime options (*options.Options): invalid type {}: invalid argument",
                any.type_url
            ));
        }
        let opts = Options::decode(any.value.as_slice())
            .map_err(|e| format!("failed to read runtime options: {e}"))?;
        if !opts.binary_name.is_empty() {
            binary = opts.binary_name.clone();
        }
        info.options = Some(prost_types::Any {
            type_url: OPTIONS_URL.to_string(),
            value: opts.encode_to_vec(),
        });
    }
    // As containerd's runc shim: a runc without `features` gives no features.
    if let Ok(out) = Command::new(&binary).arg("features").output()
        && out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok()
    {
        info.features = Some(prost_types::Any {
            type_url: FEATURES_URL.to_string(),
            value: out.stdout,
        });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_back_and_other_types_are_refused() {
        let opts = Options {
            binary_name: "/nonexistent/runc".into(),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: OPTIONS_URL.into(),
            value: opts.encode_to_vec(),
        };
        let info = runtime_info(&any.encode_to_vec()).unwrap();
        assert_eq!(info.name, RUNTIME_NAME);
        assert_eq!(info.options, Some(any));
        // That runc does not exist: no features, no failure.
        assert_eq!(info.features, None);
        let other = prost_types::Any {
            type_url: "containerd.linux.runc.RuncOptions".into(),
            value: vec![],
        };
        assert!(
            runtime_info(&other.encode_to_vec())
                .unwrap_err()
                .contains("invalid type")
        );
    }
}
