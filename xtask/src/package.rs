//! `cargo xtask package [--verify] [--manifest-path P]`: every crate of the
//! workspace that can be published is packaged as crates.io would take it,
//! and fails the run if any cannot be.
//!
//! Publishable means `publish` is not `false` in its manifest, so a new
//! crate is checked from the day it is added. Before packaging, each such
//! crate must carry what crates.io and docs.rs show: a description, a
//! license, the repository, a `documentation` link, its README and the
//! project's LICENSE file.
//!
//! Without `--verify` the crates are packaged only (`cargo package
//! --no-verify`: seconds), which catches a dependency without a version,
//! a self dev-dependency with one, a crate that names an unpublished
//! crate, and a README or LICENSE that is missing. `--verify` also builds
//! every package from its tarball, as `cargo publish` does (unpublished
//! workspace crates resolve to their packaged tarballs): that catches a
//! build script or `include_str!` reaching outside its crate, at the cost
//! of a second build of every dependency under the default profile.
//! cargo unpacks those tarballs under `$CARGO_HOME/registry/src/-<hash of
//! the target dir>/` and does not unpack an unchanged version again: a
//! second `--verify` with the same target dir builds the first one's
//! sources, so remove that directory (or use a fresh target dir) first.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::Result;

/// Options of `package`.
struct Options {
    verify: bool,
    manifest: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        verify: false,
        manifest: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--verify" => o.verify = true,
            "--manifest-path" => {
                o.manifest = Some(
                    it.next()
                        .map(PathBuf::from)
                        .ok_or("--manifest-path needs the workspace's Cargo.toml")?,
                );
            }
            other => {
                return Err(format!(
                    "package: unknown argument {other:?} (use --verify, --manifest-path)"
                ));
            }
        }
    }
    Ok(o)
}

/// One publishable crate: its name, directory and the `[package]` keys
/// crates.io shows that it leaves empty.
#[derive(Debug)]
struct Crate {
    name: String,
    dir: PathBuf,
    unset: Vec<&'static str>,
}

/// The `[package]` keys crates.io and docs.rs show (`readme` is checked as
/// a file).
const KEYS: &[&str] = &["description", "license", "repository", "documentation"];

/// `cargo xtask package`.
pub(crate) fn package(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let cargo = || {
        let mut cmd = crate::cargo();
        if let Some(m) = &o.manifest {
            // The workspace given, not this one (the xtask's own tests).
            cmd.current_dir(m.parent().unwrap_or(Path::new(".")));
        }
        cmd
    };
    let crates = publishable(cargo())?;
    if crates.is_empty() {
        return Err("package: the workspace has no publishable crate".to_string());
    }
    let problems: Vec<String> = crates.iter().flat_map(missing_metadata).collect();
    if !problems.is_empty() {
        return Err(format!(
            "package: crates.io would show these crates incomplete:\n  {}",
            problems.join("\n  ")
        ));
    }
    let mut cmd = cargo();
    cmd.args(["package", "--allow-dirty"]);
    if !o.verify {
        cmd.arg("--no-verify");
    }
    for c in &crates {
        cmd.args(["-p", &c.name]);
    }
    crate::run(&mut cmd).map_err(|e| {
        format!("package: a crate cannot be published as it stands (cargo's error is above): {e}")
    })?;
    let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
    eprintln!(
        "xtask: {} crate(s) package{}: {}",
        crates.len(),
        if o.verify { " and build" } else { "" },
        names.join(" ")
    );
    Ok(())
}

/// The workspace members whose manifest does not say `publish = false`.
fn publishable(mut cargo: Command) -> Result<Vec<Crate>> {
    let out = cargo
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut crates = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let is_member = p["id"].as_str().is_some_and(|id| members.contains(&id));
        // `publish` is null (anywhere) or a list of registries; `[]` is
        // `publish = false`.
        let unpublished = p["publish"].as_array().is_some_and(Vec::is_empty);
        if !is_member || unpublished {
            continue;
        }
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let dir = p["manifest_path"]
            .as_str()
            .map(Path::new)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("cargo metadata gives {name} no manifest path"))?;
        let unset = KEYS
            .iter()
            .copied()
            .filter(|k| p[*k].as_str().is_none_or(str::is_empty))
            .collect();
        crates.push(Crate { name, dir, unset });
    }
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(crates)
}

/// What `c`'s manifest and directory lack for crates.io and docs.rs, one
/// line each, naming the crate and what to add.
fn missing_metadata(c: &Crate) -> Vec<String> {
    let manifest = c.dir.join("Cargo.toml");
    let mut problems: Vec<String> = c
        .unset
        .iter()
        .map(|key| {
            format!(
                "{}: no `{key}` in {} (see the other crates' [package])",
                c.name,
                manifest.display()
            )
        })
        .collect();
    for file in ["README.md", "LICENSE"] {
        if !c.dir.join(file).is_file() {
            problems.push(format!(
                "{}: no {file} in {} ({})",
                c.name,
                c.dir.display(),
                if file == "LICENSE" {
                    "link the project's: ln -s ../../LICENSE"
                } else {
                    "what the crate is for, with an example that compiles"
                }
            ));
        }
    }
    problems
}
