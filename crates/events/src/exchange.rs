//! The in-process exchange and its subscriptions.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use berth_filters::Filter;
use futures::{Stream, StreamExt};
use prost_types::Any;
use tokio::sync::Notify;

use crate::{
    Envelope, Error, Forwarder, Publisher, Result, Subscriber, validate_namespace, validate_topic,
};

/// How many bytes of event payload one subscriber may have queued (4 MiB)
/// before its subscription ends with [`Error::Lagged`].
pub const DEFAULT_BUDGET: usize = 4 << 20;

/// Bytes counted per queued envelope besides its strings and payload: the
/// envelope itself and its queue slot, so that a flood of empty events is
/// bounded too.
const ENVELOPE_OVERHEAD: usize = 128;

/// Broadcasts envelopes to all current subscriptions.
///
/// Cheap to clone: clones share one exchange. Publishing never waits for
/// subscribers: each subscription queues the envelopes that pass its filter
/// until it reads them, up to a budget of bytes. A subscription whose queue
/// would exceed the budget is ended: its queue is released and it yields
/// [`Error::Lagged`] once, then ends, so the client knows it missed events
/// and can subscribe again (see the crate README for how this differs from
/// containerd, whose queues are unbounded). Subscriptions end when every
/// clone of the exchange is dropped, after delivering what they queued.
#[derive(Debug, Clone)]
pub struct Exchange {
    handle: Arc<Handle>,
}

/// Shared by the clones of one exchange; closes the subscriptions when the
/// last clone goes.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

/// State shared by the exchange and its subscriptions.
struct Shared {
    budget: usize,
    next_id: AtomicU64,
    subscribers: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// One subscription as the publisher sees it.
struct Slot {
    filter: Filter,
    match_all: bool,
    queue: Mutex<Queue>,
    wake: Notify,
}

/// What a subscription has not read yet.
#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Envelope>>,
    bytes: usize,
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    /// Fell behind; `needed` is the bytes the queue would have held.
    Lagged { needed: usize },
    /// The exchange is gone: deliver what is queued, then end.
    Closed,
    /// Ended; nothing more will be queued or delivered.
    Done,
}

/// Locks `mutex`, carrying on if a holder panicked: the queue and subscriber
/// map stay consistent between statements, so a poisoned lock is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bytes an envelope is counted as while queued.
fn cost(envelope: &Envelope) -> usize {
    ENVELOPE_OVERHEAD
        + envelope.namespace.len()
        + envelope.topic.len()
        + envelope.event.type_url.len()
        + envelope.event.value.len()
}

impl Exchange {
    /// An exchange whose subscribers may queue [`DEFAULT_BUDGET`] bytes.
    pub fn new() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }

    /// An exchange whose subscribers may each queue up to `budget` bytes of
    /// envelopes. One envelope is always accepted into an empty queue, so an
    /// event larger than the budget still reaches a subscriber that keeps up.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            handle: Arc::new(Handle {
                shared: Arc::new(Shared {
                    budget,
                    next_id: AtomicU64::new(0),
                    subscribers: Mutex::new(HashMap::new()),
                }),
            }),
        }
    }

    /// The per-subscriber budget in bytes.
    pub fn budget(&self) -> usize {
        self.handle.shared.budget
    }

    /// Stamps and publishes an event; see [`Publisher::publish`].
    pub fn publish(&self, namespace: &str, topic: &str, event: Any) -> Result<()> {
        if let Err(err) = validate_namespace(namespace).and_then(|()| validate_topic(topic)) {
            tracing::warn!(ns = namespace, topic, %err, "error publishing event");
            return Err(err);
        }
        self.send(Envelope::new(namespace, topic, event));
        Ok(())
    }

    /// Delivers an envelope published elsewhere; see [`Forwarder::forward`].
    pub fn forward(&self, envelope: Envelope) -> Result<()> {
        if let Err(err) = validate_envelope(&envelope) {
            tracing::warn!(
                ns = envelope.namespace,
                topic = envelope.topic,
                r#type = envelope.event.type_url,
                %err,
                "error forwarding event"
            );
            return Err(err);
        }
        self.send(envelope);
        Ok(())
    }

    /// Subscribes to events matching any of `filters`; see
    /// [`Subscriber::subscribe`].
    pub fn subscribe(&self, filters: &[String]) -> Result<Subscription> {
        let filter = berth_filters::parse_all(filters)?;
        let shared = Arc::clone(&self.handle.shared);
        let slot = Arc::new(Slot {
            match_all: filter.matches_everything(),
            filter,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        });
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&shared.subscribers).insert(id, Arc::clone(&slot));
        tracing::debug!(?filters, id, "event subscription started");
        let receiver = Receiver { shared, id, slot };
        Ok(Subscription::from_stream(futures::stream::unfold(
            receiver,
            |receiver| async move {
                let item = receiver.next().await?;
                Some((item, receiver))
            },
        )))
    }

    /// The number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        lock(&self.handle.shared.subscribers).len()
    }

    /// The bytes queued for all live subscriptions together (an envelope
    /// queued for two subscriptions counts twice).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.handle.shared.subscribers)
            .values()
            .map(|slot| lock(&slot.queue).bytes)
            .sum()
    }

    fn send(&self, envelope: Envelope) {
        tracing::trace!(
            ns = envelope.namespace,
            topic = envelope.topic,
            r#type = envelope.event.type_url,
            "event published"
        );
        let shared = &self.handle.shared;
        let cost = cost(&envelope);
        let envelope = Arc::new(envelope);
        let mut subscribers = lock(&shared.subscribers);
        // With nobody subscribed the event is dropped here, as in containerd.
        subscribers.retain(|id, slot| {
            if !(slot.match_all || slot.filter.matches(envelope.as_ref())) {
                return true;
            }
            let mut queue = lock(&slot.queue);
            if queue.state != State::Open {
                return false;
            }
            let needed = queue.bytes.saturating_add(cost);
            if queue.events.is_empty() || needed <= shared.budget {
                queue.events.push_back(Arc::clone(&envelope));
                queue.bytes = needed;
            } else {
                tracing::warn!(
                    id,
                    queued = queue.events.len(),
                    bytes = queue.bytes,
                    budget = shared.budget,
                    "event subscriber fell behind, ending its subscription"
                );
                // Release the payloads nobody will read now.
                queue.events = VecDeque::new();
                queue.bytes = 0;
                queue.state = State::Lagged { needed };
            }
            let keep = queue.state == State::Open;
            drop(queue);
            slot.wake.notify_one();
            keep
        });
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let subscribers = std::mem::take(&mut *lock(&self.shared.subscribers));
        for slot in subscribers.values() {
            let mut queue = lock(&slot.queue);
            if queue.state == State::Open {
                queue.state = State::Closed;
            }
            drop(queue);
            slot.wake.notify_one();
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The reading end of one subscription; unsubscribes when dropped.
struct Receiver {
    shared: Arc<Shared>,
    id: u64,
    slot: Arc<Slot>,
}

impl Receiver {
    /// The next envelope, the lag error, or `None` once ended.
    async fn next(&self) -> Option<Result<Envelope>> {
        loop {
            {
                let mut queue = lock(&self.slot.queue);
                if let Some(envelope) = queue.events.pop_front() {
                    queue.bytes = queue.bytes.saturating_sub(cost(&envelope));
                    drop(queue);
                    // Clone only what this subscriber keeps.
                    return Some(Ok(Arc::unwrap_or_clone(envelope)));
                }
                match queue.state {
                    State::Open => {}
                    State::Lagged { needed } => {
                        queue.state = State::Done;
                        return Some(Err(Error::Lagged {
                            needed,
                            budget: self.shared.budget,
                        }));
                    }
                    State::Closed | State::Done => {
                        queue.state = State::Done;
                        return None;
                    }
                }
            }
            // notify_one keeps a permit when nobody waits, so a wake-up sent
            // between the check above and this await is not lost.
            self.slot.wake.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        lock(&self.shared.subscribers).remove(&self.id);
        tracing::debug!(id = self.id, "event subscription ended");
    }
}

fn validate_envelope(envelope: &Envelope) -> Result<()> {
    validate_namespace(&envelope.namespace)?;
    validate_topic(&envelope.topic)?;
    if envelope.timestamp == UNIX_EPOCH {
        return Err(Error::MissingTimestamp {
            topic: envelope.topic.clone(),
        });
    }
    Ok(())
}

impl Publisher for Exchange {
    fn publish(&self, namespace: &str, topic: &str, event: Any) -> Result<()> {
        Exchange::publish(self, namespace, topic, event)
    }
}

impl Forwarder for Exchange {
    fn forward(&self, envelope: Envelope) -> Result<()> {
        Exchange::forward(self, envelope)
    }
}

impl Subscriber for Exchange {
    fn subscribe(&self, filters: &[String]) -> Result<Subscription> {
        Exchange::subscribe(self, filters)
    }
}

/// A stream of the envelopes one subscriber asked for, in publish order.
///
/// Read it with [`Subscription::recv`] or as a [`Stream`]. It ends (`None`)
/// when the exchange is gone, or after one [`Error::Lagged`] when the
/// subscriber fell too far behind. Dropping it unsubscribes.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Envelope>> + Send>>,
}

impl Subscription {
    /// Wraps any stream of envelopes, for [`Subscriber`] implementations
    /// other than [`Exchange`] (e.g. a client of a remote Events service).
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Envelope>> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }

    /// Waits for the next matching envelope or the error that ends the
    /// subscription; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Result<Envelope>> {
        self.inner.next().await
    }
}

impl Stream for Subscription {
    type Item = Result<Envelope>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn event(id: &str) -> Any {
        Any {
            type_url: "containerd.events.ContainerCreate".to_owned(),
            value: id.as_bytes().to_vec(),
        }
    }

    fn filters(fs: &[&str]) -> Vec<String> {
        fs.iter().map(|f| (*f).to_owned()).collect()
    }

    /// Receives up to `n` envelopes, giving up after a short quiet time.
    async fn take(sub: &mut Subscription, n: usize) -> Vec<Envelope> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
                Ok(Some(Ok(env))) => out.push(env),
                Ok(Some(Err(err))) => panic!("subscription error: {err}"),
                Ok(None) | Err(_) => break,
            }
        }
        out
    }

    /// Asserts that nothing more arrives on `sub` right now.
    async fn assert_quiet(sub: &mut Subscription) {
        let next = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await;
        assert!(next.is_err(), "unexpected envelope: {next:?}");
    }

    fn values(envs: &[Envelope]) -> Vec<String> {
        envs.iter()
            .map(|e| String::from_utf8_lossy(&e.event.value).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn publish_reaches_every_subscriber_in_order() {
        let exchange = Exchange::new();
        let mut one = exchange.subscribe(&[]).unwrap();
        let mut two = exchange.subscribe(&[]).unwrap();
        assert_eq!(exchange.subscriber_count(), 2);

        let before = SystemTime::now();
        for id in ["asdf", "qwer", "zxcv"] {
            exchange
                .publish("TestExchangeBasic", "/test", event(id))
                .unwrap();
        }
        for sub in [&mut one, &mut two] {
            let got = take(sub, 3).await;
            assert_eq!(values(&got), ["asdf", "qwer", "zxcv"]);
            for env in &got {
                assert_eq!(env.namespace, "TestExchangeBasic");
                assert_eq!(env.topic, "/test");
                assert_eq!(env.event.type_url, "containerd.events.ContainerCreate");
                assert!(env.timestamp >= before);
            }
            assert_quiet(sub).await;
        }
    }

    #[tokio::test]
    async fn subscribers_only_see_events_after_subscribing() {
        let exchange = Exchange::new();
        exchange.publish("ns", "/early", event("early")).unwrap();
        let mut sub = exchange.subscribe(&[]).unwrap();
        exchange.publish("ns", "/late", event("late")).unwrap();
        assert_eq!(values(&take(&mut sub, 2).await), ["late"]);
    }

    #[tokio::test]
    async fn filters_select_by_topic_and_namespace() {
        let exchange = Exchange::new();
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec![], vec!["ns-create", "c1", "c2", "exit", "other-ns"]),
            (vec![r#"topic=="/namespaces/create""#], vec!["ns-create"]),
            (vec![r#"topic~="/namespaces/*""#], vec!["ns-create"]),
            (
                vec![r#"topic~="/containers/*""#],
                vec!["c1", "c2", "other-ns"],
            ),
            (vec!["namespace==x"], vec!["other-ns"]),
            (vec!["namespace!=x"], vec!["ns-create", "c1", "c2", "exit"]),
            (
                vec![r#"topic=="/tasks/exit""#, r#"topic=="/namespaces/create""#],
                vec!["ns-create", "exit"],
            ),
            (
                vec![r#"topic=="/containers/create",namespace==x"#],
                vec!["other-ns"],
            ),
            (vec!["event.id"], vec![]),
            (
                vec!["topic", "namespace"],
                vec!["ns-create", "c1", "c2", "exit", "other-ns"],
            ),
        ];
        let mut subs: Vec<Subscription> = cases
            .iter()
            .map(|(fs, _)| exchange.subscribe(&filters(fs)).unwrap())
            .collect();

        exchange
            .publish("default", "/namespaces/create", event("ns-create"))
            .unwrap();
        exchange
            .publish("default", "/containers/create", event("c1"))
            .unwrap();
        exchange
            .publish("default", "/containers/create", event("c2"))
            .unwrap();
        exchange
            .publish("default", "/tasks/exit", event("exit"))
            .unwrap();
        exchange
            .publish("x", "/containers/create", event("other-ns"))
            .unwrap();

        for ((fs, expected), sub) in cases.iter().zip(&mut subs) {
            let got = take(sub, expected.len()).await;
            assert_eq!(&values(&got), expected, "filters {fs:?}");
            assert_quiet(sub).await;
        }
    }

    #[tokio::test]
    async fn invalid_topics_and_namespaces_are_rejected() {
        let exchange = Exchange::new();
        let mut sub = exchange.subscribe(&[]).unwrap();
        for topic in ["", "test", "/", "/a//b", "/tasks/?"] {
            let err = exchange.publish("default", topic, event("x")).unwrap_err();
            assert!(
                matches!(err, Error::InvalidTopic { .. }),
                "{topic:?}: {err:?}"
            );
            let err = exchange
                .forward(Envelope::new("default", topic, event("x")))
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidTopic { .. }),
                "{topic:?}: {err:?}"
            );
        }
        for ns in ["", "-x", "a/b", "a..b"] {
            let err = exchange.publish(ns, "/test", event("x")).unwrap_err();
            assert!(
                matches!(err, Error::InvalidNamespace { .. }),
                "{ns:?}: {err:?}"
            );
            let err = exchange
                .forward(Envelope::new(ns, "/test", event("x")))
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidNamespace { .. }),
                "{ns:?}: {err:?}"
            );
        }
        assert_eq!(
            exchange
                .publish("default", "test", event("x"))
                .unwrap_err()
                .to_string(),
            r#"invalid topic "test": must start with '/'"#
        );
        assert_quiet(&mut sub).await;
    }

    #[tokio::test]
    async fn forward_keeps_the_envelope_and_needs_a_timestamp() {
        let exchange = Exchange::new();
        let mut sub = exchange.subscribe(&[]).unwrap();
        let stamped = Envelope {
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            namespace: "k8s.io".to_owned(),
            topic: "/tasks/exit".to_owned(),
            event: event("from-shim"),
        };
        exchange.forward(stamped.clone()).unwrap();
        assert_eq!(sub.recv().await.unwrap().unwrap(), stamped.clone());

        let unstamped = Envelope {
            timestamp: UNIX_EPOCH,
            ..stamped
        };
        let err = exchange.forward(unstamped).unwrap_err();
        assert!(matches!(err, Error::MissingTimestamp { .. }), "{err:?}");
        assert_quiet(&mut sub).await;
    }

    #[test]
    fn invalid_filters_are_rejected() {
        let exchange = Exchange::new();
        let err = exchange
            .subscribe(&filters(&["topic==/tasks/exit"]))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidFilter(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid subscription filter: parse error at 7"),
            "{err}"
        );
        assert_eq!(exchange.subscriber_count(), 0);
    }

    #[tokio::test]
    async fn dropped_subscriber_does_not_break_publish() {
        let exchange = Exchange::new();
        let dropped = exchange.subscribe(&[]).unwrap();
        let mut kept = exchange.subscribe(&[]).unwrap();
        exchange.publish("ns", "/a", event("1")).unwrap();
        drop(dropped);
        assert_eq!(exchange.subscriber_count(), 1);
        exchange.publish("ns", "/a", event("2")).unwrap();
        assert_eq!(values(&take(&mut kept, 2).await), ["1", "2"]);

        drop(kept);
        assert_eq!(exchange.subscriber_count(), 0);
        // No subscribers at all is fine too.
        exchange.publish("ns", "/a", event("3")).unwrap();
    }

    fn big(id: usize, size: usize) -> Any {
        let mut value = id.to_string().into_bytes();
        value.resize(size, b'x');
        Any {
            type_url: "containerd.events.Big".to_owned(),
            value,
        }
    }

    #[tokio::test]
    async fn slow_subscriber_is_told_it_lagged_and_others_keep_receiving() {
        const BUDGET: usize = 1 << 20;
        const SIZE: usize = 100 << 10;
        let exchange = Exchange::with_budget(BUDGET);
        let mut slow = exchange.subscribe(&[]).unwrap();
        let mut fast = exchange.subscribe(&[]).unwrap();
        let mut max_queued = 0;
        for i in 0..100 {
            exchange.publish("ns", "/big", big(i, SIZE)).unwrap();
            max_queued = max_queued.max(exchange.queued_bytes());
            // Each subscriber holds at most its budget.
            assert!(
                exchange.queued_bytes() <= 2 * BUDGET,
                "{}",
                exchange.queued_bytes()
            );
            let got = fast.recv().await.unwrap().unwrap();
            assert_eq!(got.event.value.len(), SIZE);
            assert!(got.event.value.starts_with(i.to_string().as_bytes()));
        }
        assert!(max_queued > BUDGET / 2, "{max_queued}");
        // The slow one was dropped from the exchange and its queue released.
        assert_eq!(exchange.subscriber_count(), 1);
        assert_eq!(exchange.queued_bytes(), 0);

        let err = slow.recv().await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Lagged { budget: BUDGET, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("fell behind"), "{err}");
        assert!(slow.recv().await.is_none());

        exchange.publish("ns", "/a", event("after")).unwrap();
        assert_eq!(values(&take(&mut fast, 1).await), ["after"]);
        assert_quiet(&mut fast).await;
    }

    #[tokio::test]
    async fn subscriber_within_budget_gets_every_event() {
        let exchange = Exchange::with_budget(64 << 10);
        let mut sub = exchange.subscribe(&[]).unwrap();
        for i in 0..100 {
            exchange.publish("ns", "/a", event(&i.to_string())).unwrap();
        }
        let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(values(&take(&mut sub, 100).await), expected);
        assert_eq!(exchange.queued_bytes(), 0);
        assert_eq!(exchange.subscriber_count(), 1);
    }

    #[tokio::test]
    async fn filtered_out_events_cost_nothing() {
        let exchange = Exchange::with_budget(1 << 10);
        let mut sub = exchange
            .subscribe(&filters(&[r#"topic=="/wanted""#]))
            .unwrap();
        for i in 0..100 {
            exchange.publish("ns", "/other", big(i, 4 << 10)).unwrap();
        }
        assert_eq!(exchange.queued_bytes(), 0);
        exchange.publish("ns", "/wanted", event("w")).unwrap();
        assert_eq!(values(&take(&mut sub, 1).await), ["w"]);
    }

    #[tokio::test]
    async fn an_event_over_the_budget_still_reaches_an_idle_subscriber() {
        let exchange = Exchange::with_budget(1 << 10);
        let mut sub = exchange.subscribe(&[]).unwrap();
        exchange.publish("ns", "/big", big(1, 64 << 10)).unwrap();
        let got = sub.recv().await.unwrap().unwrap();
        assert_eq!(got.event.value.len(), 64 << 10);
        // A second one while another is unread is over the budget: the
        // queue is released and the subscriber told.
        exchange.publish("ns", "/big", big(2, 64 << 10)).unwrap();
        exchange.publish("ns", "/big", big(3, 64 << 10)).unwrap();
        assert_eq!(exchange.queued_bytes(), 0);
        assert!(matches!(
            sub.recv().await.unwrap().unwrap_err(),
            Error::Lagged { .. }
        ));
    }

    #[tokio::test]
    async fn dropped_subscriber_releases_its_queue() {
        let exchange = Exchange::new();
        let sub = exchange.subscribe(&[]).unwrap();
        for i in 0..10 {
            exchange.publish("ns", "/big", big(i, 100 << 10)).unwrap();
        }
        assert!(exchange.queued_bytes() >= 1000 << 10);
        drop(sub);
        assert_eq!(exchange.subscriber_count(), 0);
        assert_eq!(exchange.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn subscription_ends_with_the_exchange() {
        let exchange = Exchange::new();
        let clone = exchange.clone();
        let mut sub = exchange.subscribe(&[]).unwrap();
        drop(exchange);
        clone.publish("ns", "/a", event("last")).unwrap();
        drop(clone);
        assert_eq!(values(&[sub.recv().await.unwrap().unwrap()]), ["last"]);
        assert!(sub.recv().await.is_none());
    }

    #[tokio::test]
    async fn subscription_is_a_stream() {
        let exchange = Exchange::new();
        let sub = exchange
            .subscribe(&filters(&[r#"topic~="^/tasks/""#]))
            .unwrap();
        let publisher = exchange.clone();
        let task = tokio::spawn(async move {
            for topic in [
                "/tasks/create",
                "/images/create",
                "/tasks/start",
                "/tasks/exit",
            ] {
                publisher.publish("default", topic, event(topic)).unwrap();
                tokio::task::yield_now().await;
            }
        });
        let topics: Vec<String> = sub.take(3).map(|e| e.unwrap().topic).collect().await;
        task.await.unwrap();
        assert_eq!(topics, ["/tasks/create", "/tasks/start", "/tasks/exit"]);
    }

    #[tokio::test]
    async fn custom_stream_subscription() {
        let env = Envelope::new("ns", "/a", event("x"));
        let mut sub = Subscription::from_stream(futures::stream::iter([Ok(env.clone())]));
        assert_eq!(sub.recv().await.unwrap().unwrap(), env);
        assert!(sub.recv().await.is_none());
        assert_eq!(format!("{sub:?}"), "Subscription { .. }");
    }
}
