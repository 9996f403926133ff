//! gRPC and ttrpc services: thin adapters from containerd's wire API to the
//! berth library crates. Each service maps its crate's errors to status
//! codes in one function.

pub(crate) mod containers;
pub(crate) mod content;
pub(crate) mod diff;
pub(crate) mod early;
pub mod events;
pub(crate) mod images;
pub(crate) mod introspection;
pub(crate) mod leases;
pub mod legacy_options;
pub(crate) mod namespaces;
pub(crate) mod snapshots;
pub(crate) mod tasks;
pub(crate) mod version;

use tonic::{Request, Status};

/// The namespace a call names in its `containerd-namespace` header.
pub(crate) fn namespace_of<T>(request: &Request<T>) -> Result<String, Status> {
    let value = request
        .metadata()
        .get(berth_api::NAMESPACE_HEADER)
        .ok_or_else(|| {
            Status::failed_precondition(
                "namespace is required: set the containerd-namespace header (ctr -n NAME)",
            )
        })?;
    let ns = value
        .to_str()
        .map_err(|_| Status::invalid_argument("containerd-namespace header is not valid text"))?;
    berth_metadata::identifiers::validate(ns)
        .map_err(|e| Status::invalid_argument(format!("namespace {ns:?}: {e}")))?;
    Ok(ns.to_string())
}

/// Runs a one-record metadata read on the calling worker, mapping its error.
///
/// A read transaction over redb's cache takes a few microseconds; handing
/// it to the blocking pool (a thread wake-up and a context switch each
/// way) took longer than the read and dominated small calls such as
/// `Content.Info`. Scans and writes (fsync) still go through [`with_db`].
pub(crate) fn read_db<T>(
    db: &berth_metadata::Db,
    f: impl FnOnce(&berth_metadata::Db) -> berth_metadata::Result<T>,
) -> Result<T, Status> {
    f(db).map_err(crate::wire::status)
}

/// Runs blocking store, file or DB work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("background task failed: {e}")))?
}

/// Runs a blocking metadata call off the async workers, mapping its error.
pub(crate) async fn with_db<T: Send + 'static>(
    db: &berth_metadata::Db,
    f: impl FnOnce(&berth_metadata::Db) -> berth_metadata::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let db = db.clone();
    blocking(move || f(&db).map_err(crate::wire::status)).await
}
