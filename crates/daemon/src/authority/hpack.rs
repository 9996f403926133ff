//! Rewrites an invalid `:authority` inside one HPACK header block while
//! keeping the server's decoder table in step with the client's encoder.
//!
//! The rewriter mirrors the dynamic table exactly as the server's decoder
//! will hold it (names, sizes, and whether an `:authority` entry is still
//! invalid). Representations are re-emitted with the same kind, so the
//! server's table gets the same insertions in the same order:
//!
//! - literal with incremental indexing: the value becomes a prefix of
//!   `localhost` no longer than the original, so the server's entry is never
//!   bigger than the client's. Its table then evicts no earlier than the
//!   client's, and every index the client can still use names the same entry.
//! - literal without indexing / never indexed: any replacement (no table
//!   change).
//! - indexed field naming an invalid `:authority` (the static `:authority`
//!   with its empty value, or an entry we could not fix): re-emitted as a
//!   literal without indexing, which does not touch the table either.

// Wire encoding: every narrowing cast is of a value already masked or
// shifted down to the octet (or field) it fills.
#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;

use loona_hpack::huffman::HuffmanDecoder;

/// The value written in place of an invalid authority.
pub(crate) const REPLACEMENT: &[u8] = b"localhost";

/// Per-entry overhead of the dynamic table (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The table size both sides start with (SETTINGS_HEADER_TABLE_SIZE default).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Names of the static table (RFC 7541 Appendix A), index 1 first.
pub(super) const STATIC_NAMES: [&[u8]; 61] = [
    b":authority",
    b":method",
    b":method",
    b":path",
    b":path",
    b":scheme",
    b":scheme",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b"accept-charset",
    b"accept-encoding",
    b"accept-language",
    b"accept-ranges",
    b"accept",
    b"access-control-allow-origin",
    b"age",
    b"allow",
    b"authorization",
    b"cache-control",
    b"content-disposition",
    b"content-encoding",
    b"content-language",
    b"content-length",
    b"content-location",
    b"content-range",
    b"content-type",
    b"cookie",
    b"date",
    b"etag",
    b"expect",
    b"expires",
    b"from",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"last-modified",
    b"link",
    b"location",
    b"max-forwards",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"range",
    b"referer",
    b"refresh",
    b"retry-after",
    b"server",
    b"set-cookie",
    b"strict-transport-security",
    b"transfer-encoding",
    b"user-agent",
    b"vary",
    b"via",
    b"www-authenticate",
];

/// Why a header block could not be followed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HpackError {
    /// The block ends inside a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer does not fit.
    #[error("HPACK integer overflow")]
    Overflow,
    /// Index 0 or past the end of the tables.
    #[error("HPACK index {0} out of range")]
    BadIndex(usize),
    /// A Huffman string that does not decode.
    #[error("invalid Huffman string")]
    Huffman,
    /// A table size update after the first field.
    #[error("dynamic table size update after a header field")]
    LateSizeUpdate,
}

/// One dynamic table entry as the server's decoder holds it.
#[derive(Debug, Clone)]
struct Entry {
    /// Whether the name is `:authority`.
    authority: bool,
    /// Whether this is an `:authority` whose value is still invalid.
    invalid: bool,
    /// Decoded length of the name.
    name_len: usize,
    /// Entry size: 32 + name length + value length (decoded octets).
    size: usize,
}

/// The mirrored dynamic table.
#[derive(Debug)]
struct Table {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
}

impl Table {
    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size,
                None => break,
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        if entry.size > self.max {
            // An entry bigger than the table empties it (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - entry.size);
        self.size += entry.size;
        self.entries.push_front(entry);
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    /// (is `:authority`, is an invalid `:authority`) of an index.
    fn lookup(&self, index: usize) -> Result<(bool, bool), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            // The static `:authority` has an empty value: invalid.
            1 => Ok((true, true)),
            2..=61 => Ok((false, false)),
            _ => self
                .entries
                .get(index - 62)
                .map(|e| (e.authority, e.invalid))
                .ok_or(HpackError::BadIndex(index)),
        }
    }
}

/// Whether `value` is an authority the server accepts (the same parse h2 does).
pub(crate) fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Follows a connection's client→server header blocks.
#[derive(Debug)]
pub(crate) struct BlockRewriter {
    table: Table,
}

impl Default for BlockRewriter {
    fn default() -> Self {
        Self {
            table: Table {
                entries: VecDeque::new(),
                size: 0,
                max: DEFAULT_TABLE_SIZE,
            },
        }
    }
}

/// A cursor over a header block.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = *self.data.get(self.pos).ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// An HPACK integer with an N-bit prefix (RFC 7541 §5.1).
    fn integer(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let mask = (1u16 << prefix) as u8 - 1;
        let mut value = (self.byte()? & mask) as usize;
        if value < mask as usize {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            let part = ((b & 0x7f) as usize)
                .checked_shl(shift)
                .filter(|_| shift < 28)
                .ok_or(HpackError::Overflow)?;
            value = value.checked_add(part).ok_or(HpackError::Overflow)?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// Steps over a string literal.
    fn skip_string(&mut self) -> Result<(), HpackError> {
        let len = self.integer(7)?;
        let end = self.pos.checked_add(len).ok_or(HpackError::Overflow)?;
        if end > self.data.len() {
            return Err(HpackError::Truncated);
        }
        self.pos = end;
        Ok(())
    }

    /// A string literal (RFC 7541 §5.2): its decoded octets.
    fn string(&mut self) -> Result<std::borrow::Cow<'a, [u8]>, HpackError> {
        let huffman = self.data.get(self.pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self.pos.checked_add(len).ok_or(HpackError::Overflow)?;
        let raw = self.data.get(self.pos..end).ok_or(HpackError::Truncated)?;
        self.pos = end;
        if huffman {
            HUFFMAN
                .with_borrow_mut(|d| d.decode(raw))
                .map(std::borrow::Cow::Owned)
                .map_err(|_| HpackError::Huffman)
        } else {
            Ok(std::borrow::Cow::Borrowed(raw))
        }
    }
}

thread_local! {
    /// The decoder builds its code tables when made: once per thread.
    static HUFFMAN: std::cell::RefCell<HuffmanDecoder> =
        std::cell::RefCell::new(HuffmanDecoder::new());
}

/// Appends an HPACK integer with an N-bit prefix and the given high bits.
fn put_integer(out: &mut Vec<u8>, value: usize, prefix: u8, high: u8) {
    let mask = ((1u16 << prefix) - 1) as usize;
    if value < mask {
        out.push(high | value as u8);
        return;
    }
    out.push(high | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends a plain (not Huffman) string literal.
fn put_string(out: &mut Vec<u8>, value: &[u8]) {
    put_integer(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// The lazily built rewritten block.
struct Output<'a> {
    block: &'a [u8],
    out: Option<Vec<u8>>,
    copied: usize,
}

impl Output<'_> {
    /// Replaces `block[start..end]` with the bytes `emit` appends.
    fn replace(&mut self, start: usize, end: usize, emit: impl FnOnce(&mut Vec<u8>)) {
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(self.block.len() + REPLACEMENT.len()));
        out.extend_from_slice(&self.block[self.copied..start]);
        emit(out);
        self.copied = end;
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(&self.block[self.copied..]);
        Some(out)
    }
}

impl BlockRewriter {
    /// Follows one complete header block. Returns the rewritten block when an
    /// invalid `:authority` was replaced, `None` when it passes unchanged.
    /// After an error the table is no longer known: stop rewriting.
    pub(crate) fn rewrite(&mut self, block: &[u8]) -> Result<Option<Vec<u8>>, HpackError> {
        let mut cur = Cursor {
            data: block,
            pos: 0,
        };
        let mut out = Output {
            block,
            out: None,
            copied: 0,
        };
        let mut seen_field = false;
        while cur.pos < block.len() {
            let start = cur.pos;
            let first = block[start];
            if first & 0x80 != 0 {
                // Indexed field.
                let index = cur.integer(7)?;
                let (_, invalid) = self.table.lookup(index)?;
                if invalid {
                    out.replace(start, cur.pos, |o| {
                        put_integer(o, 1, 4, 0x00);
                        put_string(o, REPLACEMENT);
                    });
                }
                seen_field = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if seen_field {
                    return Err(HpackError::LateSizeUpdate);
                }
                let max = cur.integer(5)?;
                self.table.set_max(max);
            } else {
                // Literal: with incremental indexing (01), without
                // indexing (0000) or never indexed (0001).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let index = cur.integer(prefix)?;
                let (authority, name_len) = if index == 0 {
                    let name = cur.string()?;
                    (name.as_ref() == b":authority", name.len())
                } else {
                    let (authority, _) = self.table.lookup(index)?;
                    (authority, self.name_len(index)?)
                };
                let name_end = cur.pos;
                if !authority && !indexing {
                    // Neither checked nor counted in the table: no decoding.
                    cur.skip_string()?;
                    seen_field = true;
                    continue;
                }
                let value = cur.string()?;
                let value_len = value.len();
                let mut stored_len = value_len;
                let mut invalid = false;
                if authority && !valid_authority(&value) {
                    let replacement = if indexing {
                        &REPLACEMENT[..value_len.min(REPLACEMENT.len())]
                    } else {
                        REPLACEMENT
                    };
                    if replacement.is_empty() {
                        // An empty value cannot shrink: leave it, and the
                        // entry stays invalid for later indexed uses.
                        invalid = true;
                    } else {
                        stored_len = replacement.len();
                        out.replace(start, cur.pos, |o| {
                            o.extend_from_slice(&block[start..name_end]);
                            put_string(o, replacement);
                        });
                    }
                }
                if indexing {
                    self.table.insert(Entry {
                        authority,
                        invalid,
                        name_len,
                        size: ENTRY_OVERHEAD + name_len + stored_len,
                    });
                }
                seen_field = true;
            }
        }
        Ok(out.finish())
    }

    fn name_len(&self, index: usize) -> Result<usize, HpackError> {
        match index {
            1..=61 => Ok(STATIC_NAMES[index - 1].len()),
            _ => self
                .table
                .entries
                .get(index.wrapping_sub(62))
                .map(|e| e.name_len)
                .ok_or(HpackError::BadIndex(index)),
        }
    }
}
