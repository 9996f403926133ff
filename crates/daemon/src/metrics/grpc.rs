//! gRPC server metrics and request spans: a tower layer on the tonic server.
//!
//! Families, as containerd's go-grpc-prometheus names them:
//! `grpc_server_started_total` and `grpc_server_handled_total` (labels
//! `grpc_type`, `grpc_service`, `grpc_method`, and `grpc_code` for handled),
//! `grpc_server_msg_received_total` and `grpc_server_msg_sent_total` (each
//! message of a call, counted from the gRPC framing of the bodies), and with `[metrics] grpc_histogram = true` the latency histogram
//! `grpc_server_handling_seconds`. A call is handled when its response
//! ends (trailers sent, or the stream dropped), so streaming calls count
//! their whole life.
//!
//! Every call also runs inside a `grpc` tracing span with `service` and
//! `method`, the parent of the service's own spans.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument;

/// Labels of started calls and of the latency histogram. The names of
/// berth's own methods are borrowed from its method table: a series is
/// kept for every method and code from the start (thousands of them), and
/// owned copies of the names would be most of their memory.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    grpc_type: &'static str,
    grpc_service: Cow<'static, str>,
    grpc_method: Cow<'static, str>,
}

/// Labels of handled calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: Cow<'static, str>,
    grpc_method: Cow<'static, str>,
    grpc_code: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(super::LATENCY_BUCKETS)
}

/// The latency histogram family.
type LatencyFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

/// The gRPC server families.
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics {
    started: Family<CallLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    received: Family<CallLabels, Counter>,
    sent: Family<CallLabels, Counter>,
    handling: Option<LatencyFamily>,
    /// `service/method` -> call type, from berth's descriptor set.
    types: Arc<HashMap<&'static str, &'static str>>,
}

impl GrpcMetrics {
    /// The families, with a zero series for every method of the API (and
    /// every code, for handled), as go-grpc-prometheus' `InitializeMetrics`
    /// makes them in containerd; `histogram` turns on the latency histogram.
    pub(crate) fn new(histogram: bool) -> GrpcMetrics {
        let m = GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            handling: histogram
                .then(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram)),
            types: Arc::new(call_types()),
        };
        for (path, _) in berth_api::GRPC_METHODS {
            let labels = m.labels(path);
            let _ = m.started.get_or_create(&labels);
            let _ = m.received.get_or_create(&labels);
            let _ = m.sent.get_or_create(&labels);
            if let Some(h) = &m.handling {
                let _ = h.get_or_create(&labels);
            }
            for code in CODE_NAMES {
                let _ = m.handled.get_or_create(&HandledLabels {
                    grpc_type: labels.grpc_type,
                    grpc_service: labels.grpc_service.clone(),
                    grpc_method: labels.grpc_method.clone(),
                    grpc_code: code,
                });
            }
        }
        m
    }

    /// Adds the families to `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server",
            self.received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server",
            self.sent.clone(),
        );
        if let Some(h) = &self.handling {
            registry.register_with_unit(
                "grpc_server_handling",
                "Histogram of response latency of gRPC that had been application-level handled by the server",
                Unit::Seconds,
                h.clone(),
            );
        }
    }

    fn labels(&self, path: &str) -> CallLabels {
        let trimmed = path.trim_start_matches('/');
        if let Some((known, kind)) = self.types.get_key_value(trimmed) {
            let (service, method) = known.split_once('/').unwrap_or((known, ""));
            return CallLabels {
                grpc_type: kind,
                grpc_service: Cow::Borrowed(service),
                grpc_method: Cow::Borrowed(method),
            };
        }
        let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        CallLabels {
            grpc_type: "unary",
            grpc_service: Cow::Owned(service.to_string()),
            grpc_method: Cow::Owned(method.to_string()),
        }
    }

    fn finish(&self, labels: &CallLabels, code: &'static str, started: Instant) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_type: labels.grpc_type,
                grpc_service: labels.grpc_service.clone(),
                grpc_method: labels.grpc_method.clone(),
                grpc_code: code,
            })
            .inc();
        if let Some(h) = &self.handling {
            h.get_or_create(labels)
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// `service/method` -> `unary`, `client_stream`, `server_stream` or
/// `bidi_stream`, for every method of berth's API.
fn call_types() -> HashMap<&'static str, &'static str> {
    berth_api::GRPC_METHODS.iter().copied().collect()
}

/// go-grpc's names of the gRPC status codes, by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// containerd's (go-grpc) name of a gRPC status code number.
pub(crate) fn code_name(code: &str) -> &'static str {
    code.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| CODE_NAMES.get(n))
        .copied()
        .unwrap_or("Unknown")
}

/// The layer: metrics (when a handle is given) and a span per call.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetricsLayer {
    metrics: Option<GrpcMetrics>,
}

impl MetricsLayer {
    /// Records into `metrics` if given; spans are always made.
    pub(crate) fn new(metrics: Option<GrpcMetrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service the [`MetricsLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Option<GrpcMetrics>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>,
    B: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body + Unpin + Send + 'static,
{
    type Response = http::Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let trimmed = path.trim_start_matches('/');
        let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let span = tracing::info_span!("grpc", service = %service, method = %method);
        let started = Instant::now();
        let call = self.metrics.as_ref().map(|m| {
            let labels = m.labels(&path);
            m.started.get_or_create(&labels).inc();
            (m.clone(), labels)
        });
        let received = call
            .as_ref()
            .map(|(m, labels)| m.received.get_or_create(labels).clone());
        let req = req.map(|inner| {
            tonic::body::Body::new(CountedBody {
                inner,
                counter: received.map(|c| (c, Frames::default())),
            })
        });
        let fut = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let resp = fut.await?;
            // A status in the headers (trailers-only answer) is final.
            let header_code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(code_name);
            let sent = call
                .as_ref()
                .map(|(m, labels)| (m.sent.get_or_create(labels).clone(), Frames::default()));
            let observer = call.map(|(metrics, labels)| Observer {
                metrics,
                labels,
                started,
                code: header_code,
                done: false,
            });
            Ok(resp.map(|inner| ObservedBody {
                inner,
                observer,
                sent,
            }))
        })
    }
}

/// Records a call as handled once, when its response ends.
#[derive(Debug)]
struct Observer {
    metrics: GrpcMetrics,
    labels: CallLabels,
    started: Instant,
    code: Option<&'static str>,
    done: bool,
}

impl Observer {
    /// Records the call with `code`, else the code its headers carried,
    /// else `otherwise`.
    fn finish(&mut self, code: Option<&'static str>, otherwise: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        let code = code.or(self.code).unwrap_or(otherwise);
        self.metrics.finish(&self.labels, code, self.started);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // Dropped unfinished: a trailers-only answer (its code is in the
        // headers), or a stream whose client went away.
        self.finish(None, "Canceled");
    }
}

/// A response body that tells its `Observer` when it ends.
#[derive(Debug)]
pub(crate) struct ObservedBody<B: Body + Unpin> {
    inner: B,
    observer: Option<Observer>,
    sent: Option<(Counter, Frames)>,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(obs) = this.observer.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(data), Some((counter, frames))) =
                        (frame.data_ref(), this.sent.as_mut())
                    {
                        counter.inc_by(frames.feed(data.chunk()));
                    }
                    if let Some(trailers) = frame.trailers_ref() {
                        let code = trailers
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(code_name);
                        obs.finish(code, "OK");
                    }
                }
                Poll::Ready(Some(Err(_))) => obs.finish(Some("Internal"), "Internal"),
                Poll::Ready(None) => obs.finish(None, "OK"),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body + Unpin> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // A client may reset a server stream once it has the last message,
        // before the trailers were polled (ctr's content read stops at the
        // expected size). grpc-go counts the handler's own outcome then, so
        // look once, without waiting, for an answer that is already there;
        // only a stream still producing was cancelled by its client.
        if self.observer.as_ref().is_none_or(|o| o.done) {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut inner = Pin::new(&mut self.inner);
        // Data already produced is not sent any more: skip to what follows.
        for _ in 0..2 {
            match inner.as_mut().poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(trailers), Some(obs)) =
                        (frame.trailers_ref(), self.observer.as_mut())
                    {
                        let code = trailers
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(code_name);
                        obs.finish(code, "OK");
                        return;
                    }
                }
                Poll::Ready(None) => {
                    if let Some(obs) = self.observer.as_mut() {
                        obs.finish(None, "OK");
                    }
                    return;
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

/// Counts whole gRPC messages (a 5-byte header: flag and big-endian
/// length, then the body) in a byte stream that arrives in pieces.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// Header bytes seen of the current message (0..=5).
    header: usize,
    /// The length being read from the header.
    len: u32,
    /// Body bytes still to come.
    remaining: u64,
}

impl Frames {
    /// Takes the next bytes; returns how many messages they completed.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut done = 0;
        while !data.is_empty() {
            if self.header < 5 {
                if self.header > 0 {
                    self.len = (self.len << 8) | u32::from(data[0]);
                }
                self.header += 1;
                data = &data[1..];
                if self.header == 5 {
                    self.remaining = u64::from(self.len);
                    if self.remaining == 0 {
                        done += 1;
                        *self = Frames::default();
                    }
                }
            } else {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[take..];
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    done += 1;
                    *self = Frames::default();
                }
            }
        }
        done
    }
}

/// A request body whose gRPC messages are counted as they are read.
#[derive(Debug)]
pub(crate) struct CountedBody<B> {
    inner: B,
    counter: Option<(Counter, Frames)>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((counter, frames))) =
            (&polled, this.counter.as_mut())
            && let Some(data) = frame.data_ref()
        {
            counter.inc_by(frames.feed(data.chunk()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_types_come_from_the_descriptors() {
        let t = call_types();
        assert_eq!(t["containerd.services.tasks.v1.Tasks/Start"], "unary");
        assert_eq!(
            t["containerd.services.events.v1.Events/Subscribe"],
            "server_stream"
        );
        assert_eq!(
            t["containerd.services.content.v1.Content/Write"],
            "bidi_stream"
        );
    }

    #[test]
    fn frames_are_counted_across_pieces() {
        let mut f = Frames::default();
        // An empty message, then a 3-byte one split over three pieces.
        assert_eq!(f.feed(&[0, 0, 0, 0, 0, 0, 0, 0]), 1);
        assert_eq!(f.feed(&[0, 3, 1]), 0);
        assert_eq!(f.feed(&[2, 3, 0, 0, 0, 0, 1, 9]), 2);
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("5"), "NotFound");
        assert_eq!(code_name("99"), "Unknown");
    }
}
