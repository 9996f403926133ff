//! The wire surface (packages, messages, fields, numbers, types, services and
//! methods) compared with the checked-in `wire.txt`, so that every change to
//! what berth says on the wire is deliberate and reviewed.
//!
//! After an intended change: `BERTH_BLESS=1 cargo test -p berth-api --test wire_snapshot`.

use std::fmt::Write as _;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

fn describe_message(out: &mut String, prefix: &str, m: &DescriptorProto) {
    let name = format!("{prefix}.{}", m.name());
    let _ = writeln!(out, "message {name}");
    let mut fields = m.field.clone();
    fields.sort_by_key(|f| f.number());
    for f in &fields {
        let _ = writeln!(
            out,
            "  {} {} {:?} {:?} {}{}",
            f.number(),
            f.name(),
            f.label(),
            f.r#type(),
            f.type_name(),
            if f.proto3_optional() { " optional" } else { "" }
        );
    }
    for e in &m.enum_type {
        let _ = writeln!(out, "enum {name}.{}", e.name());
        for v in &e.value {
            let _ = writeln!(out, "  {} = {}", v.name(), v.number());
        }
    }
    for nested in &m.nested_type {
        describe_message(out, &name, nested);
    }
}

fn surface() -> String {
    let set =
        FileDescriptorSet::decode(berth_api::FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut files = set.file;
    files.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::new();
    for f in &files {
        let _ = writeln!(out, "file {} package {}", f.name(), f.package());
        for m in &f.message_type {
            describe_message(&mut out, f.package(), m);
        }
        for e in &f.enum_type {
            let _ = writeln!(out, "enum {}.{}", f.package(), e.name());
            for v in &e.value {
                let _ = writeln!(out, "  {} = {}", v.name(), v.number());
            }
        }
        for s in &f.service {
            let _ = writeln!(out, "service {}.{}", f.package(), s.name());
            for m in &s.method {
                let _ = writeln!(
                    out,
                    "  rpc {}({}{}) returns ({}{})",
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                );
            }
        }
    }
    out
}

#[test]
fn wire_surface_matches_checked_in_copy() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire.txt");
    let now = surface();
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(&path, &now).expect("write wire.txt");
        return;
    }
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    if before != now {
        let diff: Vec<String> = before
            .lines()
            .zip(now.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| format!("line {}: was {a:?}, now {b:?}", i + 1))
            .collect();
        panic!(
            "the wire surface changed ({} -> {} lines); first differences:\n{}\nIf intended, run with BERTH_BLESS=1 and commit tests/wire.txt",
            before.lines().count(),
            now.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn containerd_services_are_present() {
    let s = surface();
    for service in [
        "service containerd.services.version.v1.Version",
        "service containerd.services.namespaces.v1.Namespaces",
        "service containerd.services.introspection.v1.Introspection",
        "service containerd.services.events.v1.Events",
        "service containerd.services.events.ttrpc.v1.Events",
        "service containerd.services.content.v1.Content",
        "service containerd.services.leases.v1.Leases",
        "service containerd.services.images.v1.Images",
        "service containerd.services.diff.v1.Diff",
        "service containerd.services.containers.v1.Containers",
        "service containerd.services.snapshots.v1.Snapshots",
        "service containerd.services.tasks.v1.Tasks",
        "service containerd.services.transfer.v1.Transfer",
        "service containerd.services.streaming.v1.Streaming",
        "service containerd.task.v2.Task",
    ] {
        assert!(s.contains(service), "missing {service}");
    }
}
