//! WebSocket protocol variants crictl does not speak (it offers
//! `v5.channel.k8s.io` for exec and SPDY-in-WebSocket for port-forward),
//! driven with tokio-tungstenite's client: `v4.channel.k8s.io` and
//! `base64.channel.k8s.io` exec, and kubelet's `v4.channel.k8s.io` port
//! forwarding. Expected bytes follow kubelet's wsstream/remotecommand and
//! portforward/websocket.go.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use berth_cri_streaming::{
    AttachRequest, Config, ExecRequest, PortForwardRequest, ProcessIo, RuntimeError, Server,
    StreamingRuntime,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const HANG: Duration = Duration::from_secs(60);

/// Writes "out" and "err" and exits 2; forwards to the port on 127.0.0.1.
struct Scripted;

#[async_trait::async_trait]
impl StreamingRuntime for Scripted {
    async fn exec(&self, _: &ExecRequest, mut io: ProcessIo) -> Result<i32, RuntimeError> {
        io.stdout
            .as_mut()
            .ok_or("no stdout")?
            .write_all(b"out")
            .await?;
        io.stderr
            .as_mut()
            .ok_or("no stderr")?
            .write_all(b"err")
            .await?;
        Ok(2)
    }
    async fn attach(&self, _: &AttachRequest, _: ProcessIo) -> Result<(), RuntimeError> {
        Err("no attach".into())
    }
    async fn port_forward(
        &self,
        _: &str,
        port: u16,
        mut stream: DuplexStream,
    ) -> Result<(), RuntimeError> {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
        tokio::io::copy_bidirectional(&mut stream, &mut conn).await?;
        Ok(())
    }
}

async fn server() -> Server {
    Server::bind(
        Config::new("127.0.0.1:0".parse().unwrap()),
        Arc::new(Scripted),
    )
    .await
    .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(url: &str, protocol: &str) -> Ws {
    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let host = req.uri().authority().unwrap().to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    ws
}

/// Every message until the server closes, as (channel, payload).
async fn drain(ws: &mut Ws, base64: bool) -> Vec<(u8, Vec<u8>)> {
    let mut got = Vec::new();
    tokio::time::timeout(HANG, async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) if !base64 => got.push((b[0], b[1..].to_vec())),
                Message::Text(t) if base64 => got.push((
                    t.as_bytes()[0] - b'0',
                    base64::engine::general_purpose::STANDARD
                        .decode(&t[1..])
                        .unwrap(),
                )),
                Message::Close(_) => break,
                other => panic!("unexpected message {other:?}"),
            }
        }
    })
    .await
    .expect("server never closed");
    got
}

fn on(got: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
    got.iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

fn exec_request() -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["x".into()],
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_v4_binary_channels_and_status() {
    let server = server().await;
    let url = server.get_exec(exec_request()).unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    let got = drain(&mut ws, false).await;
    // kubelet opens with an empty message on the lowest output channel.
    assert_eq!(got.first(), Some(&(1, Vec::new())));
    assert_eq!(on(&got, 1), b"out");
    assert_eq!(on(&got, 2), b"err");
    let status: serde_json::Value = serde_json::from_slice(&on(&got, 3)).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
}

#[tokio::test]
async fn exec_base64_channels_and_text_error() {
    let server = server().await;
    let url = server.get_exec(exec_request()).unwrap();
    let mut ws = connect(&url, "base64.channel.k8s.io").await;
    let got = drain(&mut ws, true).await;
    assert_eq!(on(&got, 1), b"out");
    assert_eq!(on(&got, 2), b"err");
    // Before v4 the error channel carries the message, not a Status.
    let error = String::from_utf8(on(&got, 3)).unwrap();
    assert!(
        error.starts_with("command terminated with non-zero exit code"),
        "{error}"
    );
}

#[tokio::test]
async fn port_forward_v4_channels() {
    let pod = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = pod.local_addr().unwrap().port();
    let echo = tokio::spawn(async move {
        let (mut conn, _) = pod.accept().await.unwrap();
        let (mut r, mut w) = conn.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let server = server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![i32::from(port)],
        })
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    // Each channel opens with the port, little-endian.
    let mut opened = Vec::new();
    while opened.len() < 2 {
        match tokio::time::timeout(HANG, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => opened.push(b),
            other => panic!("unexpected message {other:?}"),
        }
    }
    opened.sort();
    let le = port.to_le_bytes();
    assert_eq!(opened, vec![vec![0, le[0], le[1]], vec![1, le[0], le[1]]]);

    ws.send(Message::Binary(b"\x00ping through".to_vec()))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < b"ping through".len() {
        match tokio::time::timeout(HANG, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => {
                assert_eq!(b[0], 0, "data arrives on the data channel");
                echoed.extend_from_slice(&b[1..]);
            }
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!(echoed, b"ping through");
    ws.close(None).await.unwrap();
    echo.abort();
}
