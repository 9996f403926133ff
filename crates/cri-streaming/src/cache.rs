//! One-time tokens for streaming requests, as kubelet's `request_cache.go`:
//! each URL handed out carries a random token that is good for one
//! connection and expires after a TTL; at most a fixed number are
//! outstanding.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::{AttachRequest, Error, ExecRequest, PortForwardRequest};

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

#[derive(Debug)]
struct Entry {
    token: String,
    request: Cached,
    expires: Instant,
}

/// The outstanding tokens, oldest first.
#[derive(Debug)]
pub(crate) struct RequestCache {
    entries: Mutex<VecDeque<Entry>>,
    ttl: Duration,
    max: usize,
}

impl RequestCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            ttl,
            max,
        }
    }

    /// Stores `request` under a fresh token and returns the token.
    pub(crate) fn insert(&self, request: Cached) -> Result<String, Error> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        while entries.front().is_some_and(|e| e.expires <= now) {
            entries.pop_front();
        }
        if entries.len() >= self.max {
            return Err(Error::TooManyRequests(self.max));
        }
        // 16 random bytes from a v4 UUID, URL-safe: unguessable, fits a path.
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        entries.push_back(Entry {
            token: token.clone(),
            request,
            expires: now + self.ttl,
        });
        Ok(token)
    }

    /// Takes the request stored under `token`, if it is there and fresh.
    pub(crate) fn consume(&self, token: &str) -> Option<Cached> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let i = entries.iter().position(|e| e.token == token)?;
        let entry = entries.remove(i)?;
        (entry.expires > Instant::now()).then_some(entry.request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_bounded_and_expire() {
        let cache = RequestCache::new(Duration::from_secs(60), 2);
        let a = cache
            .insert(Cached::Exec(ExecRequest::default()))
            .expect("insert");
        let _b = cache
            .insert(Cached::Exec(ExecRequest::default()))
            .expect("insert");
        assert!(matches!(
            cache.insert(Cached::Exec(ExecRequest::default())),
            Err(Error::TooManyRequests(2))
        ));
        assert!(cache.consume(&a).is_some());
        assert!(cache.consume(&a).is_none(), "a token is good once");
        assert!(cache.consume("nonsense").is_none());

        let expired = RequestCache::new(Duration::ZERO, 1);
        let t = expired
            .insert(Cached::Exec(ExecRequest::default()))
            .expect("insert");
        assert!(
            expired.consume(&t).is_none(),
            "a token past its TTL is refused"
        );
        expired
            .insert(Cached::Exec(ExecRequest::default()))
            .expect("expired entries make room");
    }
}
