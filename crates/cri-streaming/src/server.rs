//! The HTTP server: hands out URLs, and on `/exec/<token>`,
//! `/attach/<token>` and `/portforward/<token>` upgrades the connection to
//! SPDY/3.1 or WebSocket and serves the request stored under the token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::cache::{Cached, RequestCache};
use crate::remotecommand::{self, Action};
use crate::request::validate_streams;
use crate::status::StatusFormat;
use crate::ws::{self, Encoding, Mux};
use crate::{
    AttachRequest, Error, ExecRequest, PortForwardRequest, StreamingRuntime, portforward, spdy,
};

/// The header carrying the client's (and then the chosen) stream protocol.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The header listing what we accept when negotiation fails.
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// SPDY tunnelled in WebSocket, as client-go's port-forward dialer asks.
const SPDY_TUNNEL_PORTFORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// How the server runs. [`Config::new`] gives containerd's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (containerd's default
    /// `stream_server_port = "0"`).
    pub addr: SocketAddr,
    /// The host:port put in URLs; the bound address when `None`.
    pub advertise: Option<String>,
    /// How long a URL stays valid (kubelet and containerd: 1 minute).
    pub token_ttl: Duration,
    /// How many URLs may be outstanding (kubelet and containerd: 1000).
    pub max_in_flight: usize,
    /// A connection with no frames either way for this long is closed
    /// (containerd's `stream_idle_timeout`, default 4 hours).
    pub idle_timeout: Duration,
}

impl Config {
    /// containerd's defaults on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            advertise: None,
            token_ttl: Duration::from_secs(60),
            max_in_flight: 1000,
            idle_timeout: Duration::from_secs(4 * 60 * 60),
        }
    }
}

/// A running streaming server. Dropping it stops accepting connections;
/// streams already running carry on to their end.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    base_url: String,
    cache: Arc<RequestCache>,
    accept: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct State {
    cache: Arc<RequestCache>,
    runtime: Arc<dyn StreamingRuntime>,
    idle_timeout: Duration,
}

impl Server {
    /// Listens on `config.addr` and serves streams with `runtime`.
    pub async fn bind(config: Config, runtime: Arc<dyn StreamingRuntime>) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr,
                source,
            })?;
        Self::serve(listener, config, runtime)
    }

    /// Serves streams with `runtime` on `listener`, bound already (for
    /// callers that start without awaiting, e.g. a plugin's init); must be
    /// called within a Tokio runtime. `config.addr` only names it in errors.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: Config,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Result<Self, Error> {
        let bind_err = |source| Error::Bind {
            addr: config.addr,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(listener).map_err(bind_err)?;
        Self::serve(listener, config, runtime)
    }

    fn serve(
        listener: TcpListener,
        config: Config,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Result<Self, Error> {
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let host = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let cache = Arc::new(RequestCache::new(config.token_ttl, config.max_in_flight));
        let state = Arc::new(State {
            cache: cache.clone(),
            runtime,
            idle_timeout: config.idle_timeout,
        });
        let accept = tokio::spawn(accept_loop(listener, state));
        tracing::info!(%local_addr, "CRI streaming server listening");
        Ok(Self {
            local_addr,
            base_url: format!("http://{host}"),
            cache,
            accept,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stores an exec and returns the URL for CRI's `ExecResponse.url`.
    pub fn get_exec(&self, req: ExecRequest) -> Result<String, Error> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("exec", Cached::Exec(req))
    }

    /// Stores an attach and returns the URL for CRI's `AttachResponse.url`.
    pub fn get_attach(&self, req: AttachRequest) -> Result<String, Error> {
        validate_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("attach", Cached::Attach(req))
    }

    /// Stores a port forward and returns the URL for CRI's
    /// `PortForwardResponse.url`.
    pub fn get_port_forward(&self, req: PortForwardRequest) -> Result<String, Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(Error::InvalidRequest(
                "missing required pod_sandbox_id".into(),
            ));
        }
        self.url("portforward", Cached::PortForward(req))
    }

    fn url(&self, kind: &str, req: Cached) -> Result<String, Error> {
        let token = self.cache.insert(req)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server: accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming server: connection ended");
            }
        });
    }
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, msg: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(msg)));
    *resp.status_mut() = status;
    resp
}

fn handle(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    // kubelet routes GET and POST only (client-go's SPDY executor POSTs,
    // WebSocket clients GET); anything else leaves the token unspent.
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed: use GET or POST\n", req.method()),
        );
    }
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, format!("no such path: /{path}\n"));
    };
    let cached = match (kind, state.cache.consume(token)) {
        (_, None) => {
            return plain(
                StatusCode::NOT_FOUND,
                "streaming token not found or expired: ask the runtime for a new URL\n".into(),
            );
        }
        (k, Some(c)) => match (k, c) {
            ("exec", c @ Cached::Exec(_))
            | ("attach", c @ Cached::Attach(_))
            | ("portforward", c @ Cached::PortForward(_)) => c,
            _ => {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("no {kind} request under this token\n"),
                );
            }
        },
    };
    let runtime = state.runtime.clone();
    let idle = state.idle_timeout;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let headers = req.headers();
    if is_websocket(headers) {
        return websocket(
            runtime,
            cached,
            headers,
            req.uri().query(),
            on_upgrade,
            idle,
        );
    }
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case(spdy::UPGRADE) || !has_token(headers, CONNECTION, "upgrade") {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: expected 'Connection: Upgrade' with 'Upgrade: SPDY/3.1' or 'Upgrade: websocket'\n"
                .into(),
        );
    }
    let supported: &[&'static str] = match cached {
        Cached::PortForward(_) => &[portforward::SPDY_PROTOCOL],
        _ => remotecommand::SPDY_PROTOCOLS,
    };
    let protocol = match negotiate(headers, supported) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let chosen = protocol.clone();
    tokio::spawn(async move {
        let protocol = chosen;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "streaming: SPDY upgrade failed");
                return;
            }
        };
        let session = match spdy::Session::start(TokioIo::new(upgraded), idle) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "streaming: starting SPDY session");
                return;
            }
        };
        match cached {
            Cached::Exec(r) => {
                remotecommand::serve_spdy(session, runtime, Action::Exec(r), &protocol).await
            }
            Cached::Attach(r) => {
                remotecommand::serve_spdy(session, runtime, Action::Attach(r), &protocol).await
            }
            Cached::PortForward(r) => {
                portforward::serve_spdy(session, runtime, r.pod_sandbox_id).await
            }
        }
    });
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
    if let Ok(v) = HeaderValue::from_str(&protocol)
        && !protocol.is_empty()
    {
        h.insert(PROTOCOL_HEADER, v);
    }
    resp
}

/// Every value of a list header, split on commas and trimmed.
fn list(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    list(headers, name)
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, CONNECTION, "upgrade")
        && headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// httpstream.Handshake: the first protocol the client offers that we
/// support; no offer at all means the legacy protocol ("").
fn negotiate(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<String, Box<Response<Body>>> {
    let offered = list(headers, PROTOCOL_HEADER);
    if offered.is_empty() {
        return Ok(String::new());
    }
    if let Some(p) = offered.iter().find(|p| supported.contains(&p.as_str())) {
        return Ok(p.clone());
    }
    let mut resp = Box::new(plain(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"
        ),
    ));
    for p in supported {
        resp.headers_mut()
            .append(ACCEPTED_HEADER, HeaderValue::from_static(p));
    }
    Err(resp)
}

/// WebSocket subprotocols for exec and attach, in our order of preference
/// when the client offers several at equal rank.
const WS_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// WebSocket subprotocols for port forwarding.
const WS_PORTFORWARD: &[&str] = &[
    SPDY_TUNNEL_PORTFORWARD,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

fn websocket(
    runtime: Arc<dyn StreamingRuntime>,
    cached: Cached,
    headers: &HeaderMap,
    query: Option<&str>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    idle: Duration,
) -> Response<Body> {
    let Some(key) = headers.get("sec-websocket-key") else {
        return plain(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Sec-WebSocket-Key\n".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let supported = match cached {
        Cached::PortForward(_) => WS_PORTFORWARD,
        _ => WS_REMOTECOMMAND,
    };
    let offered = list(headers, "sec-websocket-protocol");
    let protocol = if offered.is_empty() {
        String::new()
    } else if let Some(p) = offered.iter().find(|p| supported.contains(&p.as_str())) {
        p.clone()
    } else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "requested WebSocket protocol(s) {offered:?} are not supported; supported: {supported:?}\n"
            ),
        );
    };
    // Port forwarding over channels serves the ports of the CRI request
    // (kubelet fills them from its client's `?port=`); a request without
    // any takes them from this URL's `?port=` instead.
    let mut ports: Vec<u16> = match &cached {
        Cached::PortForward(r) => r
            .ports
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .collect(),
        _ => Vec::new(),
    };
    if ports.is_empty() {
        ports = query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("port="))
            .flat_map(|p| p.split(','))
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    if matches!(cached, Cached::PortForward(_))
        && protocol != SPDY_TUNNEL_PORTFORWARD
        && ports.is_empty()
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required for port forwarding over WebSocket channels\n"
                .into(),
        );
    }
    let chosen = protocol.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "streaming: WebSocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match cached {
            Cached::Exec(r) => ws_remotecommand(ws, runtime, Action::Exec(r), &chosen, idle).await,
            Cached::Attach(r) => {
                ws_remotecommand(ws, runtime, Action::Attach(r), &chosen, idle).await
            }
            Cached::PortForward(r) if chosen == SPDY_TUNNEL_PORTFORWARD => {
                let (pipe, carrier) = ws::tunnel(ws);
                match spdy::Session::start(pipe, idle) {
                    Ok(session) => {
                        portforward::serve_spdy(session, runtime, r.pod_sandbox_id).await
                    }
                    Err(e) => tracing::warn!(error = %e, "streaming: starting tunnelled SPDY"),
                }
                let _ = carrier.await;
            }
            Cached::PortForward(r) => {
                ws_portforward(ws, runtime, r.pod_sandbox_id, &chosen, ports, idle).await
            }
        }
    });
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if !protocol.is_empty()
        && let Ok(v) = HeaderValue::from_str(&protocol)
    {
        h.insert("sec-websocket-protocol", v);
    }
    resp
}

fn ws_encoding(protocol: &str) -> Encoding {
    Encoding {
        base64: protocol.contains("base64"),
        close_signals: remotecommand::version(protocol) >= 5,
    }
}

/// Channel numbers of the remote command protocol.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

async fn ws_remotecommand<S>(
    ws: WebSocketStream<S>,
    runtime: Arc<dyn StreamingRuntime>,
    action: Action,
    protocol: &str,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let wanted = action.wanted();
    let mut numbers = vec![ERROR];
    for (on, ch) in [
        (wanted.stdin, STDIN),
        (wanted.stdout, STDOUT),
        (wanted.stderr, STDERR),
        (wanted.tty, RESIZE),
    ] {
        if on {
            numbers.push(ch);
        }
    }
    let (mux, mut ends) = Mux::start(ws, ws_encoding(protocol), &numbers, idle);
    // kubelet tells the client the streams are up with an empty message on
    // the lowest channel it writes.
    let first = if wanted.stdout {
        STDOUT
    } else if wanted.stderr {
        STDERR
    } else {
        ERROR
    };
    mux.send(first, Vec::new()).await;
    let channels = remotecommand::Channels {
        stdin: ends.remove(&STDIN),
        stdout: ends.remove(&STDOUT),
        stderr: ends.remove(&STDERR),
        resize: ends.remove(&RESIZE),
        error: ends.remove(&ERROR),
    };
    let format = if remotecommand::version(protocol) >= 4 {
        StatusFormat::Json
    } else {
        StatusFormat::Text
    };
    let gone = mux.client_gone_signal();
    remotecommand::run(runtime, &action, channels, format, gone).await;
    mux.shutdown().await;
}

/// kubelet's WebSocket port forwarding: per requested port, channel 2i
/// carries data and 2i+1 errors; each channel opens with the port as two
/// little-endian bytes, and a failure is plain text on the error channel.
async fn ws_portforward<S>(
    ws: WebSocketStream<S>,
    runtime: Arc<dyn StreamingRuntime>,
    pod: String,
    protocol: &str,
    ports: Vec<u16>,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let count = ports.len().min(127);
    let numbers: Vec<u8> = (0..count * 2)
        .filter_map(|n| u8::try_from(n).ok())
        .collect();
    let (mut mux, mut ends) = Mux::start(ws, ws_encoding(protocol), &numbers, idle);
    let mut forwards = tokio::task::JoinSet::new();
    for (i, port) in ports.into_iter().take(count).enumerate() {
        let Ok(i) = u8::try_from(i) else { break };
        let (data_ch, err_ch) = (2 * i, 2 * i + 1);
        mux.send(data_ch, port.to_le_bytes().to_vec()).await;
        mux.send(err_ch, port.to_le_bytes().to_vec()).await;
        if let (Some(data), Some(error)) = (ends.remove(&data_ch), ends.remove(&err_ch)) {
            forwards.spawn(portforward::forward(
                runtime.clone(),
                pod.clone(),
                port.to_string(),
                data,
                error,
                portforward::ErrorFormat::Text,
            ));
        }
    }
    tokio::select! {
        _ = async { while forwards.join_next().await.is_some() {} } => {}
        _ = mux.client_gone() => { forwards.abort_all(); }
    }
    while forwards.join_next().await.is_some() {}
    mux.shutdown().await;
}
