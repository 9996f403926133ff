//! The HTTP side of the streaming server, with plain HTTP/1.1 requests:
//! tokens are good once, unknown tokens are 404, a request that is not an
//! upgrade is refused, and SPDY protocol negotiation fails as kubelet's.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use berth_cri_streaming::{
    AttachRequest, Config, ExecRequest, PortForwardRequest, ProcessIo, RuntimeError, Server,
    StreamingRuntime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;

struct NoRuntime;

#[async_trait::async_trait]
impl StreamingRuntime for NoRuntime {
    async fn exec(&self, _: &ExecRequest, _: ProcessIo) -> Result<i32, RuntimeError> {
        Err("no runtime".into())
    }
    async fn attach(&self, _: &AttachRequest, _: ProcessIo) -> Result<(), RuntimeError> {
        Err("no runtime".into())
    }
    async fn port_forward(&self, _: &str, _: u16, _: DuplexStream) -> Result<(), RuntimeError> {
        Err("no runtime".into())
    }
}

/// Sends one request for `url` with `headers`; returns the response head.
async fn request(url: &str, headers: &[&str]) -> String {
    request_with("POST", url, headers).await
}

async fn request_with(method: &str, url: &str, headers: &[&str]) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = TcpStream::connect(host).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    // The head only: after a 101 the connection stays open for streams.
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(60), async {
        while !resp.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            resp.push(byte[0]);
        }
    })
    .await
    .expect("server hung");
    String::from_utf8_lossy(&resp).into_owned()
}

fn exec() -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn tokens_are_single_use_and_checked() {
    let server = Server::bind(
        Config::new("127.0.0.1:0".parse().unwrap()),
        Arc::new(NoRuntime),
    )
    .await
    .unwrap();
    let url = server.get_exec(exec()).unwrap();
    let base = format!("http://{}", server.local_addr());
    assert!(url.starts_with(&format!("{base}/exec/")), "{url}");

    // Neither GET nor POST: refused before the token is looked at.
    let put = request_with("PUT", &url, &[]).await;
    assert!(put.starts_with("HTTP/1.1 405"), "{put}");
    // Not an upgrade: refused, and the token is spent.
    let first = request(&url, &[]).await;
    assert!(first.starts_with("HTTP/1.1 400"), "{first}");
    let again = request(&url, &["Connection: Upgrade", "Upgrade: SPDY/3.1"]).await;
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");

    // A token of another kind, or none we issued.
    let attach = server
        .get_attach(AttachRequest {
            container_id: "c1".into(),
            stdout: true,
            ..Default::default()
        })
        .unwrap();
    let token = attach.rsplit('/').next().unwrap();
    let wrong_kind = request(&format!("{base}/exec/{token}"), &[]).await;
    assert!(wrong_kind.starts_with("HTTP/1.1 404"), "{wrong_kind}");
    let unknown = request(&format!("{base}/exec/not-a-token"), &[]).await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    // SPDY with no protocol we speak: 403 naming what we accept.
    let url = server.get_exec(exec()).unwrap();
    let refused = request(
        &url,
        &[
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: v9.channel.k8s.io",
        ],
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{refused}"
    );

    // And the upgrade itself, with the client's preferred protocol.
    let url = server.get_exec(exec()).unwrap();
    let upgraded = request(
        &url,
        &[
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: v4.channel.k8s.io",
            "X-Stream-Protocol-Version: v3.channel.k8s.io",
        ],
    )
    .await;
    assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");
    assert!(
        upgraded
            .to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{upgraded}"
    );
}

#[tokio::test]
async fn expired_tokens_and_request_checks() {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    config.token_ttl = Duration::ZERO;
    let server = Server::bind(config, Arc::new(NoRuntime)).await.unwrap();
    let url = server.get_exec(exec()).unwrap();
    let expired = request(&url, &["Connection: Upgrade", "Upgrade: SPDY/3.1"]).await;
    assert!(expired.starts_with("HTTP/1.1 404"), "{expired}");

    let err = server
        .get_exec(ExecRequest {
            tty: true,
            stderr: true,
            ..exec()
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "tty and stderr cannot both be true");
    let err = server
        .get_port_forward(PortForwardRequest::default())
        .unwrap_err();
    assert_eq!(err.to_string(), "missing required pod_sandbox_id");
}
