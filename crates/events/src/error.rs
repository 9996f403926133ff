//! Errors returned by the event exchange.

/// An error from publishing, forwarding or subscribing.
///
/// Every variant but [`Error::Lagged`] belongs to containerd's
/// `InvalidArgument` category: the caller handed over something the exchange
/// will not carry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The namespace is not a valid containerd identifier.
    #[error("invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// The namespace as given.
        namespace: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The topic is not `/`-separated identifiers starting with `/`.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A forwarded envelope carries no timestamp (it is the Unix epoch, which
    /// is what an unset protobuf timestamp converts to).
    #[error("forwarded event on topic {topic:?} must have a timestamp")]
    MissingTimestamp {
        /// The envelope's topic.
        topic: String,
    },
    /// A subscription filter does not parse.
    #[error("invalid subscription filter: {0}")]
    InvalidFilter(#[from] berth_filters::Error),
    /// The subscriber read too slowly: its queue would have outgrown the
    /// exchange's budget, so the subscription was ended and its queued
    /// events released. The subscriber missed events; it should subscribe
    /// again (and re-read state it cares about).
    #[error(
        "event subscriber fell behind: {needed} bytes of events would be queued, \
         over the budget of {budget}; events were dropped, subscribe again"
    )]
    Lagged {
        /// The bytes the queue would have held.
        needed: usize,
        /// The exchange's per-subscriber budget in bytes.
        budget: usize,
    },
}

impl berth_types::ErrorCategory for Error {
    fn category(&self) -> berth_types::Category {
        match self {
            Error::Lagged { .. } => berth_types::Category::ResourceExhausted,
            _ => berth_types::Category::InvalidArgument,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
