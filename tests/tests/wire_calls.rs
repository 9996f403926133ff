//! gRPC calls no client command makes, made straight to a real berthd with
//! berth-api's tonic clients, each checked by its real outcome: Content
//! Status/ListStatuses/Abort, Events Publish/Forward, Introspection
//! PluginInfo, Snapshots Cleanup, and Tasks Update/CloseIO/ResizePty through
//! berth's shim and through Debian's `containerd-shim-runc-v2`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_api::client::Client;
use berth_api::containerd::services::content::v1 as content;
use berth_api::containerd::services::events::v1 as events;
use berth_api::containerd::services::introspection::v1 as introspection;
use berth_api::containerd::services::snapshots::v1 as snapshots;
use berth_api::containerd::services::tasks::v1 as tasks;
use berth_tests::{Daemon, busybox_rootfs, ok};
use content::content_client::ContentClient;
use events::events_client::EventsClient;
use introspection::introspection_client::IntrospectionClient;
use snapshots::snapshots_client::SnapshotsClient;
use tasks::tasks_client::TasksClient;
use tokio_stream::StreamExt;
use tonic::Code;

/// The Tasks client over berth-api's connection.
type Tasks = TasksClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        berth_api::client::ContextInterceptor,
    >,
>;

/// Generous bound that turns a hang into a failure.
const HANG: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(d: &Daemon) -> Result<Client> {
    Ok(Client::connect(&d.address)
        .await?
        .with_namespace(d.namespace.clone()))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(HANG, f)
        .await
        .with_context(|| format!("{what} did not finish within {HANG:?}"))
}

#[test]
fn content_status_and_abort_an_ingest() -> Result<()> {
    let d = Daemon::start()?;
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut content = ContentClient::with_interceptor(c.channel(), c.interceptor());
        let r#ref = "wire-calls-ingest";
        // Half of a 10-byte blob, then the stream ends without a commit:
        // the ingest stays, resumable.
        let first = content::WriteContentRequest {
            action: content::WriteAction::Write as i32,
            r#ref: r#ref.into(),
            total: 10,
            offset: 0,
            data: b"hello".to_vec(),
            ..Default::default()
        };
        let mut replies = content
            .write(tokio_stream::iter(vec![first]))
            .await?
            .into_inner();
        while let Some(reply) = within("write replies", replies.next()).await? {
            reply?;
        }

        let status = content
            .status(content::StatusRequest {
                r#ref: r#ref.into(),
            })
            .await?
            .into_inner()
            .status
            .context("status has no status")?;
        assert_eq!(
            (status.r#ref.as_str(), status.offset, status.total),
            (r#ref, 5, 10)
        );
        let listed = content
            .list_statuses(content::ListStatusesRequest::default())
            .await?
            .into_inner()
            .statuses;
        assert!(
            listed.iter().any(|s| s.r#ref == r#ref && s.offset == 5),
            "{listed:?}"
        );

        content
            .abort(content::AbortRequest {
                r#ref: r#ref.into(),
            })
            .await?;
        let gone = content
            .status(content::StatusRequest {
                r#ref: r#ref.into(),
            })
            .await
            .expect_err("status of an aborted ingest");
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
        let listed = content
            .list_statuses(content::ListStatusesRequest::default())
            .await?
            .into_inner()
            .statuses;
        assert!(listed.iter().all(|s| s.r#ref != r#ref), "{listed:?}");
        let again = content
            .abort(content::AbortRequest {
                r#ref: r#ref.into(),
            })
            .await
            .expect_err("aborting a missing ingest");
        assert_eq!(again.code(), Code::NotFound, "{again:?}");
        Ok(())
    })
}

#[test]
fn published_and_forwarded_events_reach_a_subscriber() -> Result<()> {
    let d = Daemon::start()?.in_namespace("wire-events");
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut ev = EventsClient::with_interceptor(c.channel(), c.interceptor());
        let mut sub = ev
            .subscribe(events::SubscribeRequest {
                filters: vec![r#"topic~="^/wire/""#.into()],
            })
            .await?
            .into_inner();

        let payload = prost_types::Any {
            type_url: "wire.test/Payload".into(),
            value: b"published".to_vec(),
        };
        // Outside the `~=` filter: never delivered (events arrive in order,
        // so the next one received must be the matching one below).
        ev.publish(events::PublishRequest {
            topic: "/other/publish".into(),
            event: Some(payload.clone()),
        })
        .await?;
        ev.publish(events::PublishRequest {
            topic: "/wire/publish".into(),
            event: Some(payload.clone()),
        })
        .await?;
        let got = within("the published event", sub.next())
            .await?
            .context("subscription ended")??;
        assert_eq!(got.namespace, "wire-events");
        assert_eq!(got.topic, "/wire/publish");
        assert_eq!(got.event, Some(payload));
        assert!(got.timestamp.is_some(), "published event has no timestamp");

        // Forward keeps the envelope as given: its namespace, not the call's.
        let stamp = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let forwarded = berth_api::containerd::types::Envelope {
            timestamp: Some(stamp),
            namespace: "elsewhere".into(),
            topic: "/wire/forward".into(),
            event: Some(prost_types::Any {
                type_url: "wire.test/Payload".into(),
                value: b"forwarded".to_vec(),
            }),
        };
        ev.forward(events::ForwardRequest {
            envelope: Some(forwarded.clone()),
        })
        .await?;
        let got = within("the forwarded event", sub.next())
            .await?
            .context("subscription ended")??;
        assert_eq!(got, forwarded);

        // containerd checks topics: they are paths.
        let bad = ev
            .publish(events::PublishRequest {
                topic: "no-slash".into(),
                event: Some(prost_types::Any::default()),
            })
            .await
            .expect_err("publishing to an invalid topic");
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        Ok(())
    })
}

#[test]
fn plugin_info_describes_one_plugin() -> Result<()> {
    let d = Daemon::start()?;
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut intro = IntrospectionClient::with_interceptor(c.channel(), c.interceptor());
        let info = intro
            .plugin_info(introspection::PluginInfoRequest {
                r#type: "io.containerd.snapshotter.v1".into(),
                id: "overlayfs".into(),
                options: None,
            })
            .await?
            .into_inner();
        let plugin = info.plugin.context("plugin info has no plugin")?;
        assert_eq!(
            (plugin.r#type.as_str(), plugin.id.as_str()),
            ("io.containerd.snapshotter.v1", "overlayfs")
        );
        // The same plugin as Plugins lists.
        let listed = intro
            .plugins(introspection::PluginsRequest {
                filters: vec!["id==overlayfs".into()],
            })
            .await?
            .into_inner()
            .plugins;
        assert_eq!(listed, vec![plugin]);
        let missing = intro
            .plugin_info(introspection::PluginInfoRequest {
                r#type: "io.containerd.snapshotter.v1".into(),
                id: "no-such-plugin".into(),
                options: None,
            })
            .await
            .expect_err("info of a missing plugin");
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        Ok(())
    })
}

#[test]
fn snapshots_cleanup_removes_only_unreferenced_directories() -> Result<()> {
    let d = Daemon::start()?;
    let dir = d
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut sn = SnapshotsClient::with_interceptor(c.channel(), c.interceptor());
        sn.prepare(snapshots::PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "wire-kept".into(),
            ..Default::default()
        })
        .await?;
        let kept = entries(&dir)?;
        assert_eq!(kept.len(), 1, "one snapshot directory: {kept:?}");
        // What a crash mid-removal leaves: a directory no snapshot names.
        let stray = dir.join("987654");
        std::fs::create_dir_all(stray.join("fs/leftover"))?;

        sn.cleanup(snapshots::CleanupRequest {
            snapshotter: "overlayfs".into(),
        })
        .await?;
        assert_eq!(
            entries(&dir)?,
            kept,
            "cleanup left exactly the live snapshot"
        );
        // And the live snapshot still works.
        let mounts = sn
            .mounts(snapshots::MountsRequest {
                snapshotter: "overlayfs".into(),
                key: "wire-kept".into(),
            })
            .await?
            .into_inner()
            .mounts;
        assert!(!mounts.is_empty());
        Ok(())
    })
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Which shim berthd runs `io.containerd.runc.v2` with.
#[derive(Debug, Clone, Copy)]
enum Shim {
    Berth,
    Debian,
}

/// berthd with `shim` in its own namespace, and a busybox rootfs.
fn daemon(shim: Shim, namespace: &str) -> Result<(Daemon, String)> {
    let d = match shim {
        Shim::Berth => Daemon::start()?,
        Shim::Debian => Daemon::start_with_config(Some(
            "version = 2\n[plugins.\"io.containerd.runtime.v2.task\".shims]\n\"io.containerd.runc.v2\" = \"/usr/bin/containerd-shim-runc-v2\"\n",
        ))?,
    }
    .in_namespace(namespace);
    let rootfs = d.scratch("rootfs");
    busybox_rootfs(&rootfs)?;
    Ok((d, rootfs.display().to_string()))
}

/// A FIFO at `path`, opened read-write so neither end blocks and it never
/// reports EOF on its own.
fn fifo(path: &Path) -> Result<File> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    Ok(OpenOptions::new().read(true).write(true).open(path)?)
}

/// Reads `from` on a thread until the text contains `needle`; gives the
/// file back.
async fn read_until(mut from: File, needle: &'static str) -> Result<(File, String)> {
    let reader = tokio::task::spawn_blocking(move || -> Result<(File, String)> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = from.read(&mut buf)?;
            if n == 0 {
                bail!(
                    "EOF before {needle:?}: {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        Ok((from, text))
    });
    within(&format!("output {needle:?}"), reader).await??
}

/// Creates container `id` with ctr (a busybox rootfs, `args`: ctr 1.6
/// takes any dashed word among them for its own flag) and its task
/// through the Tasks service with the given stdio, then starts it.
async fn start_task(
    d: &Daemon,
    tasks: &mut Tasks,
    rootfs: &str,
    id: &str,
    tty: bool,
    stdio: [&str; 3],
    args: &[&str],
) -> Result<()> {
    let mut create = vec!["containers", "create", "--rootfs"];
    if tty {
        create.push("--tty");
    }
    create.extend([rootfs, id]);
    create.extend(args);
    ok(d.ctr(&create)?)?;
    tasks
        .create(tasks::CreateTaskRequest {
            container_id: id.into(),
            stdin: stdio[0].into(),
            stdout: stdio[1].into(),
            stderr: stdio[2].into(),
            terminal: tty,
            ..Default::default()
        })
        .await?;
    tasks
        .start(tasks::StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })
        .await?;
    Ok(())
}

async fn wait_exit(tasks: &mut Tasks, id: &str) -> Result<u32> {
    let reply = within(
        &format!("task {id} exiting"),
        tasks.wait(tasks::WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }),
    )
    .await??;
    Ok(reply.into_inner().exit_status)
}

async fn remove(d: &Daemon, tasks: &mut Tasks, id: &str) -> Result<()> {
    tasks
        .delete(tasks::DeleteTaskRequest {
            container_id: id.into(),
        })
        .await?;
    ok(d.ctr(&["containers", "rm", id])?)?;
    Ok(())
}

/// Stdin as containerd's shims treat it: the shim holds the FIFO open
/// itself until CloseIO, so a client may close its end and open it again
/// (detach, re-attach), and after CloseIO the stream still runs until the
/// client closes its end; then `cat` sees EOF and exits.
fn close_io_ends_stdin(shim: Shim, namespace: &str) -> Result<()> {
    let (d, rootfs) = daemon(shim, namespace)?;
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut tasks = TasksClient::with_interceptor(c.channel(), c.interceptor());
        let paths = ["in", "out", "err"].map(|n| d.scratch(n));
        let mut stdin = fifo(&paths[0])?;
        let stdout = fifo(&paths[1])?;
        let _stderr = fifo(&paths[2])?;
        let stdio = paths.each_ref().map(|p| p.to_str().unwrap_or_default());
        start_task(&d, &mut tasks, &rootfs, "cat", false, stdio, &["/bin/cat"]).await?;
        stdin.write_all(b"first\n")?;
        // Detach: no client holds the FIFO now.
        drop(stdin);
        let (stdout, _) = read_until(stdout, "first\n").await?;
        // Re-attach. Non-blocking, so a FIFO nobody reads fails (ENXIO)
        // instead of hanging.
        let mut stdin = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&paths[0])
            .context("re-opening stdin: the shim no longer reads it")?;
        stdin.write_all(b"second\n")?;
        let (stdout, _) = read_until(stdout, "second\n").await?;
        tasks
            .close_io(tasks::CloseIoRequest {
                container_id: "cat".into(),
                exec_id: String::new(),
                stdin: true,
            })
            .await?;
        // The client's end is still open: what it writes still arrives.
        stdin.write_all(b"third\n")?;
        read_until(stdout, "third\n").await?;
        drop(stdin);
        assert_eq!(wait_exit(&mut tasks, "cat").await?, 0);
        remove(&d, &mut tasks, "cat").await
    })
}

#[test]
fn close_io_ends_stdin_berth_shim() -> Result<()> {
    close_io_ends_stdin(Shim::Berth, "wire-closeio-berth")
}

#[test]
fn close_io_ends_stdin_debian_shim() -> Result<()> {
    close_io_ends_stdin(Shim::Debian, "wire-closeio-debian")
}

/// The memory limit file of container `id` in `namespace` (ctr puts
/// containers in the cgroup `/<namespace>/<id>`).
fn memory_limit_file(namespace: &str, id: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(namespace).join(id).join("memory.max")
    } else {
        root.join("memory")
            .join(namespace)
            .join(id)
            .join("memory.limit_in_bytes")
    }
}

/// Update with new resources changes the container's cgroup.
fn update_sets_memory_limit(shim: Shim, namespace: &str) -> Result<()> {
    let (d, rootfs) = daemon(shim, namespace)?;
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut tasks = TasksClient::with_interceptor(c.channel(), c.interceptor());
        start_task(
            &d,
            &mut tasks,
            &rootfs,
            "upd",
            false,
            ["", "", ""],
            &["/bin/sleep", "1000"],
        )
        .await?;
        let limit_file = memory_limit_file(namespace, "upd");
        let before = std::fs::read_to_string(&limit_file)
            .with_context(|| format!("reading {}", limit_file.display()))?;
        let limit: u64 = 48 * 1024 * 1024;
        assert_ne!(before.trim(), limit.to_string());
        // containerd's clients send runtime-spec LinuxResources as JSON
        // under this type URL.
        let resources = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&serde_json::json!({ "memory": { "limit": limit } }))?,
        };
        tasks
            .update(tasks::UpdateTaskRequest {
                container_id: "upd".into(),
                resources: Some(resources),
                annotations: Default::default(),
            })
            .await?;
        let after = std::fs::read_to_string(&limit_file)?;
        assert_eq!(after.trim(), limit.to_string());
        tasks
            .kill(tasks::KillRequest {
                container_id: "upd".into(),
                exec_id: String::new(),
                signal: 9,
                all: false,
            })
            .await?;
        assert_eq!(wait_exit(&mut tasks, "upd").await?, 137);
        remove(&d, &mut tasks, "upd").await
    })
}

#[test]
fn update_sets_memory_limit_berth_shim() -> Result<()> {
    update_sets_memory_limit(Shim::Berth, "wire-update-berth")
}

#[test]
fn update_sets_memory_limit_debian_shim() -> Result<()> {
    update_sets_memory_limit(Shim::Debian, "wire-update-debian")
}

/// ResizePty changes the size the task's terminal reports.
fn resize_pty_sets_terminal_size(shim: Shim, namespace: &str) -> Result<()> {
    let (d, rootfs) = daemon(shim, namespace)?;
    runtime().block_on(async {
        let c = connect(&d).await?;
        let mut tasks = TasksClient::with_interceptor(c.channel(), c.interceptor());
        let paths = ["in", "out"].map(|n| d.scratch(n));
        let mut stdin = fifo(&paths[0])?;
        let stdout = fifo(&paths[1])?;
        let stdio = [
            paths[0].to_str().unwrap_or_default(),
            paths[1].to_str().unwrap_or_default(),
            "",
        ];
        // The size is read only after a line arrives, which is sent after
        // the resize returned.
        let script = Path::new(&rootfs).join("bin/size-after-a-line");
        std::fs::write(&script, "#!/bin/sh\nread x\n/bin/busybox stty size\n")?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        start_task(
            &d,
            &mut tasks,
            &rootfs,
            "pty",
            true,
            stdio,
            &["/bin/size-after-a-line"],
        )
        .await?;
        tasks
            .resize_pty(tasks::ResizePtyRequest {
                container_id: "pty".into(),
                exec_id: String::new(),
                width: 123,
                height: 45,
            })
            .await?;
        stdin.write_all(b"go\n")?;
        let (_, text) = read_until(stdout, "45 123").await?;
        assert!(text.contains("45 123"), "{text:?}");
        assert_eq!(wait_exit(&mut tasks, "pty").await?, 0);
        remove(&d, &mut tasks, "pty").await
    })
}

#[test]
fn resize_pty_sets_terminal_size_berth_shim() -> Result<()> {
    resize_pty_sets_terminal_size(Shim::Berth, "wire-pty-berth")
}

#[test]
fn resize_pty_sets_terminal_size_debian_shim() -> Result<()> {
    resize_pty_sets_terminal_size(Shim::Debian, "wire-pty-debian")
}
