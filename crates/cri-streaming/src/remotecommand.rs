//! Exec and attach, whatever the transport: run the runtime call with the
//! client's streams, then report the outcome on the error stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::spdy::Session;
use crate::status::{Outcome, StatusFormat};
use crate::{AttachRequest, ClientGone, ExecRequest, ProcessIo, StreamingRuntime, TerminalSize};

/// How long a SPDY client has to open all its streams (kubelet's and
/// containerd's stream creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The remote command protocol versions, newest first, as negotiated with
/// `X-Stream-Protocol-Version` over SPDY. v5 only adds a WebSocket close
/// signal, so over SPDY it behaves as v4.
pub(crate) const SPDY_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The protocol version number of a negotiated protocol name (1 for none).
pub(crate) fn version(protocol: &str) -> u8 {
    match protocol.split('.').next() {
        Some("v5") => 5,
        Some("v4") => 4,
        Some("v3") => 3,
        Some("v2") => 2,
        _ => 1,
    }
}

/// An exec or attach to serve.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

impl Action {
    pub(crate) fn wanted(&self) -> Wanted {
        let (stdin, stdout, stderr, tty) = match self {
            Action::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Action::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        };
        Wanted {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        }
    }
}

/// The application ends of the client's streams.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    pub(crate) stdin: Option<DuplexStream>,
    pub(crate) stdout: Option<DuplexStream>,
    pub(crate) stderr: Option<DuplexStream>,
    pub(crate) resize: Option<DuplexStream>,
    pub(crate) error: Option<DuplexStream>,
}

/// Runs the action with `channels` and writes its outcome; returns once
/// every stream end is dropped.
pub(crate) async fn run(
    runtime: Arc<dyn StreamingRuntime>,
    action: &Action,
    channels: Channels,
    format: StatusFormat,
    client_gone: ClientGone,
) {
    let mut resize_task = None;
    let resize = channels.resize.map(|r| {
        let (tx, rx) = mpsc::channel(8);
        resize_task = Some(tokio::spawn(decode_resizes(r, tx)));
        rx
    });
    let io = ProcessIo {
        stdin: channels.stdin.map(|s| Box::new(s) as _),
        stdout: channels.stdout.map(|s| Box::new(s) as _),
        stderr: channels.stderr.map(|s| Box::new(s) as _),
        resize,
        client_gone,
    };
    let outcome = match action {
        Action::Exec(req) => match runtime.exec(req, io).await {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::ExitCode {
                code,
                cmd: req.cmd.join(" "),
            },
            Err(e) => Outcome::Internal(format!("error executing command in container: {e}")),
        },
        Action::Attach(req) => match runtime.attach(req, io).await {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Internal(format!("error attaching to container: {e}")),
        },
    };
    tracing::debug!(?outcome, "streaming: command finished");
    if let Some(task) = resize_task {
        task.abort();
    }
    if let Some(mut error) = channels.error {
        let bytes = outcome.encode(format);
        if !bytes.is_empty() {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
}

/// Reads the client's terminal sizes: JSON objects back to back.
async fn decode_resizes<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<TerminalSize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        let mut used = 0;
        for size in sizes.by_ref() {
            match size {
                Ok(size) => {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.is_eof() => break,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming: bad resize message");
                    return;
                }
            }
        }
        used = used.max(sizes.byte_offset());
        buf.drain(..used);
    }
}

/// Serves an exec or attach on an upgraded SPDY session.
pub(crate) async fn serve_spdy(
    mut session: Session,
    runtime: Arc<dyn StreamingRuntime>,
    action: Action,
    protocol: &str,
) {
    let v = version(protocol);
    let wanted = action.wanted();
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(wanted.tty && v >= 3);
    let mut channels = Channels::default();
    let collect = async {
        let mut received = 0;
        while received < expected {
            let Some(stream) = session.accept().await else {
                return false;
            };
            let slot = match stream.header("streamtype") {
                Some("error") => &mut channels.error,
                Some("stdin") => &mut channels.stdin,
                Some("stdout") => &mut channels.stdout,
                Some("stderr") => &mut channels.stderr,
                Some("resize") => &mut channels.resize,
                other => {
                    tracing::debug!(?other, "streaming: unexpected stream type");
                    continue;
                }
            };
            *slot = Some(stream.io);
            received += 1;
        }
        true
    };
    match tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect).await {
        Ok(true) => {
            let format = if v >= 4 {
                StatusFormat::Json
            } else {
                StatusFormat::Text
            };
            let gone = session.client_gone();
            run(runtime, &action, channels, format, gone).await;
        }
        Ok(false) => tracing::debug!("streaming: client left before opening its streams"),
        Err(_) => tracing::warn!("streaming: timed out waiting for client to create streams"),
    }
    session.shutdown().await;
}
