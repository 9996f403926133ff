//! berthctl's command tree against ctr 1.6's: every ctr command,
//! subcommand and alias (read from `ctr [cmd...] --help`, recursively)
//! exists in berthctl (read from `berthctl [cmd...] --help`), except the
//! allow-listed ones below, each with its reason (also in
//! crates/ctl/README.md).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result};

/// ctr commands berthctl deliberately lacks, and why.
const NOT_IN_BERTHCTL: &[(&str, &str)] = &[
    (
        "pprof block",
        "Go runtime profile; berthd is not a Go program (`pprof profile` is served)",
    ),
    (
        "pprof goroutines",
        "Go runtime dump; berthd is not a Go program",
    ),
    ("pprof heap", "Go heap profile; berthd is not a Go program"),
    (
        "pprof threadcreate",
        "Go runtime profile; berthd is not a Go program",
    ),
    (
        "pprof trace",
        "Go execution trace; berthd is not a Go program",
    ),
    (
        "install",
        "installs binaries from an image onto the host; `cargo xtask install` installs berth",
    ),
];

/// A command's subcommands: name -> aliases.
type Tree = BTreeMap<String, BTreeSet<String>>;

/// Subcommands listed in a urfave/cli help page (ctr): under `COMMANDS:`,
/// `   name, alias1, alias2   description`.
fn ctr_commands(help: &str) -> Tree {
    let mut out = Tree::new();
    let mut inside = false;
    for line in help.lines() {
        if line.trim_end().ends_with("COMMANDS:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            break;
        }
        // Names end where the description starts (two or more spaces).
        let trimmed = line.trim_start();
        let names = trimmed.split("  ").next().unwrap_or_default();
        let mut names = names.split(',').map(|n| n.trim().to_string());
        if let Some(name) = names.next() {
            out.insert(name, names.collect());
        }
    }
    out.remove("help");
    out
}

/// Subcommands listed in a clap help page (berthctl): under `Commands:`,
/// `  name  description [aliases: a, b]`.
fn berthctl_commands(help: &str) -> Tree {
    let mut out = Tree::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.trim().is_empty() {
            break;
        }
        // Wrapped descriptions are indented further.
        if !line.starts_with("  ") || line.starts_with("   ") {
            continue;
        }
        let name = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let aliases = line
            .rsplit_once("[alias")
            .and_then(|(_, rest)| rest.split_once(':'))
            .map(|(_, list)| {
                list.trim_end_matches(']')
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, aliases);
    }
    out.remove("help");
    out
}

fn help(bin: &std::path::Path, path: &[String]) -> Result<String> {
    let out = Command::new(bin)
        .args(path)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} {path:?} --help", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Walks ctr's tree; records what berthctl lacks.
fn compare(
    ctr: &std::path::Path,
    berthctl: &std::path::Path,
    path: Vec<String>,
    missing: &mut Vec<String>,
) -> Result<()> {
    let theirs = ctr_commands(&help(ctr, &path)?);
    let ours = berthctl_commands(&help(berthctl, &path)?);
    for (name, aliases) in &theirs {
        let full = path
            .iter()
            .chain([name])
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        // ctr's name may be a berthctl alias (ctr `delete`, berthctl `rm`).
        let Some((our_name, our_aliases)) =
            ours.iter().find(|(n, a)| *n == name || a.contains(name))
        else {
            missing.push(full);
            continue;
        };
        for a in aliases {
            if our_name != a && !our_aliases.contains(a) {
                missing.push(format!("{full} (alias {a})"));
            }
        }
        let mut sub = path.clone();
        sub.push(name.clone());
        compare(ctr, berthctl, sub, missing)?;
    }
    Ok(())
}

#[test]
fn every_ctr_command_exists_in_berthctl() -> Result<()> {
    let ctr = berth_tests::ctr_bin()?;
    let berthctl = berth_tests::bin("berthctl")?;
    // The parsers must see something, or the test could not fail.
    let top = ctr_commands(&help(&ctr, &[])?);
    assert!(
        top.contains_key("images") && top.contains_key("tasks"),
        "{top:?}"
    );
    let ours = berthctl_commands(&help(&berthctl, &[])?);
    assert!(ours["images"].contains("i"), "{ours:?}");

    let mut missing = Vec::new();
    compare(&ctr, &berthctl, Vec::new(), &mut missing)?;
    let allowed: BTreeSet<&str> = NOT_IN_BERTHCTL.iter().map(|(c, _)| *c).collect();
    let unexpected: Vec<&String> = missing
        .iter()
        .filter(|m| !allowed.contains(m.as_str()))
        .collect();
    // Every ctr command and alias missing from berthctl, for the log.
    for m in &missing {
        eprintln!("ctr has, berthctl lacks: {m}");
    }
    assert!(
        unexpected.is_empty(),
        "ctr commands missing from berthctl and not allow-listed: {unexpected:#?}"
    );
    // An allow-list entry for something berthctl now has is stale.
    let stale: Vec<&&str> = allowed
        .iter()
        .filter(|a| !missing.iter().any(|m| m == **a))
        .collect();
    assert!(
        stale.is_empty(),
        "allow-listed but present in berthctl: {stale:?}"
    );
    Ok(())
}
