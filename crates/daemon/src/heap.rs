//! Returning freed heap to the system once the daemon goes quiet.
//!
//! glibc's malloc keeps what a burst of calls freed (an import, a pull, a
//! thousand-container list) in its arenas, so an idle daemon would keep the
//! resident size of its busiest moment. After every burst of gRPC calls,
//! once no call has started for `QUIET`, the trimmer asks malloc to give
//! free pages back (`malloc_trim`), which costs well under a millisecond on
//! a heap this size and nothing while calls keep coming.

// malloc_trim has no safe wrapper in nix or rustix.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tower::util::MapRequestLayer;

/// How long no call may start before the heap is trimmed.
pub(crate) const QUIET: Duration = Duration::from_millis(200);

/// Counts calls and trims the heap after each quiet spell.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeapTrimmer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    calls: AtomicU64,
    trims: AtomicU64,
    activity: Notify,
}

impl HeapTrimmer {
    /// A trimmer; nothing happens until [`HeapTrimmer::spawn`].
    pub(crate) fn new() -> HeapTrimmer {
        HeapTrimmer::default()
    }

    /// Notes that a call started.
    pub(crate) fn touch(&self) {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        self.shared.activity.notify_one();
    }

    /// Runs the trimming loop on the current tokio runtime until the
    /// returned task is aborted.
    pub(crate) fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut trimmed_at = 0;
            loop {
                shared.activity.notified().await;
                // Calls counted during the last wait leave a stale wake-up.
                if shared.calls.load(Ordering::Relaxed) == trimmed_at {
                    continue;
                }
                // Wait until a whole QUIET passes without a new call.
                loop {
                    trimmed_at = shared.calls.load(Ordering::Relaxed);
                    tokio::time::sleep(QUIET).await;
                    if shared.calls.load(Ordering::Relaxed) == trimmed_at {
                        break;
                    }
                }
                let released = trim();
                shared.trims.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(released, "heap trimmed");
            }
        })
    }

    /// How many times the heap was trimmed.
    #[cfg(test)]
    pub(crate) fn trims(&self) -> u64 {
        self.shared.trims.load(Ordering::Relaxed)
    }

    /// A tower layer that calls [`HeapTrimmer::touch`] for every request.
    pub(crate) fn layer<R>(&self) -> MapRequestLayer<impl Fn(R) -> R + Clone + use<R>> {
        let trimmer = self.clone();
        MapRequestLayer::new(move |req| {
            trimmer.touch();
            req
        })
    }
}

/// Arenas malloc may use; see [`limit_arenas`].
pub(crate) const ARENAS: i32 = 1;

/// Caps malloc's arenas at `ARENAS` (glibc otherwise makes up to eight
/// per core, one per thread that meets contention). Freed memory is
/// scattered over fewer arenas, so more of it comes back when trimmed.
/// Call before starting threads; an explicit `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` in the environment wins.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let set_by_user = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !set_by_user {
            // SAFETY: mallopt only changes a malloc parameter; no pointers.
            unsafe {
                nix::libc::mallopt(nix::libc::M_ARENA_MAX, ARENAS);
            }
        }
    }
}

/// Gives free heap pages back to the system; true when some were.
pub(crate) fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks malloc's own arenas, under their
        // locks; it takes no pointers from us.
        unsafe { nix::libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trims_once_after_each_burst() {
        let trimmer = HeapTrimmer::new();
        let task = trimmer.spawn();
        // A burst of calls closer together than QUIET: no trim yet.
        for _ in 0..8 {
            trimmer.touch();
            tokio::time::sleep(QUIET / 4).await;
        }
        assert_eq!(trimmer.trims(), 0);
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(trimmer.trims(), 1);
        // Idle: nothing more happens.
        tokio::time::sleep(QUIET * 10).await;
        assert_eq!(trimmer.trims(), 1);
        // The next burst gets its own trim.
        trimmer.touch();
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(trimmer.trims(), 2);
        task.abort();
    }
}
