//! Wire helpers shared by the gRPC services: packing and unpacking
//! `google.protobuf.Any`, timestamp conversion, and library errors as the
//! `tonic::Status` containerd would send ([`status`]: every library error
//! implements `ErrorCategory`, and `berth_api::errdefs` maps categories to
//! codes in one place; events and the shim manager only add words).
//!
//! This module depends on no other module of the crate, so every module
//! can use it without an import cycle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::errdefs::{ErrorCategory, RpcError};
use berth_metadata::AnyValue;
use berth_runtime::manager;
use prost::{Message, Name};
use tonic::Status;

/// Packs a message as containerd does: the type URL is the bare protobuf
/// message name (containerd's typeurl), not `type.googleapis.com/...`.
pub(crate) fn pack<M: Message + Name>(event: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: event.encode_to_vec(),
    }
}

/// Decodes an `Any` payload as `M`; a payload that does not decode is an
/// invalid argument naming `what`.
pub(crate) fn unpack<M: Message + Default>(
    any: &prost_types::Any,
    what: &str,
) -> Result<M, Status> {
    M::decode(any.value.as_slice()).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

/// A wire `Any` as the metadata store keeps it.
pub(crate) fn any_to_record(a: prost_types::Any) -> AnyValue {
    AnyValue {
        type_url: a.type_url,
        value: a.value,
    }
}

/// A stored `Any` in its wire form.
pub(crate) fn any_from_record(a: AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

/// Converts a wire timestamp to `SystemTime`, rejecting impossible values.
pub(crate) fn from_timestamp(ts: Option<prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    })
    .unwrap_or_else(SystemTime::now)
}

/// Converts `SystemTime` to a wire timestamp.
pub(crate) fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// The status containerd would send for a library error: its category's
/// code (mapped once, in `berth_api::errdefs`) and its whole text, which
/// names the category the way containerd's wrapped errors do
/// (`namespace "x": not found`).
pub(crate) fn status<E: ErrorCategory>(e: E) -> Status {
    berth_api::errdefs::status(&e)
}

/// Maps an event-exchange error to a status.
///
/// A lagging subscriber's stream ends with `ResourceExhausted` naming the
/// lag, prefixed as containerd words errors that end a subscription; clients
/// (Docker, the Go client's users) resubscribe on any code but `Canceled`.
pub(crate) fn events_status(e: berth_events::Error) -> Status {
    match e {
        berth_events::Error::Lagged { .. } => {
            RpcError::new(e.category(), format!("subscription error: {e}")).into()
        }
        _ => status(e),
    }
}

/// Maps a shim-manager error (a shim's own answer included: its category
/// and words) to a status; a missing task's message says how to start one.
pub(crate) fn manager_status(e: manager::Error) -> Status {
    match e {
        manager::Error::NotFound(_) => {
            RpcError::new(e.category(), format!("{e} (start it with `tasks start`)")).into()
        }
        _ => status(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_keep_their_category_on_the_wire() {
        let s = status(berth_metadata::Error::NotFound("namespace \"x\"".into()));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "namespace \"x\": not found");
        let full = berth_content::Error::Io {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert_eq!(status(full).code(), tonic::Code::ResourceExhausted);
        let s = manager_status(manager::Error::NotFound("t".into()));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(
            s.message(),
            "task \"t\": not found (start it with `tasks start`)"
        );
        let s = events_status(berth_events::Error::Lagged {
            needed: 2,
            budget: 1,
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().starts_with("subscription error: "),
            "{}",
            s.message()
        );
    }

    /// A pull whose image has no manifest for the wanted platform, or whose
    /// registry does not have the reference, fails NotFound end to end
    /// (library error -> transfer error -> status), as containerd's does.
    #[test]
    fn a_pull_s_not_found_is_not_found() {
        let no_platform: berth_transfer::Error = berth_images::Error::NoMatchingManifest {
            platform: "linux/s390x".into(),
            index: berth_content::Digest::of(b"index"),
            available: vec!["linux/amd64".into()],
        }
        .into();
        let s = status(no_platform);
        assert_eq!(s.code(), tonic::Code::NotFound, "{}", s.message());
        let missing: berth_transfer::Error = berth_remotes::Error::NotFound {
            what: "docker.io/library/nope:latest".into(),
            errors: Default::default(),
        }
        .into();
        assert_eq!(status(missing).code(), tonic::Code::NotFound);
        let blob: berth_transfer::Error =
            berth_content::Error::NotFound("content sha256:1".into()).into();
        assert_eq!(status(blob).code(), tonic::Code::NotFound);
    }
}
