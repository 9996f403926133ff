//! A task's stdio as containerd clients do it: FIFOs in a private directory,
//! opened by the shim on one side and copied to this terminal on the other.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context as _;

/// Where FIFO directories are made.
const FIFO_ROOT: &str = "/run/berth/fifo";

/// The FIFOs of one process and the threads copying them.
#[derive(Debug)]
pub(crate) struct Stdio {
    dir: PathBuf,
    /// Path of the stdin FIFO, or empty.
    pub(crate) stdin: String,
    /// Path of the stdout FIFO, or empty.
    pub(crate) stdout: String,
    /// Path of the stderr FIFO (empty with a terminal, which merges it).
    pub(crate) stderr: String,
    copiers: Vec<JoinHandle<()>>,
}

fn mkfifo(path: &Path) -> anyhow::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o700))
        .with_context(|| format!("creating FIFO {}", path.display()))
}

impl Stdio {
    /// No stdio at all (the shim connects the process to /dev/null).
    pub(crate) fn null() -> Stdio {
        Stdio {
            dir: PathBuf::new(),
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            copiers: Vec::new(),
        }
    }

    /// FIFOs for process `id`: stdout always, stdin when `with_stdin`,
    /// stderr unless `terminal`. Nothing is opened until [`Stdio::attach`].
    pub(crate) fn create(id: &str, with_stdin: bool, terminal: bool) -> anyhow::Result<Stdio> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(FIFO_ROOT)
            .with_context(|| format!("creating {FIFO_ROOT}"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = Path::new(FIFO_ROOT).join(format!("{nanos}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = |s: &str| dir.join(format!("{id}-{s}"));
        let mut io = Stdio {
            stdin: String::new(),
            stdout: path("stdout").display().to_string(),
            stderr: String::new(),
            dir: dir.clone(),
            copiers: Vec::new(),
        };
        mkfifo(Path::new(&io.stdout))?;
        if with_stdin {
            io.stdin = path("stdin").display().to_string();
            mkfifo(Path::new(&io.stdin))?;
        }
        if !terminal {
            io.stderr = path("stderr").display().to_string();
            mkfifo(Path::new(&io.stderr))?;
        }
        Ok(io)
    }

    /// Starts copying: stdout/stderr FIFOs to ours until the shim closes
    /// them, our stdin into the stdin FIFO.
    pub(crate) fn attach(&mut self) {
        for (fifo, to_err) in [(self.stdout.clone(), false), (self.stderr.clone(), true)] {
            if fifo.is_empty() {
                continue;
            }
            self.copiers.push(std::thread::spawn(move || {
                // Blocks until the shim opens the write side; EOF when it closes it.
                let Ok(mut f) = std::fs::File::open(&fifo) else {
                    return;
                };
                let mut buf = vec![0_u8; 32 << 10];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let w = if to_err {
                                std::io::stderr()
                                    .write_all(&buf[..n])
                                    .and_then(|()| std::io::stderr().flush())
                            } else {
                                std::io::stdout()
                                    .write_all(&buf[..n])
                                    .and_then(|()| std::io::stdout().flush())
                            };
                            if w.is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
        if !self.stdin.is_empty() {
            let fifo = self.stdin.clone();
            // Not joined: it ends with our stdin, which may be a terminal.
            std::thread::spawn(move || {
                let Ok(mut f) = OpenOptions::new().write(true).custom_flags(0).open(&fifo) else {
                    return;
                };
                let _ = std::io::copy(&mut std::io::stdin(), &mut f);
            });
        }
    }

    /// Waits until the output FIFOs are drained and closed.
    pub(crate) fn wait(&mut self) {
        for c in self.copiers.drain(..) {
            let _ = c.join();
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Puts the terminal on stdin into raw mode until dropped.
#[derive(Debug)]
pub(crate) struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    /// Raw mode on stdin, if it is a terminal.
    pub(crate) fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        }
        RawTerminal { saved }
    }

    /// The terminal's size (columns, rows), if stdin is one.
    pub(crate) fn size() -> Option<(u32, u32)> {
        let ws = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
        Some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
