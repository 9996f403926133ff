//! The event exchange: publish, forward and subscribe to events, as
//! containerd's `events/exchange` does.
//!
//! Every change berth makes (an image created, a task exited) is published as
//! an [`Envelope`]: when, in which namespace, on which topic
//! (`/tasks/exit`), and the event itself as a protobuf `Any`, which is how
//! containerd carries events on the wire. The [`Exchange`] broadcasts
//! envelopes to every live [`Subscription`]; a subscription can narrow what it
//! receives with containerd filters on the `topic` and `namespace` fields
//! (`topic~="^/tasks/"`, `namespace==k8s.io`).
//!
//! Three small traits let other crates depend on just the role they need:
//! [`Publisher`] (daemon services announce changes), [`Forwarder`] (events
//! that arrive already enveloped, from shims) and [`Subscriber`] (the Events
//! service's `Subscribe`). [`Exchange`] implements all three.
//!
//! Delivery follows containerd: best effort, in publish order per
//! subscriber, never blocking a publisher. Each subscriber's queue is bounded
//! in bytes ([`DEFAULT_BUDGET`]); a subscriber that falls further behind gets
//! [`Error::Lagged`] and its subscription ends, so it knows to subscribe
//! again instead of silently missing events.
//!
//! # Example
//!
//! ```
//! use berth_events::{Exchange, topics};
//! use prost_types::Any;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let exchange = Exchange::new();
//! let mut tasks = exchange.subscribe(&[r#"topic~="^/tasks/""#.to_owned()]).unwrap();
//!
//! let event = Any { type_url: "containerd.events.TaskExit".to_owned(), value: vec![] };
//! exchange.publish("default", topics::IMAGE_CREATE, event.clone()).unwrap();
//! exchange.publish("default", topics::TASK_EXIT, event).unwrap();
//!
//! let envelope = tasks.recv().await.unwrap().unwrap();
//! assert_eq!(envelope.topic, "/tasks/exit");
//! assert_eq!(envelope.namespace, "default");
//! # });
//! ```

use std::borrow::Cow;
use std::time::SystemTime;

use berth_filters::Adaptor;
use prost_types::Any;

mod error;
mod exchange;
pub mod topics;
mod validate;

pub use error::{Error, Result};
pub use exchange::{DEFAULT_BUDGET, Exchange, Subscription};
pub use validate::{validate_namespace, validate_topic};

/// One event with where and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// When the event was first published.
    pub timestamp: SystemTime,
    /// The namespace the event belongs to.
    pub namespace: String,
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The event message, type URL plus protobuf bytes.
    pub event: Any,
}

impl Envelope {
    /// Wraps `event` in an envelope stamped with the current time (not
    /// validated; [`Forwarder::forward`] validates).
    pub fn new(namespace: impl Into<String>, topic: impl Into<String>, event: Any) -> Self {
        Self {
            timestamp: SystemTime::now(),
            namespace: namespace.into(),
            topic: topic.into(),
            event,
        }
    }
}

/// Filters see an envelope's `namespace` and `topic` (empty counts as
/// absent). `timestamp` and the fields of the event itself (`event.*`) are
/// not filterable.
impl Adaptor for Envelope {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        let value = match fieldpath {
            ["namespace"] => &self.namespace,
            ["topic"] => &self.topic,
            _ => return None,
        };
        (!value.is_empty()).then_some(Cow::Borrowed(value.as_str()))
    }
}

/// Publishes events that originate here.
///
/// Implementations must not block: they hand the event to subscribers or to
/// a queue and return.
pub trait Publisher: Send + Sync {
    /// Stamps `event` with the current time and publishes it on `topic` in
    /// `namespace`.
    ///
    /// Fails with [`Error::InvalidNamespace`] or [`Error::InvalidTopic`] if
    /// either breaks containerd's rules (see [`validate_namespace`],
    /// [`validate_topic`]); nothing is published then.
    fn publish(&self, namespace: &str, topic: &str, event: Any) -> Result<()>;
}

/// Passes on envelopes that were published elsewhere (by shims), keeping
/// their timestamp.
pub trait Forwarder: Send + Sync {
    /// Validates `envelope` (namespace, topic, and a timestamp that is not
    /// the Unix epoch) and delivers it unchanged.
    fn forward(&self, envelope: Envelope) -> Result<()>;
}

/// Hands out subscriptions to the event stream.
pub trait Subscriber: Send + Sync {
    /// Subscribes to events published from now on that match any of
    /// `filters` (all events if there are none). Filters use the
    /// [`berth_filters`] syntax on the fields `topic` and `namespace`.
    ///
    /// Fails with [`Error::InvalidFilter`] if a filter does not parse.
    /// Dropping the subscription ends it.
    fn subscribe(&self, filters: &[String]) -> Result<Subscription>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields() {
        let env = Envelope::new("default", "/tasks/exit", Any::default());
        assert_eq!(env.field(&["namespace"]).as_deref(), Some("default"));
        assert_eq!(env.field(&["topic"]).as_deref(), Some("/tasks/exit"));
        assert_eq!(env.field(&["timestamp"]), None);
        assert_eq!(env.field(&["event", "id"]), None);
        assert_eq!(env.field(&["topic", "x"]), None);
        assert_eq!(env.field(&[]), None);
        let empty = Envelope::new("", "", Any::default());
        assert_eq!(empty.field(&["namespace"]), None);
    }

    #[test]
    fn envelope_filters() {
        let env = Envelope::new("k8s.io", "/namespaces/create", Any::default());
        for (filter, expected) in [
            (r#"topic=="/namespaces/create""#, true),
            (r#"topic~="/namespaces/*""#, true),
            (r#"topic~="^/tasks/""#, false),
            ("namespace==k8s.io", true),
            ("namespace==default", false),
            (r#"namespace==k8s.io,topic=="/tasks/exit""#, false),
            ("event.id", false),
        ] {
            let f = berth_filters::parse(filter).unwrap();
            assert_eq!(f.matches(&env), expected, "{filter}");
        }
    }

    #[test]
    fn traits_are_object_safe() {
        let exchange = Exchange::new();
        let publisher: &dyn Publisher = &exchange;
        let forwarder: &dyn Forwarder = &exchange;
        let subscriber: &dyn Subscriber = &exchange;
        let mut sub = subscriber.subscribe(&[]).unwrap();
        publisher.publish("ns", "/a", Any::default()).unwrap();
        forwarder
            .forward(Envelope::new("ns", "/b", Any::default()))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(sub.recv().await.unwrap().unwrap().topic, "/a");
            assert_eq!(sub.recv().await.unwrap().unwrap().topic, "/b");
        });
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
