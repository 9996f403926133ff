//! A tmux server of a test's own (its own socket), for what must run on a
//! real terminal: progress bars, `-it` sessions and their resizes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::crictl::{HANG, wait_output};
use crate::ok;

/// A tmux server on its own socket, killed when dropped.
#[derive(Debug)]
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// A server that will listen on `socket` (started by the first
    /// `new-session`).
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// Runs tmux with `args` against this server; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let child = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        ok(wait_output(child, HANG)?).with_context(|| format!("tmux {args:?}"))
    }

    /// What session `target` shows now.
    pub fn pane(&self, target: &str) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", target])
    }

    /// Waits (at most [`HANG`]) until session `target` shows `what`; the
    /// screen then.
    pub fn wait_pane(&self, target: &str, what: &str) -> Result<String> {
        let deadline = Instant::now() + HANG;
        loop {
            let pane = self.pane(target)?;
            if pane.contains(what) {
                return Ok(pane);
            }
            if Instant::now() > deadline {
                bail!("{what:?} not in the terminal within {HANG:?}; it shows:\n{pane}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` in a new 160x40 session `name` and returns the screen
    /// once it printed `DONE`.
    pub fn screen_of(&self, name: &str, script: &str) -> Result<String> {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "160",
            "-y",
            "40",
            &format!("{script}; echo DONE; sleep 600"),
        ])?;
        self.wait_pane(name, "DONE")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}
