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

/// The status of one Python grpcio call with raw request bytes.
fn python_status(d: &Daemon, method: &str, request: &[u8]) -> Result<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/status_of.py");
    let hex: String = request.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(PYTHON)
        .arg(script)
        .arg(&d.address)
        .arg(method)
        .arg(hex)
        .output()?;
    Ok(ok(out)?.trim().to_string())
}

/// `[grpc] max_recv_message_size` / `max_send_message_size`: a message of
/// exactly the limit passes; one byte over gets containerd's (grpc-go's)
/// ResourceExhausted, both ways.
#[test]
fn message_size_limits_answer_resource_exhausted() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        "version = 2\n[grpc]\nmax_recv_message_size = 4096\nmax_send_message_size = 4096\n",
    ))?;
    // CreateNamespaceRequest{namespace: {name: "nX", labels: {"k": v}}} is
    // len(v) + 16 bytes when v is 128..16000 bytes long.
    let label = |len: usize| format!("k={}", "x".repeat(len));
    ok(d.ctr(&["namespaces", "create", "n1", &label(4080)])?)?;
    let err = berth_tests::fails(d.ctr(&["namespaces", "create", "n2", &label(4081)])?)?;
    assert!(
        err.contains("grpc: received message larger than max (4097 vs. 4096)"),
        "{err}"
    );
    // The same request through grpcio shows the code ctr folds into "unknown".
    let v = vec![b'x'; 4081];
    let entry = [&[0x0a, 1, b'k', 0x12, 0xf1, 0x1f][..], &v[..]].concat();
    let ns = [&[0x0a, 2, b'n', b'2', 0x12, 0xf7, 0x1f][..], &entry[..]].concat();
    let request = [&[0x0a, 0xfe, 0x1f][..], &ns[..]].concat();
    assert_eq!(request.len(), 4097);
    let status = python_status(
        &d,
        "/containerd.services.namespaces.v1.Namespaces/Create",
        &request,
    )?;
    assert_eq!(
        status,
        "RESOURCE_EXHAUSTED grpc: received message larger than max (4097 vs. 4096)"
    );
    // ListNamespacesResponse with n1 alone is 4096 bytes: sent.
    let ls = ok(d.ctr(&["namespaces", "ls", "-q"])?)?;
    assert_eq!(ls.trim(), "n1");
    // One more namespace makes it too large to send.
    ok(d.ctr(&["namespaces", "create", "n3"])?)?;
    let status = python_status(
        &d,
        "/containerd.services.namespaces.v1.Namespaces/List",
        &[],
    )?;
    assert!(
        status.starts_with("RESOURCE_EXHAUSTED grpc: trying to send message larger than max ("),
        "{status}"
    );
    Ok(())
}

/// gRPC's C core sends the percent-encoded socket path as `:authority` for
/// a `unix:` target (grpcio's default from 1.5x on; Debian's 1.51 when asked
/// with `grpc.default_authority`). h2 rejects it; berthd's authority filter
/// rewrites it, so every call works as against containerd.
#[test]
fn python_grpcio_with_a_percent_encoded_authority() -> Result<()> {
    let d = Daemon::start()?;
    let grpc = "/usr/lib/python3/dist-packages/grpc/__init__.py";
    if !std::path::Path::new(grpc).exists() {
        bail!("{grpc} is missing: run `cargo xtask deps` (installs python3-grpcio)");
    }
    let encoded = d.address.to_string_lossy().replace('/', "%2F");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/containerd_calls.py");
    let out = Command::new(PYTHON)
        .arg(script)
        .arg(&d.address)
        .arg(&encoded)
        .output()?;
    let text = ok(out)?;
    for call in [
        "Version",
        "Namespaces.List",
        "Containers.List",
        "Tasks.List",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{call} ok "))),
            "{call} failed with :authority {encoded}:\n{text}"
        );
    }
    assert!(!text.contains("error INTERNAL"), "{text}");
    Ok(())
}

/// A venv with the current grpcio from PyPI under the target dir (made once,
/// by Debian's python3 with python3-venv; renamed into place whole).
fn pypi_grpcio_python() -> Result<PathBuf> {
    let target = berth_tests::bin_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let venv = target.join("pypi-grpcio-venv");
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    let tmp = tempfile::Builder::new()
        .prefix("pypi-grpcio-")
        .tempdir_in(&target)?;
    let staged = tmp.path().join("venv");
    ok(Command::new(PYTHON)
        .arg("-m")
        .arg("venv")
        .arg(&staged)
        .output()?)?;
    let pip = Command::new(staged.join("bin/pip"))
        .args(["install", "--quiet", "grpcio"])
        .output()?;
    ok(pip)?;
    // The venv's scripts name its path: make it again in place if another
    // test run got there first, else move this one in.
    if std::fs::rename(&staged, &venv).is_err() && !python.exists() {
        bail!("could not place {}", venv.display());
    }
    if !python.exists() {
        bail!("{} missing after install", python.display());
    }
    Ok(python)
}

/// The current grpcio from PyPI sends the percent-encoded socket path as
/// `:authority` with default options: every call still works.
#[test]
fn pypi_grpcio_with_default_options() -> Result<()> {
    let python = pypi_grpcio_python()?;
    let d = Daemon::start()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/containerd_calls.py");
    let text = ok(Command::new(python).arg(script).arg(&d.address).output()?)?;
    for call in [
        "Version",
        "Namespaces.List",
        "Containers.List",
        "Tasks.List",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{call} ok "))),
            "{call} failed:\n{text}"
        );
    }
    assert!(!text.contains("error INTERNAL"), "{text}");
    Ok(())
}
