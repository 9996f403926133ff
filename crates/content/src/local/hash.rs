//! The writer's running digest, hashed on a helper thread for large blobs.
//!
//! Hashing is the slowest part of an ingest (about 2 GB/s with SHA-NI; far
//! less without), slower than copying into the page cache. For small blobs
//! the writer hashes inline. Once a blob grows past [`PIPELINE_AFTER`] (or
//! from the start, if its announced total is that large), the hasher moves
//! to its own thread: `write` copies each chunk into a recycled
//! buffer and queues it (a memcpy), then writes the file while the helper
//! hashes, so the two overlap on two cores. The bounded queue keeps a fast
//! producer at most [`QUEUE`] buffers ahead of the hash.

use std::cell::RefCell;
use std::mem;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use crate::digest::{Algorithm, Digest, Digester};

/// Bytes hashed inline before the helper thread starts.
pub(super) const PIPELINE_AFTER: u64 = 2 << 20;
/// Size of the buffers handed to the helper.
const BUF: usize = 256 << 10;
/// Buffers in flight to the helper, at most.
const QUEUE: usize = 8;

/// A running digest, inline or on a helper thread.
#[derive(Debug)]
pub(super) struct RunningHash {
    state: State,
    /// Bytes fed so far.
    fed: u64,
}

#[derive(Debug)]
enum State {
    Inline(Digester),
    Piped(Pipeline),
}

impl RunningHash {
    /// A running hash that has already been fed `fed` bytes into `digester`.
    pub(super) fn new(digester: Digester, fed: u64) -> RunningHash {
        RunningHash {
            state: State::Inline(digester),
            fed,
        }
    }

    /// Moves the hashing to a helper thread now, if it is not there yet
    /// (if no thread can be had, it stays inline).
    pub(super) fn pipeline(&mut self) {
        if let State::Inline(d) = &self.state {
            // A copy goes to the thread (a few hundred bytes), so a failed
            // spawn loses nothing.
            if let Some(p) = Pipeline::start(d.clone()) {
                self.state = State::Piped(p);
            }
        }
    }

    /// Feeds `data`.
    pub(super) fn update(&mut self, data: &[u8]) {
        self.fed += data.len() as u64;
        if self.fed >= PIPELINE_AFTER {
            self.pipeline();
        }
        match &mut self.state {
            State::Inline(d) => d.update(data),
            State::Piped(p) => p.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub(super) fn digest(&self) -> Digest {
        match &self.state {
            State::Inline(d) => d.digest(),
            State::Piped(p) => p.snapshot().digest(),
        }
    }

    /// The algorithm being computed.
    pub(super) fn algorithm(&self) -> Algorithm {
        match &self.state {
            State::Inline(d) => d.algorithm(),
            State::Piped(p) => p.algorithm,
        }
    }

    /// Starts over from nothing, with the same algorithm.
    pub(super) fn reset(&mut self) {
        *self = RunningHash::new(self.algorithm().digester(), 0);
    }
}

/// The helper thread and the buffers travelling to and from it.
#[derive(Debug)]
struct Pipeline {
    algorithm: Algorithm,
    /// Chunks to hash, or a request for a copy of the state.
    to_helper: Option<SyncSender<Msg>>,
    /// Emptied buffers coming back for reuse.
    free: Receiver<Vec<u8>>,
    /// Bytes fed but not yet sent (less than a buffer). In a cell so that
    /// `snapshot`, which has only `&self`, can send them along.
    pending: RefCell<Vec<u8>>,
    helper: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Msg {
    Data(Vec<u8>),
    Snapshot(SyncSender<Digester>),
}

impl Pipeline {
    /// Starts the helper thread with `digester`; `None` if no thread can be
    /// spawned.
    fn start(digester: Digester) -> Option<Pipeline> {
        let algorithm = digester.algorithm();
        let (to_helper, inbox) = mpsc::sync_channel::<Msg>(QUEUE);
        let (give_back, free) = mpsc::sync_channel::<Vec<u8>>(QUEUE + 1);
        let spawned = thread::Builder::new()
            .name("berth-content-hash".into())
            .spawn(move || helper(digester, inbox, give_back));
        match spawned {
            Ok(helper) => Some(Pipeline {
                algorithm,
                to_helper: Some(to_helper),
                free,
                pending: RefCell::new(Vec::with_capacity(BUF)),
                helper: Some(helper),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a hashing thread, hashing inline");
                None
            }
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let pending = self.pending.get_mut();
            let room = BUF - pending.len();
            let (now, later) = data.split_at(room.min(data.len()));
            pending.extend_from_slice(now);
            data = later;
            if pending.len() == BUF {
                self.send_pending();
            }
        }
    }

    /// Hands the pending bytes to the helper, taking a fresh buffer.
    fn send_pending(&self) {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF));
        let full = mem::replace(&mut *self.pending.borrow_mut(), next);
        self.send(Msg::Data(full));
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.to_helper {
            // The helper only stops when `to_helper` is dropped, or by
            // panicking; then `snapshot` reports it.
            let _ = tx.send(msg);
        }
    }

    /// A copy of the digester after everything fed so far.
    fn snapshot(&self) -> Digester {
        // Send the pending bytes rather than hash them into the copy here:
        // callers that ask for the digest after every small write (the
        // content API's Write does) would otherwise hash them again and again.
        if !self.pending.borrow().is_empty() {
            self.send_pending();
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Msg::Snapshot(reply));
        let Ok(d) = answer.recv() else {
            // Only reachable if the helper panicked, which hashing does not.
            panic!("content hashing thread died");
        };
        d
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the queue ends the helper once it has drained it.
        drop(self.to_helper.take());
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

fn helper(mut digester: Digester, inbox: Receiver<Msg>, give_back: SyncSender<Vec<u8>>) {
    for msg in inbox {
        match msg {
            Msg::Data(mut buf) => {
                digester.update(&buf);
                buf.clear();
                // The writer may be gone or have enough spares: then drop it.
                let _ = give_back.try_send(buf);
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(digester.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect()
    }

    #[test]
    fn piped_digest_equals_inline_digest() {
        let data = bytes(usize::try_from(PIPELINE_AFTER).unwrap() + 5 * BUF + 12345);
        for alg in Algorithm::ALL {
            let mut h = RunningHash::new(alg.digester(), 0);
            // Odd-sized pieces, crossing buffer and pipeline boundaries.
            for piece in data.chunks(300_007) {
                h.update(piece);
            }
            assert!(matches!(h.state, State::Piped(_)));
            assert_eq!(h.digest(), alg.digest(&data));
            // Still running after a digest.
            h.update(b"more");
            let mut all = data.clone();
            all.extend_from_slice(b"more");
            assert_eq!(h.digest(), alg.digest(&all));
            h.reset();
            assert_eq!(h.digest(), alg.digest(b""));
            assert_eq!(h.algorithm(), alg);
        }
    }

    #[test]
    fn digest_after_every_small_write() {
        // The content API's pattern: a digest in every Write response.
        let data = bytes(usize::try_from(PIPELINE_AFTER).unwrap() + BUF);
        let mut h = RunningHash::new(Algorithm::Sha256.digester(), 0);
        let mut done = 0;
        for piece in data.chunks(32 << 10) {
            h.update(piece);
            done += piece.len();
            if done % (512 << 10) == 0 || done == data.len() {
                assert_eq!(h.digest(), Digest::of(&data[..done]));
            }
        }
        assert!(matches!(h.state, State::Piped(_)));
    }

    #[test]
    fn small_blobs_hash_inline() {
        let mut h = RunningHash::new(Algorithm::Sha256.digester(), 0);
        h.update(&bytes(1000));
        assert!(matches!(h.state, State::Inline(_)));
        assert_eq!(h.digest(), Digest::of(&bytes(1000)));
    }

    #[test]
    fn resumed_hash_counts_what_it_was_fed_before() {
        let data = bytes(usize::try_from(PIPELINE_AFTER).unwrap() + 3 * BUF);
        let (head, tail) = data.split_at(data.len() / 2);
        let mut d = Algorithm::Sha256.digester();
        d.update(head);
        let mut h = RunningHash::new(d, head.len() as u64);
        h.update(tail);
        assert!(matches!(h.state, State::Piped(_)));
        assert_eq!(h.digest(), Digest::of(&data));
    }
}
