//! What the CRI plugin implements: running the streams against containers.

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

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
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
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
