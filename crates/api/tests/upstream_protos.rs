//! berth's wire surface checked against containerd's own `.proto` files.
//!
//! `wire.txt` catches changes to berth's protos, not divergence from
//! containerd. This test compiles the protos Debian ships with containerd
//! 1.6 (`golang-github-containerd-containerd-dev`, plus containerd/cgroups'
//! statistics and gogo's option protos they import) with Debian's `protoc`,
//! and requires that every service, rpc, message, field and enum value found
//! there exists identically in [`berth_api::FILE_DESCRIPTOR_SET`]. Fields or
//! values berth has beyond containerd 1.6 must be listed in [`BERTH_EXTRAS`]
//! with the reason (they are containerd 2.x additions).
//!
//! The packages come from `cargo xtask deps`; a missing one fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// Debian's Go source tree.
const GOCODE: &str = "/usr/share/gocode/src";

/// containerd 1.6's wire protos, relative to [`GOCODE`]: the API, the shim
/// task API, runc's options (v2 `Options` and the older runctypes) and the
/// cgroup statistics a shim's `Stats` carries.
const UPSTREAM_DIRS: &[&str] = &[
    "github.com/containerd/containerd/api",
    "github.com/containerd/containerd/runtime/v2/task",
    "github.com/containerd/containerd/runtime/v2/runc/options",
    "github.com/containerd/containerd/runtime/linux/runctypes",
    "github.com/containerd/cgroups/stats/v1",
    "github.com/containerd/cgroups/v2/stats",
];

/// Packages that only exist to build the others (protobuf's well-known types
/// and gogo's options) and are not part of the compared surface.
const IGNORED_PACKAGES: &[&str] = &["google.protobuf", "gogoproto", "containerd.plugin"];

/// What berth has beyond containerd 1.6 inside a type 1.6 also has, and why.
/// Every entry must still exist in berth (a stale entry fails the test).
/// All are containerd 2.x (or containerd/cgroups v3) additions; the ignored
/// `berth_matches_containerd_2_protos` checks them against those sources.
const BERTH_EXTRAS: &[(&str, &str)] = &[
    (".containerd.events.SnapshotPrepare.snapshotter", "2.x"),
    (".containerd.events.SnapshotCommit.snapshotter", "2.x"),
    (".containerd.events.SnapshotRemove.snapshotter", "2.x"),
    (".containerd.runc.v1.CheckpointOptions.parent_path", "2.x"),
    (".containerd.runc.v1.Options.task_api_address", "2.x"),
    (".containerd.runc.v1.Options.task_api_version", "2.x"),
    (
        ".containerd.services.containers.v1.Container.sandbox",
        "2.x",
    ),
    (".containerd.services.diff.v1.ApplyRequest.sync_fs", "2.x"),
    (
        ".containerd.services.diff.v1.DiffRequest.source_date_epoch",
        "2.x",
    ),
    (
        ".containerd.services.images.v1.CreateImageRequest.source_date_epoch",
        "2.x",
    ),
    (
        ".containerd.services.images.v1.UpdateImageRequest.source_date_epoch",
        "2.x",
    ),
    (
        ".containerd.services.images.v1.DeleteImageRequest.target",
        "2.x",
    ),
    (
        ".containerd.services.introspection.v1.ServerResponse.pid",
        "2.x",
    ),
    (
        ".containerd.services.introspection.v1.ServerResponse.pidns",
        "2.x",
    ),
    (
        ".containerd.services.introspection.v1.ServerResponse.deprecations",
        "2.x",
    ),
    (
        ".containerd.services.introspection.v1.Introspection.PluginInfo",
        "2.x",
    ),
    (
        ".containerd.services.snapshots.v1.CommitSnapshotRequest.parent",
        "2.x",
    ),
    (
        ".containerd.services.tasks.v1.CreateTaskRequest.task_api_address",
        "2.x",
    ),
    (
        ".containerd.services.tasks.v1.CreateTaskRequest.task_api_version",
        "2.x",
    ),
    (".containerd.types.Platform.os_version", "2.x"),
    (".containerd.types.Platform.os_features", "2.x"),
    (".io.containerd.cgroups.v2.CPUStat.psi", "cgroups v3"),
    (".io.containerd.cgroups.v2.CPUStat.nr_bursts", "cgroups v3"),
    (".io.containerd.cgroups.v2.CPUStat.burst_usec", "cgroups v3"),
    (".io.containerd.cgroups.v2.IOStat.psi", "cgroups v3"),
    (
        ".io.containerd.cgroups.v2.MemoryStat.max_usage",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.MemoryStat.swap_max_usage",
        "cgroups v3",
    ),
    (".io.containerd.cgroups.v2.MemoryStat.psi", "cgroups v3"),
    (
        ".io.containerd.cgroups.v2.MemoryStat.workingset_refault_anon",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.MemoryStat.workingset_refault_file",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.MemoryStat.workingset_activate_anon",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.MemoryStat.workingset_activate_file",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.MemoryEvents.oom_group_kill",
        "cgroups v3",
    ),
    (
        ".io.containerd.cgroups.v2.HugeTlbStat.failcnt",
        "cgroups v3",
    ),
    (".io.containerd.cgroups.v2.Metrics.network", "cgroups v3"),
];

/// Messages berth names as containerd 2.x does, where 1.6 had another name:
/// (1.6 name, berth name, why). The fields must still match exactly; on the
/// wire a message's name is never sent (these are not carried in an `Any`).
const BERTH_RENAMES: &[(&str, &str, &str)] = &[
    (
        ".containerd.services.events.v1.Envelope",
        ".containerd.types.Envelope",
        "2.x moved the event envelope to containerd.types",
    ),
    (
        ".containerd.services.events.ttrpc.v1.Envelope",
        ".containerd.types.Envelope",
        "2.x moved the event envelope to containerd.types",
    ),
];

/// One field as the wire sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    number: i32,
    label: Label,
    ty: Type,
    type_name: String,
    oneof: Option<String>,
}

/// One rpc as the wire sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rpc {
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// The wire surface of one descriptor set, keyed by fully qualified name.
#[derive(Default)]
struct Surface {
    /// Message -> (syntax of its file, fields by number).
    messages: BTreeMap<String, (String, BTreeMap<i32, Field>)>,
    /// Enum -> value name -> number.
    enums: BTreeMap<String, BTreeMap<String, i32>>,
    /// Service -> method name -> rpc.
    services: BTreeMap<String, BTreeMap<String, Rpc>>,
}

impl Surface {
    /// Applies [`BERTH_RENAMES`] to an upstream surface: the renamed
    /// messages and every reference to them.
    fn renamed(mut self) -> Self {
        let rename = |name: &mut String| {
            if let Some((_, to, _)) = BERTH_RENAMES.iter().find(|(from, _, _)| name == from) {
                *name = (*to).to_string();
            }
        };
        for (from, to, _) in BERTH_RENAMES {
            if let Some(m) = self.messages.remove(*from) {
                self.messages.insert((*to).to_string(), m);
            }
        }
        for (_, fields) in self.messages.values_mut() {
            for f in fields.values_mut() {
                rename(&mut f.type_name);
            }
        }
        for methods in self.services.values_mut() {
            for rpc in methods.values_mut() {
                rename(&mut rpc.input);
                rename(&mut rpc.output);
            }
        }
        self
    }

    fn from_set(set: &FileDescriptorSet) -> Self {
        let mut s = Surface::default();
        for f in &set.file {
            if IGNORED_PACKAGES.contains(&f.package()) {
                continue;
            }
            let syntax = if f.syntax().is_empty() {
                "proto2".to_string()
            } else {
                f.syntax().to_string()
            };
            let prefix = format!(".{}", f.package());
            for m in &f.message_type {
                s.add_message(&prefix, &syntax, m);
            }
            for e in &f.enum_type {
                s.add_enum(&prefix, e);
            }
            for svc in &f.service {
                let methods = svc
                    .method
                    .iter()
                    .map(|m| {
                        (
                            m.name().to_string(),
                            Rpc {
                                input: m.input_type().to_string(),
                                output: m.output_type().to_string(),
                                client_streaming: m.client_streaming(),
                                server_streaming: m.server_streaming(),
                            },
                        )
                    })
                    .collect();
                s.services
                    .insert(format!("{prefix}.{}", svc.name()), methods);
            }
        }
        s
    }

    fn add_message(&mut self, prefix: &str, syntax: &str, m: &DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        // Map entries are messages too; their fields (key 1, value 2) are
        // compared like any other.
        let fields = m
            .field
            .iter()
            .map(|f| {
                (
                    f.number(),
                    Field {
                        name: f.name().to_string(),
                        number: f.number(),
                        label: f.label(),
                        ty: f.r#type(),
                        type_name: f.type_name().to_string(),
                        oneof: f
                            .oneof_index
                            .and_then(|i| m.oneof_decl.get(usize::try_from(i).ok()?))
                            .map(|o| o.name().to_string()),
                    },
                )
            })
            .collect();
        self.messages
            .insert(name.clone(), (syntax.to_string(), fields));
        for nested in &m.nested_type {
            self.add_message(&name, syntax, nested);
        }
        for e in &m.enum_type {
            self.add_enum(&name, e);
        }
    }

    fn add_enum(&mut self, prefix: &str, e: &EnumDescriptorProto) {
        let values = e
            .value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        self.enums.insert(format!("{prefix}.{}", e.name()), values);
    }
}

fn protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (install the packages with `cargo xtask deps`)",
                dir.display()
            )
        })
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            protos(&p, out);
        } else if p.extension().is_some_and(|e| e == "proto") {
            out.push(p);
        }
    }
}

/// Compiles `files` (relative to the first include) with Debian's protoc.
fn compile(includes: &[PathBuf], files: &[PathBuf]) -> FileDescriptorSet {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("upstream.bin");
    let mut cmd = Command::new("protoc");
    for i in includes {
        cmd.arg(format!("-I{}", i.display()));
    }
    let rel: Vec<&Path> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&includes[0])
                .expect("under the first include")
        })
        .collect();
    cmd.arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(&rel)
        .current_dir(&includes[0]);
    let result = cmd
        .output()
        .expect("running protoc (install protobuf-compiler: `cargo xtask deps`)");
    assert!(
        result.status.success(),
        "protoc failed on containerd's protos: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(&out).expect("read upstream descriptor set");
    FileDescriptorSet::decode(bytes.as_slice()).expect("upstream descriptor set decodes")
}

/// Compiles containerd 1.6's protos as Debian ships them.
fn upstream() -> FileDescriptorSet {
    let gocode = Path::new(GOCODE);
    let mut files = Vec::new();
    for d in UPSTREAM_DIRS {
        protos(&gocode.join(d), &mut files);
    }
    let includes = [
        gocode.to_path_buf(),
        // gogoproto/gogo.proto
        gocode.join("github.com/gogo/protobuf"),
        // google/rpc/status.proto
        gocode.join("github.com/gogo/googleapis"),
        // google/protobuf/*.proto
        PathBuf::from("/usr/include"),
    ];
    compile(&includes, &files)
}

fn berth() -> FileDescriptorSet {
    FileDescriptorSet::decode(berth_api::FILE_DESCRIPTOR_SET).expect("berth descriptor set decodes")
}

/// Every difference between containerd 1.6's surface and berth's.
fn divergences(up: &Surface, ours: &Surface, extras: &[(&str, &str)]) -> Vec<String> {
    let extra = |key: &str| extras.iter().any(|(k, _)| *k == key);
    let mut out = Vec::new();
    for (name, (syntax, fields)) in &up.messages {
        let Some((our_syntax, our_fields)) = ours.messages.get(name) else {
            out.push(format!("message {name} missing in berth"));
            continue;
        };
        if syntax != our_syntax {
            out.push(format!(
                "message {name}: syntax {our_syntax}, containerd {syntax}"
            ));
        }
        for (n, f) in fields {
            match our_fields.get(n) {
                None => out.push(format!("field {name}.{} (#{n}) missing in berth", f.name)),
                Some(g) if g != f => {
                    out.push(format!("field {name} #{n}: berth {g:?}, containerd {f:?}"));
                }
                Some(_) => {}
            }
        }
        for (n, g) in our_fields {
            let key = format!("{name}.{}", g.name);
            if !fields.contains_key(n) && !extra(&key) {
                out.push(format!("field {key} (#{n}) only in berth, not documented"));
            }
        }
    }
    for (name, values) in &up.enums {
        let Some(our_values) = ours.enums.get(name) else {
            out.push(format!("enum {name} missing in berth"));
            continue;
        };
        for (v, n) in values {
            match our_values.get(v) {
                None => out.push(format!("enum value {name}.{v} = {n} missing in berth")),
                Some(m) if m != n => {
                    out.push(format!("enum value {name}.{v}: berth {m}, containerd {n}"));
                }
                Some(_) => {}
            }
        }
        for (v, n) in our_values {
            let key = format!("{name}.{v}");
            if !values.contains_key(v) && !extra(&key) {
                out.push(format!(
                    "enum value {key} = {n} only in berth, not documented"
                ));
            }
        }
    }
    for (name, methods) in &up.services {
        let Some(our_methods) = ours.services.get(name) else {
            out.push(format!("service {name} missing in berth"));
            continue;
        };
        for (m, rpc) in methods {
            match our_methods.get(m) {
                None => out.push(format!("rpc {name}/{m} missing in berth")),
                Some(r) if r != rpc => {
                    out.push(format!("rpc {name}/{m}: berth {r:?}, containerd {rpc:?}"));
                }
                Some(_) => {}
            }
        }
        for m in our_methods.keys() {
            let key = format!("{name}.{m}");
            if !methods.contains_key(m) && !extra(&key) {
                out.push(format!("rpc {key} only in berth, not documented"));
            }
        }
    }
    out
}

#[test]
fn berth_matches_containerd_1_6_protos() {
    let up = Surface::from_set(&upstream()).renamed();
    let ours = Surface::from_set(&berth());
    // Guard against comparing nothing (a wrong path or an empty compile).
    for must in [
        ".containerd.services.tasks.v1.Tasks",
        ".containerd.services.content.v1.Content",
        ".containerd.task.v2.Task",
    ] {
        assert!(up.services.contains_key(must), "upstream lacks {must}");
    }
    for must in [
        ".containerd.runc.v1.Options",
        ".containerd.linux.runc.RuncOptions",
        ".io.containerd.cgroups.v1.Metrics",
        ".io.containerd.cgroups.v2.Metrics",
        ".containerd.events.TaskExit",
    ] {
        assert!(up.messages.contains_key(must), "upstream lacks {must}");
    }
    let diffs = divergences(&up, &ours, BERTH_EXTRAS);
    assert!(
        diffs.is_empty(),
        "{} divergences from containerd 1.6's protos:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn documented_extras_exist_in_berth() {
    let ours = Surface::from_set(&berth());
    for (key, why) in BERTH_EXTRAS {
        assert!(!why.is_empty(), "{key}: give the reason");
        let found = ours
            .messages
            .iter()
            .any(|(m, (_, fields))| fields.values().any(|f| format!("{m}.{}", f.name) == *key))
            || ours
                .enums
                .iter()
                .any(|(e, vs)| vs.keys().any(|v| format!("{e}.{v}") == *key))
            || ours
                .services
                .iter()
                .any(|(s, ms)| ms.keys().any(|m| format!("{s}.{m}") == *key));
        assert!(found, "BERTH_EXTRAS lists {key}, which berth does not have");
    }
}

/// The comparison itself must see a changed field (a check that cannot fail
/// is no check).
#[test]
fn a_changed_field_is_reported() {
    let set = upstream();
    let up = Surface::from_set(&set);
    let mut changed = Surface::from_set(&set);
    let (_, fields) = changed
        .messages
        .get_mut(".containerd.types.Mount")
        .expect("Mount");
    fields.get_mut(&1).expect("Mount.type").number = 9;
    let diffs = divergences(&up, &changed, &[]);
    assert!(
        diffs
            .iter()
            .any(|d| d.contains(".containerd.types.Mount #1")),
        "{diffs:?}"
    );
}

/// berth's containerd 2.x additions against newer upstream protos:
/// `BERTH_UPSTREAM_2` lists, `:`-separated, protobuf roots to compile each on
/// its own (containerd 2.x's `api/` directory, containerd/cgroups v3's
/// checkout). Every message, enum and service berth shares with them must
/// match exactly, and every one berth has must exist in 1.6 or there. Not
/// run by default: Debian ships no containerd 2.x protos.
#[test]
#[ignore = "needs BERTH_UPSTREAM_2=<containerd 2.x api/>:<containerd/cgroups v3 checkout>"]
fn berth_matches_containerd_2_protos() {
    let roots = std::env::var("BERTH_UPSTREAM_2").expect("set BERTH_UPSTREAM_2");
    let mut up2 = Surface::default();
    for root in roots.split(':').map(PathBuf::from) {
        let mut files = Vec::new();
        protos(&root, &mut files);
        let includes = [
            root.clone(),
            PathBuf::from(GOCODE).join("github.com/gogo/googleapis"),
            PathBuf::from("/usr/include"),
        ];
        let s = Surface::from_set(&compile(&includes, &files));
        up2.messages.extend(s.messages);
        up2.enums.extend(s.enums);
        up2.services.extend(s.services);
    }
    let up1 = Surface::from_set(&upstream());
    let ours = Surface::from_set(&berth());
    let mut diffs = Vec::new();
    for name in ours.messages.keys() {
        if !up1.messages.contains_key(name) && !up2.messages.contains_key(name) {
            diffs.push(format!(
                "message {name} is in neither containerd 1.6 nor 2.x"
            ));
        }
    }
    for name in ours.services.keys() {
        if !up1.services.contains_key(name) && !up2.services.contains_key(name) {
            diffs.push(format!(
                "service {name} is in neither containerd 1.6 nor 2.x"
            ));
        }
    }
    // Only what berth implements is compared (2.x has services berth lacks).
    up2.messages.retain(|k, _| ours.messages.contains_key(k));
    up2.enums.retain(|k, _| ours.enums.contains_key(k));
    up2.services.retain(|k, _| ours.services.contains_key(k));
    // 1.6 fields 2.x dropped: berth keeps them so 1.6 clients' values decode.
    let kept = [(
        ".containerd.runc.v1.Options.criu_path",
        "1.6 field; 2.x reserves 8",
    )];
    diffs.extend(divergences(&up2, &ours, &kept));
    assert!(
        diffs.is_empty(),
        "{} divergences from containerd 2.x's protos:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
