//! Running a short-lived helper process without forking the caller.
//!
//! std's `Command` spawns with `posix_spawn` (a vfork: nothing is copied)
//! only once it has found glibc's version and `addchdir_np` at run time
//! through `dlsym`, which finds nothing in a statically linked binary such
//! as berthd; it then falls back to fork + exec. Fork copies the page
//! tables of the whole daemon and write-protects its memory, so every page
//! it writes afterwards takes a fault: under `stress`, with one shim
//! `start` per container, that was about a quarter of berthd's CPU. This
//! module calls glibc's `posix_spawn` directly, which std would have done
//! in a dynamically linked binary.

// posix_spawn and its attribute and file-action calls have no complete safe
// wrapper: nix 0.31's spawn module has no addchdir.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

/// A helper to run to completion: stdin from `/dev/null`, stdout and
/// stderr collected, the caller's environment plus [`HelperCommand::env`].
#[derive(Debug, Clone)]
pub struct HelperCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
}

impl HelperCommand {
    /// Runs `program` (a path; `PATH` is not searched).
    pub fn new(program: impl Into<PathBuf>) -> HelperCommand {
        HelperCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut HelperCommand {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Sets an environment variable for the helper.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut HelperCommand {
        let key = key.as_ref().to_os_string();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_os_string()));
        self
    }

    /// Runs the helper in `dir`.
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut HelperCommand {
        self.cwd = Some(dir.into());
        self
    }

    /// Gives the helper `data` on stdin (then end-of-file) instead of
    /// /dev/null; at most a pipe's capacity (64 KiB), written before the
    /// helper starts.
    pub fn stdin_data(&mut self, data: Vec<u8>) -> &mut HelperCommand {
        self.stdin = Some(data);
        self
    }

    /// Starts the helper and waits for it to exit, collecting its output.
    /// Dropping the future kills the helper (it is still reaped).
    pub async fn output(&self) -> io::Result<Output> {
        let (pid, stdout, stderr) = self.spawn()?;
        let reaped = Arc::new(AtomicBool::new(false));
        let guard = KillOnDrop {
            pid,
            reaped: reaped.clone(),
        };
        let waiter = tokio::task::spawn_blocking(move || {
            let status = wait_for(pid);
            reaped.store(true, Ordering::Release);
            status
        });
        let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
        let status = waiter
            .await
            .map_err(|e| io::Error::other(format!("waiting for the helper: {e}")))??;
        drop(guard);
        Ok(Output {
            status,
            stdout: out?,
            stderr: err?,
        })
    }

    /// posix_spawn with stdout and stderr on new pipes: the pid and the
    /// pipes' read ends.
    fn spawn(&self) -> io::Result<(Pid, OwnedFd, OwnedFd)> {
        let program = cstring(self.program.as_os_str())?;
        let mut argv = vec![program.clone()];
        for a in &self.args {
            argv.push(cstring(a)?);
        }
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            if !self.env.iter().any(|(key, _)| *key == k) {
                envp.push(env_entry(&k, &v)?);
            }
        }
        for (k, v) in &self.env {
            envp.push(env_entry(k, v)?);
        }
        let cwd = self
            .cwd
            .as_deref()
            .map(|d| cstring(d.as_os_str()))
            .transpose()?;
        let dev_null = c"/dev/null";

        let stdin = match &self.stdin {
            Some(data) => Some(filled_pipe(data)?),
            None => None,
        };
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer passed below points into CStrings, vectors
        // or structs that outlive the calls; the attribute and file-action
        // objects are initialised before use and destroyed exactly once.
        let rc = unsafe {
            let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
                libc::posix_spawn_file_actions_destroy(&mut actions);
                return Err(e);
            }
            let rc = (|| -> io::Result<libc::c_int> {
                match &stdin {
                    Some(reader) => check(libc::posix_spawn_file_actions_adddup2(
                        &mut actions,
                        reader.as_raw_fd(),
                        0,
                    ))?,
                    None => check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        0,
                        dev_null.as_ptr(),
                        libc::O_RDONLY,
                        0,
                    ))?,
                }
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    out_w.as_raw_fd(),
                    1,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    err_w.as_raw_fd(),
                    2,
                ))?;
                if let Some(cwd) = &cwd {
                    check(libc::posix_spawn_file_actions_addchdir_np(
                        &mut actions,
                        cwd.as_ptr(),
                    ))?;
                }
                // As std does: an empty signal mask, and SIGPIPE (which
                // Rust programs ignore) back to its default.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
                let mut pipe: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut pipe);
                libc::sigaddset(&mut pipe, libc::SIGPIPE);
                check(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe))?;
                // Both flags are small constants (4 and 8) that fit a short.
                #[allow(clippy::cast_possible_truncation)]
                let flags =
                    (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
                check(libc::posix_spawnattr_setflags(&mut attr, flags))?;
                Ok(libc::posix_spawn(
                    &mut pid,
                    argv[0].as_ptr(),
                    &actions,
                    &attr,
                    argv_ptrs.as_ptr(),
                    envp_ptrs.as_ptr(),
                ))
            })();
            libc::posix_spawnattr_destroy(&mut attr);
            libc::posix_spawn_file_actions_destroy(&mut actions);
            rc?
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // The write ends now belong to the child alone.
        drop(out_w);
        drop(err_w);
        Ok((Pid::from_raw(pid), out_r, err_r))
    }
}

/// A pipe holding `data` with its write end closed: the read end.
fn filled_pipe(data: &[u8]) -> io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A full pipe would block the daemon: refuse rather than wait.
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut w = std::fs::File::from(w);
    std::io::Write::write_all(&mut w, data).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{} bytes for a helper's stdin: {e}", data.len()),
        )
    })?;
    Ok(r)
}

/// The exit of a process that need not be our child, watched through a
/// pidfd (which also pins the pid: it cannot be reused while watched).
#[derive(Debug)]
pub(crate) struct ProcessExit(tokio::io::unix::AsyncFd<OwnedFd>);

impl ProcessExit {
    /// Starts watching process `pid`; `None` if it is gone already or
    /// cannot be watched.
    pub(crate) fn watch(pid: u32) -> Option<ProcessExit> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // SAFETY: `fd` is a valid open pidfd, owned by the AsyncFd until
        // it is dropped, and never replaced.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        fd.ok().map(ProcessExit)
    }

    /// Returns once the process has exited.
    pub(crate) async fn wait(&self) {
        // A pidfd turns readable on exit and stays so.
        let _ = self.0.readable().await;
    }
}

/// Kills the helper if its `output` future is dropped before it exited.
struct KillOnDrop {
    pid: Pid,
    reaped: Arc<AtomicBool>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Acquire) {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

/// Blocks until `pid` exits; its status.
fn wait_for(pid: Pid) -> io::Result<ExitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::from_raw(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Everything until end of file on a pipe.
async fn read_all(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = Vec::new();
    pipe.read_to_end(&mut buf).await?;
    Ok(buf)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

fn env_entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut entry = key.as_bytes().to_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    cstring(OsStr::from_bytes(&entry))
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn runs_in_its_directory_with_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = HelperCommand::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                "pwd; echo \"$BERTH_SPAWN_TEST\"; read x; echo \"stdin:$x\"; echo oops >&2; exit 3",
            )
            .env("BERTH_SPAWN_TEST", "value with spaces")
            .current_dir(dir.path());
        let out = cmd.output().await.unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let mut lines = stdout.lines();
        let pwd = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(lines.next(), Some(pwd.to_str().unwrap()));
        assert_eq!(lines.next(), Some("value with spaces"));
        // stdin is /dev/null: `read` gets nothing.
        assert_eq!(lines.next(), Some("stdin:"));
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[tokio::test]
    async fn stdin_data_is_read_to_end_of_file() {
        let mut cmd = HelperCommand::new("/bin/sh");
        cmd.arg("-c")
            .arg("cat; echo end")
            .stdin_data(b"a\0b\n".to_vec());
        let out = cmd.output().await.unwrap();
        assert_eq!(out.stdout, b"a\0b\nend\n");
        let err = HelperCommand::new("/bin/true")
            .stdin_data(vec![0; 1 << 20])
            .output()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("1048576 bytes"), "{err}");
    }

    #[tokio::test]
    async fn process_exit_is_seen_through_a_pidfd() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exit = ProcessExit::watch(child.id()).expect("a pidfd of a live process");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), exit.wait());
        assert!(waiting.await.is_err(), "the process has not exited yet");
        drop(child.stdin.take());
        tokio::time::timeout(std::time::Duration::from_secs(20), exit.wait())
            .await
            .expect("the exit is seen");
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn reports_signals_and_missing_programs() {
        let mut cmd = HelperCommand::new("/bin/sh");
        cmd.arg("-c").arg("kill -9 $$");
        let out = cmd.output().await.unwrap();
        assert_eq!(out.status.signal(), Some(9));
        let err = HelperCommand::new("/nonexistent/helper")
            .output()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = HelperCommand::new("/bin/true")
            .current_dir("/nonexistent/dir")
            .output()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_dropped_call_kills_its_helper() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = HelperCommand::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > {}; exec sleep 60", pidfile.display()));
        let call = cmd.output();
        // Drop the call once the helper has written its pid (it never ends
        // by itself); the bound only turns a hang into a failure.
        let written = async {
            loop {
                let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
                if let Some(pid) = text.strip_suffix('\n').and_then(|p| p.parse::<i32>().ok()) {
                    return pid;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        let hang = std::time::Duration::from_secs(30);
        let pid = tokio::time::timeout(hang, async {
            tokio::select! {
                out = call => panic!("the helper ended by itself: {out:?}"),
                pid = written => pid,
            }
        })
        .await
        .expect("the helper never wrote its pid");
        // Killed and reaped: the pid disappears (bounded only against hangs).
        let deadline = std::time::Instant::now() + hang;
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "helper {pid} still exists"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
