//! A task's handle: typed calls to the task API of its shim (containerd's
//! `containerd.task.v2.Task`), the ttrpc connection hidden behind them.
//!
//! [`ShimManager::create_task`](crate::manager::ShimManager::create_task)
//! starts a shim and creates its task; [`ShimManager::get`] finds the
//! handle of a live one. Every call carries the task's namespace and a
//! deadline ([`CALL_TIMEOUT`] unless said otherwise; `wait` has none), and
//! fails with a [`manager::Error`](crate::manager::Error): the shim's own
//! status as [`Error::Call`] (its category and words, kept for the
//! daemon's answer), a broken connection as [`Error::Disconnected`].
//!
//! [`ShimManager::get`]: crate::manager::ShimManager::get

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use berth_api::CategoryCode;
use berth_api::containerd::task::v2 as shim;
use berth_api::containerd::types::Mount;
use berth_api::containerd::v1::types::{Process, ProcessInfo};

use crate::manager::{Error, Shim, context, context_for};

/// Deadline of an ordinary call to a shim (all but `wait`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Type URL of runc's shim options (`containerd.runc.v1.Options`).
pub const RUNC_OPTIONS_URL: &str = "containerd.runc.v1.Options";

/// The `root` field of runc's `Options` (field 7, a string).
const RUNC_OPTIONS_ROOT_FIELD: u64 = 7;

/// The standard streams of a task's process: FIFO (or other) URIs the
/// shim opens, and whether it gets a terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// Standard input (empty for none).
    pub stdin: String,
    /// Standard output (empty for none).
    pub stdout: String,
    /// Standard error (empty for none).
    pub stderr: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
}

/// A task to create: what its shim is started with and what its init
/// process runs with.
#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    /// The runtime name (`io.containerd.runc.v2`) or a shim's absolute path.
    pub runtime: &'a str,
    /// A shim binary that overrides the runtime's (empty for none).
    pub runtime_path: &'a str,
    /// The OCI runtime spec (the bundle's `config.json`).
    pub spec: &'a [u8],
    /// Where runc keeps its state unless the options name a root (runc's
    /// options only; `None` leaves the options as they are).
    pub runc_root: Option<&'a Path>,
}

/// How a process ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExitStatus {
    /// Its exit status (128 + signal for a signalled one).
    pub code: u32,
    /// When it exited, if it did.
    pub at: Option<prost_types::Timestamp>,
}

/// A deleted process: its pid and how it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deleted {
    /// The process id it had.
    pub pid: u32,
    /// How it ended.
    pub exit: ExitStatus,
}

/// What `Connect` tells of a shim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connected {
    /// The shim's process id.
    pub shim_pid: u32,
    /// The task's init process id (0: no task created).
    pub task_pid: u32,
}

/// A shim call's failure as the manager's error: the shim's status keeps
/// its category and words, anything else is a broken connection.
pub(crate) fn call_error(e: ttrpc::Error) -> Error {
    match e {
        ttrpc::Error::RpcStatus(s) => Error::Call {
            category: berth_api::Category::from_code(s.code),
            message: s.message,
        },
        other => Error::Disconnected(other.to_string()),
    }
}

/// Gives runc a root under the daemon's state unless `options` name one,
/// so a daemon never sees another's containers. Options of another type
/// pass unchanged; runc's are not decoded and encoded again: when their
/// last `root` is missing or empty, the field is appended to the encoded
/// message (a protobuf decoder keeps the last value of a scalar field).
pub fn with_runc_root(options: Option<prost_types::Any>, root: &Path) -> Option<prost_types::Any> {
    let root = root.to_string_lossy();
    let root = root.as_bytes();
    match options {
        None => {
            let mut value = Vec::with_capacity(root.len() + 11);
            append_bytes_field(&mut value, RUNC_OPTIONS_ROOT_FIELD, root);
            Some(prost_types::Any {
                type_url: RUNC_OPTIONS_URL.to_string(),
                value,
            })
        }
        Some(mut any) if any.type_url.ends_with(RUNC_OPTIONS_URL) => {
            match last_length_of(&any.value, RUNC_OPTIONS_ROOT_FIELD) {
                // A malformed message goes to the shim as it came, which
                // rejects it with its own words.
                Err(()) => {}
                Ok(Some(len)) if len > 0 => {}
                Ok(_) => append_bytes_field(&mut any.value, RUNC_OPTIONS_ROOT_FIELD, root),
            }
            Some(any)
        }
        other => other,
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    // The low byte of `v` (`to_le_bytes()[0]`), seven bits a byte.
    while v >= 0x80 {
        buf.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    buf.push(v.to_le_bytes()[0]);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, ()> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(())?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(())
}

/// Appends length-delimited field `field` holding `data`.
fn append_bytes_field(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(buf, field << 3 | 2);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// The length of the last occurrence of length-delimited field `field`
/// in encoded message `msg` (`None`: absent), walking the fields without
/// decoding them; `Err` for a message that does not parse.
fn last_length_of(mut msg: &[u8], field: u64) -> Result<Option<usize>, ()> {
    let mut last = None;
    while !msg.is_empty() {
        let key = get_varint(&mut msg)?;
        let skip = match key & 7 {
            0 => {
                get_varint(&mut msg)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(get_varint(&mut msg)?).map_err(|_| ())?;
                if key >> 3 == field {
                    last = Some(len);
                }
                len
            }
            // Groups are not in runc's options.
            _ => return Err(()),
        };
        msg = msg.get(skip..).ok_or(())?;
    }
    Ok(last)
}

impl Shim {
    fn ctx(&self) -> ttrpc::context::Context {
        context_for(&self.namespace, Some(CALL_TIMEOUT))
    }

    /// Creates the task in its started shim (the bundle's, with `rootfs`
    /// mounted on its `rootfs`); the init's pid. `options` reach the shim
    /// as they reached its `start`.
    pub(crate) async fn create(
        &self,
        rootfs: Vec<Mount>,
        stdio: Stdio,
        options: Option<prost_types::Any>,
    ) -> Result<u32, Error> {
        let req = shim::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            rootfs,
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options,
        };
        let resp = self
            .client
            .create(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(resp.pid)
    }

    /// Starts the init (`exec_id` empty) or an exec'd process; its pid.
    pub async fn start(&self, exec_id: &str) -> Result<u32, Error> {
        let req = shim::StartRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let resp = self
            .client
            .start(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(resp.pid)
    }

    /// Deletes the task (`exec_id` empty; the shim stays until
    /// [`ShimManager::remove`](crate::manager::ShimManager::remove)) or an
    /// exec'd process.
    pub async fn delete(&self, exec_id: &str) -> Result<Deleted, Error> {
        let req = shim::DeleteRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let resp = self
            .client
            .delete(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(Deleted {
            pid: resp.pid,
            exit: ExitStatus {
                code: resp.exit_status,
                at: resp.exited_at,
            },
        })
    }

    /// Adds process `exec_id` running `spec` (an OCI process, as an `Any`).
    pub async fn exec(
        &self,
        exec_id: &str,
        stdio: Stdio,
        spec: Option<prost_types::Any>,
    ) -> Result<(), Error> {
        let req = shim::ExecProcessRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            spec,
        };
        self.client
            .exec(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Sends `signal` to a process (`all`: every process of the task).
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), Error> {
        let req = shim::KillRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            signal,
            all,
        };
        self.client
            .kill(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// The task's processes.
    pub async fn pids(&self) -> Result<Vec<ProcessInfo>, Error> {
        let req = shim::PidsRequest {
            id: self.id.clone(),
        };
        let resp = self
            .client
            .pids(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(resp.processes)
    }

    /// Freezes the task.
    pub async fn pause(&self) -> Result<(), Error> {
        let req = shim::PauseRequest {
            id: self.id.clone(),
        };
        self.client
            .pause(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Thaws the task.
    pub async fn resume(&self) -> Result<(), Error> {
        let req = shim::ResumeRequest {
            id: self.id.clone(),
        };
        self.client
            .resume(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Checkpoints the task into directory `path`.
    pub async fn checkpoint(
        &self,
        path: &str,
        options: Option<prost_types::Any>,
    ) -> Result<(), Error> {
        let req = shim::CheckpointTaskRequest {
            id: self.id.clone(),
            path: path.to_string(),
            options,
        };
        self.client
            .checkpoint(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Updates the task's resources (an OCI `LinuxResources` as an `Any`)
    /// and annotations.
    pub async fn update(
        &self,
        resources: Option<prost_types::Any>,
        annotations: HashMap<String, String>,
    ) -> Result<(), Error> {
        let req = shim::UpdateTaskRequest {
            id: self.id.clone(),
            resources,
            annotations,
        };
        self.client
            .update(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Waits, without deadline, for a process to exit.
    pub async fn wait(&self, exec_id: &str) -> Result<ExitStatus, Error> {
        let req = shim::WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let resp = self
            .client
            .wait(context_for(&self.namespace, None), &req)
            .await
            .map_err(call_error)?;
        Ok(ExitStatus {
            code: resp.exit_status,
            at: resp.exited_at,
        })
    }

    /// The task's statistics (an `Any` of `io.containerd.cgroups.v1.Metrics`
    /// or `.v2`), within `timeout`.
    pub async fn stats(&self, timeout: Duration) -> Result<Option<prost_types::Any>, Error> {
        let req = shim::StatsRequest {
            id: self.id.clone(),
        };
        let resp = self
            .client
            .stats(context_for(&self.namespace, Some(timeout)), &req)
            .await
            .map_err(call_error)?;
        Ok(resp.stats)
    }

    /// A process's state as containerd's Tasks API gives it.
    pub async fn state(&self, exec_id: &str) -> Result<Process, Error> {
        self.state_within(exec_id, CALL_TIMEOUT).await
    }

    /// [`Shim::state`] within `timeout`.
    pub async fn state_within(&self, exec_id: &str, timeout: Duration) -> Result<Process, Error> {
        let req = shim::StateRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let s = self
            .client
            .state(context_for(&self.namespace, Some(timeout)), &req)
            .await
            .map_err(call_error)?;
        Ok(Process {
            container_id: self.id.clone(),
            id: if s.exec_id.is_empty() {
                s.id
            } else {
                s.exec_id
            },
            pid: s.pid,
            status: s.status,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
            exit_status: s.exit_status,
            exited_at: s.exited_at,
        })
    }

    /// Resizes a process's terminal (nothing for one without).
    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<(), Error> {
        let req = shim::ResizePtyRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            width,
            height,
        };
        self.client
            .resize_pty(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Closes a process's standard input (`stdin`).
    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<(), Error> {
        let req = shim::CloseIoRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            stdin,
        };
        self.client
            .close_io(self.ctx(), &req)
            .await
            .map_err(call_error)?;
        Ok(())
    }

    /// Asks the shim to exit (`now`: even with tasks left); it exits as it
    /// answers, so a broken connection counts as done.
    pub(crate) async fn shutdown(&self, now: bool) {
        let req = shim::ShutdownRequest {
            id: self.id.clone(),
            now,
        };
        let _ = self
            .client
            .shutdown(context(Duration::from_secs(2)), &req)
            .await;
    }

    /// Asks the shim for its pid and its task's (`Connect`), within
    /// `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Connected, Error> {
        let req = shim::ConnectRequest {
            id: self.id.clone(),
        };
        let resp = self
            .client
            .connect(context_for(&self.namespace, Some(timeout)), &req)
            .await
            .map_err(call_error)?;
        Ok(Connected {
            shim_pid: resp.shim_pid,
            task_pid: resp.task_pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use berth_api::containerd::runc::v1::Options;
    use prost::Message;

    use super::*;

    fn root_of(any: &prost_types::Any) -> Options {
        assert!(any.type_url.ends_with(RUNC_OPTIONS_URL), "{}", any.type_url);
        Options::decode(any.value.as_slice()).expect("runc options")
    }

    #[test]
    fn runc_root_is_added_unless_the_options_name_one() {
        let root = Path::new("/var/lib/berth/runc");
        let none = with_runc_root(None, root).expect("options");
        assert_eq!(root_of(&none).root, "/var/lib/berth/runc");

        let given = Options {
            shim_cgroup: "/pods/a".into(),
            systemd_cgroup: true,
            io_uid: 1000,
            ..Options::default()
        };
        let any = prost_types::Any {
            type_url: format!("type.googleapis.com/{RUNC_OPTIONS_URL}"),
            value: given.encode_to_vec(),
        };
        let out = with_runc_root(Some(any.clone()), root).expect("options");
        assert_eq!(out.type_url, any.type_url);
        assert_eq!(
            root_of(&out),
            Options {
                root: "/var/lib/berth/runc".into(),
                ..given.clone()
            }
        );

        let own = Options {
            root: "/run/mine".into(),
            ..given.clone()
        };
        let any = prost_types::Any {
            type_url: RUNC_OPTIONS_URL.into(),
            value: own.encode_to_vec(),
        };
        assert_eq!(with_runc_root(Some(any.clone()), root), Some(any));

        // Another runtime's options, and runc's that do not parse, pass as
        // they are.
        for any in [
            prost_types::Any {
                type_url: "io.example.Options".into(),
                value: vec![1, 2, 3],
            },
            prost_types::Any {
                type_url: RUNC_OPTIONS_URL.into(),
                value: vec![0x3a, 0x05, b'x'],
            },
        ] {
            assert_eq!(with_runc_root(Some(any.clone()), root), Some(any));
        }
    }

    #[test]
    fn shim_statuses_keep_their_category_and_words() {
        use berth_api::ErrorCategory;
        let e = call_error(ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::NOT_FOUND,
            "process \"x\": not found",
        )));
        assert_eq!(e.category(), berth_api::Category::NotFound);
        assert_eq!(e.to_string(), "process \"x\": not found");
        let e = call_error(ttrpc::Error::LocalClosed);
        assert_eq!(e.category(), berth_api::Category::Unavailable);
        assert!(e.to_string().starts_with("shim connection: "), "{e}");
    }
}
