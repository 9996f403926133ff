//! Publishing task events to the daemon: containerd's ttrpc `Events.Forward`
//! on the daemon's `TTRPC_ADDRESS`, in order, from one background task so an
//! RPC never waits on the daemon.

use std::time::{Duration, SystemTime};

use berth_api::containerd::services::events::ttrpc::v1 as fwd;
use berth_api::containerd::types::Envelope;
use prost::Name;
use tokio::sync::mpsc;

/// How long an event is tried again before it is dropped: the daemon may
/// be restarting (containerd's shims retry for about as long).
const RETRY_FOR: Duration = Duration::from_secs(15);
/// The longest pause between two tries: once the daemon is back, events
/// flow again within about this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Queues events for the daemon.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
    namespace: String,
}

/// What the forwarding task is given: an event, a flush to answer once
/// every event before it was forwarded (or dropped), or a close: the same,
/// then the connection to the daemon is shut down and forwarding ends.
#[derive(Debug)]
enum Item {
    Event(Envelope),
    Flush(tokio::sync::oneshot::Sender<()>),
    Close(tokio::sync::oneshot::Sender<()>),
}

impl Publisher {
    /// Starts the forwarding task for the daemon at `address` (a socket path
    /// or `unix://` address; empty disables publishing).
    pub(crate) fn start(address: String, namespace: String) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_all(address, rx));
        Publisher { tx, namespace }
    }

    /// Queues `event` under `topic` (`/tasks/exit`, ...).
    pub(crate) fn publish<M: Name>(&self, topic: &str, event: &M) {
        let event = prost_types::Any {
            type_url: M::full_name(),
            value: event.encode_to_vec(),
        };
        let envelope = Envelope {
            timestamp: Some(SystemTime::now().into()),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(event),
        };
        let _ = self.tx.send(Item::Event(envelope));
    }

    /// Waits until every event queued so far was forwarded (or dropped),
    /// at most `timeout`: a shim that exits must not lose `/tasks/exit`.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Flushes (at most `timeout`), then shuts the connection to the daemon
    /// down, so the daemon sees it closed before the shim answers its
    /// `Shutdown` (the daemon keeps no descriptor of a deleted task), and
    /// forwards nothing more.
    pub(crate) async fn close(&self, timeout: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }
}

/// A connection to the daemon's event socket: the client, and (for a
/// socket path) a second descriptor of the socket to shut it down with.
struct Connection {
    client: fwd::EventsClient,
    socket: Option<std::os::fd::OwnedFd>,
}

impl Connection {
    async fn open(address: &str) -> Result<Connection, String> {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        if path.starts_with('/') {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("connecting to {path}: {e}"))?;
            let socket = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok();
            let client = ttrpc::asynchronous::Client::new(stream.into());
            return Ok(Connection {
                client: fwd::EventsClient::new(client),
                socket,
            });
        }
        let client = ttrpc::asynchronous::Client::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Connection {
            client: fwd::EventsClient::new(client),
            socket: None,
        })
    }

    /// Shuts the socket down at once (the client's tasks close it later).
    fn close(self) {
        if let Some(socket) = &self.socket {
            let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
        }
    }
}

async fn forward_all(address: String, mut rx: mpsc::UnboundedReceiver<Item>) {
    if address.is_empty() {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Flush(done) => {
                    let _ = done.send(());
                }
                Item::Close(done) => {
                    let _ = done.send(());
                    return;
                }
                Item::Event(_) => {}
            }
        }
        return;
    }
    let address = if address.contains("://") {
        address
    } else {
        format!("unix://{address}")
    };
    let mut client: Option<Connection> = None;
    // Whether the last try failed: the log says so once per outage.
    let mut unreachable = false;
    while let Some(item) = rx.recv().await {
        let envelope = match item {
            Item::Event(e) => e,
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Item::Close(done) => {
                if let Some(c) = client.take() {
                    c.close();
                }
                let _ = done.send(());
                return;
            }
        };
        let topic = envelope.topic.clone();
        let req = fwd::ForwardRequest {
            envelope: Some(envelope),
        };
        let mut sent = false;
        let given_up_at = tokio::time::Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            if client.is_none() {
                match Connection::open(&address).await {
                    Ok(c) => client = Some(c),
                    Err(e) => tracing::debug!(error = %e, "cannot reach the daemon's event socket"),
                }
            }
            if let Some(c) = &client {
                let ctx = berth_runtime::manager::context(Duration::from_secs(5));
                match c.client.forward(ctx, &req).await {
                    Ok(_) => {
                        if unreachable {
                            tracing::info!(topic, "the daemon's event socket answers again");
                            unreachable = false;
                        }
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "forwarding an event failed");
                        if let Some(c) = client.take() {
                            c.close();
                        }
                    }
                }
            }
            if !unreachable {
                // Written while the daemon is down, so mostly lost: the log
                // FIFO has no reader then (see `LogSink`).
                tracing::info!(
                    topic,
                    "the daemon's event socket does not answer; retrying for {RETRY_FOR:?}"
                );
                unreachable = true;
            }
            if tokio::time::Instant::now() + backoff > given_up_at {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if !sent {
            tracing::warn!(
                topic,
                "event dropped: the daemon's event socket does not answer"
            );
        }
    }
}
