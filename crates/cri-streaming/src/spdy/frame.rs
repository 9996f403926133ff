//! SPDY/3.1 frames: reading, writing, and the zlib-compressed header blocks.
//!
//! Only what a server of Kubernetes' streaming protocols needs: the client
//! opens streams (SYN_STREAM), the server answers (SYN_REPLY), both send
//! DATA, and either side may reset a stream, ping, or go away. Flow-control
//! frames are read and ignored: Kubernetes' SPDY peer (moby/spdystream)
//! neither sends nor honours them.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::dict::DICTIONARY;

/// The protocol version in every control frame.
const VERSION: u16 = 3;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;

/// FIN on DATA and SYN_STREAM: the sender closes its half of the stream.
pub(crate) const FLAG_FIN: u8 = 0x01;

/// Largest frame payload we accept: SPDY allows 16 MiB, clients send far less.
const MAX_FRAME: usize = 1 << 24;
/// Largest decompressed header block we accept (a guard against zlib bombs).
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// RST_STREAM status: the stream was cancelled.
pub(crate) const RST_CANCEL: u32 = 5;

/// A frame as read from the client.
#[derive(Debug)]
pub(crate) enum Frame {
    /// The client opens a stream.
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    /// Bytes on a stream.
    Data { id: u32, fin: bool, data: Vec<u8> },
    /// The client aborts a stream.
    RstStream { id: u32 },
    /// A liveness probe to echo.
    Ping { id: u32 },
    /// The client ends the session.
    GoAway,
    /// Frames this server has no use for (SETTINGS, WINDOW_UPDATE, HEADERS...).
    Ignored,
}

/// Errors of the SPDY framing layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("reading a SPDY frame: {0}")]
    Io(#[from] io::Error),
    #[error("SPDY frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("malformed SPDY {0} frame")]
    Malformed(&'static str),
    #[error("SPDY control frame of version {0}, expected 3")]
    Version(u16),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// Reads one frame; `Ok(None)` at a clean end of the connection.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    headers: &mut HeaderDecoder,
) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let word0 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if word0 & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            id: word0 & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let frame = match kind {
        TYPE_SYN_STREAM => {
            // stream id, associated stream id, priority + slot, header block
            if payload.len() < 10 {
                return Err(FrameError::Malformed("SYN_STREAM"));
            }
            Frame::SynStream {
                id: be31(&payload[0..4]),
                fin: flags & FLAG_FIN != 0,
                headers: headers.decode(&payload[10..])?,
            }
        }
        TYPE_RST_STREAM => {
            if payload.len() < 8 {
                return Err(FrameError::Malformed("RST_STREAM"));
            }
            Frame::RstStream {
                id: be31(&payload[0..4]),
            }
        }
        TYPE_PING => {
            if payload.len() < 4 {
                return Err(FrameError::Malformed("PING"));
            }
            Frame::Ping {
                id: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            }
        }
        TYPE_GOAWAY => Frame::GoAway,
        // HEADERS carries a header block too: decode it to keep the shared
        // zlib stream in step with the client's, then drop it.
        8 => {
            if payload.len() >= 4 {
                headers.decode(&payload[4..])?;
            }
            Frame::Ignored
        }
        _ => Frame::Ignored,
    };
    Ok(Some(frame))
}

fn be31(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
}

/// Encodes a DATA frame.
pub(crate) fn data_frame(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    push_len(&mut out, data.len());
    out.extend_from_slice(data);
    out
}

/// Encodes a control frame of `kind` around `payload`.
fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    push_len(&mut out, payload.len());
    out.extend_from_slice(payload);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Callers keep payloads under 2^24 (data is chunked, headers are tiny).
    let len = u32::try_from(len).unwrap_or(u32::MAX).min(0x00ff_ffff);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
}

/// SYN_REPLY for stream `id` with no headers.
pub(crate) fn syn_reply(id: u32, encoder: &mut HeaderEncoder) -> Result<Vec<u8>, FrameError> {
    let mut payload = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&encoder.encode(&[])?);
    Ok(control_frame(TYPE_SYN_REPLY, 0, &payload))
}

/// RST_STREAM for stream `id`.
pub(crate) fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut payload = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control_frame(TYPE_RST_STREAM, 0, &payload)
}

/// PING echoing `id`.
pub(crate) fn ping(id: u32) -> Vec<u8> {
    control_frame(TYPE_PING, 0, &id.to_be_bytes())
}

/// GOAWAY (status OK) naming the last stream the client opened.
pub(crate) fn goaway(last_stream: u32) -> Vec<u8> {
    let mut payload = (last_stream & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    control_frame(TYPE_GOAWAY, 0, &payload)
}

/// The server's half of header compression: one zlib stream for the whole
/// connection, primed with the SPDY dictionary, sync-flushed per block.
pub(crate) struct HeaderEncoder {
    zlib: Compress,
}

impl std::fmt::Debug for HeaderEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderEncoder")
    }
}

impl HeaderEncoder {
    pub(crate) fn new() -> Result<Self, FrameError> {
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(DICTIONARY)
            .map_err(|e| FrameError::Headers(e.to_string()))?;
        Ok(Self { zlib })
    }

    /// Compresses a header block of `pairs` (names must be lowercase).
    pub(crate) fn encode(&mut self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, FrameError> {
        let mut plain = Vec::new();
        push_u32(&mut plain, pairs.len());
        for (name, value) in pairs {
            push_u32(&mut plain, name.len());
            plain.extend_from_slice(name.as_bytes());
            push_u32(&mut plain, value.len());
            plain.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.zlib.total_in();
        loop {
            let done = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            self.zlib
                .compress_vec(
                    &plain[done.min(plain.len())..],
                    &mut out,
                    FlushCompress::Sync,
                )
                .map_err(|e| FrameError::Headers(e.to_string()))?;
            let done = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            // A sync flush is complete once all input is in and zlib left
            // room in the output.
            if done >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn push_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// The client's half of header compression, decoded on our side.
pub(crate) struct HeaderDecoder {
    zlib: Decompress,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderDecoder")
    }
}

impl HeaderDecoder {
    pub(crate) fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses and parses one header block into lowercase name/value
    /// pairs (a value holding several NUL-separated values is kept whole).
    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
        let plain = self.inflate(block)?;
        parse_block(&plain)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let start = self.zlib.total_in();
        loop {
            let done = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::Headers("header block too large".into()));
                }
                out.reserve(out.capacity());
            }
            let before = (self.zlib.total_in(), out.len());
            match self.zlib.decompress_vec(
                &block[done.min(block.len())..],
                &mut out,
                FlushDecompress::Sync,
            ) {
                Ok(_) => {}
                // The first block asks for the dictionary the client primed
                // its compressor with.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Headers(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Headers(e.to_string())),
            }
            let done = usize::try_from(self.zlib.total_in() - start).unwrap_or(usize::MAX);
            if done >= block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if (self.zlib.total_in(), out.len()) == before && out.len() < out.capacity() {
                return Err(FrameError::Headers("truncated header block".into()));
            }
        }
    }
}

fn parse_block(mut b: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let bad = || FrameError::Headers("malformed name/value block".into());
    let take = |b: &mut &[u8]| -> Result<String, FrameError> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() < 4 + n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[4..4 + n]).into_owned();
        *b = &b[4 + n..];
        Ok(s)
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let count = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    b = &b[4..];
    let mut pairs = Vec::new();
    for _ in 0..count {
        let name = take(&mut b)?.to_ascii_lowercase();
        let value = take(&mut b)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_round_trip_across_one_zlib_stream() {
        let mut enc = HeaderEncoder::new().expect("encoder");
        let mut dec = HeaderDecoder::new();
        for i in 0..3 {
            let port = format!("80{i}");
            let block = enc
                .encode(&[("streamtype", "data"), ("port", &port)])
                .expect("encode");
            let pairs = dec.decode(&block).expect("decode");
            assert_eq!(
                pairs,
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), port)
                ]
            );
        }
    }

    #[tokio::test]
    async fn reads_a_syn_stream_written_by_our_encoder() {
        let mut enc = HeaderEncoder::new().expect("encoder");
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&enc.encode(&[("streamtype", "error")]).expect("encode"));
        let mut wire = control_frame(TYPE_SYN_STREAM, 0, &payload);
        wire.extend_from_slice(&data_frame(1, true, b"hi"));
        let mut r = &wire[..];
        let mut dec = HeaderDecoder::new();
        match read_frame(&mut r, &mut dec).await.expect("read") {
            Some(Frame::SynStream { id, fin, headers }) => {
                assert_eq!((id, fin), (1, false));
                assert_eq!(headers[0].1, "error");
            }
            other => panic!("unexpected {other:?}"),
        }
        match read_frame(&mut r, &mut dec).await.expect("read") {
            Some(Frame::Data { id, fin, data }) => {
                assert_eq!((id, fin, &data[..]), (1, true, &b"hi"[..]))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(read_frame(&mut r, &mut dec).await.expect("eof").is_none());
    }
}
