//! `berthctl shim --id <id> state|start|delete|exec|shutdown`: talks to a
//! container's shim directly over its ttrpc socket (containerd's
//! `containerd.task.v2.Task`), bypassing the daemon, as `ctr shim`. The
//! socket is found where containerd puts it (and berth's shims too): the
//! hash of the daemon's address, the namespace and the id under
//! `/run/containerd/s`, unless `--shim-address` names it.

use anyhow::{Context as _, bail};
use berth_api::containerd::task::v2 as shim;
use prost::Message;

use crate::context::Global;

/// How long one call to the shim may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The shim's container id.
    #[arg(long, global = true)]
    id: Option<String>,
    /// The shim's ttrpc address (default: computed from the daemon's
    /// address, the namespace and --id, as containerd does).
    #[arg(long, global = true)]
    shim_address: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Get the state of the task's main process (or of an exec), as JSON.
    State {
        /// An exec's id (default: the main process).
        exec_id: Option<String>,
    },
    /// Start the task's main process (or a created exec).
    Start {
        /// An exec's id (default: the main process).
        exec_id: Option<String>,
    },
    /// Delete the task (or an exec) and print its exit status.
    Delete {
        /// An exec's id (default: the main process).
        exec_id: Option<String>,
    },
    /// Exec a new process in the task's container and start it.
    Exec {
        /// The new process's id.
        exec_id: String,
        /// The process spec (an OCI `process` JSON file).
        #[arg(long)]
        spec: String,
        /// Path of the stdin fifo.
        #[arg(long)]
        stdin: Option<String>,
        /// Path of the stdout fifo.
        #[arg(long)]
        stdout: Option<String>,
        /// Path of the stderr fifo.
        #[arg(long)]
        stderr: Option<String>,
        /// Allocate a terminal.
        #[arg(short, long)]
        tty: bool,
    },
    /// Shut the shim down if it has no container left.
    Shutdown {
        /// Exit even with containers left.
        #[arg(long)]
        now: bool,
    },
}

/// The shim's address: given, or containerd's for this daemon, namespace
/// and id.
fn address(global: &Global, args: &Args, id: &str) -> String {
    match &args.shim_address {
        Some(a) if a.starts_with("unix://") => a.clone(),
        Some(a) => format!("unix://{a}"),
        None => berth_runtime::address::socket_address(&global.address, &global.namespace(), id),
    }
}

fn context(global: &Global) -> ttrpc::context::Context {
    berth_runtime::manager::context_for(&global.namespace(), Some(CALL_TIMEOUT))
}

/// A shim's answer as a readable error.
fn call_error(what: &str, e: ttrpc::Error) -> anyhow::Error {
    match e {
        ttrpc::Error::RpcStatus(s) => anyhow::anyhow!("{what}: {}", s.message),
        other => anyhow::anyhow!("{what}: {other}"),
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let Some(id) = args.id.clone() else {
        bail!("container id must be specified (--id)");
    };
    let address = address(global, &args, &id);
    let client = ttrpc::asynchronous::Client::connect(&address)
        .await
        .map_err(|e| {
            anyhow::anyhow!("fail to connect to container {id}'s shim at {address}: {e}")
        })?;
    let task = shim::TaskClient::new(client);
    let ctx = || context(global);
    match args.command {
        Command::State { exec_id } => {
            let r = task
                .state(
                    ctx(),
                    &shim::StateRequest {
                        id: id.clone(),
                        exec_id: exec_id.unwrap_or_default(),
                    },
                )
                .await
                .map_err(|e| call_error("state", e))?;
            let json = crate::json::decode("containerd.task.v2.StateResponse", &r.encode_to_vec())
                .context("rendering the state")?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Command::Start { exec_id } => {
            let r = task
                .start(
                    ctx(),
                    &shim::StartRequest {
                        id: id.clone(),
                        exec_id: exec_id.unwrap_or_default(),
                    },
                )
                .await
                .map_err(|e| call_error("start", e))?;
            println!("started with pid {}", r.pid);
        }
        Command::Delete { exec_id } => {
            let r = task
                .delete(
                    ctx(),
                    &shim::DeleteRequest {
                        id: id.clone(),
                        exec_id: exec_id.unwrap_or_default(),
                    },
                )
                .await
                .map_err(|e| call_error("delete", e))?;
            // ctr's line.
            println!(
                "container deleted and returned exit status {}",
                r.exit_status
            );
        }
        Command::Exec {
            exec_id,
            spec,
            stdin,
            stdout,
            stderr,
            tty,
        } => {
            let spec = std::fs::read(&spec).with_context(|| format!("reading {spec}"))?;
            // The spec must at least be a process.
            serde_json::from_slice::<oci_spec::runtime::Process>(&spec)
                .context("--spec is not an OCI process spec")?;
            task.exec(
                ctx(),
                &shim::ExecProcessRequest {
                    id: id.clone(),
                    exec_id: exec_id.clone(),
                    terminal: tty,
                    stdin: stdin.unwrap_or_default(),
                    stdout: stdout.unwrap_or_default(),
                    stderr: stderr.unwrap_or_default(),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process"
                            .into(),
                        value: spec,
                    }),
                },
            )
            .await
            .map_err(|e| call_error("exec", e))?;
            let r = task
                .start(ctx(), &shim::StartRequest { id, exec_id })
                .await
                .map_err(|e| call_error("start", e))?;
            // ctr's line.
            println!("exec running with pid {}", r.pid);
        }
        Command::Shutdown { now } => {
            task.shutdown(ctx(), &shim::ShutdownRequest { id, now })
                .await
                .map_err(|e| call_error("shutdown", e))?;
        }
    }
    Ok(())
}
