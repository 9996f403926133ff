//! Wire details other clients depend on: Python's grpcio (gRPC's C core)
//! against every service, server-generated lease ids (ctr 1.6 and ctr
//! 2.1.5), and the namespace `/namespaces/create` is published in.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use berth_tests::{Daemon, ok};

/// Debian's python3 with python3-grpcio (the `python3` on PATH may be
/// another interpreter without grpc).
const PYTHON: &str = "/usr/bin/python3";

/// Runs tests/python/containerd_calls.py against `d`; its output lines.
fn python_calls(d: &Daemon) -> Result<Vec<String>> {
    let grpc = "/usr/lib/python3/dist-packages/grpc/__init__.py";
    if !std::path::Path::new(grpc).exists() {
        bail!("{grpc} is missing: run `cargo xtask deps` (installs python3-grpcio)");
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/containerd_calls.py");
    let out = Command::new(PYTHON).arg(script).arg(&d.address).output()?;
    let text = ok(out)?;
    Ok(text.lines().map(str::to_string).collect())
}

/// One call per service with grpcio's default channel options: every list
/// succeeds, and calls with empty requests get a status, not a reset.
#[test]
fn python_grpcio_client_calls_every_service() -> Result<()> {
    let d = Daemon::start()?;
    let lines = python_calls(&d)?;
    let all = lines.join("\n");
    for call in [
        "Version",
        "Namespaces.List",
        "Containers.List",
        "Content.List",
        "Images.List",
        "Leases.List",
        "Snapshots.List",
        "Tasks.List",
        "Introspection.Plugins",
        "Namespaces.Create",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{call} ok "))),
            "{call} failed:\n{all}"
        );
    }
    for call in ["Diff.Diff", "Transfer.Transfer"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{call} ")))
            .cloned()
            .unwrap_or_default();
        assert!(
            line.ends_with(" error INVALID_ARGUMENT") || line.ends_with(" error UNIMPLEMENTED"),
            "{call}: want a status for an empty request:\n{all}"
        );
    }
    assert!(all.contains("Version ok"), "{all}");
    Ok(())
}

/// containerd publishes `/namespaces/create` in the caller's namespace.
#[test]
fn namespace_create_event_is_published_in_the_callers_namespace() -> Result<()> {
    let d = Daemon::start()?;
    let lines = python_calls(&d)?;
    assert!(
        lines
            .iter()
            .any(|l| l == "event caller-ns /namespaces/create"),
        "{}",
        lines.join("\n")
    );
    // ctr agrees on where it went (the namespace it was created from).
    let ls = ok(d.ctr(&["namespaces", "ls", "-q"])?)?;
    assert!(ls.lines().any(|l| l == "py-made"), "{ls}");
    Ok(())
}

/// Where the tools from the shared folder are: `$BERTH_SHARED_TOOLS`, else
/// `<repo>/../shared/tools`.
fn shared_tool(name: &str) -> Result<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs: Vec<PathBuf> = std::env::var_os("BERTH_SHARED_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo.join("../shared/tools")])
        .collect();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found in {dirs:?}: set BERTH_SHARED_TOOLS to the folder holding it \
                 (the project's shared/tools)"
            )
        })
}

/// Leases.Create with no id: the server makes one, shaped as containerd's
/// (`<nanoseconds>-<4 URL-safe base64 chars>`); ctr 2.x relies on it.
#[test]
fn lease_create_without_id_gets_a_generated_id() -> Result<()> {
    let d = Daemon::start()?;
    let ctr2 = shared_tool("ctr-2.1.5")?;
    let out = Command::new(&ctr2)
        .arg("--address")
        .arg(&d.address)
        .args(["leases", "create"])
        .output()?;
    let id = ok(out)?.trim().to_string();
    let (nanos, tail) = id.split_once('-').unwrap_or_default();
    assert!(
        nanos.parse::<u32>().is_ok_and(|n| n < 1_000_000_000)
            && tail.len() == 4
            && tail
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "not containerd's lease id shape: {id:?}"
    );
    // ctr 1.6 makes its id client-side; both are listed.
    let id16 = ok(d.ctr(&["leases", "create"])?)?.trim().to_string();
    assert!(!id16.is_empty() && id16 != id);
    let ls = ok(d.ctr(&["leases", "ls", "-q"])?)?;
    assert!(
        ls.lines().any(|l| l == id) && ls.lines().any(|l| l == id16),
        "{ls}"
    );
    Ok(())
}
