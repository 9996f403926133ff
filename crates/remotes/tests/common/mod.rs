//! Test helpers: Debian's `docker-registry` on 127.0.0.1 with a free port and
//! a temporary storage directory, stopped by PID when dropped.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where Debian's package installs the registry.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running local registry; killed (by PID) and its storage removed on drop.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// Whether it serves HTTPS.
    tls: bool,
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl LocalRegistry {
    /// Starts a plain-HTTP registry and waits until `/v2/` answers.
    pub fn start() -> Result<LocalRegistry> {
        LocalRegistry::start_with(None)
    }

    /// Starts a registry serving HTTPS with `(certificate, key)` PEM files.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<LocalRegistry> {
        LocalRegistry::start_with(Some((cert, key)))
    }

    /// Starts a registry, with TLS if given, and waits until it answers.
    fn start_with(tls: Option<(&Path, &Path)>) -> Result<LocalRegistry> {
        if !std::path::Path::new(REGISTRY_BIN).exists() {
            bail!("{REGISTRY_BIN} not found: apt-get install -y docker-registry");
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-remotes-registry")
            .tempdir()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        // From here on, Drop kills the child whatever happens.
        let mut r = LocalRegistry {
            child,
            dir,
            host,
            tls: tls.is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if r.ping() {
                return Ok(r);
            }
            if let Some(status) = r.child.try_wait()? {
                bail!("docker-registry exited with {status}:\n{}", r.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer on {} within 20s:\n{}",
                    r.host,
                    r.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Whether `GET /v2/` answers 200 (with TLS: whether it answers at all,
    /// which it does with a 400 to plain HTTP).
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(
            s,
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        )
        .is_err()
        {
            return false;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if self.tls {
            out.starts_with(b"HTTP/")
        } else {
            out.starts_with(b"HTTP/1.1 200")
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (a tiny xorshift), so blobs do not
/// compress or repeat.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24).to_le_bytes()[0]
        })
        .collect()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` command: returns (CA certificate, server certificate, server key).
pub fn make_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (apt-get install -y openssl)")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    Ok((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}
