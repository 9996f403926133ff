//! Port forwarding: each forwarded connection is a pair of streams, `data`
//! and `error`, tied by a `requestID` header and naming its `port`. The
//! runtime carries the data stream; a failure is reported on the error
//! stream as kubelet's JSON `{"closeConnection":..,"message":..}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::task::JoinSet;

use crate::StreamingRuntime;
use crate::spdy::{Session, Stream};

/// The port forwarding protocol negotiated over SPDY.
pub(crate) const SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// How a failed connection is reported on its error stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorFormat {
    /// SPDY: kubelet's JSON `{"closeConnection":..,"message":..}` line.
    Json,
    /// WebSocket channels: the message as plain text.
    Text,
}

#[derive(Serialize)]
struct ErrResponse {
    #[serde(rename = "closeConnection", skip_serializing_if = "std::ops::Not::not")]
    close_connection: bool,
    message: String,
}

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
}

/// Serves port forwarding on a SPDY session until the client leaves.
pub(crate) async fn serve_spdy(
    mut session: Session,
    runtime: Arc<dyn StreamingRuntime>,
    pod: String,
) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(stream) = session.accept().await {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        // Old clients send no requestID: kubelet pairs the error stream
        // with the data stream opened right after it (ids are odd).
        let request = match stream.header("requestid") {
            Some(r) => r.to_string(),
            None if kind == "data" => stream.id.saturating_sub(2).to_string(),
            None => stream.id.to_string(),
        };
        let pair = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "data" => pair.data = Some(stream),
            "error" => pair.error = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "port-forward: unexpected stream type");
                continue;
            }
        }
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pending.remove(&request)
        {
            let port = data.header("port").unwrap_or("").to_string();
            forwards.spawn(forward(
                runtime.clone(),
                pod.clone(),
                port,
                data.io,
                error.io,
                ErrorFormat::Json,
            ));
        }
        // Reap finished forwards as we go.
        while forwards.try_join_next().is_some() {}
    }
    // The client is gone: its connections go with it.
    forwards.abort_all();
    while forwards.join_next().await.is_some() {}
    drop(pending);
    session.shutdown().await;
}

/// Carries one forwarded connection and reports its failure.
pub(crate) async fn forward(
    runtime: Arc<dyn StreamingRuntime>,
    pod: String,
    port: String,
    data: DuplexStream,
    mut error: DuplexStream,
    report: ErrorFormat,
) {
    let result = match port.parse::<u16>() {
        Ok(p) if p > 0 => runtime.port_forward(&pod, p, data).await.map_err(|e| {
            // kubelet keeps the session for a peer that reset or stopped
            // reading (EPIPE, ECONNRESET); anything else closes it.
            let keep = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                )
            });
            (
                !keep,
                format!("error forwarding port {p} to pod {pod}, uid : {e}"),
            )
        }),
        _ => Err((
            true,
            format!("unable to parse '{port}' as a port: expected a number from 1 to 65535"),
        )),
    };
    if let Err((close_connection, message)) = result {
        tracing::debug!(%message, "port-forward failed");
        let body = match report {
            ErrorFormat::Json => {
                let mut b = serde_json::to_vec(&ErrResponse {
                    close_connection,
                    message,
                })
                .unwrap_or_default();
                b.push(b'\n');
                b
            }
            ErrorFormat::Text => message.into_bytes(),
        };
        let _ = error.write_all(&body).await;
    }
    let _ = error.shutdown().await;
}
