//! Reaping children: the shim is a child subreaper, so it inherits every
//! container process once runc exits, and must collect all their exits.
//!
//! Every child the shim starts itself (runc invocations) is spawned through
//! [`Reaper::spawn`], which registers it before the reaper can see its exit,
//! so the status always reaches the caller. Exits of any other pid (container
//! init and exec processes) go to the channel given to [`Reaper::run`].
//! tokio's own child handling is never used: its per-child `waitpid` would
//! race with the `waitpid(-1)` here.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::sync::{mpsc, oneshot};

/// A process that exited and was reaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    /// Its pid.
    pub(crate) pid: i32,
    /// The exit code, or 128 + signal number when a signal ended it.
    pub(crate) status: u32,
    /// When the shim reaped it.
    pub(crate) at: SystemTime,
}

/// Collects exit statuses of the shim's children.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<u32>>>,
}

impl Reaper {
    /// Spawns `cmd` and returns it with a receiver of its exit status.
    pub(crate) fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<u32>)> {
        // The lock is held across the spawn so the reaper, which takes it to
        // dispatch, cannot see this child's exit before it is registered.
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid_of(&child), tx);
        Ok((child, rx))
    }

    /// Reaps children on every SIGCHLD until the process ends; exits of
    /// pids nobody registered go to `exits`.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut sigchld: tokio::signal::unix::Signal,
        exits: mpsc::UnboundedSender<Exit>,
    ) {
        loop {
            self.reap_all(&exits);
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }

    fn reap_all(&self, exits: &mpsc::UnboundedSender<Exit>) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code.unsigned_abs()),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid.as_raw(), 128 + signal as u32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            let waiter = self
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pid);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    let _ = exits.send(Exit {
                        pid,
                        status,
                        at: SystemTime::now(),
                    });
                }
            }
        }
    }
}

/// The pid of a child as the kernel's signed type.
pub(crate) fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}
