//! A process's standard streams: the FIFOs (or files) the client names,
//! connected to the process directly where that is safe, or through a copy
//! where the shim must be able to close or resize the stream.
//!
//! - stdout and stderr: the FIFO is opened read-write (so opening never
//!   blocks on a client that has not opened its end yet) and handed to the
//!   process, so no copy runs and the client sees end-of-file when the
//!   process and its children close it. `file://PATH` appends to a file.
//! - stdin: a pipe, fed from the FIFO by a copy. As in containerd, the
//!   shim holds a writer of the FIFO until `CloseIO`, so clients can detach
//!   and re-attach; the process sees end-of-file after `CloseIO` once every
//!   client has closed its end.
//! - terminal: runc hands the pty master over a console socket; the shim
//!   copies between it and the FIFOs and keeps it to resize the window.
//! - an empty path is /dev/null for any stream. Deliberately lenient:
//!   containerd's runc shim refuses an empty stderr next to a FIFO stdout
//!   (`opening file ""`), which the Go client sends for
//!   `cio.WithStreams(nil, w, nil)`; nothing depends on that refusal.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// The stream paths a client gave for a process.
#[derive(Debug, Clone, Default)]
pub(crate) struct StdioPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

/// Opens an output stream for a process: `None` means /dev/null.
pub(crate) fn open_output(uri: &str) -> io::Result<Option<OwnedFd>> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        return Ok(Some(f.into()));
    }
    if uri.starts_with("binary://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{uri}: binary:// log URIs are not supported by berth's shim; use a FIFO or file://"
            ),
        ));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    Ok(Some(f.into()))
}

/// A process's stdin: the read end to give the process, and the switch
/// that ends the stream (`CloseIO`).
#[derive(Debug)]
pub(crate) struct StdinPipe {
    pub(crate) reader: OwnedFd,
    pub(crate) close: oneshot::Sender<()>,
}

/// Makes the stdin pipe of a process fed from the FIFO at `path`.
pub(crate) fn stdin_pipe(path: &str) -> io::Result<Option<StdinPipe>> {
    if path.is_empty() {
        return Ok(None);
    }
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let tx = pipe::Sender::from_owned_fd(writer)?;
    let close = copy_stdin(path, tx)?;
    Ok(Some(StdinPipe { reader, close }))
}

/// Copies the client's stdin FIFO at `path` into `to` until the stream
/// ends; returns the switch that ends it (`CloseIO`).
///
/// As containerd's shim does, the FIFO is opened without waiting for a
/// client, and the shim holds a writer of its own: a client may close its
/// end and open it again (detach and re-attach) without ending the stream.
/// `CloseIO` (or the process going away) drops that writer, so the process
/// sees end-of-file once every client writer is closed too.
fn copy_stdin<W>(path: &str, mut to: W) -> io::Result<oneshot::Sender<()>>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::os::unix::fs::OpenOptionsExt;
    let mut fifo = pipe::OpenOptions::new().open_receiver(path)?;
    let hold = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let (close, mut closed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut hold = Some(hold);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                n = fifo.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                            break;
                        }
                    }
                },
                _ = &mut closed, if hold.is_some() => hold = None,
            }
        }
    });
    Ok(close)
}

/// A listening socket runc sends a new process's pty master to.
#[derive(Debug)]
pub(crate) struct ConsoleSocket {
    pub(crate) path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// Binds a fresh socket (short path: sockets are limited to 108 bytes).
    pub(crate) fn new() -> io::Result<ConsoleSocket> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "berth-pty-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Waits for runc to connect and send the pty master.
    pub(crate) async fn receive(self) -> io::Result<OwnedFd> {
        let ConsoleSocket { path, listener } = self;
        let got = tokio::task::spawn_blocking(move || receive_fd(&listener))
            .await
            .map_err(io::Error::other);
        let _ = std::fs::remove_file(&path);
        got?
    }
}

fn receive_fd(listener: &std::os::unix::net::UnixListener) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (stream, _) = listener.accept()?;
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        &stream,
        &mut [io::IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::empty(),
    )?;
    for msg in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "runc connected to the console socket but sent no pty",
    ))
}

/// Copies between a pty master and the client's FIFOs; returns the master,
/// kept for resizing, and the switch that ends stdin (`CloseIO`).
pub(crate) fn copy_console(
    master: OwnedFd,
    paths: &StdioPaths,
) -> io::Result<(std::fs::File, Option<oneshot::Sender<()>>)> {
    let master = std::fs::File::from(master);
    if !paths.stdout.is_empty() {
        let mut from = tokio::fs::File::from_std(master.try_clone()?);
        let path = paths.stdout.clone();
        let mut to = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)?;
        tokio::spawn(async move {
            copy_pty_output(&mut from, &mut to).await;
        });
    }
    let close = if paths.stdin.is_empty() {
        None
    } else {
        let to = tokio::fs::File::from_std(master.try_clone()?);
        Some(copy_stdin(&paths.stdin, to)?)
    };
    Ok((master, close))
}

/// Copies what a pty master reads to `to` until the pty's other side is
/// closed by every process (the master then reads EIO). Each chunk is
/// written before the next read: tokio's `io::copy` reads ahead while a
/// write is pending and drops what it holds when a read fails, which for a
/// pty (always ending in EIO) lost the end of the output.
async fn copy_pty_output(from: &mut tokio::fs::File, to: &mut pipe::Sender) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                if e.raw_os_error() != Some(nix::libc::EIO) {
                    tracing::warn!(error = %e, "reading the pty");
                }
                break;
            }
        };
        if let Err(e) = to.write_all(&buf[..n]).await {
            tracing::warn!(error = %e, "writing the terminal output");
            break;
        }
    }
}

/// Sets a pty's window size.
pub(crate) fn resize(master: &std::fs::File, width: u32, height: u32) -> io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size).map_err(io::Error::from)
}

/// Removes a file if it exists, ignoring errors (cleanup paths).
pub(crate) fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
