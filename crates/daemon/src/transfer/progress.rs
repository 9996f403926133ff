//! Progress of a transfer, sent to the client's progress stream as
//! containerd's `types.transfer.Progress` messages.

use berth_api::containerd::types::Descriptor as ApiDescriptor;
use berth_api::containerd::types::transfer::Progress as ProgressMsg;
use berth_images::manifest::Descriptor;
use tokio::sync::mpsc;
use tonic::Status;

/// Sends progress events; a no-op without a stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    tx: Option<mpsc::Sender<Result<prost_types::Any, Status>>>,
}

fn api_desc(d: &Descriptor) -> ApiDescriptor {
    ApiDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        annotations: Default::default(),
    }
}

fn send(
    tx: &mpsc::Sender<Result<prost_types::Any, Status>>,
    event: &str,
    name: &str,
    progress: u64,
    total: u64,
    desc: Option<&Descriptor>,
) {
    let msg = ProgressMsg {
        event: event.to_string(),
        name: name.to_string(),
        parents: Vec::new(),
        progress: i64::try_from(progress).unwrap_or(i64::MAX),
        total: i64::try_from(total).unwrap_or(i64::MAX),
        desc: desc.map(api_desc),
    };
    // A slow client loses intermediate updates, never blocks the transfer.
    let _ = tx.try_send(Ok(crate::wire::pack(&msg)));
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
        desc: Option<&Descriptor>,
    ) {
        if let Some(tx) = &self.tx {
            send(tx, event, name, progress, total, desc);
        }
    }

    /// The same stream as berth-transfer's progress callback.
    pub(crate) fn library(&self) -> berth_transfer::Progress {
        match self.tx.clone() {
            None => berth_transfer::Progress::none(),
            Some(tx) => berth_transfer::Progress::to(move |e| {
                send(&tx, &e.event, &e.name, e.progress, e.total, e.desc.as_ref());
            }),
        }
    }
}
