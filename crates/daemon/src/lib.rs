//! The berth daemon: plugin registry, `config.toml` and the gRPC services.
//!
//! `berthd` is a thin binary over [`run`]: it reads a [`Config`], builds the
//! plugins the config enables in dependency order ([`plugins`]), serves every
//! gRPC service plugin on a UNIX socket (wire-compatible with containerd's
//! v1 API) and the ttrpc services (event forwarding from shims) on
//! `<address>.ttrpc`, until SIGINT or SIGTERM. With `[metrics] address`
//! and `[debug] address` set it also serves Prometheus metrics and a JSON
//! state dump over HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_daemon::Error> {
//! let mut config = berth_daemon::Config {
//!     root: "/tmp/berth/root".into(),
//!     state: "/tmp/berth/state".into(),
//!     ..Default::default()
//! };
//! config.grpc.address = "/tmp/berth/state/berthd.sock".into();
//! berth_daemon::run(config).await
//! # }
//! ```

// tonic's service traits return `Result<_, tonic::Status>`; helpers that
// feed them use the same error type rather than boxing it.
#![allow(clippy::result_large_err)]

pub(crate) mod authority;
pub mod build_info;
pub mod config;
pub mod config_defaults;
pub mod config_migrate;
pub mod cri;
mod error;
pub(crate) mod gc;
pub mod heap;
pub(crate) mod http;
pub(crate) mod lock;
pub mod log_json;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod oci_hook;
pub mod otlp;
pub mod plugins;
pub(crate) mod private;
pub(crate) mod profile_proto;
pub(crate) mod restart;
mod server;
pub mod services;
pub(crate) mod size_errors;
pub mod snapshotters;
pub(crate) mod socket;
pub(crate) mod transfer;
mod wire;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{run, run_until, run_with};

/// The version berthd reports: the containerd API level it implements,
/// with berth's own version as build metadata.
pub const VERSION: &str = concat!("1.7.0+berth.", env!("CARGO_PKG_VERSION"));

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
