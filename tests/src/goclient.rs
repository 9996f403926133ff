//! The Go client program `berthgo` (tests/goclient/src/berthgo): built from
//! Debian's containerd 1.6 Go client sources in GOPATH mode, once per target
//! directory and again only when its sources change, then run against a
//! daemon, one subcommand per behaviour.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Debian's Go (package golang-go).
const GO: &str = "/usr/bin/go";
/// Where Debian's golang-*-dev packages put Go sources.
const GOCODE: &str = "/usr/share/gocode";

/// The program's sources in this repository.
fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("goclient")
}

/// Where the built program and Go's cache live: `<target>/goclient`.
fn build_dir() -> PathBuf {
    crate::bin_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("goclient")
}

/// A digest of every source file, naming the binary built from them.
fn source_digest(dir: &Path) -> Result<String> {
    let pkg = dir.join("src/berthgo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pkg)
        .with_context(|| format!("reading {}", pkg.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
        h.update([0]);
        h.update(std::fs::read(&f)?);
        h.update([0]);
    }
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

/// The path of the built `berthgo`, building it first if its sources changed.
pub fn berthgo() -> Result<PathBuf> {
    if !Path::new(GO).exists() {
        bail!("{GO} not found: run `cargo xtask deps` (Debian package golang-go)");
    }
    let containerd = Path::new(GOCODE).join("src/github.com/containerd/containerd");
    if !containerd.join("client.go").exists() {
        bail!(
            "{} not found: run `cargo xtask deps` (Debian package golang-github-containerd-containerd-dev)",
            containerd.display()
        );
    }
    let src = sources();
    let out = build_dir();
    std::fs::create_dir_all(&out)?;
    let bin = out.join(format!("berthgo-{}", source_digest(&src)?));
    // Tests run as parallel processes: one builds, the others wait.
    let lock = std::fs::File::create(out.join("build.lock"))?;
    lock.lock()?;
    if bin.exists() {
        return Ok(bin);
    }
    let partial = out.join(format!("berthgo.partial-{}", std::process::id()));
    let built = Command::new(GO)
        .args(["build", "-o"])
        .arg(&partial)
        .arg("berthgo")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:{GOCODE}", src.display()))
        .env("GOCACHE", out.join("cache"))
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .context("running go build")?;
    if !built.status.success() {
        bail!(
            "building the Go client program from {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&built.stderr)
        );
    }
    std::fs::rename(&partial, &bin)?;
    // Builds of older sources are of no more use.
    for old in std::fs::read_dir(&out)?.flatten() {
        let name = old.file_name();
        if name.to_string_lossy().starts_with("berthgo-") && old.path() != bin {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(bin)
}

/// `berthgo` aimed at one daemon socket and namespace.
#[derive(Debug, Clone)]
pub struct GoClient {
    bin: PathBuf,
    address: PathBuf,
    /// The namespace the program works in.
    pub namespace: String,
    /// The test image's reference (`-image`), if any.
    pub image: Option<String>,
    /// Runtime name of the containers it creates (`-runtime`).
    pub runtime: Option<String>,
}

impl GoClient {
    /// The program (built if needed) for the daemon at `address`.
    pub fn new(address: &Path, namespace: &str) -> Result<GoClient> {
        Ok(GoClient {
            bin: berthgo()?,
            address: address.to_path_buf(),
            namespace: namespace.to_string(),
            image: None,
            runtime: None,
        })
    }

    /// The same client using test image `reference`.
    pub fn with_image(mut self, reference: &str) -> GoClient {
        self.image = Some(reference.to_string());
        self
    }

    /// Runs `berthgo ... <subcommand> <args>`; returns its stdout, or fails
    /// with everything it printed.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-address")
            .arg(&self.address)
            .arg("-namespace")
            .arg(&self.namespace);
        if let Some(image) = &self.image {
            cmd.arg("-image").arg(image);
        }
        if let Some(runtime) = &self.runtime {
            cmd.arg("-runtime").arg(runtime);
        }
        let out = cmd
            .arg(subcommand)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "berthgo {subcommand} failed ({}):\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}
