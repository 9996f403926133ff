//! When to collect: containerd's GC scheduler (`io.containerd.gc.v1.scheduler`).
//!
//! The metadata DB reports every committed write with whether a deletion
//! happened since the last collection began (its dirty flag). The scheduler
//! counts those reports and collects:
//! - once, `startup_delay` after start;
//! - at the next periodic tick after a deletion (ticks are spaced so that
//!   collections take at most `pause_threshold` of real time), or after
//!   `mutation_threshold` writes;
//! - `schedule_delay` after a deletion when nothing is scheduled yet (no
//!   startup collection) or `deletion_threshold` deletions were counted;
//! - `schedule_delay` after a caller asks and waits (`sync` deletions).
//!
//! A write that deletes nothing after a collection schedules nothing: an
//! object no lease holds (`ctr snapshots view`, content ingested without a
//! lease) stays until the next deletion's collection, as in containerd.
//!
//! One difference: containerd stops writers during a collection; berth's
//! collection lets them run, so reports made while it runs count for the
//! next one (containerd ignores reports older than the end of the last
//! collection; berth, older than its start).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// `[plugins."io.containerd.gc.v1.scheduler"]`, with containerd's names,
/// types and defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SchedulerConfig {
    /// Largest share of real time that scheduled collections may take
    /// (0.02: 2%); clamped to 0..=0.5. 0 keeps the tick at one second.
    pub pause_threshold: f64,
    /// Deletions that schedule a collection `schedule_delay` later; 0: off.
    pub deletion_threshold: i64,
    /// Writes after which the next tick collects even without a deletion; 0: off.
    pub mutation_threshold: i64,
    /// Delay of a collection scheduled by a request or a threshold.
    pub schedule_delay: Duration,
    /// Delay of the first collection after start; 0: none.
    pub startup_delay: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay: Duration::from_millis(100),
        }
    }
}

/// A bad value in the scheduler's config section.
#[derive(Debug, thiserror::Error)]
#[error("[plugins.\"io.containerd.gc.v1.scheduler\"] {key}: {message}")]
pub(crate) struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl SchedulerConfig {
    /// Reads the plugin's section (missing keys keep their defaults).
    pub(crate) fn from_section(
        section: Option<&toml::Table>,
    ) -> Result<SchedulerConfig, ConfigError> {
        let mut c = SchedulerConfig::default();
        let Some(section) = section else {
            return Ok(c);
        };
        let bad = |key: &str, message: String| ConfigError {
            key: key.to_string(),
            message,
        };
        for (key, value) in section {
            match key.as_str() {
                "pause_threshold" => {
                    c.pause_threshold = match value {
                        toml::Value::Float(f) => *f,
                        toml::Value::Integer(i) => *i as f64,
                        v => return Err(bad(key, format!("want a number, got {v}"))),
                    }
                }
                "deletion_threshold" | "mutation_threshold" => {
                    let n = value
                        .as_integer()
                        .ok_or_else(|| bad(key, format!("want an integer, got {value}")))?;
                    if key == "deletion_threshold" {
                        c.deletion_threshold = n;
                    } else {
                        c.mutation_threshold = n;
                    }
                }
                "schedule_delay" | "startup_delay" => {
                    let text = value.as_str().ok_or_else(|| {
                        bad(
                            key,
                            format!("want a duration string like \"100ms\", got {value}"),
                        )
                    })?;
                    let d = parse_go_duration(text).map_err(|m| bad(key, m))?;
                    if key == "schedule_delay" {
                        c.schedule_delay = d;
                    } else {
                        c.startup_delay = d;
                    }
                }
                other => {
                    tracing::warn!(key = other, "unknown gc scheduler setting ignored");
                }
            }
        }
        Ok(c.clamped())
    }

    /// containerd's bounds: pause threshold 0..=0.5, thresholds >= 0.
    fn clamped(mut self) -> SchedulerConfig {
        self.pause_threshold = self.pause_threshold.clamp(0.0, 0.5);
        if self.pause_threshold.is_nan() {
            self.pause_threshold = 0.0;
        }
        self.mutation_threshold = self.mutation_threshold.max(0);
        self
    }
}

/// Parses a Go `time.ParseDuration` string: a sequence of decimal numbers
/// with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` (`"0"` alone is allowed).
/// Negative durations (valid in Go, clamped to 0 by containerd) give 0.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (want e.g. \"100ms\", \"1.5s\", \"2m\")");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * nanos_per;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Duration::try_from_secs_f64(total / 1e9).map_err(|_| invalid())
}

/// One collection under way: its pause and its report, or why it failed.
pub(crate) type Collecting<'a, R> =
    Pin<Box<dyn Future<Output = Result<(Duration, R), String>> + Send + 'a>>;

/// What the scheduler runs: one collection, returning how long its
/// metadata phase paused the store (for the pause threshold) and a report.
pub(crate) trait Collect<R>: Send + Sync + 'static {
    /// Runs one collection.
    fn collect(&self) -> Collecting<'_, R>;
}

struct Event {
    at: Instant,
    /// A write (else a request to collect).
    mutation: bool,
    /// A deletion happened since the last collection began.
    dirty: bool,
}

type Waiter<R> = oneshot::Sender<Result<R, String>>;

/// Handle to a running scheduler; cheap to clone.
pub(crate) struct Scheduler<R> {
    events: mpsc::UnboundedSender<Event>,
    waiters: Arc<Mutex<Vec<Waiter<R>>>>,
}

impl<R> std::fmt::Debug for Scheduler<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scheduler")
    }
}

impl<R> Clone for Scheduler<R> {
    fn clone(&self) -> Scheduler<R> {
        Scheduler {
            events: self.events.clone(),
            waiters: self.waiters.clone(),
        }
    }
}

impl<R: Clone + Send + 'static> Scheduler<R> {
    /// Starts the scheduler's task (inside a tokio runtime). It ends when
    /// every handle is dropped.
    pub(crate) fn spawn(config: SchedulerConfig, collector: impl Collect<R>) -> Scheduler<R> {
        let (events, rx) = mpsc::unbounded_channel();
        let waiters: Arc<Mutex<Vec<Waiter<R>>>> = Arc::default();
        tokio::spawn(run(config.clamped(), collector, rx, waiters.clone()));
        Scheduler { events, waiters }
    }

    /// Reports a committed write; `dirty`: a deletion happened since the
    /// last collection began. Called from the DB's mutation callback.
    pub(crate) fn mutated(&self, dirty: bool) {
        let _ = self.events.send(Event {
            at: Instant::now(),
            mutation: true,
            dirty,
        });
    }

    /// Asks for a collection `schedule_delay` from now and waits for one
    /// that begins after this call (containerd's `ScheduleAndWait`).
    pub(crate) async fn schedule_and_wait(&self) -> Result<R, String> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        self.events
            .send(Event {
                at: Instant::now(),
                mutation: false,
                dirty: false,
            })
            .map_err(|_| "the garbage collector has stopped".to_string())?;
        rx.await
            .map_err(|_| "the garbage collector has stopped".to_string())?
    }
}

async fn run<R: Clone + Send + 'static>(
    config: SchedulerConfig,
    collector: impl Collect<R>,
    mut events: mpsc::UnboundedReceiver<Event>,
    waiters: Arc<Mutex<Vec<Waiter<R>>>>,
) {
    let mut next: Option<Instant> =
        (config.startup_delay > Duration::ZERO).then(|| Instant::now() + config.startup_delay);
    let mut last: Option<Instant> = None;
    let mut interval = Duration::from_secs(1);
    let mut paused = Duration::ZERO;
    let mut collections: u32 = 0;
    let (mut triggered, mut deletions, mut mutations) = (false, 0i64, 0i64);
    loop {
        let tick = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tick => {
                // Nothing asked for and nothing to collect: look again later.
                let needed = triggered
                    || last.is_none()
                    || deletions > 0
                    || (config.mutation_threshold > 0 && mutations >= config.mutation_threshold);
                if !needed {
                    next = Some(Instant::now() + interval);
                    continue;
                }
            }
            event = events.recv() => {
                let Some(e) = event else { return };
                if last.is_some_and(|l| l > e.at) {
                    continue;
                }
                if e.dirty {
                    deletions += 1;
                }
                if e.mutation {
                    mutations += 1;
                } else {
                    triggered = true;
                }
                let now_due = triggered
                    || (config.deletion_threshold > 0 && deletions >= config.deletion_threshold)
                    || (next.is_none()
                        && ((config.deletion_threshold == 0 && deletions > 0)
                            || (config.mutation_threshold > 0
                                && mutations >= config.mutation_threshold)));
                if now_due {
                    let at = Instant::now() + config.schedule_delay;
                    if next.is_none_or(|n| n > at) {
                        next = Some(at);
                    }
                }
                continue;
            }
        }

        // Callers that asked before this collection began get its result;
        // later ones wait for the next.
        let served: Vec<Waiter<R>> =
            std::mem::take(&mut *waiters.lock().unwrap_or_else(PoisonError::into_inner));
        let began = Instant::now();
        let result = collector.collect().await;
        match result {
            Err(e) => {
                tracing::error!(error = %e, "garbage collection failed");
                // Try again after the same spacing plus a second.
                let gap = match (next, last) {
                    (Some(n), Some(l)) => n.saturating_duration_since(l),
                    _ => Duration::ZERO,
                };
                next = Some(Instant::now() + gap + Duration::from_secs(1));
                last = Some(began);
                for w in served {
                    let _ = w.send(Err(e.clone()));
                }
            }
            Ok((pause, report)) => {
                paused += pause;
                collections += 1;
                (triggered, deletions, mutations) = (false, 0, 0);
                if config.pause_threshold > 0.0 {
                    let avg = paused.as_secs_f64() / f64::from(collections);
                    interval = Duration::from_secs_f64(avg / config.pause_threshold - avg);
                }
                last = Some(began);
                next = Some(Instant::now() + interval);
                for w in served {
                    let _ = w.send(Ok(report.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts collections; each "pauses" 10 ms of (paused) time, so the
    /// tick at the default 2% threshold is 490 ms.
    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);

    impl Collect<usize> for Counter {
        fn collect(&self) -> Collecting<'_, usize> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                Ok((Duration::from_millis(10), n))
            })
        }
    }

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn advance(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn start(config: SchedulerConfig) -> (Scheduler<usize>, Counter) {
        let counter = Counter::default();
        (Scheduler::spawn(config, counter.clone()), counter)
    }

    #[tokio::test(start_paused = true)]
    async fn collects_once_at_startup_then_only_when_needed() {
        let (_s, c) = start(SchedulerConfig::default());
        advance(99).await;
        assert_eq!(c.count(), 0);
        advance(20).await;
        assert_eq!(c.count(), 1, "startup collection after 100ms");
        advance(10_000).await;
        assert_eq!(c.count(), 1, "no deletion, no write: no collection");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_without_deletions_schedule_nothing() {
        let (s, c) = start(SchedulerConfig::default());
        advance(200).await;
        for _ in 0..99 {
            s.mutated(false);
        }
        advance(10_000).await;
        assert_eq!(c.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn mutation_threshold_collects_at_the_next_tick() {
        let (s, c) = start(SchedulerConfig::default());
        advance(200).await;
        for _ in 0..100 {
            s.mutated(false);
        }
        advance(1).await;
        assert_eq!(c.count(), 1, "not at once: at the next tick");
        advance(1_000).await;
        assert_eq!(c.count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_collects_at_the_next_tick_not_before() {
        let (s, c) = start(SchedulerConfig::default());
        // Startup collection ends at 110ms; ticks every 490ms from then.
        advance(120).await;
        assert_eq!(c.count(), 1);
        advance(100).await; // t=220
        s.mutated(true);
        advance(300).await; // t=520: the tick at 600 has not come
        assert_eq!(c.count(), 1);
        advance(100).await; // t=620
        assert_eq!(c.count(), 2);
        // A write after that collection (dirty flag reset) is kept.
        s.mutated(false);
        advance(5_000).await;
        assert_eq!(c.count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn reports_from_before_a_collection_are_ignored() {
        let (s, c) = start(SchedulerConfig {
            startup_delay: Duration::ZERO,
            ..SchedulerConfig::default()
        });
        // A stale report: its time is before the collection that follows.
        let stale = Event {
            at: Instant::now(),
            mutation: true,
            dirty: true,
        };
        advance(5).await;
        assert_eq!(s.schedule_and_wait().await, Ok(1));
        s.events.send(stale).ok();
        advance(10_000).await;
        assert_eq!(c.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_startup_collection_a_deletion_collects_after_schedule_delay() {
        let (s, c) = start(SchedulerConfig {
            startup_delay: Duration::ZERO,
            schedule_delay: Duration::from_millis(50),
            ..SchedulerConfig::default()
        });
        advance(1_000).await;
        assert_eq!(c.count(), 0, "no startup collection");
        s.mutated(true);
        advance(40).await;
        assert_eq!(c.count(), 0);
        advance(30).await;
        assert_eq!(c.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_threshold_schedules_at_once() {
        let (s, c) = start(SchedulerConfig {
            deletion_threshold: 2,
            ..SchedulerConfig::default()
        });
        advance(200).await; // startup done at 110; next tick at 600
        s.mutated(true);
        advance(1).await;
        assert_eq!(c.count(), 1);
        s.mutated(true);
        advance(20).await;
        assert_eq!(c.count(), 2, "second deletion reached the threshold");
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_and_wait_runs_a_collection_that_begins_after_the_call() {
        let (s, c) = start(SchedulerConfig::default());
        advance(200).await;
        assert_eq!(s.schedule_and_wait().await, Ok(2));
        assert_eq!(c.count(), 2);
        // Asked during a collection: served by the next one.
        let s2 = s.clone();
        let first = tokio::spawn(async move { s2.schedule_and_wait().await });
        advance(5).await; // collection 3 is running
        assert_eq!(s.schedule_and_wait().await, Ok(4));
        assert_eq!(first.await.ok(), Some(Ok(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn tick_spacing_follows_the_pause_threshold() {
        let (s, c) = start(SchedulerConfig {
            pause_threshold: 0.1, // 10ms collections: ticks 90ms apart
            ..SchedulerConfig::default()
        });
        advance(120).await; // startup collection ended at 110; tick at 200
        s.mutated(true);
        advance(70).await; // t=190
        assert_eq!(c.count(), 1);
        advance(30).await; // t=220: the collection at 200 ended at 210
        assert_eq!(c.count(), 2);
    }

    #[test]
    fn config_reads_containerd_names_and_types() {
        let t: toml::Table = toml::from_str(
            r#"
pause_threshold = 0.05
deletion_threshold = 3
mutation_threshold = 0
schedule_delay = "1.5s"
startup_delay = "0s"
"#,
        )
        .unwrap_or_default();
        let c = SchedulerConfig::from_section(Some(&t)).ok();
        assert_eq!(
            c,
            Some(SchedulerConfig {
                pause_threshold: 0.05,
                deletion_threshold: 3,
                mutation_threshold: 0,
                schedule_delay: Duration::from_millis(1500),
                startup_delay: Duration::ZERO,
            })
        );
        let t: toml::Table = toml::from_str("pause_threshold = 0.9").unwrap_or_default();
        let c = SchedulerConfig::from_section(Some(&t)).map(|c| c.pause_threshold);
        assert_eq!(c.ok(), Some(0.5), "clamped as containerd does");
        let t: toml::Table = toml::from_str("schedule_delay = 100").unwrap_or_default();
        let err = SchedulerConfig::from_section(Some(&t))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("schedule_delay")),
            "{err:?}"
        );
        assert_eq!(
            SchedulerConfig::from_section(None).ok(),
            Some(SchedulerConfig::default())
        );
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).ok();
        assert_eq!(ok("0"), Some(Duration::ZERO));
        assert_eq!(ok("0s"), Some(Duration::ZERO));
        assert_eq!(ok("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(ok("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(ok("2.5h"), Some(Duration::from_secs(9000)));
        assert_eq!(ok("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(ok("7us"), Some(Duration::from_micros(7)));
        assert_eq!(ok("-1s"), Some(Duration::ZERO));
        for bad in ["", "5", "ms", "1x", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
