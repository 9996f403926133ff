//! `berthctl --format json` and `-q`: machine-readable output of list and
//! event commands, decoded from the wire with protobuf field names.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_tests::{Daemon, Watcher, bin, ok};
use serde_json::Value;

fn json(out: &str) -> Result<Value> {
    serde_json::from_str(out).with_context(|| format!("not JSON:\n{out}"))
}

#[test]
fn list_commands_print_json_and_quiet_ids() -> Result<()> {
    let d = Daemon::start()?;
    ok(d.berthctl(&["namespaces", "create", "dev", "team=infra"])?)?;
    let v = json(&ok(d.berthctl(&[
        "namespaces",
        "ls",
        "--format",
        "json",
    ])?)?)?;
    let dev = v
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "dev"))
        .with_context(|| format!("no dev namespace in {v}"))?;
    assert_eq!(dev["labels"]["team"], "infra", "{v}");

    ok(d.berthctl(&["leases", "create", "--id", "l1"])?)?;
    let v = json(&ok(d.berthctl(&["--format", "json", "leases", "ls"])?)?)?;
    assert_eq!(v[0]["id"], "l1", "{v}");
    assert!(
        v[0]["created_at"].is_string(),
        "timestamps as RFC 3339: {v}"
    );

    ok(d.berthctl(&["snapshot", "prepare", "work"])?)?;
    let v = json(&ok(d.berthctl(&["snapshot", "ls", "--format", "json"])?)?)?;
    assert_eq!(v[0]["name"], "work", "{v}");
    // Enums by name, as protobuf's JSON mapping writes them.
    assert_eq!(v[0]["kind"], "ACTIVE", "{v}");
    let out = ok(d.berthctl(&["snapshot", "ls", "-q"])?)?;
    assert_eq!(out.trim(), "work");

    let v = json(&ok(d.berthctl(&["plugins", "ls", "--format", "json"])?)?)?;
    let ids: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.contains(&"namespaces") && ids.contains(&"overlayfs"),
        "{ids:?}"
    );
    d.finish()
}

#[test]
fn events_are_decoded_as_ctr_prints_them_and_as_json_lines() -> Result<()> {
    let d = Daemon::start()?;
    // An exact and a regular-expression filter (`~=`); a create event in
    // the caller's namespace is made to be let through by both.
    for (format, probe, filter) in [
        ("table", "first-t", "topic==\"/namespaces/create\""),
        ("json", "first-j", "topic~=\"^/namespaces/cr[e]ate$\""),
    ] {
        let mut cmd = Command::new(bin("berthctl")?);
        cmd.arg("--address")
            .arg(&d.address)
            .args(["--format", format, "events", filter]);
        let watcher = Watcher::spawn(cmd)?;
        // The subscription is live once one event came through; until
        // then an event may predate it, so the first namespace is made
        // until its event is seen (a handshake, not a timing guess).
        let mut n = 0;
        loop {
            let name = format!("{probe}{n}");
            ok(d.berthctl(&["namespaces", "create", &name])?)?;
            if watcher
                .wait_for(&[&name], Duration::from_millis(500))
                .is_ok()
            {
                break;
            }
            n += 1;
            assert!(n < 40, "the events subscription never delivered");
        }
        // Deletions pass neither filter.
        ok(d.berthctl(&["namespaces", "rm", &format!("{probe}0")])?)?;
        let target = format!("target-{format}");
        let quoted = format!("\"{target}\"");
        ok(d.berthctl(&["namespaces", "create", &target, "k=v"])?)?;
        let out = watcher.wait_for(&[&quoted], Duration::from_secs(20))?;
        let line = out
            .lines()
            .find(|l| l.contains(&quoted))
            .unwrap_or_default();
        assert!(
            !out.contains("/namespaces/delete"),
            "the filter let a delete through:\n{out}"
        );
        if format == "json" {
            let v = json(line)?;
            assert_eq!(v["topic"], "/namespaces/create", "{line}");
            assert_eq!(v["event"]["name"], target.as_str(), "{line}");
            assert_eq!(v["event"]["labels"]["k"], "v", "{line}");
        } else {
            // `<time> <namespace> <topic> <payload as JSON>`, as ctr prints.
            let payload = line
                .split_once(" /namespaces/create ")
                .map(|(_, p)| p)
                .with_context(|| format!("no topic in {line}"))?;
            let v = json(payload)?;
            assert_eq!(v["name"], target.as_str(), "{line}");
        }
    }
    d.finish()
}
