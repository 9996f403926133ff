//! The idle timer of a streaming connection: closed after a stretch with no
//! frames either way (containerd's `stream_idle_timeout`, 4 hours by
//! default), so a client that vanished does not pin a session forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When the connection last carried a frame.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    timeout: Duration,
}

impl Activity {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            timeout,
        }
    }

    /// Records a frame sent or received.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn deadline(&self) -> Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start + last + self.timeout
    }

    /// Resolves once `timeout` has passed without a frame.
    pub(crate) async fn expired(&self) {
        loop {
            let deadline = self.deadline();
            tokio::time::sleep_until(deadline).await;
            // Frames moved the deadline while we slept: sleep on.
            if self.deadline() <= Instant::now() {
                return;
            }
        }
    }
}
