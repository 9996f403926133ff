//! `cargo xtask package` on small workspaces in temporary directories: it
//! passes a crate that can be published and fails, naming the crate, one
//! that cannot. Offline: nothing here needs the registry.

use std::path::Path;
use std::process::{Command, Output};

/// A publishable library crate `name` under `ws`, with `extra` appended to
/// its manifest; `license_file` says whether it carries a LICENSE.
fn write_crate(ws: &Path, name: &str, extra: &str, license_file: bool) {
    let dir = ws.join(name);
    std::fs::create_dir_all(dir.join("src")).expect("create the crate's src");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             description = \"test crate\"\nlicense = \"Apache-2.0\"\n\
             repository = \"https://example.invalid/{name}\"\n\
             documentation = \"https://docs.rs/{name}\"\n{extra}"
        ),
    )
    .expect("write the crate's manifest");
    std::fs::write(dir.join("src/lib.rs"), "//! Test crate.\n").expect("write lib.rs");
    std::fs::write(dir.join("README.md"), format!("# {name}\n")).expect("write README.md");
    if license_file {
        std::fs::write(dir.join("LICENSE"), "Apache License 2.0\n").expect("write LICENSE");
    }
}

/// A workspace of `members` under `ws`.
fn write_workspace(ws: &Path, members: &[&str]) {
    let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"2\"\nmembers = [{}]\n",
            list.join(", ")
        ),
    )
    .expect("write the workspace manifest");
}

fn xtask_package(ws: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-xtask"))
        .args(["package", "--manifest-path"])
        .arg(ws.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", ws.join("target"))
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("run xtask")
}

#[test]
fn a_publishable_workspace_packages() {
    let ws = tempfile::tempdir().unwrap();
    write_crate(ws.path(), "good", "", true);
    // Unpublished crates are left out, whatever they contain.
    write_crate(
        ws.path(),
        "internal",
        "publish = false\n[dependencies]\ngood = { path = \"../good\" }\n",
        false,
    );
    write_workspace(ws.path(), &["good", "internal"]);
    let out = xtask_package(ws.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "xtask package failed: {stderr}");
    assert!(stderr.contains("1 crate(s) package: good"), "{stderr}");
    assert!(ws.path().join("target/package/good-0.1.0.crate").is_file());
}

#[test]
fn a_dependency_without_a_version_fails_the_check() {
    let ws = tempfile::tempdir().unwrap();
    write_crate(ws.path(), "good", "", true);
    write_crate(
        ws.path(),
        "needs_good",
        "[dependencies]\ngood = { path = \"../good\" }\n",
        true,
    );
    write_workspace(ws.path(), &["good", "needs_good"]);
    let out = xtask_package(ws.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xtask package passed: {stderr}");
    assert!(
        stderr.contains("needs_good") && stderr.contains("cannot be published"),
        "{stderr}"
    );
}

#[test]
fn a_crate_without_license_or_documentation_fails_the_check() {
    let ws = tempfile::tempdir().unwrap();
    write_crate(ws.path(), "good", "", true);
    write_crate(ws.path(), "bare", "", false);
    let manifest = ws.path().join("bare/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("documentation"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, text).unwrap();
    write_workspace(ws.path(), &["good", "bare"]);
    let out = xtask_package(ws.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xtask package passed: {stderr}");
    assert!(stderr.contains("bare: no LICENSE"), "{stderr}");
    assert!(stderr.contains("bare: no `documentation`"), "{stderr}");
    assert!(!stderr.contains("good: no"), "{stderr}");
}

/// berth-content's old mistake: its own conformance suite as a dev-dependency
/// with a version, which cargo keeps in the package and cannot resolve.
#[test]
fn a_versioned_self_dev_dependency_fails_the_check() {
    let ws = tempfile::tempdir().unwrap();
    write_crate(
        ws.path(),
        "selfish",
        "[features]\nsuite = []\n[dev-dependencies]\n\
         selfish = { path = \".\", version = \"0.1.0\", features = [\"suite\"] }\n",
        true,
    );
    write_workspace(ws.path(), &["selfish"]);
    let out = xtask_package(ws.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xtask package passed: {stderr}");
    assert!(
        stderr.contains("selfish") && stderr.contains("cannot be published"),
        "{stderr}"
    );
}
