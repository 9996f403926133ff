//! Generates the containerd-compatible bindings from `proto/` with one prost
//! configuration: message types are generated once, gRPC services get tonic
//! code and the shim-facing packages get ttrpc code.
//!
//! Every `.proto` under `proto/` is compiled: containerd's API under
//! `proto/containerd/` and the statistics messages of containerd/cgroups
//! under `proto/io/containerd/cgroups/{v1,v2}/` (packages
//! `io.containerd.cgroups.v1` and `.v2`, messages only), which a shim's
//! `Stats` answer carries in an `Any`; and the Kubernetes CRI under
//! `proto/runtime/v1/` (package `runtime.v1`) for the CRI plugin.

use std::path::{Path, PathBuf};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use prost_build::{Service, ServiceGenerator};

/// Packages whose services are spoken over ttrpc (shims), not gRPC.
const TTRPC_PACKAGES: &[&str] = &["containerd.task.v2", "containerd.services.events.ttrpc.v1"];

/// The cgroup statistics messages shims put in their `Stats` answers; they
/// must be compiled with the API (a missing one is a packaging mistake).
const CGROUP_PROTOS: &[&str] = &[
    "io/containerd/cgroups/v1/metrics.proto",
    "io/containerd/cgroups/v2/metrics.proto",
];

/// Wraps tonic's generator: skips the ttrpc-only packages and gates the
/// output behind the `grpc` feature so a build without tonic never names it.
/// Also notes every gRPC method and its streaming kind (see `methods.rs`).
struct GrpcGenerator(Box<dyn ServiceGenerator>, Rc<RefCell<String>>);

impl ServiceGenerator for GrpcGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        if TTRPC_PACKAGES.contains(&service.package.as_str()) {
            return;
        }
        for m in &service.methods {
            let kind = match (m.client_streaming, m.server_streaming) {
                (false, false) => "unary",
                (true, false) => "client_stream",
                (false, true) => "server_stream",
                (true, true) => "bidi_stream",
            };
            self.1.borrow_mut().push_str(&format!(
                "    (\"{}.{}/{}\", \"{kind}\"),\n",
                service.package, service.proto_name, m.proto_name
            ));
        }
        let mut out = String::new();
        self.0.generate(service, &mut out);
        buf.push_str(&gate_top_level_items(&out, "grpc"));
    }

    // tonic emits the client and server modules here, not in `generate`.
    fn finalize(&mut self, buf: &mut String) {
        let mut out = String::new();
        self.0.finalize(&mut out);
        buf.push_str(&gate_top_level_items(&out, "grpc"));
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        let mut out = String::new();
        self.0.finalize_package(package, &mut out);
        buf.push_str(&gate_top_level_items(&out, "grpc"));
    }
}

/// Puts `#[cfg(feature = ...)]` in front of every top-level `pub mod` / `pub use`
/// the service generators emitted, so a crate built without that transport
/// never references it.
fn gate_top_level_items(code: &str, feature: &str) -> String {
    let attr = format!("#[cfg(feature = \"{feature}\")]\n");
    let mut out = String::with_capacity(code.len() + 256);
    let mut depth: i64 = 0;
    let mut i = 0;
    let bytes = code.as_bytes();
    while i < bytes.len() {
        let rest = &code[i..];
        if depth == 0 && (rest.starts_with("pub mod ") || rest.starts_with("pub use ")) {
            out.push_str(&attr);
        }
        let c = bytes[i];
        if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
        } else if c == b'"' {
            // Skip string literals so braces inside them are not counted.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                if bytes[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            out.push_str(&code[i..(j + 1).min(code.len())]);
            i = j + 1;
            continue;
        }
        // Copy one UTF-8 character.
        let len = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..len]);
        i += len;
    }
    out
}

fn protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // The protos live inside the crate so a packaged berth-api builds alone.
    let root = manifest.join("proto");
    assert!(
        root.join("containerd").is_dir(),
        "{} has no containerd/ directory: the crate's protos are missing",
        root.display()
    );
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    protos(&root, &mut files);
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    for p in CGROUP_PROTOS {
        assert!(
            files.contains(&root.join(p)),
            "{} missing under {}",
            p,
            root.display()
        );
    }

    let grpc_dir = out_dir.join("grpc");
    let ttrpc_dir = out_dir.join("ttrpc");
    for d in [&grpc_dir, &ttrpc_dir] {
        // Start empty so files of removed protos never linger.
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    }
    let includes = [root.clone(), PathBuf::from("/usr/include")];

    // Pass 1: messages for every package (one set of types) and tonic
    // services; also the descriptor set of the whole API.
    let tonic = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .service_generator();
    let methods = Rc::new(RefCell::new(String::new()));
    let mut config = prost_build::Config::new();
    config
        .out_dir(&grpc_dir)
        .service_generator(Box::new(GrpcGenerator(tonic, methods.clone())))
        .enable_type_names()
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        .protoc_arg("--experimental_allow_proto3_optional");
    config
        .compile_protos(&files, &includes)
        .unwrap_or_else(|e| panic!("compiling protos: {e}"));
    write_fresh(
        &out_dir.join("methods.rs"),
        &format!("&[\n{}]\n", methods.borrow()),
    );

    // Pass 2: the ttrpc packages with their ttrpc bindings. Only those
    // packages' files are used; the types they import resolve through
    // `super::` paths to the pass-1 modules.
    let ttrpc_inputs: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            TTRPC_PACKAGES
                .iter()
                .any(|p| text.contains(&format!("package {p};")))
        })
        .collect();
    if !ttrpc_inputs.is_empty() {
        ttrpc_codegen_prost::Codegen::new()
            .out_dir(&ttrpc_dir)
            .inputs(ttrpc_inputs)
            .includes(&includes)
            .prost()
            .customize(ttrpc_codegen_prost::Customize {
                async_all: true,
                ..Default::default()
            })
            .run()
            .unwrap_or_else(|e| panic!("generating ttrpc bindings: {e}"));
        for pkg in TTRPC_PACKAGES {
            add_ttrpc_codec(&ttrpc_dir.join(format!("{pkg}.rs")));
        }
    }

    // The module tree: one nested module per protobuf package.
    let mut packages: BTreeMap<String, Source> = BTreeMap::new();
    for entry in std::fs::read_dir(&grpc_dir).expect("read grpc out dir") {
        let path = entry.expect("dir entry").path();
        let Some(pkg) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && !TTRPC_PACKAGES.contains(&pkg) {
            packages.insert(pkg.to_string(), Source::File(path.clone(), None));
        }
    }
    for pkg in TTRPC_PACKAGES {
        let file = ttrpc_dir.join(format!("{pkg}.rs"));
        if !file.exists() {
            continue;
        }
        packages.insert((*pkg).to_string(), Source::File(file, Some("ttrpc")));
    }
    // The ttrpc generator names well-known types as `google.protobuf.*`
    // messages; point those names at prost-types (Empty is `()` in prost).
    packages.insert(
        "google.protobuf".to_string(),
        Source::Inline(
            "pub use ::prost_types::*;\n/// `google.protobuf.Empty`.\npub type Empty = ();\n"
                .to_string(),
        ),
    );
    write_fresh(&out_dir.join("containerd.rs"), &module_tree(&packages));
}

/// Implements ttrpc's `Codec` for every top-level message of a ttrpc
/// package file. ttrpc 0.10 (its newest release) implements `Codec` only
/// for messages of its own prost (0.13); the API's messages derive the
/// workspace's prost, so each request and reply type gets an impl that
/// encodes with it. The bytes are the same protobuf encoding.
fn add_ttrpc_codec(path: &Path) {
    let Ok(code) = std::fs::read_to_string(path) else {
        return;
    };
    let mut impls = String::new();
    let mut depth: i64 = 0;
    for line in code.lines() {
        let trimmed = line.trim_start();
        if depth == 0
            && let Some(rest) = trimmed.strip_prefix("pub struct ")
        {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            impls.push_str(&format!(
                    "impl ::ttrpc::proto::Codec for {name} {{\n\
                     type E = ::std::io::Error;\n\
                     fn size(&self) -> u32 {{ u32::try_from(::prost::Message::encoded_len(self)).unwrap_or(u32::MAX) }}\n\
                     fn encode(&self) -> ::std::result::Result<::std::vec::Vec<u8>, Self::E> {{ Ok(::prost::Message::encode_to_vec(self)) }}\n\
                     fn decode(buf: impl AsRef<[u8]>) -> ::std::result::Result<Self, Self::E> {{ <Self as ::prost::Message>::decode(buf.as_ref()).map_err(::std::io::Error::other) }}\n\
                     fn merge(&mut self, buf: impl AsRef<[u8]>) -> ::std::result::Result<(), Self::E> {{ ::prost::Message::merge(self, buf.as_ref()).map_err(::std::io::Error::other) }}\n\
                     }}\n"
                ));
        }
        // Generated code keeps braces out of string literals on these
        // lines except in doc comments, which are skipped.
        if trimmed.starts_with("//") {
            continue;
        }
        depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
    }
    write_fresh(path, &format!("{code}\n{impls}"));
}

/// Writes `path` as a new file: an output directory seeded with hard links
/// (shared target dirs) must never have another build's file written
/// through, so the old link is removed rather than truncated.
fn write_fresh(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Where a package module's body comes from.
enum Source {
    /// A generated file, optionally gated by a crate feature.
    File(PathBuf, Option<&'static str>),
    /// Literal Rust code.
    Inline(String),
}

/// Renders nested `pub mod` blocks that `include!` each package's file.
fn module_tree(packages: &BTreeMap<String, Source>) -> String {
    #[derive(Default)]
    struct Node<'a> {
        children: BTreeMap<String, Node<'a>>,
        source: Option<&'a Source>,
    }
    fn render(node: &Node<'_>, out: &mut String) {
        match node.source {
            Some(Source::File(file, _)) => {
                out.push_str(&format!("include!({:?});\n", file.display().to_string()));
            }
            Some(Source::Inline(code)) => out.push_str(code),
            None => {}
        }
        for (name, child) in &node.children {
            // A package gated by a feature takes its whole subtree with it.
            if let Some(Source::File(_, Some(feature))) = child.source {
                out.push_str(&format!("#[cfg(feature = {feature:?})]\n"));
            }
            out.push_str(&format!(
                "/// Package segment `{name}`.\npub mod {name} {{\n"
            ));
            render(child, out);
            out.push_str("}\n");
        }
    }
    let mut root = Node::default();
    for (pkg, source) in packages {
        let mut node = &mut root;
        for seg in pkg.split('.') {
            node = node.children.entry(seg.to_string()).or_default();
        }
        node.source = Some(source);
    }
    let mut out = String::new();
    render(&root, &mut out);
    out
}
