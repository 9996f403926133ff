//! berthd's own pull against a registry that stalls mid-download: a stall
//! times out, a cancelled client cancels the pull, and either way the
//! layer's ingest is released, listed, and resumed by the next pull.
//!
//! The registry is a stand-in written here (loopback, one thread per
//! connection, bounded): it serves the busybox test image, and while
//! `stall` is set sends half of the layer and then nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_tests::{Daemon, fails, ok, testimages};

/// What the stand-in tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// It sent half of the layer and stalls.
    Stalled,
    /// The stalled connection was closed by berthd.
    ClosedByClient,
    /// A layer request resumed at this offset (a `Range` header).
    Resumed(u64),
}

/// The longest a stalled connection is held: the stand-in always ends.
const STALL_LIMIT: Duration = Duration::from_secs(60);

struct StandIn {
    port: u16,
    stall: Arc<AtomicBool>,
    seen: mpsc::Receiver<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl StandIn {
    fn start(layout: &testimages::Layout) -> Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stall = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, seen) = mpsc::channel();
        let tx = Arc::new(Mutex::new(tx));
        let layout = Arc::new(layout.clone());
        let (stall2, stop2) = (stall.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (layout, stall, stop, tx) =
                    (layout.clone(), stall2.clone(), stop2.clone(), tx.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &layout, &stall, &stop, &tx);
                });
            }
        });
        Ok(StandIn {
            port,
            stall,
            seen,
            stop,
        })
    }

    /// The next thing the stand-in saw, waiting at most `limit`.
    fn next(&self, limit: Duration) -> Result<Seen> {
        self.seen
            .recv_timeout(limit)
            .context("the registry stand-in saw nothing")
    }
}

/// Serves one connection's requests.
fn serve(
    conn: TcpStream,
    layout: &testimages::Layout,
    stall: &AtomicBool,
    stop: &AtomicBool,
    tx: &Mutex<mpsc::Sender<Seen>>,
) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let send = |s: Seen| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(s);
        }
    };
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut range_from = 0_u64;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(r) = lower.strip_prefix("range: bytes=") {
                range_from = r.trim().trim_end_matches('-').parse().unwrap_or(0);
            }
        }
        let manifest = &layout.root;
        let layer = &layout.layers[0];
        let (status, media_type, body, digest) = if path == "/v2/" {
            ("200 OK", "application/json", b"{}".to_vec(), String::new())
        } else if path.contains("/manifests/") {
            (
                "200 OK",
                manifest.media_type.as_str(),
                std::fs::read(layout.blob(&manifest.digest))?,
                manifest.digest.clone(),
            )
        } else if let Some(d) = path.split("/blobs/").nth(1) {
            match std::fs::read(layout.blob(d)) {
                Ok(b) => ("200 OK", "application/octet-stream", b, d.to_string()),
                Err(_) => ("404 Not Found", "text/plain", Vec::new(), String::new()),
            }
        } else {
            ("404 Not Found", "text/plain", Vec::new(), String::new())
        };
        let is_layer = digest == layer.digest;
        let (status, body, range) = if is_layer && range_from > 0 {
            send(Seen::Resumed(range_from));
            let start = usize::try_from(range_from)?.min(body.len());
            let range = format!(
                "Content-Range: bytes {start}-{}/{}\r\n",
                body.len() - 1,
                body.len()
            );
            ("206 Partial Content", body[start..].to_vec(), range)
        } else {
            (status, body, String::new())
        };
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n{range}\
             Docker-Content-Digest: {digest}\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n",
            body.len()
        )?;
        if method == "HEAD" {
            conn.flush()?;
            continue;
        }
        if is_layer && range_from == 0 && stall.load(Ordering::Acquire) {
            conn.write_all(&body[..body.len() / 2])?;
            conn.flush()?;
            send(Seen::Stalled);
            // Hold the connection, sending nothing, until berthd closes it
            // (or the test ends, or the limit).
            conn.set_read_timeout(Some(Duration::from_millis(100)))?;
            let started = Instant::now();
            let mut buf = [0_u8; 64];
            while started.elapsed() < STALL_LIMIT && !stop.load(Ordering::Acquire) {
                match conn.read(&mut buf) {
                    Ok(0) => {
                        send(Seen::ClosedByClient);
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        send(Seen::ClosedByClient);
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        conn.write_all(&body)?;
        conn.flush()?;
    }
}

fn setup(config: Option<&str>, namespace: &str) -> Result<(Daemon, testimages::Layout)> {
    let d = Daemon::start_with_config(config)?.in_namespace(namespace);
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    Ok((d, layout))
}

#[test]
fn a_stalled_download_times_out_is_listed_and_resumes() -> Result<()> {
    let (d, layout) = setup(
        Some(
            "version = 2\n[plugins.\"io.containerd.transfer.v1.local\"]\nstall_timeout = \"1s\"\n",
        ),
        "h7-stall",
    )?;
    let registry = StandIn::start(&layout)?;
    let reference = format!("127.0.0.1:{}/stall/busybox:1", registry.port);
    let err = fails(d.berthctl(&["pull", "--plain-http", &reference])?)?;
    assert!(
        err.contains("the registry sent nothing for 1s") && err.contains("stall_timeout"),
        "{err}"
    );
    assert_eq!(registry.next(Duration::from_secs(30))?, Seen::Stalled);
    // The half-downloaded layer is an ingest `ctr content active` shows.
    let layer = &layout.layers[0].digest;
    let active = ok(d.ctr(&["content", "active"])?)?;
    assert!(active.contains(&format!("layer-{layer}")), "{active}");
    // The registry recovers: the next pull resumes where the first stopped.
    registry.stall.store(false, Ordering::Release);
    ok(d.berthctl(&["pull", "--plain-http", &reference])?)?;
    let half = layout.layers[0].size / 2;
    let seen: Vec<Seen> = registry.seen.try_iter().collect();
    assert!(seen.contains(&Seen::Resumed(half)), "{seen:?}");
    let active = ok(d.ctr(&["content", "active"])?)?;
    assert!(!active.contains(layer.as_str()), "{active}");
    Ok(())
}

#[test]
fn a_cancelled_pull_releases_its_ingest() -> Result<()> {
    let (d, layout) = setup(None, "h7-cancel")?;
    let registry = StandIn::start(&layout)?;
    let reference = format!("127.0.0.1:{}/cancel/busybox:1", registry.port);
    let client_log = d.scratch("cancelled-pull.log");
    let mut client = d
        .berthctl_command(&["pull", "--plain-http", &reference])?
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&client_log)?)
        .spawn()?;
    let stalled = registry.next(Duration::from_secs(30)).with_context(|| {
        format!(
            "berthctl pull: {:?}\nits output:\n{}\nberthd log:\n{}",
            client.try_wait(),
            std::fs::read_to_string(&client_log).unwrap_or_default(),
            d.log()
        )
    });
    // The client gives up (as a Ctrl-C would), once berthd holds part of
    // the layer: the stand-in's bytes may still sit in a socket buffer.
    let layer = layout.layers[0].digest.clone();
    let written = |d: &Daemon| -> Result<bool> {
        let out = ok(d.berthctl(&["--format", "json", "content", "active"])?)?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array().into_iter().flatten().any(|s| {
            s["ref"]
                .as_str()
                .is_some_and(|r| r.contains(layer.as_str()))
                && s["offset"]
                    .as_str()
                    .map_or(s["offset"].as_i64(), |o| o.parse().ok())
                    .is_some_and(|o| o > 0)
        }))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while matches!(stalled, Ok(Seen::Stalled)) && !written(&d)? {
        anyhow::ensure!(Instant::now() < deadline, "berthd wrote none of the layer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(stalled?, Seen::Stalled);
    // berthd cancels the pull: it closes the registry connection...
    assert_eq!(
        registry
            .next(Duration::from_secs(30))
            .with_context(|| format!(
                "waiting for berthd to close the stalled download\nberthd log:\n{}",
                d.log()
            ))?,
        Seen::ClosedByClient
    );
    // ...and the layer's ingest is free: a new pull resumes it.
    registry.stall.store(false, Ordering::Release);
    ok(d.berthctl(&["pull", "--plain-http", &reference])?)?;
    // From wherever the cancelled pull had got to.
    let half = layout.layers[0].size / 2;
    match registry.next(Duration::from_secs(30))? {
        Seen::Resumed(n) => assert!(n > 0 && n <= half, "resumed at {n}"),
        other => anyhow::bail!("expected a resumed download, saw {other:?}"),
    }
    Ok(())
}
