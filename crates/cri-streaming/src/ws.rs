//! Kubernetes' channel protocol over WebSocket (`wsstream`): every message
//! starts with one byte naming its channel (binary protocols), or is text
//! whose first character is the channel as a digit and whose rest is base64
//! (`base64.channel.k8s.io` protocols). v5 adds channel 255: a client's
//! `[255, n]` closes channel `n` (end of standard input).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::idle::Activity;

/// Bytes buffered per channel before the sender waits.
const PIPE_BUFFER: usize = 64 * 1024;
/// Largest message payload we send.
const MAX_MESSAGE: usize = 32 * 1024;
/// The v5 channel that carries close signals.
const CLOSE_CHANNEL: u8 = 255;

/// How messages are encoded on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    /// Text messages with base64 payloads instead of binary messages.
    pub(crate) base64: bool,
    /// The client may send v5 close signals.
    pub(crate) close_signals: bool,
}

enum Out {
    Message(u8, Vec<u8>),
    Close,
}

/// A channel-multiplexed WebSocket connection being served.
#[derive(Debug)]
pub(crate) struct Mux {
    out: mpsc::Sender<Out>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    gone: watch::Receiver<bool>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Out")
    }
}

impl Mux {
    /// Starts serving `ws`, with one pipe per channel in `channels`: what
    /// the client sends on a channel arrives on its pipe, what is written to
    /// the pipe is sent on the channel. Returns the pipes by channel.
    pub(crate) fn start<S>(
        ws: WebSocketStream<S>,
        encoding: Encoding,
        channels: &[u8],
        idle_timeout: std::time::Duration,
    ) -> (Self, HashMap<u8, DuplexStream>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(64);
        let mut ends = HashMap::new();
        let mut inputs = HashMap::new();
        let mut pumps = Vec::new();
        for &ch in channels {
            let (app, ours) = tokio::io::duplex(PIPE_BUFFER);
            let (our_rd, our_wr) = tokio::io::split(ours);
            inputs.insert(ch, our_wr);
            pumps.push(tokio::spawn(pump_out(ch, our_rd, out_tx.clone())));
            ends.insert(ch, app);
        }
        let activity = Arc::new(Activity::new(idle_timeout));
        let (gone_tx, gone) = watch::channel(false);
        let writer = tokio::spawn(write_loop(sink, out_rx, encoding, activity.clone()));
        let reader = tokio::spawn(read_loop(
            stream,
            inputs,
            encoding,
            activity,
            out_tx.clone(),
            gone_tx,
        ));
        (
            Self {
                out: out_tx,
                pumps: Arc::new(Mutex::new(pumps)),
                reader,
                writer,
                gone,
            },
            ends,
        )
    }

    /// Sends `data` on channel `ch` ahead of anything written to its pipe
    /// later (used for kubelet's opening messages).
    pub(crate) async fn send(&self, ch: u8, data: Vec<u8>) {
        let _ = self.out.send(Out::Message(ch, data)).await;
    }

    /// Tells when the client's connection ends.
    pub(crate) fn client_gone_signal(&self) -> crate::ClientGone {
        crate::ClientGone::new(self.gone.clone())
    }

    /// Resolves when the client has closed the connection.
    pub(crate) async fn client_gone(&mut self) {
        let _ = (&mut self.reader).await;
    }

    /// Sends what every channel still has to send, then a close frame.
    pub(crate) async fn shutdown(mut self) {
        let pumps: Vec<_> = match self.pumps.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for pump in pumps {
            let _ = pump.await;
        }
        let _ = self.out.send(Out::Close).await;
        let _ = (&mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<K>(
    mut sink: K,
    mut out: mpsc::Receiver<Out>,
    encoding: Encoding,
    activity: Arc<Activity>,
) where
    K: futures::Sink<Message> + Unpin,
{
    while let Some(item) = out.recv().await {
        activity.touch();
        let msg = match item {
            Out::Message(ch, data) => encode(ch, &data, encoding),
            Out::Close => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                break;
            }
        };
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

fn encode(ch: u8, data: &[u8], encoding: Encoding) -> Message {
    if encoding.base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + ch));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text)
    } else {
        let mut bin = Vec::with_capacity(1 + data.len());
        bin.push(ch);
        bin.extend_from_slice(data);
        Message::Binary(bin)
    }
}

/// Splits a client message into its channel and payload.
fn decode(msg: Message, encoding: Encoding) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !encoding.base64 => {
            let (&ch, rest) = b.split_first()?;
            Some((ch, rest.to_vec()))
        }
        Message::Text(t) if encoding.base64 => {
            let (&ch, rest) = t.as_bytes().split_first()?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((ch.checked_sub(b'0')?, data))
        }
        _ => None,
    }
}

async fn read_loop<T>(
    mut stream: T,
    mut inputs: HashMap<u8, WriteHalf<DuplexStream>>,
    encoding: Encoding,
    activity: Arc<Activity>,
    out: mpsc::Sender<Out>,
    gone: watch::Sender<bool>,
) where
    T: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = activity.expired() => {
                tracing::info!("WebSocket: closing idle streaming connection");
                let _ = out.send(Out::Close).await;
                break;
            }
        };
        activity.touch();
        let Some(Ok(msg)) = next else { break };
        if msg.is_close() {
            break;
        }
        let Some((ch, data)) = decode(msg, encoding) else {
            continue;
        };
        if encoding.close_signals && ch == CLOSE_CHANNEL {
            if let Some(&closed) = data.first()
                && let Some(mut w) = inputs.remove(&closed)
            {
                let _ = w.shutdown().await;
            }
            continue;
        }
        if let Some(w) = inputs.get_mut(&ch)
            && !data.is_empty()
            && w.write_all(&data).await.is_err()
        {
            inputs.remove(&ch);
        }
    }
    let _ = gone.send(true);
    for (_, mut w) in inputs.drain() {
        let _ = w.shutdown().await;
    }
}

async fn pump_out(ch: u8, mut rd: tokio::io::ReadHalf<DuplexStream>, out: mpsc::Sender<Out>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(Out::Message(ch, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Byte stream over binary WebSocket messages, for SPDY tunnelled in a
/// WebSocket (`SPDY/3.1+portforward.k8s.io`). Returns our end of the pipe
/// and the tasks carrying it.
pub(crate) fn tunnel<S>(ws: WebSocketStream<S>) -> (DuplexStream, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (app, ours) = tokio::io::duplex(PIPE_BUFFER);
    let task = tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; MAX_MESSAGE];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        // Both directions end when SPDY closes the pipe or the client leaves.
        tokio::join!(inbound, outbound);
    });
    (app, task)
}
