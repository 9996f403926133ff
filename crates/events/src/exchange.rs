//! The in-process exchange and its subscriptions.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use berth_filters::Filter;
use futures::{Stream, StreamExt};
use prost_types::Any;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    Envelope, Error, Forwarder, Publisher, Result, Subscriber, validate_namespace, validate_topic,
};

/// How many events a subscriber may fall behind before it loses the oldest.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Broadcasts envelopes to all current subscriptions.
///
/// Cheap to clone: clones share one exchange. Publishing never waits for
/// subscribers; each subscription buffers up to the exchange's capacity, and
/// one that falls further behind skips the oldest events (logged as a
/// warning), as containerd's exchange drops events for slow subscribers.
/// Subscriptions end when every clone of the exchange is dropped.
#[derive(Debug, Clone)]
pub struct Exchange {
    sender: broadcast::Sender<Arc<Envelope>>,
}

impl Exchange {
    /// An exchange whose subscribers may lag [`DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An exchange whose subscribers may lag `capacity` events (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
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
        let receiver = self.sender.subscribe();
        tracing::debug!(?filters, "event subscription started");
        Ok(Subscription::from_stream(envelopes(receiver, filter)))
    }

    /// The number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }

    fn send(&self, envelope: Envelope) {
        tracing::trace!(
            ns = envelope.namespace,
            topic = envelope.topic,
            r#type = envelope.event.type_url,
            "event published"
        );
        // An error only means nobody is subscribed; the event is dropped, as
        // in containerd.
        let _ = self.sender.send(Arc::new(envelope));
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
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

/// The envelopes from `receiver` that pass `filter`, skipping over lag.
fn envelopes(
    receiver: broadcast::Receiver<Arc<Envelope>>,
    filter: Filter,
) -> impl Stream<Item = Envelope> + Send + 'static {
    let match_all = filter.matches_everything();
    futures::stream::unfold(
        (receiver, filter),
        move |(mut receiver, filter)| async move {
            loop {
                match receiver.recv().await {
                    Ok(envelope) => {
                        if match_all || filter.matches(envelope.as_ref()) {
                            // Clone only what this subscriber keeps.
                            let envelope = Arc::unwrap_or_clone(envelope);
                            return Some((envelope, (receiver, filter)));
                        }
                    }
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "event subscriber fell behind, events dropped");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

/// A stream of the envelopes one subscriber asked for, in publish order.
///
/// Read it with [`Subscription::recv`] or as a [`Stream`]. It ends (`None`)
/// when the exchange is gone. Dropping it unsubscribes.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Envelope> + Send>>,
}

impl Subscription {
    /// Wraps any stream of envelopes, for [`Subscriber`] implementations
    /// other than [`Exchange`] (e.g. a client of a remote Events service).
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Envelope> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }

    /// Waits for the next matching envelope; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.inner.next().await
    }
}

impl Stream for Subscription {
    type Item = Envelope;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
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
                Ok(Some(env)) => out.push(env),
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
        assert_eq!(sub.recv().await, Some(stamped.clone()));

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

    #[tokio::test]
    async fn slow_subscriber_skips_oldest_and_continues() {
        let exchange = Exchange::with_capacity(4);
        let mut slow = exchange.subscribe(&[]).unwrap();
        // Publishing never waits for the subscriber.
        for i in 0..10 {
            exchange.publish("ns", "/a", event(&i.to_string())).unwrap();
        }
        assert_eq!(values(&take(&mut slow, 10).await), ["6", "7", "8", "9"]);
        exchange.publish("ns", "/a", event("10")).unwrap();
        assert_eq!(values(&take(&mut slow, 1).await), ["10"]);
    }

    #[tokio::test]
    async fn subscription_ends_with_the_exchange() {
        let exchange = Exchange::new();
        let clone = exchange.clone();
        let mut sub = exchange.subscribe(&[]).unwrap();
        drop(exchange);
        clone.publish("ns", "/a", event("last")).unwrap();
        drop(clone);
        assert_eq!(values(&[sub.recv().await.unwrap()]), ["last"]);
        assert_eq!(sub.recv().await, None);
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
        let topics: Vec<String> = sub.take(3).map(|e| e.topic).collect().await;
        task.await.unwrap();
        assert_eq!(topics, ["/tasks/create", "/tasks/start", "/tasks/exit"]);
    }

    #[test]
    fn zero_capacity_is_clamped() {
        let exchange = Exchange::with_capacity(0);
        assert!(exchange.publish("ns", "/a", event("x")).is_ok());
    }

    #[tokio::test]
    async fn custom_stream_subscription() {
        let env = Envelope::new("ns", "/a", event("x"));
        let mut sub = Subscription::from_stream(futures::stream::iter([env.clone()]));
        assert_eq!(sub.recv().await, Some(env));
        assert_eq!(sub.recv().await, None);
        assert_eq!(format!("{sub:?}"), "Subscription { .. }");
    }
}
