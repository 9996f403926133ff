//! Splits the client→server HTTP/2 byte stream into what passes unchanged
//! and header blocks that need an `:authority` rewrite (sans I/O).

// Wire encoding: every narrowing cast is of a value already masked or
// shifted down to the octet (or field) it fills.
#![allow(clippy::cast_possible_truncation)]

use super::hpack::BlockRewriter;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame header length.
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest frame payload every HTTP/2 peer accepts
/// (SETTINGS_MAX_FRAME_SIZE's minimum); rewritten blocks are split to it.
const SAFE_FRAME: usize = 16_384;

/// A header block bigger than this is not held back: the scanner stops
/// rewriting and passes the connection through (h2 limits header lists far
/// below this anyway).
const MAX_HELD: usize = 16 << 20;

/// What to do with the front of the unread bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The first n bytes (n > 0) pass unchanged.
    Pass(usize),
    /// The bytes start with an incomplete frame or header block.
    NeedMore,
    /// The first `consumed` bytes (a header block) become `with`.
    Replace {
        /// Bytes of input replaced.
        consumed: usize,
        /// The frames sent instead.
        with: Vec<u8>,
    },
}

/// Follows one connection's client→server bytes.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// Preface bytes already checked.
    preface_seen: usize,
    /// Payload bytes of the current passed-through frame still to come.
    skip: usize,
    /// Set once the stream cannot be followed: everything passes unchanged.
    off: bool,
    rewriter: BlockRewriter,
}

impl Scanner {
    /// Whether the scanner gave up following the connection.
    pub(crate) fn is_off(&self) -> bool {
        self.off
    }

    /// Stops following the connection (its stream ended mid-frame).
    pub(crate) fn turn_off(&mut self) {
        self.off = true;
    }

    /// Classifies the front of `data` (non-empty). `NeedMore` leaves the
    /// state unchanged, so the same bytes can be offered again with more.
    pub(crate) fn step(&mut self, data: &[u8]) -> Step {
        if self.off {
            return Step::Pass(data.len());
        }
        if self.preface_seen < PREFACE.len() {
            let want = &PREFACE[self.preface_seen..];
            let n = want.len().min(data.len());
            if data[..n] != want[..n] {
                tracing::debug!("not an HTTP/2 preface; authority filter off");
                self.off = true;
                return Step::Pass(data.len());
            }
            self.preface_seen += n;
            return Step::Pass(n);
        }
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            return Step::Pass(n);
        }
        let Some(header) = FrameHeader::parse(data) else {
            return Step::NeedMore;
        };
        if header.kind != HEADERS {
            // Everything else (a stray CONTINUATION included: h2 rejects
            // it) passes; its payload without a look.
            let n = (FRAME_HEADER + header.len).min(data.len());
            self.skip = FRAME_HEADER + header.len - n;
            return Step::Pass(n);
        }
        match Block::collect(data, header) {
            Collected::Complete(block) => self.rewrite(data, block),
            Collected::Incomplete if data.len() <= MAX_HELD => Step::NeedMore,
            Collected::Incomplete | Collected::Malformed => {
                tracing::debug!("header block not followed; authority filter off");
                self.off = true;
                Step::Pass(data.len())
            }
        }
    }

    fn rewrite(&mut self, data: &[u8], block: Block) -> Step {
        let fragment = block.fragment(data);
        match self.rewriter.rewrite(&fragment) {
            Ok(None) => Step::Pass(block.end),
            Ok(Some(new)) => {
                tracing::debug!(
                    stream = block.stream,
                    "replaced an :authority that is not a URI authority"
                );
                Step::Replace {
                    consumed: block.end,
                    with: block.frames(&new),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "header block not followed; authority filter off");
                self.off = true;
                Step::Pass(data.len())
            }
        }
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(data: &[u8]) -> Option<Self> {
        let h = data.get(..FRAME_HEADER)?;
        Some(Self {
            len: (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize,
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }
}

/// A complete header block: a HEADERS frame and its CONTINUATIONs.
#[derive(Debug)]
struct Block {
    /// Flags of the HEADERS frame.
    flags: u8,
    stream: u32,
    /// The PRIORITY fields of the HEADERS frame, if any.
    priority: Option<[u8; 5]>,
    /// Ranges of the block fragment in the input.
    fragments: Vec<std::ops::Range<usize>>,
    /// End of the last frame in the input.
    end: usize,
}

enum Collected {
    Complete(Block),
    Incomplete,
    Malformed,
}

impl Block {
    fn collect(data: &[u8], first: FrameHeader) -> Collected {
        let payload_end = FRAME_HEADER + first.len;
        let Some(payload) = data.get(FRAME_HEADER..payload_end) else {
            return Collected::Incomplete;
        };
        let mut start = FRAME_HEADER;
        let mut stop = payload_end;
        if first.flags & PADDED != 0 {
            let Some(&pad) = payload.first() else {
                return Collected::Malformed;
            };
            start += 1;
            stop = match stop.checked_sub(pad as usize) {
                Some(s) => s,
                None => return Collected::Malformed,
            };
        }
        let mut priority = None;
        if first.flags & PRIORITY != 0 {
            let Some(p) = data.get(start..start + 5) else {
                return Collected::Malformed;
            };
            priority = Some([p[0], p[1], p[2], p[3], p[4]]);
            start += 5;
        }
        if start > stop {
            return Collected::Malformed;
        }
        let mut block = Block {
            flags: first.flags,
            stream: first.stream,
            priority,
            fragments: Vec::with_capacity(1),
            end: payload_end,
        };
        block.fragments.push(start..stop);
        let mut done = first.flags & END_HEADERS != 0;
        while !done {
            let Some(next) = FrameHeader::parse(&data[block.end..]) else {
                return Collected::Incomplete;
            };
            if next.kind != CONTINUATION || next.stream != first.stream {
                return Collected::Malformed;
            }
            let start = block.end + FRAME_HEADER;
            let end = start + next.len;
            if data.len() < end {
                return Collected::Incomplete;
            }
            block.fragments.push(start..end);
            block.end = end;
            done = next.flags & END_HEADERS != 0;
        }
        Collected::Complete(block)
    }

    /// The header block fragment (borrowed when it is in one frame).
    fn fragment<'a>(&self, data: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.fragments.as_slice() {
            [one] => std::borrow::Cow::Borrowed(&data[one.clone()]),
            many => std::borrow::Cow::Owned(
                many.iter()
                    .flat_map(|r| data[r.clone()].iter().copied())
                    .collect(),
            ),
        }
    }

    /// `fragment` as a HEADERS frame (same END_STREAM and PRIORITY, no
    /// padding) and CONTINUATIONs as needed.
    fn frames(&self, fragment: &[u8]) -> Vec<u8> {
        let prio_len = if self.priority.is_some() { 5 } else { 0 };
        let mut out = Vec::with_capacity(fragment.len() + prio_len + 2 * FRAME_HEADER);
        let first_len = fragment.len().min(SAFE_FRAME - prio_len);
        let (head, mut rest) = fragment.split_at(first_len);
        let mut flags = self.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        put_frame_header(&mut out, head.len() + prio_len, HEADERS, flags, self.stream);
        if let Some(p) = self.priority {
            out.extend_from_slice(&p);
        }
        out.extend_from_slice(head);
        while !rest.is_empty() {
            let n = rest.len().min(SAFE_FRAME);
            let (chunk, tail) = rest.split_at(n);
            let flags = if tail.is_empty() { END_HEADERS } else { 0 };
            put_frame_header(&mut out, n, CONTINUATION, flags, self.stream);
            out.extend_from_slice(chunk);
            rest = tail;
        }
        out
    }
}

fn put_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}
