//! berth-client end to end: its README example (`examples/pull_and_run.rs`)
//! and the same API in depth (run with output and exit code, a named
//! user, exec, log files, kill, delete, typed events, import/export)
//! against a real berthd fed by a local registry, and against Debian's
//! containerd 1.6, which has no Transfer service (the client then pulls,
//! imports and exports itself over the Content, Images, Snapshots and Diff
//! services, as containerd's Go client does).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio as ProcStdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use berth_client::{Buffer, Category, Client, Error, Event, EventStream, Payload, Stdio};
use berth_tests::{Containerd, Daemon, Registry, ok, testimages};

/// Turns a hang into a failure; never reached by a passing test.
const HANG: Duration = Duration::from_secs(120);

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// An event subscription known to be live: a marker namespace is created
/// and removed until its event arrives (the subscription may start after
/// a marker; bounded, so a hang becomes a failure).
async fn live_events(client: &Client) -> Result<EventStream> {
    use berth_client::api::containerd::services::namespaces::v1 as ns;
    let mut events = client.events(&[]).await?;
    let raw = client.raw();
    let mut namespaces =
        ns::namespaces_client::NamespacesClient::with_interceptor(raw.channel(), raw.interceptor());
    let marker = format!("client-marker-{}", std::process::id());
    for _ in 0..150 {
        namespaces
            .create(ns::CreateNamespaceRequest {
                namespace: Some(ns::Namespace {
                    name: marker.clone(),
                    labels: Default::default(),
                }),
            })
            .await?;
        namespaces
            .delete(ns::DeleteNamespaceRequest {
                name: marker.clone(),
            })
            .await?;
        let seen = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(e) = events.next().await {
                if matches!(e?.payload, Payload::NamespaceCreate(n) if n.name == marker) {
                    return Ok::<bool, Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        if let Ok(r) = seen {
            ensure!(r?, "the event stream ended before the marker");
            return Ok(events);
        }
    }
    bail!("the subscription never saw the marker namespace {marker}")
}

/// Reads `stream` (blocking, on a thread) until it holds `want` or ends.
async fn read_until(mut stream: UnixStream, want: &str) -> Result<String> {
    let want = want.to_string();
    tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0_u8; 4096];
        while !String::from_utf8_lossy(&got).contains(&want) {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    })
    .await?
}

/// Reads events until `done` says the last one wanted arrived.
async fn events_until(
    events: &mut EventStream,
    done: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>> {
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        let e = e?;
        let last = done(&e);
        seen.push(e);
        if last {
            return Ok(seen);
        }
    }
    bail!("the event stream ended; saw {seen:#?}")
}

/// The behaviours both daemons must show, driven through the client:
/// output and exit code of a task with a named user, exec with output and
/// exit code, exec to a log file, kill, deletes, and their events.
async fn exercise(client: &Client, image_name: &str, scratch: &std::path::Path) -> Result<()> {
    let version = client.version().await?;
    ensure!(!version.version.is_empty(), "empty version: {version:?}");
    ensure!(!client.plugins(&[]).await?.is_empty(), "no plugins listed");
    let mut events = live_events(client).await?;

    let image = client.get_image(image_name).await?;
    ensure!(image.name() == image_name, "{image:?}");
    ensure!(
        image.config.cmd == ["sh"],
        "image config: {:?}",
        image.config
    );

    // A task's output, exit code and user (looked up in the image's files).
    let container = client
        .new_container("run1")
        .image(&image)
        .image_config(&image)
        .user("nobody")
        .args([
            "sh",
            "-c",
            "echo out $(id -u):$(id -g); echo err >&2; exit 3",
        ])
        .label("purpose", "client-test")
        .create()
        .await?;
    ensure!(container.labels().get("purpose").map(String::as_str) == Some("client-test"));
    let (out, err) = (Buffer::new(), Buffer::new());
    let mut task = container
        .new_task(Stdio::copy(
            None::<std::io::Empty>,
            out.clone(),
            err.clone(),
        ))
        .await?;
    let exit = task.wait().await?;
    task.start().await?;
    let status = exit.await?;
    assert_eq!(status.code, 3, "{status:?}");
    assert!(status.exited_at.is_some());
    assert_eq!(task.delete().await?.code, 3);
    assert_eq!(out.text(), "out 65534:65534\n");
    assert_eq!(err.text(), "err\n");
    container.delete().await?;

    // An init process whose stdin ends reads end of file: the client
    // asks for CloseIO once the task has started (`echo x | ctr run ...
    // cat` with ctr 1.6 does not end, on containerd 1.6 or on berthd).
    let container = client
        .new_container("stdin1")
        .image(&image)
        .image_config(&image)
        .args(["cat"])
        .create()
        .await?;
    let out = Buffer::new();
    let mut task = container
        .new_task(Stdio::copy(
            Some(std::io::Cursor::new(b"to init\n".to_vec())),
            out.clone(),
            std::io::sink(),
        ))
        .await?;
    let exit = task.wait().await?;
    task.start().await?;
    assert_eq!(exit.await?.code, 0);
    task.delete().await?;
    assert_eq!(out.text(), "to init\n");
    container.delete().await?;

    // A long-running task: exec with output, exec to a log file, kill.
    let container = client
        .new_container("run2")
        .image(&image)
        .image_config(&image)
        .args(["sleep", "300"])
        .create()
        .await?;
    let mut task = container.new_task(Stdio::null()).await?;
    let exit = task.wait().await?;
    let pid = task.start().await?;
    ensure!(pid > 0 && task.pid() == pid);
    assert_eq!(task.status().await?, berth_client::Status::Running);

    let exec_out = Buffer::new();
    let mut exec = task
        .exec(
            "e1",
            ["sh", "-c", "echo exec-out; exit 5"],
            Stdio::copy(None::<std::io::Empty>, exec_out.clone(), std::io::sink()),
        )
        .await?;
    let exec_exit = exec.wait().await?;
    exec.start().await?;
    assert_eq!(exec_exit.await?.code, 5);
    assert_eq!(exec.delete().await?.code, 5);
    assert_eq!(exec_out.text(), "exec-out\n");

    let log = scratch.join("e2.log");
    let mut exec = task
        .exec("e2", ["echo", "logged"], Stdio::log_file(&log))
        .await?;
    let exec_exit = exec.wait().await?;
    exec.start().await?;
    assert_eq!(exec_exit.await?.code, 0);
    exec.delete().await?;
    assert_eq!(
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?,
        "logged\n"
    );

    // stdin, and close_io ending it: cat echoes a line, then exits at
    // the close (our side of its stdin stays open).
    let (mut to_cat, cat_in) = UnixStream::pair()?;
    let (cat_out, from_cat) = UnixStream::pair()?;
    let mut cat = task
        .exec(
            "e3",
            ["cat"],
            Stdio::copy(Some(cat_in), cat_out, std::io::sink()),
        )
        .await?;
    let cat_exit = cat.wait().await?;
    cat.start().await?;
    to_cat.write_all(b"line\n")?;
    assert_eq!(read_until(from_cat, "line\n").await?, "line\n");
    cat.close_io().await?;
    assert_eq!(cat_exit.await?.code, 0);
    cat.delete().await?;
    drop(to_cat);

    // A stdin that ends: the client closes the process's stdin by itself.
    let auto_out = Buffer::new();
    let mut cat = task
        .exec(
            "e5",
            ["cat"],
            Stdio::copy(
                Some(std::io::Cursor::new(b"auto\n".to_vec())),
                auto_out.clone(),
                std::io::sink(),
            ),
        )
        .await?;
    let cat_exit = cat.wait().await?;
    cat.start().await?;
    assert_eq!(cat_exit.await?.code, 0);
    cat.delete().await?;
    assert_eq!(auto_out.text(), "auto\n");

    // A terminal, resized before the process reads its size.
    let (mut to_sh, sh_in) = UnixStream::pair()?;
    let tty_out = Buffer::new();
    let mut sh = task
        .exec(
            "e4",
            ["sh", "-c", "read x; stty size"],
            Stdio::copy(Some(sh_in), tty_out.clone(), std::io::sink()).terminal(),
        )
        .await?;
    let sh_exit = sh.wait().await?;
    sh.start().await?;
    sh.resize(100, 40).await?;
    to_sh.write_all(b"go\n")?;
    assert_eq!(sh_exit.await?.code, 0);
    sh.delete().await?;
    assert!(tty_out.text().contains("40 100"), "{:?}", tty_out.text());
    drop(to_sh);

    // A running task is not deleted.
    let loaded = client.load_container("run2").await?.task().await?;
    let refused = loaded.delete().await;
    assert!(
        matches!(&refused, Err(e) if e.category() == Category::FailedPrecondition),
        "{refused:?}"
    );

    // Another handle on the running task, as a second client would load it.
    let loaded = client.load_container("run2").await?.task().await?;
    assert_eq!(loaded.pid(), pid);
    loaded.kill(9).await?;
    assert_eq!(exit.await?.code, 137);
    assert_eq!(task.delete().await?.code, 137);
    container.delete().await?;
    let missing = client.load_container("run2").await;
    assert!(
        matches!(&missing, Err(e) if e.is_not_found()),
        "{missing:?}"
    );

    // The events of all that, typed.
    let seen = events_until(
        &mut events,
        |e| matches!(&e.payload, Payload::TaskDelete(d) if d.container_id == "run2"),
    )
    .await?;
    let has = |f: &dyn Fn(&Payload) -> bool| seen.iter().any(|e| f(&e.payload));
    assert!(
        has(&|p| matches!(p, Payload::ContainerCreate(c) if c.id == "run1")),
        "{seen:#?}"
    );
    assert!(has(
        &|p| matches!(p, Payload::TaskStart(t) if t.container_id == "run1")
    ));
    assert!(has(
        &|p| matches!(p, Payload::TaskExit(t) if t.container_id == "run1" && t.exit_status == 3)
    ));
    assert!(has(
        &|p| matches!(p, Payload::TaskExecStarted(t) if t.container_id == "run2" && t.exec_id == "e1")
    ));
    assert!(has(
        &|p| matches!(p, Payload::TaskExit(t) if t.container_id == "run2" && t.exit_status == 137)
    ));
    assert!(seen.iter().all(|e| e.topic.starts_with('/')), "{seen:#?}");
    Ok(())
}

/// Runs the README example (`examples/pull_and_run`) against the daemon
/// at `address` and checks what it printed.
fn run_readme_example(
    address: &std::path::Path,
    reference: &str,
    namespace: &str,
    log: impl FnOnce() -> String,
) -> Result<()> {
    let example = berth_tests::bin_dir().join("examples/pull_and_run");
    ensure!(
        example.is_file(),
        "{} not found: build it with `cargo build -p berth-client --examples`",
        example.display()
    );
    let out = Command::new(&example)
        .arg(address)
        .arg(reference)
        .arg(namespace)
        .stdin(ProcStdio::null())
        .output()?;
    let stdout = ok(out).with_context(|| format!("the daemon's log:\n{}", log()))?;
    assert_eq!(stdout, "hello from a container\nexit status 0\n");
    Ok(())
}

#[test]
fn readme_example_pulls_and_runs_on_berthd() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let namespace = d.own_namespace("client-example");
    run_readme_example(&d.address, &reference, &namespace, || d.log())?;
    // It deleted what it made: the container, its snapshot, the task.
    let containers = ok(d.ctr(&["-n", &namespace, "containers", "ls", "-q"])?)?;
    assert_eq!(containers, "");
    d.finish()
}

/// The same README example, unchanged, against containerd 1.6: no
/// Transfer service there, so the client pulls and unpacks itself.
#[test]
fn readme_example_pulls_and_runs_on_containerd_1_6() -> Result<()> {
    let registry = Registry::start()?;
    let c = Containerd::start()?;
    let layout = testimages::busybox(&c.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let namespace = c.own_namespace("client-example");
    run_readme_example(&c.address, &reference, &namespace, || c.log())?;
    // containerd's own client sees the pulled image, and nothing left of
    // the container.
    let images = ok(c.ctr_in(&namespace, &["images", "ls", "-q"])?)?;
    assert!(images.lines().any(|l| l == reference), "{images}");
    let containers = ok(c.ctr_in(&namespace, &["containers", "ls", "-q"])?)?;
    assert_eq!(containers, "");
    c.finish()
}

#[test]
fn client_runs_execs_kills_and_follows_events_on_berthd() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let namespace = d.own_namespace("client-berthd");
    let rt = runtime()?;
    let result: Result<()> = rt.block_on(async {
        tokio::time::timeout(HANG, async {
            let client = Client::connect(&d.address)
                .await?
                .with_namespace(&namespace);
            ensure!(client.has_transfer_service().await?);
            let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = reports.clone();
            let opts = berth_client::PullOpts {
                progress: Some(berth_client::ProgressHandler::new(move |p| {
                    if let Ok(mut r) = sink.lock() {
                        r.push(p);
                    }
                })),
                ..Default::default()
            };
            let pulled = client.pull_with(&reference, opts).await?;
            // The last report, "saved", was handled before pull returned.
            let last = reports.lock().ok().and_then(|r| r.last().cloned());
            assert!(
                matches!(&last, Some(p) if p.event == "saved" && p.name == reference),
                "{:?}",
                reports.lock().map(|r| r.clone())
            );
            assert_eq!(pulled.name(), reference);
            assert_eq!(pulled.diff_ids, layout.diff_ids);
            let listed = client.list_images(&[]).await?;
            assert!(listed.iter().any(|i| i.name == reference), "{listed:?}");
            exercise(&client, &reference, &d.scratch("")).await?;

            // Export, then import under another name in another namespace.
            let archive = d.scratch("exported.tar");
            let file = tokio::fs::File::create(&archive).await?;
            let written = client
                .export(&[&reference], file, Default::default())
                .await?;
            assert_eq!(written, std::fs::metadata(&archive)?.len());
            let other = client.clone().with_namespace(format!("{namespace}-import"));
            other
                .import(
                    tokio::fs::File::open(&archive).await?,
                    berth_client::ImportOpts {
                        index_name: Some("example.com/imported:1".into()),
                        ..Default::default()
                    },
                )
                .await?;
            let imported = other.get_image("example.com/imported:1").await?;
            assert_eq!(imported.chain_id, pulled.chain_id);
            Ok(())
        })
        .await
        .context("the client test hung")?
    });
    result.with_context(|| format!("berthd's log:\n{}", d.log()))?;
    drop(rt);
    d.finish()
}

#[test]
fn client_pulls_runs_imports_and_exports_on_containerd_1_6() -> Result<()> {
    let registry = Registry::start()?;
    let c = Containerd::start()?;
    let layout = testimages::busybox(&c.scratch("busybox"))?;
    let reference = registry.push_layout(&layout, "berth/busybox", "1")?;
    let rt = runtime()?;
    let result: Result<()> = rt.block_on(async {
        tokio::time::timeout(HANG, async {
            let client = Client::connect(&c.address)
                .await?
                .with_namespace(&c.namespace);
            ensure!(!client.has_transfer_service().await?);
            // No Transfer service: the client pulls into containerd's
            // content store and containerd unpacks through Diff.Apply.
            let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = reports.clone();
            let opts = berth_client::PullOpts {
                progress: Some(berth_client::ProgressHandler::new(move |p| {
                    if let Ok(mut r) = sink.lock() {
                        r.push(p);
                    }
                })),
                ..Default::default()
            };
            let pulled = client.pull_with(&reference, opts).await?;
            ensure!(client.transfer_known_absent());
            assert_eq!(pulled.name(), reference);
            assert_eq!(pulled.diff_ids, layout.diff_ids);
            let events: Vec<String> = reports
                .lock()
                .map(|r| r.iter().map(|p| p.event.clone()).collect())
                .unwrap_or_default();
            assert!(events.iter().any(|e| e == "unpacked"), "{events:?}");
            assert_eq!(events.last().map(String::as_str), Some("saved"));
            // containerd's own client sees the image, unpacked, and the
            // GC labels containerd's pull sets.
            let listed = ok(c.ctr(&["images", "ls", "-q"])?)?;
            assert!(listed.lines().any(|l| l == reference), "{listed}");
            let check = ok(c.ctr(&["images", "check"])?)?;
            assert!(
                check
                    .lines()
                    .any(|l| l.starts_with(&reference) && l.contains("complete")),
                "{check}"
            );
            let chain = pulled.chain_id.clone();
            let snaps = ok(c.ctr(&["snapshots", "--snapshotter", "overlayfs", "info", &chain])?)?;
            assert!(
                snaps.contains("containerd.io/snapshot.ref") && snaps.contains(&chain),
                "{snaps}"
            );
            let manifests = ok(c.ctr(&["content", "ls"])?)?;
            assert!(
                manifests.contains("containerd.io/gc.ref.content.config")
                    && manifests.contains("containerd.io/distribution.source.")
                    && manifests.contains("containerd.io/gc.ref.snapshot.overlayfs"),
                "{manifests}"
            );
            // The pull's lease is gone: nothing holds the content but the image.
            let leases = ok(c.ctr(&["leases", "ls", "-q"])?)?;
            assert_eq!(leases.trim(), "", "leases left: {leases}");

            exercise(&client, &reference, &c.scratch("")).await?;

            // Export, then import under another name in another namespace,
            // unpacked again by containerd.
            let archive = c.scratch("exported.tar");
            let file = tokio::fs::File::create(&archive).await?;
            let written = client
                .export(&[&reference], file, Default::default())
                .await?;
            assert_eq!(written, std::fs::metadata(&archive)?.len());
            let other = client
                .clone()
                .with_namespace(format!("{}-import", c.namespace));
            other
                .import(
                    tokio::fs::File::open(&archive).await?,
                    berth_client::ImportOpts {
                        index_name: Some("example.com/imported:1".into()),
                        ..Default::default()
                    },
                )
                .await?;
            let imported = other.get_image("example.com/imported:1").await?;
            assert_eq!(imported.chain_id, pulled.chain_id);
            let other_ns = format!("{}-import", c.namespace);
            let listed = ok(c.ctr_in(&other_ns, &["images", "ls", "-q"])?)?;
            assert!(
                listed.lines().any(|l| l == "example.com/imported:1"),
                "{listed}"
            );
            // The imported copy runs.
            let container = other
                .new_container("imported1")
                .image(&imported)
                .image_config(&imported)
                .args(["echo", "hello from an imported image"])
                .create()
                .await?;
            let out = Buffer::new();
            let mut task = container
                .new_task(Stdio::copy(
                    None::<std::io::Empty>,
                    out.clone(),
                    Buffer::new(),
                ))
                .await?;
            let exit = task.wait().await?;
            task.start().await?;
            assert_eq!(exit.await?.code, 0);
            task.delete().await?;
            container.delete().await?;
            assert_eq!(out.text(), "hello from an imported image\n");
            // An archive exported by containerd's own ctr imports as well.
            let ctr_archive = c.scratch("ctr-exported.tar");
            ok(c.ctr(&[
                "images",
                "export",
                &ctr_archive.display().to_string(),
                &reference,
            ])?)?;
            let third = client
                .clone()
                .with_namespace(format!("{}-ctr", c.namespace));
            third
                .import(
                    tokio::fs::File::open(&ctr_archive).await?,
                    berth_client::ImportOpts {
                        index_name: Some("example.com/from-ctr:1".into()),
                        ..Default::default()
                    },
                )
                .await?;
            let from_ctr = third.get_image("example.com/from-ctr:1").await?;
            assert_eq!(from_ctr.chain_id, pulled.chain_id);
            Ok(())
        })
        .await
        .context("the client test hung")?
    });
    result.with_context(|| format!("containerd's log:\n{}", c.log()))?;
    drop(rt);
    c.finish()
}

#[test]
fn builder_options_reach_the_spec_and_the_container_on_berthd() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    let namespace = d.own_namespace("client-spec");
    let rt = runtime()?;
    let result: Result<()> = rt.block_on(async {
        tokio::time::timeout(HANG, async {
            let client = Client::connect(&d.address)
                .await?
                .with_namespace(&namespace);
            let name = "example.com/busybox:spec";
            client
                .import(
                    tokio::fs::File::open(&archive).await?,
                    berth_client::ImportOpts {
                        index_name: Some(name.into()),
                        ..Default::default()
                    },
                )
                .await?;
            let image = client.get_image(name).await?;
            let container = client
                .new_container("opts")
                .image(&image)
                .image_config(&image)
                .args(["sh"])
                .env(["A=1"])
                .user("nobody")
                .mounts(vec![berth_client::spec::bind_mount(
                    "/tmp", "/hosttmp", true,
                )?])
                .tty(true)
                .host_network()
                .host_pid()
                .memory_limit(64 << 20)
                .cpus(0.5)
                .privileged()
                .readonly_rootfs()
                .label("k", "v")
                .snapshotter("overlayfs")
                .runtime("io.containerd.runc.v2", None)
                .create()
                .await?;
            let spec = container.spec()?;
            let process = spec.process().clone().context("no process")?;
            let env = process.env().clone().unwrap_or_default();
            assert!(env.contains(&"A=1".to_string()), "{env:?}");
            assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
            assert_eq!(process.args().clone().unwrap_or_default(), ["sh"]);
            assert_eq!(process.terminal(), Some(true));
            assert_eq!((process.user().uid(), process.user().gid()), (65534, 65534));
            let caps = process
                .capabilities()
                .clone()
                .and_then(|c| c.bounding().clone())
                .unwrap_or_default();
            assert!(
                caps.contains(&berth_client::spec::oci_spec::runtime::Capability::SysAdmin),
                "privileged: {caps:?}"
            );
            assert_eq!(spec.root().clone().and_then(|r| r.readonly()), Some(true));
            let mounts = spec.mounts().clone().unwrap_or_default();
            let bind = mounts
                .iter()
                .find(|m| m.destination().to_str() == Some("/hosttmp"))
                .context("no /hosttmp mount")?;
            assert!(
                bind.options()
                    .clone()
                    .unwrap_or_default()
                    .contains(&"ro".to_string())
            );
            let linux = spec.linux().clone().context("no linux section")?;
            let namespaces: Vec<String> = linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|n| format!("{:?}", n.typ()))
                .collect();
            assert!(
                !namespaces.iter().any(|n| n == "Network" || n == "Pid"),
                "{namespaces:?}"
            );
            let resources = linux.resources().clone().context("no resources")?;
            assert_eq!(
                (*resources.memory()).and_then(|m| m.limit()),
                Some(64 << 20)
            );
            let cpu = resources.cpu().clone().context("no cpu resources")?;
            assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
            assert_eq!(container.labels().get("k").map(String::as_str), Some("v"));
            assert_eq!(container.runtime(), "io.containerd.runc.v2");
            assert_eq!(container.snapshot(), ("overlayfs", "opts"));
            assert_eq!(container.image_name(), name);
            container.delete().await?;

            // A read-only root filesystem really is one.
            let container = client
                .new_container("ro")
                .image(&image)
                .image_config(&image)
                .readonly_rootfs()
                .args(["sh", "-c", "touch /x 2>/dev/null && exit 0 || exit 9"])
                .create()
                .await?;
            let mut task = container.new_task(Stdio::null()).await?;
            let exit = task.wait().await?;
            task.start().await?;
            assert_eq!(exit.await?.code, 9);
            task.delete().await?;
            container.delete().await?;
            Ok(())
        })
        .await
        .context("the client test hung")?
    });
    result.with_context(|| format!("berthd's log:\n{}", d.log()))?;
    drop(rt);
    d.finish()
}
