//! The HPACK rewriter against an independent decoder (loona-hpack), and
//! the filter in front of h2's own server with hand-built frames.

// Wire encoding: every narrowing cast is of a value already masked or
// shifted down to the octet (or field) it fills.
#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::AuthorityFilter;
use super::hpack::{BlockRewriter, STATIC_NAMES, valid_authority};

const ENCODED: &[u8] = b"%2Frun%2Fberth%2Fberthd.sock";

/// HPACK integer with an N-bit prefix.
fn int(value: usize, prefix: u8, high: u8) -> Vec<u8> {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        return vec![high | value as u8];
    }
    let mut out = vec![high | mask as u8];
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
    out
}

/// A plain string literal.
fn raw(s: &[u8]) -> Vec<u8> {
    let mut out = int(s.len(), 7, 0);
    out.extend_from_slice(s);
    out
}

/// The Huffman code of one octet, found through the independent decoder:
/// the bit string that, followed by the code of `0` (00000, RFC 7541
/// Appendix B) and padding, decodes to exactly `[c, b'0']`.
fn code_of(c: u8) -> (u32, u32) {
    for bits in 5..=30u32 {
        for code in 0..(1u64 << bits) {
            let pad = (8 - (bits + 5) % 8) % 8;
            let total = bits + 5 + pad;
            let word = (code << (5 + pad)) | ((1u64 << pad) - 1);
            let bytes: Vec<u8> = (0..total / 8)
                .rev()
                .map(|i| (word >> (i * 8)) as u8)
                .collect();
            if loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&bytes)
                .is_ok_and(|d| d == [c, b'0'])
            {
                return (code as u32, bits);
            }
        }
    }
    panic!("no code for {c}");
}

/// A Huffman-coded string literal.
fn huff(s: &[u8]) -> Vec<u8> {
    let (mut acc, mut n, mut bytes) = (0u64, 0u32, Vec::new());
    for &c in s {
        let (code, bits) = code_of(c);
        acc = (acc << bits) | code as u64;
        n += bits;
        while n >= 8 {
            bytes.push((acc >> (n - 8)) as u8);
            n -= 8;
        }
    }
    if n > 0 {
        bytes.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) as u8);
    }
    let mut out = int(bytes.len(), 7, 0x80);
    out.extend_from_slice(&bytes);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Runs blocks through a rewriter; checks each rewritten block decodes (in
/// one continuous decoder) to the original's headers with every invalid
/// `:authority` replaced by a valid one, the rest equal. Returns the
/// rewritten blocks' headers.
fn check(blocks: &[Vec<u8>]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut rw = BlockRewriter::default();
    let (mut client, mut server) = (Decoder::new(), Decoder::new());
    let mut all = Vec::new();
    for block in blocks {
        let out = rw.rewrite(block).expect("rewrite");
        let sent = out.as_deref().unwrap_or(block);
        let want = client.decode(block).expect("original decodes");
        let got = server.decode(sent).expect("rewritten decodes");
        assert_eq!(want.len(), got.len());
        let mut changed = false;
        for ((wn, wv), (gn, gv)) in want.iter().zip(&got) {
            assert_eq!(wn, gn);
            if wn == b":authority" && !valid_authority(wv) {
                assert!(valid_authority(gv), "{gv:?}");
                assert!(b"localhost".starts_with(gv), "{gv:?}");
                changed = true;
            } else {
                assert_eq!(wv, gv);
            }
        }
        // A block may reuse an entry fixed earlier without a rewrite of its
        // own; a rewritten block always changed something.
        assert!(changed || out.is_none(), "rewritten only when needed");
        all.push(got);
    }
    all
}

fn authority(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    headers
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[test]
fn static_names_match_an_independent_table() {
    for (i, name) in STATIC_NAMES.iter().enumerate() {
        let got = Decoder::new().decode(&[0x80 | (i as u8 + 1)]).unwrap();
        assert_eq!(got[0].0, *name, "static index {}", i + 1);
    }
}

#[test]
fn huffman_helper_agrees_with_the_rfc_example() {
    // RFC 7541 C.4.1: "www.example.com".
    assert_eq!(
        huff(b"www.example.com"),
        [
            0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff
        ]
    );
}

#[test]
fn valid_authorities_pass_unchanged() {
    // RFC 7541 C.4.1 then C.4.2: indexed, Huffman, incremental indexing.
    let first = cat(&[&[0x82, 0x86, 0x84, 0x41], &huff(b"www.example.com")]);
    let second = cat(&[&[0x82, 0x86, 0x84, 0xbe, 0x58], &huff(b"no-cache")]);
    let got = check(&[first, second]);
    assert_eq!(authority(&got[1]), b"www.example.com");
}

#[test]
fn literal_without_indexing_is_replaced() {
    for (first, value) in [(0x01, raw(ENCODED)), (0x11, huff(ENCODED))] {
        let block = cat(&[
            &[0x83, 0x86, 0x84, first],
            &value,
            &[0x40],
            &raw(b"te"),
            &raw(b"trailers"),
        ]);
        let got = check(&[block]);
        assert_eq!(authority(&got[0]), b"localhost");
    }
    // Literal name, never indexed.
    let block = cat(&[
        &[0x83, 0x86, 0x84, 0x10],
        &huff(b":authority"),
        &raw(b"a b"),
    ]);
    check(&[block]);
}

#[test]
fn incremental_indexing_keeps_the_tables_in_step() {
    // The invalid authority is inserted (literal name, Huffman value), then
    // used by index in later blocks alongside other inserted entries.
    let first = cat(&[
        &[0x83, 0x86, 0x84, 0x40],
        &huff(b":authority"),
        &huff(ENCODED),
        &[0x40],
        &raw(b"x-a"),
        &raw(b"1"),
    ]);
    // Now 62 = x-a, 63 = :authority.
    let second = cat(&[
        &[0x83, 0x86, 0x84, 0xbf, 0xbe, 0x40],
        &raw(b"x-b"),
        &raw(b"2"),
    ]);
    let third = cat(&[&[0x83, 0x86, 0x84, 0xc0, 0xbf, 0xbe]]);
    let got = check(&[first, second, third]);
    assert_eq!(authority(&got[1]), b"localhost");
    assert_eq!(authority(&got[2]), b"localhost");
}

#[test]
fn short_invalid_values_shrink_so_evictions_never_differ() {
    // A 100-byte table holds two 34..42-byte entries. The client's "%" and
    // "%%%" become "l" and "loc": never longer, so whatever the client still
    // indexes the server still has at the same index.
    let mut blocks = vec![int(100, 5, 0x20)];
    blocks[0].extend(cat(&[&[0x41], &raw(b"%")]));
    blocks.push(cat(&[&[0x40], &raw(b"x"), &raw(b"12345"), &[0xbf]]));
    blocks.push(cat(&[&[0x41], &huff(b"%%%"), &[0xbe, 0xbf]]));
    blocks.push(cat(&[&[0x40], &raw(b"y"), &raw(b"1"), &[0xbe, 0xbf]]));
    let got = check(&blocks);
    assert_eq!(authority(&got[0]), b"l");
    assert_eq!(authority(&got[2]), b"loc");
}

#[test]
fn shorter_replacements_evict_later_without_shifting_indexes() {
    // Table of 120: the client's authority entry is 70 bytes, the server's
    // 51. Inserting y evicts it on the client's side only; the indexes the
    // client still uses (62 = y, 63 = x) name the same entries on both.
    let mut first = int(120, 5, 0x20);
    first.extend(cat(&[
        &[0x41],
        &huff(ENCODED),
        &[0x40],
        &raw(b"x"),
        &raw(b"1"),
    ]));
    let second = cat(&[&[0x40], &raw(b"y"), &raw(b"12"), &[0xbe, 0xbf]]);
    let third = cat(&[&[0xbe, 0xbf, 0x41], &raw(b"%2Fz")]);
    let got = check(&[first, second, third]);
    assert_eq!(authority(&got[0]), b"localhost");
    assert_eq!(authority(&got[2]), b"loca");
}

#[test]
fn indexed_static_authority_becomes_a_literal() {
    // Index 1 is `:authority` with an empty value, which h2 rejects.
    let got = check(&[vec![0x83, 0x86, 0x84, 0x81]]);
    assert_eq!(authority(&got[0]), b"localhost");
}

#[test]
fn blocks_from_a_real_encoder_round_trip() {
    let mut enc = Encoder::new();
    let mut blocks = Vec::new();
    for i in 0..50 {
        let ns = format!("ns-{}", i % 7);
        let auth: &[u8] = if i % 3 == 0 { b"localhost" } else { ENCODED };
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/containerd.services.version.v1.Version/Version"),
            (b":authority", auth),
            (b"content-type", b"application/grpc"),
            (b"containerd-namespace", ns.as_bytes()),
            (b"te", b"trailers"),
        ];
        blocks.push(enc.encode(headers));
    }
    check(&blocks);
}

#[test]
fn malformed_blocks_are_errors() {
    let mut rw = BlockRewriter::default();
    assert!(rw.rewrite(&[0x80]).is_err());
    assert!(rw.rewrite(&[0xbe]).is_err());
    assert!(rw.rewrite(&[0x01, 0x05, b'a']).is_err());
    assert!(BlockRewriter::default().rewrite(&[0x82, 0x20]).is_err());
}

// ---- the filter in front of h2's server ----

/// A connection that hands out `data` at most `chunk` bytes per read, then
/// stays open; writes are discarded.
struct Script {
    data: VecDeque<u8>,
    chunk: usize,
}

impl AsyncRead for Script {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Pending;
        }
        let n = this.chunk.min(this.data.len()).min(buf.remaining());
        let bytes: Vec<u8> = this.data.drain(..n).collect();
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Preface and empty SETTINGS.
fn opening() -> Vec<u8> {
    cat(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &frame(0x4, 0, 0, &[])])
}

/// `(authority, path)` of the first `n` requests h2's server accepts.
fn serve(bytes: Vec<u8>, chunk: usize, n: usize) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let io = AuthorityFilter::new(Script {
            data: bytes.into(),
            chunk,
        });
        let mut conn = h2::server::handshake(io).await.expect("handshake");
        let mut out = Vec::new();
        for _ in 0..n {
            let accepted =
                tokio::time::timeout(std::time::Duration::from_secs(10), conn.accept()).await;
            let (req, _respond) = accepted
                .expect("a request in time")
                .expect("a request")
                .expect("accepted");
            out.push((
                req.uri()
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                req.uri().path().to_string(),
            ));
        }
        out
    })
}

/// A gRPC request block for `path` with the given `:authority` representation.
fn request(path: &[u8], authority: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x83, 0x86, 0x04],
        &raw(path),
        authority,
        &[0x5f],
        &raw(b"application/grpc"),
    ])
}

#[test]
fn h2_accepts_rewritten_requests_in_any_framing() {
    let auth_indexed = cat(&[&[0x41], &huff(ENCODED)]);
    let mut bytes = opening();
    // 1: plain HEADERS, the authority inserted into the table.
    bytes.extend(frame(0x1, 0x5, 1, &request(b"/a", &auth_indexed)));
    // 2: PADDED and PRIORITY, the authority by index (62 after block 1 ...
    // content-type inserted second, so the authority is 63).
    let mut payload = vec![3, 0, 0, 0, 0, 15];
    payload.extend(request(b"/b", &[0xbf]));
    payload.extend([0, 0, 0]);
    bytes.extend(frame(0x1, 0x5 | 0x8 | 0x20, 3, &payload));
    // 3: split over HEADERS and two CONTINUATIONs, Huffman, never indexed.
    let block = request(b"/c", &cat(&[&[0x11], &huff(b"%2Fx")]));
    let (a, rest) = block.split_at(3);
    let (b, c) = rest.split_at(4);
    bytes.extend(frame(0x1, 0x1, 5, a));
    bytes.extend(frame(0x9, 0, 5, b));
    bytes.extend(frame(0x9, 0x4, 5, c));
    // A DATA frame on its own stream in between, and a valid authority.
    bytes.extend(frame(
        0x1,
        0x4,
        7,
        &request(b"/d", &cat(&[&[0x01], &raw(b"example:80")])),
    ));
    bytes.extend(frame(0x0, 0x1, 7, b"\0\0\0\0\0"));
    // Every request inserts content-type: the authority is now at 66.
    bytes.extend(frame(0x1, 0x5, 9, &request(b"/e", &[0x80 | 66])));
    let want: Vec<(String, String)> = [
        ("localhost", "/a"),
        ("localhost", "/b"),
        ("localhost", "/c"),
        ("example:80", "/d"),
        ("localhost", "/e"),
    ]
    .iter()
    .map(|(a, p)| (a.to_string(), p.to_string()))
    .collect();
    for chunk in [1, 2, 7, 64, 1 << 20] {
        assert_eq!(
            serve(bytes.clone(), chunk, 5),
            want,
            "reads of {chunk} bytes"
        );
    }
}

#[test]
fn without_the_filter_h2_rejects_the_encoded_path() {
    // Proves the scenario: the same request straight into h2 is reset.
    let mut bytes = opening();
    bytes.extend(frame(
        0x1,
        0x5,
        1,
        &request(b"/a", &cat(&[&[0x41], &huff(ENCODED)])),
    ));
    bytes.extend(frame(
        0x1,
        0x5,
        3,
        &request(b"/b", &cat(&[&[0x01], &raw(b"localhost")])),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(async move {
        let mut conn = h2::server::handshake(Script {
            data: bytes.into(),
            chunk: 1 << 20,
        })
        .await
        .expect("handshake");
        let accepted =
            tokio::time::timeout(std::time::Duration::from_secs(10), conn.accept()).await;
        let (req, _r) = accepted
            .expect("a request in time")
            .expect("a request")
            .expect("accepted");
        req.uri().path().to_string()
    });
    // Stream 1 was reset; the first request h2 hands out is stream 3.
    assert_eq!(
        first, "/b",
        "h2 delivered the stream with the invalid authority"
    );
}
