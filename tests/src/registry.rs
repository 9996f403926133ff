//! Debian's `docker-registry` on 127.0.0.1 with a free port and a
//! temporary storage directory, stopped by PID when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::testimages::{Layout, media_types};

/// Where Debian's package installs the registry.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Manifest media types a client accepts (the registry hides OCI ones otherwise).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A running local registry.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub host: String,
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers.
    pub fn start() -> Result<Registry> {
        Registry::start_with_auth(None)
    }

    /// Starts a registry that, given `htpasswd` (one `user:bcrypt-hash`
    /// line), wants HTTP basic auth for that user on every request.
    pub fn start_with_auth(htpasswd: Option<&str>) -> Result<Registry> {
        if !std::path::Path::new(REGISTRY_BIN).exists() {
            bail!(
                "{REGISTRY_BIN} not found: run `cargo xtask deps` (Debian package docker-registry)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let auth = match htpasswd {
            Some(line) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{line}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let mut r = Registry { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // With auth, an anonymous /v2/ is refused: that is ready too.
            let ready = if htpasswd.is_some() {
                "HTTP/1.1 401"
            } else {
                "HTTP/1.1 200"
            };
            if r.get("/v2/").map(|s| s.starts_with(ready)).unwrap_or(false) {
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

    /// PID of the registry process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The storage directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Pushes every blob and manifest of `layout` to `repo` (registry API
    /// v2, monolithic uploads) and tags its top descriptor `tag`; returns
    /// the reference `<host>/<repo>:<tag>`.
    pub fn push_layout(&self, layout: &Layout, repo: &str, tag: &str) -> Result<String> {
        let types = media_types(layout)?;
        let manifests: Vec<&str> = std::iter::once(layout.root.digest.as_str())
            .chain(layout.manifests.iter().map(|(_, m)| m.digest.as_str()))
            .collect();
        for digest in layout.blobs()? {
            if manifests.contains(&digest.as_str()) {
                continue;
            }
            let data = std::fs::read(layout.blob(&digest))?;
            let started = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), "", &[])?;
            let location = header(&started, "location")
                .with_context(|| format!("starting an upload of {digest}: {started}"))?;
            let path = location
                .strip_prefix(&format!("http://{}", self.host))
                .unwrap_or(&location);
            let sep = if path.contains('?') { '&' } else { '?' };
            let done = self.request(
                "PUT",
                &format!("{path}{sep}digest={digest}"),
                "application/octet-stream",
                &data,
            )?;
            if !done.starts_with("HTTP/1.1 201") {
                bail!("uploading {digest} to {repo}: {done}");
            }
        }
        // Per-platform manifests first (by digest), then the top one by tag.
        for (_, m) in layout.manifests.iter().filter(|(_, m)| *m != layout.root) {
            self.put_manifest(layout, repo, &m.digest, &m.digest, &types)?;
        }
        self.put_manifest(layout, repo, &layout.root.digest, tag, &types)?;
        Ok(format!("{}/{repo}:{tag}", self.host))
    }

    fn put_manifest(
        &self,
        layout: &Layout,
        repo: &str,
        digest: &str,
        reference: &str,
        types: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let data = std::fs::read(layout.blob(digest))?;
        let media_type = types.get(digest).map_or("", String::as_str);
        let done = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            media_type,
            &data,
        )?;
        if !done.starts_with("HTTP/1.1 201") {
            bail!("putting manifest {digest} as {repo}:{reference}: {done}");
        }
        Ok(())
    }

    /// One HTTP/1.1 request; returns the whole response as text.
    fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Result<String> {
        let mut s = TcpStream::connect(&self.host)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.host,
            body.len()
        );
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A plain HTTP/1.1 GET of `path`; returns the status line and headers.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect(&self.host)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {MANIFEST_TYPES}\r\nConnection: close\r\n\r\n",
            self.host
        )?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The value of header `name` (any case) in an HTTP response.
fn header(response: &str, name: &str) -> Option<String> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
