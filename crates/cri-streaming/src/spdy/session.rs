//! A server-side SPDY/3.1 session over an upgraded HTTP connection.
//!
//! The client opens every stream. Each one is answered at once with a
//! SYN_REPLY (Kubernetes clients wait for it before opening the next) and
//! handed to the application as a [`Stream`]: its headers and an in-memory
//! pipe. Bytes the client sends arrive on the pipe; bytes the application
//! writes leave as DATA frames; when the application drops its end, the
//! stream is closed with FIN. [`Session::shutdown`] waits for every stream's
//! output to be sent, then sends GOAWAY and closes the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{self, Frame, HeaderDecoder, HeaderEncoder};
use crate::idle::Activity;

/// Bytes buffered per stream and direction before the sender waits.
const PIPE_BUFFER: usize = 64 * 1024;
/// Largest DATA frame we send.
const MAX_DATA: usize = 32 * 1024;

/// One stream the client opened.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The stream's identifier (odd: the client opened it).
    pub(crate) id: u32,
    /// The header pairs of its SYN_STREAM, names lowercase.
    pub(crate) headers: Vec<(String, String)>,
    /// The application's end: read what the client sends, write what it
    /// should receive; drop to close.
    pub(crate) io: DuplexStream,
}

impl Stream {
    /// The first value of header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }
}

/// What the writer task sends.
enum Out {
    Frame(Vec<u8>),
    SynReply(u32),
    Close,
}

/// A running session; [`Session::accept`] yields the client's streams.
#[derive(Debug)]
pub(crate) struct Session {
    incoming: mpsc::Receiver<Stream>,
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

impl Session {
    /// Starts serving SPDY on `io` (the connection after the 101 response).
    /// The session closes after `idle_timeout` without frames either way.
    pub(crate) fn start<IO>(
        io: IO,
        idle_timeout: std::time::Duration,
    ) -> Result<Self, frame::FrameError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(16);
        let pumps = Arc::new(Mutex::new(Vec::new()));
        let encoder = HeaderEncoder::new()?;
        let last_stream = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let activity = Arc::new(Activity::new(idle_timeout));
        let (gone_tx, gone) = watch::channel(false);
        let writer = tokio::spawn(write_loop(
            wr,
            out_rx,
            encoder,
            last_stream.clone(),
            activity.clone(),
        ));
        let reader = tokio::spawn(read_loop(
            rd,
            out_tx.clone(),
            in_tx,
            pumps.clone(),
            last_stream,
            activity,
            gone_tx,
        ));
        Ok(Self {
            incoming: in_rx,
            out: out_tx,
            pumps,
            reader,
            writer,
            gone,
        })
    }

    /// Resolves when the client's connection ends.
    pub(crate) fn client_gone(&self) -> crate::ClientGone {
        crate::ClientGone::new(self.gone.clone())
    }

    /// The next stream the client opens; `None` once the client has gone.
    pub(crate) async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Sends what every stream still has to send, then GOAWAY, and closes.
    pub(crate) async fn shutdown(mut self) {
        self.incoming.close();
        // Streams opened but never accepted: their ends must go, or their
        // pumps would wait for them forever.
        while self.incoming.try_recv().is_ok() {}
        loop {
            let batch: Vec<_> = match self.pumps.lock() {
                Ok(mut p) => p.drain(..).collect(),
                Err(_) => Vec::new(),
            };
            if batch.is_empty() {
                break;
            }
            for pump in batch {
                let _ = pump.await;
            }
        }
        let _ = self.out.send(Out::Close).await;
        let _ = (&mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite>(
    wr: WriteHalf<W>,
    mut out: mpsc::Receiver<Out>,
    mut encoder: HeaderEncoder,
    last_stream: Arc<std::sync::atomic::AtomicU32>,
    activity: Arc<Activity>,
) {
    let mut wr = tokio::io::BufWriter::new(wr);
    while let Some(item) = out.recv().await {
        activity.touch();
        let bytes = match item {
            Out::Frame(b) => b,
            Out::SynReply(id) => match frame::syn_reply(id, &mut encoder) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "SPDY: encoding SYN_REPLY");
                    break;
                }
            },
            Out::Close => {
                let last = last_stream.load(std::sync::atomic::Ordering::Relaxed);
                let _ = wr.write_all(&frame::goaway(last)).await;
                break;
            }
        };
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
        // Flush when nothing else is queued: one syscall per burst.
        if out.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    rd: tokio::io::ReadHalf<R>,
    out: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Stream>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
    last_stream: Arc<std::sync::atomic::AtomicU32>,
    activity: Arc<Activity>,
    gone: watch::Sender<bool>,
) {
    let mut rd = tokio::io::BufReader::new(rd);
    let mut decoder = HeaderDecoder::new();
    // The session's end of each stream still open for the client's bytes.
    let mut inputs: HashMap<u32, WriteHalf<DuplexStream>> = HashMap::new();
    loop {
        let read = tokio::select! {
            read = frame::read_frame(&mut rd, &mut decoder) => read,
            () = activity.expired() => {
                tracing::info!("SPDY: closing idle streaming connection");
                let _ = out.send(Out::Close).await;
                break;
            }
        };
        activity.touch();
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY: session read ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { id, fin, headers } => {
                last_stream.store(id, std::sync::atomic::Ordering::Relaxed);
                let (app, ours) = tokio::io::duplex(PIPE_BUFFER);
                let (our_rd, our_wr) = tokio::io::split(ours);
                if out.send(Out::SynReply(id)).await.is_err() {
                    break;
                }
                let pump = tokio::spawn(pump_out(id, our_rd, out.clone()));
                if let Ok(mut p) = pumps.lock() {
                    // A long port-forward session opens many streams.
                    p.retain(|h| !h.is_finished());
                    p.push(pump);
                }
                if !fin {
                    inputs.insert(id, our_wr);
                }
                if incoming
                    .send(Stream {
                        id,
                        headers,
                        io: app,
                    })
                    .await
                    .is_err()
                {
                    // Nobody accepts streams any more: refuse it.
                    inputs.remove(&id);
                    let _ = out
                        .send(Out::Frame(frame::rst_stream(id, frame::RST_CANCEL)))
                        .await;
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(w) = inputs.get_mut(&id)
                    && !data.is_empty()
                    && w.write_all(&data).await.is_err()
                {
                    // The application dropped its end: discard the rest.
                    inputs.remove(&id);
                }
                if fin && let Some(mut w) = inputs.remove(&id) {
                    let _ = w.shutdown().await;
                }
            }
            Frame::RstStream { id } => {
                inputs.remove(&id);
            }
            Frame::Ping { id } => {
                if out.send(Out::Frame(frame::ping(id))).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::Ignored => {}
        }
    }
    // The client is gone: every stream reads EOF, accept() returns None.
    let _ = gone.send(true);
    for (_, mut w) in inputs.drain() {
        let _ = w.shutdown().await;
    }
}

/// Sends what the application writes on stream `id`, then FIN.
async fn pump_out(id: u32, mut rd: tokio::io::ReadHalf<DuplexStream>, out: mpsc::Sender<Out>) {
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(Out::Frame(frame::data_frame(id, false, &buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = out.send(Out::Frame(frame::data_frame(id, true, &[]))).await;
}
