//! Blobs in flight: a download writes a blob into the content store while
//! an unpacker reads the same bytes from the ingest file as they land, so
//! applying a layer never waits for its download to finish.

use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::sync::watch;

/// Where a blob's download stands.
#[derive(Debug, Clone)]
pub(crate) enum BlobState {
    /// Not started.
    Pending,
    /// Being written: `written` bytes of the ingest file are there.
    Writing {
        file: Arc<std::fs::File>,
        written: u64,
    },
    /// In the content store, verified.
    Done,
    /// The download failed.
    Failed(Arc<String>),
}

/// Reads a blob that is still being downloaded, up to its `total` size,
/// waiting (on a blocking thread) for the writer whenever it catches up.
#[derive(Debug)]
pub(crate) struct TailReader {
    file: Arc<std::fs::File>,
    offset: u64,
    total: u64,
    state: watch::Receiver<BlobState>,
    runtime: tokio::runtime::Handle,
}

impl TailReader {
    /// A reader of `file` following `state` (call from a blocking thread).
    pub(crate) fn new(
        file: Arc<std::fs::File>,
        total: u64,
        state: watch::Receiver<BlobState>,
        runtime: tokio::runtime::Handle,
    ) -> TailReader {
        TailReader {
            file,
            offset: 0,
            total,
            state,
            runtime,
        }
    }
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.offset >= self.total || buf.is_empty() {
                return Ok(0);
            }
            let available = match &*self.state.borrow_and_update() {
                BlobState::Pending => 0,
                BlobState::Writing { written, .. } => *written,
                BlobState::Done => self.total,
                BlobState::Failed(why) => return Err(io::Error::other(why.to_string())),
            };
            if available > self.offset {
                let want = usize::try_from(available - self.offset)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let n = self.file.read_at(&mut buf[..want], self.offset)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob's ingest file is shorter than its download reported",
                    ));
                }
                self.offset += n as u64;
                return Ok(n);
            }
            if self.runtime.block_on(self.state.changed()).is_err() {
                return Err(io::Error::other("the blob's download went away"));
            }
        }
    }
}
