//! A process's stdio, as containerd's `cio` package does it: FIFOs in a
//! private temporary directory that the shim opens on one side while the
//! client copies them to (and from) the caller's streams on the other; or
//! no stdio; or a log file the shim appends to.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Where a process's stdin comes from and its output goes.
///
/// Build one with [`Stdio::inherit`] (containerd's `cio.WithStdio`),
/// [`Stdio::copy`], [`Stdio::log_file`] (`cio.LogFile`) or
/// [`Stdio::null`] (`cio.NullIO`), then [`Stdio::terminal`] for a TTY.
pub struct Stdio {
    kind: Kind,
    terminal: bool,
}

/// Boxed reader the stdin copier reads from.
type Input = Box<dyn Read + Send>;
/// Boxed writer an output copier writes to.
type Output = Box<dyn Write + Send>;

enum Kind {
    Null,
    Copy {
        stdin: Option<Input>,
        stdout: Output,
        stderr: Output,
    },
    LogFile(PathBuf),
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Copy { stdin, .. } => format!("copy (stdin: {})", stdin.is_some()),
            Kind::LogFile(p) => format!("log file {}", p.display()),
        };
        f.debug_struct("Stdio")
            .field("kind", &kind)
            .field("terminal", &self.terminal)
            .finish()
    }
}

impl Stdio {
    /// No stdio: the shim connects the process to `/dev/null`.
    pub fn null() -> Stdio {
        Stdio {
            kind: Kind::Null,
            terminal: false,
        }
    }

    /// The calling process's stdin, stdout and stderr (containerd's
    /// `cio.WithStdio`).
    pub fn inherit() -> Stdio {
        Stdio::copy(Some(std::io::stdin()), std::io::stdout(), std::io::stderr())
    }

    /// Copies `stdin` (if any) into the process and its stdout and stderr
    /// into the writers given.
    pub fn copy<R, O, E>(stdin: Option<R>, stdout: O, stderr: E) -> Stdio
    where
        R: Read + Send + 'static,
        O: Write + Send + 'static,
        E: Write + Send + 'static,
    {
        Stdio {
            kind: Kind::Copy {
                stdin: stdin.map(|r| Box::new(r) as Input),
                stdout: Box::new(stdout),
                stderr: Box::new(stderr),
            },
            terminal: false,
        }
    }

    /// The process's stdout and stderr appended to the file at `path` by
    /// the shim (`file://` URIs, containerd's `cio.LogFile`); no stdin.
    pub fn log_file(path: impl Into<PathBuf>) -> Stdio {
        Stdio {
            kind: Kind::LogFile(path.into()),
            terminal: false,
        }
    }

    /// Gives the process a terminal: its stderr is merged into stdout.
    /// The container's spec must ask for one too ([`crate::spec::with_tty`]).
    pub fn terminal(mut self) -> Stdio {
        self.terminal = true;
        self
    }

    /// Makes the FIFOs for process `id` and starts copying.
    pub(crate) fn open(self, id: &str) -> Result<Io> {
        let mut io = Io {
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            terminal: self.terminal,
            dir: None,
            fifos: Vec::new(),
            done: Vec::new(),
            stdin_side: None,
            stdin_eof: None,
        };
        match self.kind {
            Kind::Null => {}
            Kind::LogFile(path) => {
                let path = std::path::absolute(&path)
                    .map_err(|e| Error::io(format!("log file {}", path.display()), e))?;
                let uri = format!("file://{}", path.display());
                io.stdout = uri.clone();
                io.stderr = uri;
            }
            Kind::Copy {
                stdin,
                stdout,
                stderr,
            } => {
                let dir = tempfile::Builder::new()
                    .prefix("berth-cio-")
                    .tempdir()
                    .map_err(|e| Error::io("creating a directory for FIFOs", e))?;
                let fifo = |name: &str| -> Result<PathBuf> {
                    let p = dir.path().join(format!("{id}-{name}"));
                    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o700))
                        .map_err(|e| {
                            Error::io(format!("creating FIFO {}", p.display()), e.into())
                        })?;
                    Ok(p)
                };
                let out = fifo("stdout")?;
                io.stdout = out.display().to_string();
                io.done.push(copy_out(out.clone(), stdout));
                io.fifos.push(out);
                if !self.terminal {
                    let err = fifo("stderr")?;
                    io.stderr = err.display().to_string();
                    io.done.push(copy_out(err.clone(), stderr));
                    io.fifos.push(err);
                }
                if let Some(input) = stdin {
                    let p = fifo("stdin")?;
                    io.stdin = p.display().to_string();
                    let side = SharedStdin::default();
                    let (tx, rx) = oneshot::channel();
                    copy_in(p.clone(), input, side.clone(), tx);
                    io.stdin_side = Some(side);
                    io.stdin_eof = Some(rx);
                    io.fifos.push(p);
                }
                io.dir = Some(dir);
            }
        }
        Ok(io)
    }
}

/// Copies the FIFO at `path` to `out` on a thread until the shim closes
/// its side; the receiver fires when done.
fn copy_out(path: PathBuf, mut out: Output) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    // A thread, not a blocking task: open(2) on a FIFO blocks until the
    // shim opens the other side, and a runtime waits for its blocking
    // tasks when it shuts down.
    std::thread::spawn(move || {
        if let Ok(mut f) = File::open(&path) {
            let mut buf = vec![0_u8; 32 << 10];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// Our write side of a stdin FIFO, shared by its copier and
/// [`Io::close_stdin`].
#[derive(Debug, Default)]
struct StdinSide {
    file: Option<File>,
    closed: bool,
}

type SharedStdin = Arc<Mutex<StdinSide>>;

/// Copies `input` into the stdin FIFO at `path` on a thread; at its end
/// closes our side and fires `eof`. Not waited for: it may block on a
/// terminal forever.
fn copy_in(path: PathBuf, mut input: Input, side: SharedStdin, eof: oneshot::Sender<()>) {
    std::thread::spawn(move || {
        // Blocks until the shim opens its side.
        let Ok(f) = OpenOptions::new().write(true).open(&path) else {
            return;
        };
        match side.lock() {
            Ok(mut s) if !s.closed => s.file = Some(f),
            _ => return,
        }
        let mut buf = vec![0_u8; 32 << 10];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Ok(mut s) = side.lock() else { return };
            let Some(f) = s.file.as_mut() else { return };
            if f.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if let Ok(mut s) = side.lock() {
            s.file = None;
            s.closed = true;
        }
        let _ = eof.send(());
    });
}

/// A process's stdio as handed to the daemon, and the copies in flight.
#[derive(Debug)]
pub struct Io {
    /// stdin path or URI (empty for none).
    pub stdin: String,
    /// stdout path or URI (empty for none).
    pub stdout: String,
    /// stderr path or URI (empty for none, or merged by a terminal).
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
    dir: Option<tempfile::TempDir>,
    fifos: Vec<PathBuf>,
    done: Vec<oneshot::Receiver<()>>,
    stdin_side: Option<SharedStdin>,
    stdin_eof: Option<oneshot::Receiver<()>>,
}

impl Io {
    /// Closes our side of the stdin FIFO (the copy stops). The process
    /// reads end of file once the shim closes its side too (`CloseIO`):
    /// like containerd's, it holds the FIFO open so clients may come and go.
    pub fn close_stdin(&self) {
        if let Some(side) = &self.stdin_side
            && let Ok(mut s) = side.lock()
        {
            s.file = None;
            s.closed = true;
        }
    }

    /// Fires when the stdin copy reached the end of its input (taken once).
    pub(crate) fn take_stdin_eof(&mut self) -> Option<oneshot::Receiver<()>> {
        self.stdin_eof.take()
    }

    /// Waits until the output copies end (the shim closed the FIFOs: the
    /// process and everything holding its stdio exited).
    pub async fn wait(&mut self) {
        for rx in self.done.drain(..) {
            let _ = rx.await;
        }
    }
}

/// Unblocks a copier still waiting in open(2) for the shim: opening a FIFO
/// read-write always succeeds and counts as both sides.
fn unblock(path: &Path) {
    let _ = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path);
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.done.iter_mut().any(|rx| rx.try_recv().is_err()) || !self.stdin.is_empty() {
            for f in &self.fifos {
                unblock(f);
            }
        }
        // The TempDir removes the FIFOs.
        self.dir.take();
    }
}

/// A growable in-memory buffer to copy a process's output into: clones
/// share the bytes.
#[derive(Debug, Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// An empty buffer.
    pub fn new() -> Buffer {
        Buffer::default()
    }

    /// The bytes written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The bytes written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer lock poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_log_file_make_no_fifos() -> Result<()> {
        let io = Stdio::null().open("x")?;
        assert_eq!((io.stdin.as_str(), io.stdout.as_str()), ("", ""));
        let io = Stdio::log_file("/tmp/x.log").open("x")?;
        assert_eq!(io.stdout, "file:///tmp/x.log");
        assert_eq!(io.stderr, io.stdout);
        Ok(())
    }

    #[tokio::test]
    async fn fifos_are_copied_and_removed() -> Result<()> {
        let out = Buffer::new();
        let mut io = Stdio::copy(None::<std::io::Empty>, out.clone(), std::io::sink())
            .terminal()
            .open("t")?;
        assert!(io.stderr.is_empty() && io.stdin.is_empty());
        let path = PathBuf::from(&io.stdout);
        // Plays the shim: writes and closes the FIFO.
        std::fs::write(&path, b"hello\n").map_err(|e| Error::io("writing", e))?;
        io.wait().await;
        assert_eq!(out.text(), "hello\n");
        drop(io);
        assert!(!path.exists());
        Ok(())
    }
}
