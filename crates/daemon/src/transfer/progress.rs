//! Progress of a transfer, sent to the client's progress stream as
//! containerd's `types.transfer.Progress` messages.

use berth_api::containerd::types::Descriptor as ApiDescriptor;
use berth_api::containerd::types::transfer::Progress as ProgressMsg;
use tokio::sync::mpsc;
use tonic::Status;

/// Sends progress events; a no-op without a stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    tx: Option<mpsc::Sender<Result<prost_types::Any, Status>>>,
}

impl Progress {
    /// Progress going to `tx`.
    pub(crate) fn to(tx: mpsc::Sender<Result<prost_types::Any, Status>>) -> Progress {
        Progress { tx: Some(tx) }
    }

    /// Reports `event` (`resolving`, `downloading`, `complete`, `unpacking`,
    /// `saved`, ...) about `name`; `progress`/`total` in bytes.
    pub(crate) fn event(
        &self,
        event: &str,
        name: &str,
        progress: u64,
        total: u64,
        desc: Option<ApiDescriptor>,
    ) {
        let Some(tx) = &self.tx else { return };
        let msg = ProgressMsg {
            event: event.to_string(),
            name: name.to_string(),
            parents: Vec::new(),
            progress: i64::try_from(progress).unwrap_or(i64::MAX),
            total: i64::try_from(total).unwrap_or(i64::MAX),
            desc,
        };
        // A slow client loses intermediate updates, never blocks the pull.
        let _ = tx.try_send(Ok(crate::services::namespaces::pack(&msg)));
    }
}
