//! With the `otel` feature: spans reach an OTLP/HTTP collector (a small
//! HTTP server here that records what is posted to `/v1/traces`).
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use berth_daemon::otlp::{OtlpConfig, Protocol, layer};
use tracing_subscriber::prelude::*;

/// What the collector was sent: (path, body) of each request.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts requests on 127.0.0.1 and keeps what each posts.
fn collector() -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            record.lock().unwrap().push((path, body));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (address, seen)
}

#[test]
fn spans_are_exported_over_http() {
    let (endpoint, seen) = collector();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = OtlpConfig {
            endpoint,
            protocol: Protocol::HttpProtobuf,
            sampling_ratio: 1.0,
            service_name: "berthd-test".into(),
        };
        let (otel, exporter) = layer(&config).unwrap();
        let subscriber = tracing_subscriber::registry().with(otel);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("pull", reference = "docker.io/library/busybox:latest");
            span.in_scope(|| tracing::info!("inside"));
        });
        tokio::task::spawn_blocking(move || exporter.shutdown())
            .await
            .unwrap();
    });
    let seen = seen.lock().unwrap();
    let (path, body) = seen.first().expect("the collector got a request");
    assert_eq!(path, "/v1/traces");
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"pull"), "the span's name is in the export");
    assert!(has(b"docker.io/library/busybox:latest"), "its fields too");
    assert!(has(b"berthd-test"), "and the service name");
}
