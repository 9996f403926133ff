//! What the CRI plugin implements: running the streams against containers.

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::{mpsc, watch};

use crate::{AttachRequest, ExecRequest};

/// An error a runtime returns; its text reaches the client.
pub type RuntimeError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of bytes from the client (standard input).
pub type Input = Box<dyn AsyncRead + Send + Unpin>;
/// A stream of bytes to the client (standard output or error).
pub type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size the client asks for, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Tells a runtime that the client's connection has ended (it closed,
/// vanished or went idle), so an attach or exec can stop waiting on it.
#[derive(Debug, Clone, Default)]
pub struct ClientGone(Option<watch::Receiver<bool>>);

impl ClientGone {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self(Some(rx))
    }

    /// Resolves once the client's connection has ended (never, for a
    /// default value).
    pub async fn wait(&mut self) {
        match &mut self.0 {
            // The session dropping its sender means the same.
            Some(rx) => {
                let _ = rx.wait_for(|gone| *gone).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Whether the client's connection has ended.
    pub fn is_gone(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|rx| *rx.borrow() || rx.has_changed().is_err())
    }
}

/// The client's streams for one exec or attach. Each is present only when
/// the request asked for it. Drop an output to close it (the client then
/// sees end of file); stdin reads end of file when the client closes it.
#[derive(Default)]
pub struct ProcessIo {
    /// Standard input from the client.
    pub stdin: Option<Input>,
    /// Standard output to the client (the terminal's output with `tty`).
    pub stdout: Option<Output>,
    /// Standard error to the client (never with `tty`).
    pub stderr: Option<Output>,
    /// Terminal size changes, with `tty` (the first is the initial size).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Resolves when the client's connection ends.
    pub client_gone: ClientGone,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .field("client_gone", &self.client_gone.is_gone())
            .finish()
    }
}

/// The runtime side of the streaming server, implemented by the CRI plugin.
///
/// Each call runs for as long as the stream does; the server writes the
/// outcome to the client when it returns.
#[async_trait::async_trait]
pub trait StreamingRuntime: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with the client's streams and returns
    /// its exit code (non-zero codes reach the client as
    /// `NonZeroExitCode`). Return only once the outputs are dropped.
    async fn exec(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError>;

    /// Connects the client's streams to the container's main process until
    /// it exits or the client goes away.
    async fn attach(&self, req: &AttachRequest, io: ProcessIo) -> Result<(), RuntimeError>;

    /// Carries one forwarded connection: copy between `stream` and `port`
    /// in the pod's network namespace until either side closes.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: DuplexStream,
    ) -> Result<(), RuntimeError>;
}
