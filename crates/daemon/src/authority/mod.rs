//! Accepts gRPC clients whose `:authority` is not a URI authority.
//!
//! gRPC's C core (grpcio, C++) sends the percent-encoded socket path as
//! `:authority` for a `unix:` target (`%2Frun%2Fberth%2Fberthd.sock`);
//! grpc-go, and so containerd, accepts any authority. h2's server parses the
//! value as a URI authority and resets the stream before tonic sees it, with
//! no option to relax that. [`AuthorityFilter`] sits between the accepted
//! socket and the server: it follows the client's HTTP/2 frames and rewrites
//! only header blocks whose `:authority` does not parse, to `localhost` (see
//! `hpack` for how the HPACK tables stay in step). Everything else passes
//! through as read, without a copy; the server→client direction is not
//! touched at all.

mod hpack;
mod scan;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use scan::{Scanner, Step};

/// An accepted connection whose client→server header blocks get a valid
/// `:authority`.
#[derive(Debug)]
pub(crate) struct AuthorityFilter<S> {
    inner: S,
    scanner: Scanner,
    /// Bytes read but not yet classified (an incomplete frame header or
    /// header block), kept back from the reader.
    held: Vec<u8>,
    /// Whether `held` needs more bytes before it can be classified.
    held_waits: bool,
    /// Classified bytes (passed or rewritten) to hand out before `held`.
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> AuthorityFilter<S> {
    /// Wraps an accepted connection.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            held: Vec::new(),
            held_waits: false,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Classifies `held` into `out` as far as it goes.
    fn process_held(&mut self) {
        let mut pos = 0;
        while pos < self.held.len() {
            match self.scanner.step(&self.held[pos..]) {
                Step::Pass(n) => {
                    self.out.extend_from_slice(&self.held[pos..pos + n]);
                    pos += n;
                }
                Step::Replace { consumed, with } => {
                    self.out.extend_from_slice(&with);
                    pos += consumed;
                }
                Step::NeedMore => {
                    self.held_waits = true;
                    break;
                }
            }
        }
        self.held.drain(..pos);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if !this.held.is_empty() {
                if !this.held_waits {
                    this.process_held();
                    continue;
                }
                // Read more behind the held bytes (through `buf`, which is
                // free right now).
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    // EOF inside a frame: hand over what there is.
                    this.scanner.turn_off();
                    this.out.append(&mut this.held);
                } else {
                    this.held.extend_from_slice(fresh);
                }
                buf.set_filled(before);
                this.held_waits = false;
                continue;
            }
            // Common case: read straight into the caller's buffer and keep
            // back only from the first frame that must be held or rewritten.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let fresh = &buf.filled()[before..];
            if fresh.is_empty() || this.scanner.is_off() {
                return Poll::Ready(Ok(()));
            }
            let mut pos = 0;
            while pos < fresh.len() {
                match this.scanner.step(&fresh[pos..]) {
                    Step::Pass(n) => pos += n,
                    Step::NeedMore => {
                        this.held.extend_from_slice(&fresh[pos..]);
                        this.held_waits = true;
                        break;
                    }
                    Step::Replace { consumed, with } => {
                        this.out = with;
                        this.out_pos = 0;
                        this.held.extend_from_slice(&fresh[pos + consumed..]);
                        this.held_waits = false;
                        break;
                    }
                }
            }
            buf.set_filled(before + pos);
            if pos > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFilter<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
