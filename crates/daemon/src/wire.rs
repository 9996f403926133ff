//! Wire helpers shared by the gRPC services: packing and unpacking
//! `google.protobuf.Any`, timestamp conversion, and the one mapping per
//! library error type to the `tonic::Status` containerd would send.
//!
//! This module depends on no other module of the crate, so every module
//! can use it without an import cycle; the one daemon-owned error type,
//! `snapshotters::Error`, is mapped beside its definition
//! (`snapshotters::snapshot_status`) on top of [`metadata_status`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::errdefs::RpcError;
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

/// Maps a metadata error to the status containerd would send.
pub(crate) fn metadata_status(e: berth_metadata::Error) -> Status {
    use berth_metadata::Error as E;
    // The message is the error's full text, which names the category the
    // way containerd's wrapped errors do (`namespace "x": not found`).
    let message = e.to_string();
    match e {
        E::NotFound(_) => Status::not_found(message),
        E::AlreadyExists(_) => Status::already_exists(message),
        E::InvalidArgument(_) => Status::invalid_argument(message),
        E::FailedPrecondition(_) | E::SchemaVersion { .. } => Status::failed_precondition(message),
        E::NotImplemented(_) => Status::unimplemented(message),
        E::DataLoss(_) => Status::data_loss(message),
        _ => Status::internal(message),
    }
}

/// Maps a content-store error to a status.
pub(crate) fn content_status(e: berth_content::Error) -> Status {
    use berth_content::Error as E;
    let message = e.to_string();
    match e {
        E::NotFound(_) => Status::not_found(message),
        E::AlreadyExists(_) => Status::already_exists(message),
        E::InvalidArgument(_) => Status::invalid_argument(message),
        E::FailedPrecondition(_) => Status::failed_precondition(message),
        E::Unavailable(_) => Status::unavailable(message),
        // A full disk (as for the metadata DB): "free space", not a bug.
        E::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            Status::resource_exhausted(message)
        }
        _ => Status::internal(message),
    }
}

/// Maps an event-exchange error to a status.
///
/// A lagging subscriber's stream ends with `ResourceExhausted` naming the
/// lag, prefixed as containerd words errors that end a subscription; clients
/// (Docker, the Go client's users) resubscribe on any code but `Canceled`.
pub(crate) fn events_status(e: berth_events::Error) -> Status {
    match e {
        berth_events::Error::Lagged { .. } => {
            Status::resource_exhausted(format!("subscription error: {e}"))
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// A library transfer error as a gRPC status: the one place categories
/// become codes.
pub(crate) fn transfer_status(e: berth_transfer::Error) -> Status {
    use berth_transfer::Category as C;
    use tonic::Code;
    let code = match e.category() {
        C::NotFound => Code::NotFound,
        C::InvalidArgument => Code::InvalidArgument,
        C::AlreadyExists => Code::AlreadyExists,
        C::FailedPrecondition => Code::FailedPrecondition,
        C::Unavailable => Code::Unavailable,
        C::DeadlineExceeded => Code::DeadlineExceeded,
        C::DataLoss => Code::DataLoss,
        C::Cancelled => Code::Cancelled,
        C::Aborted => Code::Aborted,
        C::Unauthenticated => Code::Unauthenticated,
        C::PermissionDenied => Code::PermissionDenied,
        C::ResourceExhausted => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    Status::new(code, e.message())
}

/// A shim's ttrpc error as the status it carries.
pub(crate) fn shim_status(e: ttrpc::Error) -> Status {
    RpcError::from(e).into()
}

/// Maps a shim-manager error to a status.
pub(crate) fn manager_status(e: manager::Error) -> Status {
    match e {
        manager::Error::NotFound(id) => Status::not_found(format!(
            "task {id:?}: not found (start it with `tasks start`)"
        )),
        manager::Error::AlreadyExists(id) => {
            Status::already_exists(format!("task {id:?}: already exists"))
        }
        // containerd returns these as plain errors: code Unknown.
        manager::Error::NoShim { .. } | manager::Error::BadRuntime(_) => {
            Status::unknown(e.to_string())
        }
        other => Status::unavailable(other.to_string()),
    }
}
