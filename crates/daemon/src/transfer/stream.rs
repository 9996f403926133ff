//! Bulk data over a client-opened stream, with containerd's flow control:
//! the receiving side grants bytes with `WindowUpdate` messages, the sending
//! side sends `Data` messages while it has a grant, and closes its side of
//! the stream at the end.
//!
//! [`receive`] turns an import stream into a blocking [`std::io::Read`] for
//! the archive reader; [`StreamSender`] is the sending side for exports.

use std::io;

use berth_api::containerd::types::transfer::{Data, WindowUpdate};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::OpenStream;
use crate::wire::pack;

/// Bytes the daemon lets a client have in flight on an import.
const WINDOW: i32 = 1 << 20;
/// Largest `Data` message the daemon sends on an export.
const CHUNK: usize = 256 << 10;

/// A blocking reader of the bytes a client streams; ends at the client's
/// end of stream, fails if the stream breaks.
pub(crate) struct StreamReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.current = data;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Starts receiving `stream`: grants the client a window, then forwards its
/// `Data` into the returned reader, granting more as the reader consumes.
pub(crate) fn receive(stream: OpenStream) -> StreamReader {
    // A few chunks of slack: the grant is renewed once these are taken.
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let grant = |n: i32| pack(&WindowUpdate { update: n });
        if stream.to_client.send(Ok(grant(WINDOW))).await.is_err() {
            return;
        }
        let mut incoming = stream.from_client.lock().await;
        let mut consumed: i64 = 0;
        loop {
            let failed = match incoming.message().await {
                Ok(Some(m)) if m.type_url.ends_with("Data") => {
                    match Data::decode(m.value.as_slice()) {
                        Ok(d) => {
                            consumed += d.data.len() as i64;
                            if tx.send(Ok(d.data)).await.is_err() {
                                return; // the reader stopped: nothing more to take
                            }
                            if consumed >= i64::from(WINDOW / 2) {
                                let n = i32::try_from(consumed).unwrap_or(WINDOW);
                                consumed = 0;
                                let _ = stream.to_client.send(Ok(grant(n))).await;
                            }
                            continue;
                        }
                        Err(e) => format!("a Data message does not decode: {e}"),
                    }
                }
                Ok(Some(m)) => format!("expected Data messages, got {}", m.type_url),
                Ok(None) => return,
                Err(status) => format!("the client's stream broke: {}", status.message()),
            };
            let _ = tx.send(Err(io::Error::other(failed))).await;
            return;
        }
    });
    StreamReader {
        rx,
        current: Vec::new(),
        at: 0,
    }
}

/// The sending side of an export: writes `Data` within the client's grants.
pub(crate) struct StreamSender {
    stream: OpenStream,
    window: i64,
}

impl StreamSender {
    /// Sends on `stream`.
    pub(crate) fn new(stream: OpenStream) -> StreamSender {
        StreamSender { stream, window: 0 }
    }

    /// Sends every chunk `rx` yields until it ends or a send fails; the
    /// receiver is dropped either way, so a producer writing into it stops.
    pub(crate) async fn send_all(
        &mut self,
        mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), Status> {
        while let Some(chunk) = rx.recv().await {
            self.send(&chunk).await?;
        }
        Ok(())
    }

    /// Sends `data`, waiting for grants as needed.
    pub(crate) async fn send(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            while self.window <= 0 {
                let m = self
                    .stream
                    .from_client
                    .lock()
                    .await
                    .message()
                    .await?
                    .ok_or_else(|| Status::cancelled("the client closed the export stream"))?;
                if m.type_url.ends_with("WindowUpdate") {
                    let w = WindowUpdate::decode(m.value.as_slice()).map_err(|e| {
                        Status::invalid_argument(format!("WindowUpdate does not decode: {e}"))
                    })?;
                    self.window += i64::from(w.update);
                }
            }
            let n = data
                .len()
                .min(CHUNK)
                .min(usize::try_from(self.window).unwrap_or(CHUNK));
            self.stream
                .to_client
                .send(Ok(pack(&Data {
                    data: data[..n].to_vec(),
                })))
                .await
                .map_err(|_| Status::cancelled("the client closed the export stream"))?;
            self.window -= n as i64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends the daemon's side and waits (a while) for the client to end
    /// its own: dropping the client's half first would reset the stream and
    /// could discard data still queued for the client.
    pub(crate) async fn finish(self) {
        let OpenStream {
            to_client,
            from_client,
        } = self.stream;
        drop(to_client);
        let drain = async {
            let mut incoming = from_client.lock().await;
            while let Ok(Some(_)) = incoming.message().await {}
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drain).await;
    }
}

/// A blocking writer whose bytes go, in chunks, to an async consumer (the
/// export's [`StreamSender`]); fails once the consumer is gone.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A writer feeding `tx`.
    pub(crate) fn new(tx: mpsc::Sender<Vec<u8>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the export stream closed"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}
