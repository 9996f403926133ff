//! A reader that follows the tar stream's block structure and refuses
//! oversized extension headers before the tar parser buffers them.
//!
//! The `tar` crate reads PAX records and GNU long names whole into memory
//! and merges them into the next entry, so an applier never sees their
//! size; containerd's Go reader refuses them above 1 MiB. This guard reads
//! each 512-byte header as it streams past and fails the read when an
//! extension header's size is over the limit.

use std::io::{self, Read};

/// Tar's block size.
const BLOCK: usize = 512;
/// The same, for sizes.
const BLOCK_U64: u64 = 512;

/// Where in the stream the guard is.
#[derive(Debug)]
enum State {
    /// Collecting a header block (this many bytes of it so far).
    Header(usize),
    /// Inside an entry's data (and padding): this many bytes left.
    Data(u64),
    /// Collecting a GNU sparse extension block (this many bytes so far).
    Sparse(usize),
}

/// Wraps a tar stream; see the module docs.
#[derive(Debug)]
pub(crate) struct HeaderGuard<R> {
    inner: R,
    limit: u64,
    state: State,
    block: [u8; BLOCK],
    /// Data (padded) of a sparse entry, which follows its extension blocks.
    sparse_data: u64,
}

impl<R: Read> HeaderGuard<R> {
    /// Guards `inner`, refusing extension headers over `limit` bytes.
    pub(crate) fn new(inner: R, limit: u64) -> HeaderGuard<R> {
        HeaderGuard {
            inner,
            limit,
            state: State::Header(0),
            block: [0; BLOCK],
            sparse_data: 0,
        }
    }

    /// Moves past `n` bytes just read from the stream (`data` holds them).
    fn advance(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Data(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[usize::try_from(n).unwrap_or(data.len())..];
                    self.state = if left == n {
                        State::Header(0)
                    } else {
                        State::Data(left - n)
                    };
                }
                State::Header(have) | State::Sparse(have) => {
                    let n = (BLOCK - have).min(data.len());
                    self.block[have..have + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    let have = have + n;
                    let sparse = matches!(self.state, State::Sparse(_));
                    self.state = if sparse {
                        State::Sparse(have)
                    } else {
                        State::Header(have)
                    };
                    if have == BLOCK {
                        self.state = if sparse {
                            self.after_sparse_block()
                        } else {
                            self.after_header()?
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a complete header block.
    fn after_header(&mut self) -> io::Result<State> {
        let b = &self.block;
        if b.iter().all(|x| *x == 0) {
            return Ok(State::Header(0)); // end-of-archive blocks
        }
        let size = parse_size(&b[124..136]);
        let kind = b[156];
        // x: PAX local, g: PAX global, L/K: GNU long name / link name.
        if matches!(kind, b'x' | b'g' | b'L' | b'K') && size > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "extended header of {size} bytes is over the {}-byte limit",
                    self.limit
                ),
            ));
        }
        // A size near u64::MAX (base-256 field) cannot be padded: no stream
        // that long exists, so it is corrupt rather than something to skip.
        let padded = size
            .div_ceil(BLOCK_U64)
            .checked_mul(BLOCK_U64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar entry size {size} is impossibly large"),
                )
            })?;
        // GNU sparse entries may be followed by extension blocks.
        if kind == b'S' && b[482] != 0 {
            self.sparse_data = padded;
            return Ok(State::Sparse(0));
        }
        Ok(if padded == 0 {
            State::Header(0)
        } else {
            State::Data(padded)
        })
    }

    /// The state after a GNU sparse extension block.
    fn after_sparse_block(&self) -> State {
        if self.block[504] != 0 {
            return State::Sparse(0);
        }
        if self.sparse_data == 0 {
            State::Header(0)
        } else {
            State::Data(self.sparse_data)
        }
    }
}

/// A tar numeric field: octal text, or base-256 when the high bit is set.
fn parse_size(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return field[1..].iter().fold(0_u64, |n, b| {
            n.saturating_mul(256).saturating_add(u64::from(*b))
        });
    }
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .fold(0_u64, |n, b| {
            n.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0"), 1000);
        assert_eq!(parse_size(b"  1750 \0\0\0\0\0"), 1000);
        let mut big = [0_u8; 12];
        big[0] = 0x80;
        big[11] = 2;
        big[10] = 1;
        assert_eq!(parse_size(&big), 258);
    }

    #[test]
    fn ordinary_entries_pass_and_big_long_names_do_not() {
        let mut ok = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(600);
        h.set_mode(0o644);
        ok.append_data(&mut h, "a/".repeat(200) + "f", &[1_u8; 600][..])
            .unwrap();
        let bytes = ok.into_inner().unwrap();
        let mut out = Vec::new();
        HeaderGuard::new(&bytes[..], 1 << 20)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, bytes);
        // The same archive with a limit below its long name's size.
        let err = HeaderGuard::new(&bytes[..], 100)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("over the 100-byte limit"), "{err}");
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_overflow() {
        // A header whose base-256 size field is all ones (found by fuzzing).
        let mut block = [0_u8; 512];
        block[..4].copy_from_slice(b"file");
        block[124] = 0x80;
        block[125..136].fill(0xff);
        block[156] = b'0';
        let err = HeaderGuard::new(&block[..], 1 << 20)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("impossibly large"), "{err}");
    }
}
