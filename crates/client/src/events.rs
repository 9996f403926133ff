//! The daemon's events, decoded to typed payloads.

use std::time::SystemTime;

use berth_api::containerd::events as ev;
use berth_api::containerd::services::events::v1 as pb;
use berth_api::containerd::services::images::v1 as image_ev;
use prost::Message;

use crate::client::Client;
use crate::error::{Error, Result};

/// One event: where and when it happened, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When the daemon published it.
    pub timestamp: Option<SystemTime>,
    /// The namespace it happened in.
    pub namespace: String,
    /// Its topic (`/tasks/exit`).
    pub topic: String,
    /// The decoded payload ([`Payload::Unknown`] for a type this client
    /// does not know or bytes that do not decode as their type).
    pub payload: Payload,
    /// The payload as received (none if the envelope had none).
    pub any: Option<prost_types::Any>,
}

/// An event's payload, by type (containerd's `containerd.events.*`).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is the event of the same name
pub enum Payload {
    ContainerCreate(ev::ContainerCreate),
    ContainerUpdate(ev::ContainerUpdate),
    ContainerDelete(ev::ContainerDelete),
    ContentCreate(ev::ContentCreate),
    ContentDelete(ev::ContentDelete),
    ImageCreate(image_ev::ImageCreate),
    ImageUpdate(image_ev::ImageUpdate),
    ImageDelete(image_ev::ImageDelete),
    NamespaceCreate(ev::NamespaceCreate),
    NamespaceUpdate(ev::NamespaceUpdate),
    NamespaceDelete(ev::NamespaceDelete),
    SnapshotPrepare(ev::SnapshotPrepare),
    SnapshotCommit(ev::SnapshotCommit),
    SnapshotRemove(ev::SnapshotRemove),
    TaskCreate(ev::TaskCreate),
    TaskStart(ev::TaskStart),
    TaskDelete(ev::TaskDelete),
    TaskIo(ev::TaskIo),
    TaskExit(ev::TaskExit),
    TaskOom(ev::TaskOom),
    TaskExecAdded(ev::TaskExecAdded),
    TaskExecStarted(ev::TaskExecStarted),
    TaskPaused(ev::TaskPaused),
    TaskResumed(ev::TaskResumed),
    TaskCheckpointed(ev::TaskCheckpointed),
    /// A payload of a type this client does not know, as received.
    Unknown(prost_types::Any),
}

/// Decodes an event payload by its type URL (`containerd.events.TaskExit`,
/// `containerd.services.images.v1.ImageCreate`, with or without a
/// `types.googleapis.com/` style prefix).
pub fn decode(any: &prost_types::Any) -> Result<Payload> {
    fn d<M: Message + Default>(any: &prost_types::Any) -> Result<M> {
        M::decode(any.value.as_slice()).map_err(|e| Error::Decode {
            what: format!("event {}", any.type_url),
            reason: e.to_string(),
        })
    }
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    // Image events live in the Images service's package (as containerd's).
    let Some(short) = name
        .strip_prefix("containerd.events.")
        .or_else(|| name.strip_prefix("containerd.services.images.v1."))
    else {
        return Ok(Payload::Unknown(any.clone()));
    };
    Ok(match short {
        "ContainerCreate" => Payload::ContainerCreate(d(any)?),
        "ContainerUpdate" => Payload::ContainerUpdate(d(any)?),
        "ContainerDelete" => Payload::ContainerDelete(d(any)?),
        "ContentCreate" => Payload::ContentCreate(d(any)?),
        "ContentDelete" => Payload::ContentDelete(d(any)?),
        "ImageCreate" => Payload::ImageCreate(d(any)?),
        "ImageUpdate" => Payload::ImageUpdate(d(any)?),
        "ImageDelete" => Payload::ImageDelete(d(any)?),
        "NamespaceCreate" => Payload::NamespaceCreate(d(any)?),
        "NamespaceUpdate" => Payload::NamespaceUpdate(d(any)?),
        "NamespaceDelete" => Payload::NamespaceDelete(d(any)?),
        "SnapshotPrepare" => Payload::SnapshotPrepare(d(any)?),
        "SnapshotCommit" => Payload::SnapshotCommit(d(any)?),
        "SnapshotRemove" => Payload::SnapshotRemove(d(any)?),
        "TaskCreate" => Payload::TaskCreate(d(any)?),
        "TaskStart" => Payload::TaskStart(d(any)?),
        "TaskDelete" => Payload::TaskDelete(d(any)?),
        "TaskIO" => Payload::TaskIo(d(any)?),
        "TaskExit" => Payload::TaskExit(d(any)?),
        "TaskOOM" => Payload::TaskOom(d(any)?),
        "TaskExecAdded" => Payload::TaskExecAdded(d(any)?),
        "TaskExecStarted" => Payload::TaskExecStarted(d(any)?),
        "TaskPaused" => Payload::TaskPaused(d(any)?),
        "TaskResumed" => Payload::TaskResumed(d(any)?),
        "TaskCheckpointed" => Payload::TaskCheckpointed(d(any)?),
        _ => Payload::Unknown(any.clone()),
    })
}

/// A subscription to the daemon's events; see [`Client::events`].
#[derive(Debug)]
pub struct EventStream {
    rx: tokio::sync::mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// The next event; `None` when the daemon ends the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Ends the call: the daemon drops the subscription.
        self.task.abort();
    }
}

fn event(envelope: berth_api::containerd::types::Envelope) -> Event {
    let payload = match envelope.event.as_ref() {
        Some(any) => decode(any).unwrap_or_else(|e| {
            tracing::debug!("event on {}: {e}", envelope.topic);
            Payload::Unknown(any.clone())
        }),
        None => Payload::Unknown(prost_types::Any::default()),
    };
    Event {
        timestamp: envelope
            .timestamp
            .and_then(|t| SystemTime::try_from(t).ok()),
        namespace: envelope.namespace,
        topic: envelope.topic,
        payload,
        any: envelope.event,
    }
}

impl Client {
    /// Subscribes to the daemon's events matching `filters` (containerd
    /// filter syntax on `topic` and `namespace`, OR'd; none for all, of
    /// every namespace).
    ///
    /// Returns at once: the call goes out in the background, because
    /// containerd sends a subscription's response headers only with its
    /// first event. Events published before the daemon has the
    /// subscription are not seen; a caller that needs the subscription
    /// live first can publish a marker (say, create and remove a
    /// namespace) and wait for it.
    pub async fn events(&self, filters: &[&str]) -> Result<EventStream> {
        let request = pb::SubscribeRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        let mut service = self.events_service();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut stream = match service.subscribe(request).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let _ = tx
                        .send(Err(Error::status("subscribing to events", s)))
                        .await;
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(envelope)) => Ok(event(envelope)),
                    Ok(None) => return,
                    Err(s) => Err(Error::status("receiving events", s)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(EventStream { rx, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_by_type() -> Result<()> {
        let exit = ev::TaskExit {
            container_id: "c".into(),
            exit_status: 3,
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.encode_to_vec(),
        };
        assert_eq!(decode(&any)?, Payload::TaskExit(exit));
        let other = prost_types::Any {
            type_url: "example.com/Other".into(),
            value: vec![1],
        };
        assert_eq!(decode(&other)?, Payload::Unknown(other.clone()));
        Ok(())
    }
}
