//! containerd's status for a message over `[grpc] max_recv_message_size` or
//! `max_send_message_size`.
//!
//! tonic enforces the limits but answers `OutOfRange` ("decoded message
//! length too large"); grpc-go, so containerd, answers `ResourceExhausted`
//! with "grpc: received message larger than max (N vs. M)" (or "trying to
//! send"). Clients match on the code, so the layer here rewrites tonic's
//! status, in the response headers (a rejected request) or trailers (a
//! stream that failed later).

use http::HeaderMap;
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;
use tower::util::MapResponseLayer;

/// The response mapper [`layer`] installs.
pub(crate) type MapFn = fn(http::Response<Body>) -> http::Response<Body>;

/// A layer for the gRPC server that gives size-limit errors containerd's status.
pub(crate) fn layer() -> MapResponseLayer<MapFn> {
    MapResponseLayer::new(map_response as MapFn)
}

fn map_response(response: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    rewrite(&mut parts.headers);
    let body = body.map_frame(|mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            rewrite(trailers);
        }
        frame
    });
    http::Response::from_parts(parts, Body::new(body))
}

/// Rewrites tonic's size-limit `OutOfRange` in `headers`, if it is one.
fn rewrite(headers: &mut HeaderMap) {
    // Cheap test first: only OutOfRange (11) can be one.
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"11") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(message) = containerd_message(status.message()) else {
        return;
    };
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if let Err(e) = Status::resource_exhausted(message).add_header(headers) {
        tracing::warn!(error = %e, "cannot rewrite a size-limit status");
    }
}

/// grpc-go's message for tonic's size-limit message, or `None` if it is not one.
fn containerd_message(tonic: &str) -> Option<String> {
    let (verb, rest) = if let Some(r) =
        tonic.strip_prefix("Error, decoded message length too large: found ")
    {
        ("received", r)
    } else if let Some(r) = tonic.strip_prefix("Error, encoded message length too large: found ") {
        ("trying to send", r)
    } else {
        return None;
    };
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(format!(
        "grpc: {verb} message larger than max ({found} vs. {limit})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tonics_size_errors_only() {
        let mut h = HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 4097 bytes, the limit is: 4096 bytes",
        )
        .add_header(&mut h)
        .ok();
        rewrite(&mut h);
        let s = Status::from_header_map(&h);
        assert_eq!(
            s.as_ref().map(|s| (s.code(), s.message())),
            Some((
                tonic::Code::ResourceExhausted,
                "grpc: received message larger than max (4097 vs. 4096)"
            ))
        );
        let mut h = HeaderMap::new();
        Status::out_of_range("index past the end")
            .add_header(&mut h)
            .ok();
        rewrite(&mut h);
        assert_eq!(
            Status::from_header_map(&h).map(|s| s.code()),
            Some(tonic::Code::OutOfRange)
        );
        assert_eq!(
            containerd_message(
                "Error, encoded message length too large: found 20 bytes, the limit is: 10 bytes"
            )
            .as_deref(),
            Some("grpc: trying to send message larger than max (20 vs. 10)")
        );
    }
}
