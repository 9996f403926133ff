//! containerd-compatible wire types for berth.
//!
//! Everything berth says on the wire is generated here from the project's own
//! `.proto` files under `proto/`, which carry containerd's packages, services,
//! method names and field numbers so that any containerd client (Debian's
//! `ctr`, nerdctl, the Go client) talks to `berthd` unchanged.
//!
//! - [`containerd`]: the generated modules, nested exactly like the protobuf
//!   packages (`containerd::services::namespaces::v1`, `containerd::types`,
//!   `containerd::task::v2`, ...). gRPC services have tonic clients and
//!   servers (feature `grpc`); the shim task API and event forwarding have
//!   ttrpc bindings (feature `ttrpc`).
//! - [`errdefs`]: containerd's error categories (`berth-types`') mapped to gRPC
//!   and ttrpc codes, in this one place; [`errdefs::status`] answers for any
//!   error that implements [`ErrorCategory`].
//! - [`client`]: a small typed gRPC client over a UNIX socket with the
//!   namespace carried in the `containerd-namespace` header.
//! - [`cgroups`]: containerd/cgroups' statistics messages
//!   (`io.containerd.cgroups.v1.Metrics` and `io.containerd.cgroups.v2.Metrics`),
//!   the payload of a shim's `Stats` answer and of `tasks metrics`.
//! - [`runtime`]: the Kubernetes CRI (`runtime.v1` RuntimeService and
//!   ImageService, k8s.io/cri-api v0.32) served by berthd's CRI plugin.
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptor set of the whole API.

pub mod errdefs;

#[cfg(feature = "grpc")]
pub mod client;

/// Generated protobuf modules (messages, tonic and ttrpc services).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/containerd.rs"));
}

pub use errdefs::{Category, CategoryCode, ErrorCategory};
pub use proto::containerd;
pub use proto::io::containerd::cgroups;
pub use proto::runtime;

/// Type URL of cgroup v1 statistics in a `Stats` answer's `Any`.
pub const CGROUPS_V1_METRICS_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// Type URL of cgroup v2 statistics in a `Stats` answer's `Any`.
pub const CGROUPS_V2_METRICS_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The encoded `FileDescriptorSet` of every berth `.proto` file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Every gRPC method of the API (`package.Service/Method`) with its kind:
/// `unary`, `client_stream`, `server_stream` or `bidi_stream`. Made at
/// build time, so servers need not decode [`FILE_DESCRIPTOR_SET`].
pub const GRPC_METHODS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/methods.rs"));

/// gRPC metadata key carrying the namespace of a call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC metadata key carrying the lease a call's new objects belong to.
pub const LEASE_HEADER: &str = "containerd-lease";
/// ttrpc metadata key carrying the namespace of a call.
pub const TTRPC_NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
