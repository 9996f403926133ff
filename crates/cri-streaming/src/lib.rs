//! The Kubernetes CRI streaming server: where `Exec`, `Attach` and
//! `PortForward` really happen.
//!
//! CRI's streaming calls do not stream over gRPC. The runtime answers them
//! with a URL on a small HTTP server of its own (containerd's
//! `stream_server_address`/`stream_server_port`), and the client (kubelet,
//! crictl) connects there and speaks Kubernetes' streaming protocols:
//!
//! - remote command (exec, attach) over **SPDY/3.1** with
//!   `X-Stream-Protocol-Version` `v5`/`v4`/`v3`/`v2.channel.k8s.io` or
//!   `channel.k8s.io`: one SPDY stream per `streamType` (`error`, `stdin`,
//!   `stdout`, `stderr`, `resize`);
//! - remote command over **WebSocket** with subprotocol `v5.channel.k8s.io`,
//!   `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io` or
//!   `base64.channel.k8s.io`: one channel byte per message (0 stdin,
//!   1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255, close);
//! - port forwarding over SPDY (`portforward.k8s.io`, a `data` and an
//!   `error` stream per connection tied by `requestID`), over WebSocket
//!   channels (`v4.channel.k8s.io`, ports in the URL), and as SPDY
//!   tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, what client-go's
//!   WebSocket port-forward dialer and `crictl port-forward -r websocket`
//!   send).
//!
//! The outcome of an exec reaches the client on the error stream as a
//! `metav1.Status` (v4+): `Success`, or `Failure` with reason
//! `NonZeroExitCode` and the exit code in `details.causes[0].message`,
//! which clients turn into their own exit code.
//!
//! The CRI plugin creates a [`Server`] with a [`StreamingRuntime`] (its
//! own code that runs processes in containers and dials ports in pods),
//! and answers each CRI call with [`Server::get_exec`],
//! [`Server::get_attach`] or [`Server::get_port_forward`]: the request is
//! kept under a random one-time token for a minute, as kubelet's request
//! cache does.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use berth_cri_streaming::{Config, ExecRequest, Server, StreamingRuntime};
//!
//! # async fn demo(runtime: Arc<dyn StreamingRuntime>) -> Result<(), berth_cri_streaming::Error> {
//! let server = Server::bind(Config::new("127.0.0.1:0".parse().unwrap()), runtime).await?;
//! let url = server.get_exec(ExecRequest {
//!     container_id: "c1".into(),
//!     cmd: vec!["sh".into()],
//!     stdin: true,
//!     stdout: true,
//!     stderr: true,
//!     tty: false,
//! })?;
//! // Return `url` in CRI's ExecResponse.
//! # let _ = url; Ok(()) }
//! ```

mod cache;
mod error;
mod idle;
mod portforward;
mod remotecommand;
mod request;
mod runtime;
mod server;
mod spdy;
mod status;
mod ws;

pub use error::Error;
pub use request::{AttachRequest, ExecRequest, PortForwardRequest};
pub use runtime::{
    ClientGone, Input, Output, ProcessIo, RuntimeError, StreamingRuntime, TerminalSize,
};
pub use server::{Config, Server};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
