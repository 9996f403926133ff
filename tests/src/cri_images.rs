//! Stand-ins for the images the Kubernetes CRI tests name (critest from
//! cri-tools v1.32, crictl), built here, never downloaded.
//!
//! critest pulls upstream names (`registry.k8s.io/e2e-test-images/...`,
//! `gcr.io/k8s-staging-cri-tools/...`) and checks the names back in
//! `RepoTags`, so the stand-ins are pushed under those same names to a
//! local registry the daemon reaches through registry mirrors
//! ([`crate::cri_env`]). What each must do comes from critest's specs
//! (`pkg/validate/*.go`):
//!
//! - the e2e busybox (`busybox:1.29-2`, every spec's default image): a shell
//!   whose `/bin/ls` is a file of its own (a hard link), run by exec, so the
//!   masked-paths spec sees `/bin/sh: ls: Permission denied`. Debian's
//!   busybox-static runs applets inside the shell, so this image uses
//!   Debian's dynamically linked busybox (unpacked by `cargo xtask deps`)
//!   with its libraries, plus the host's `pgrep` and `ipcs`, which busybox
//!   lacks and critest runs.
//! - the pause image (`registry.k8s.io/pause:3.6`, containerd 1.6's default
//!   `sandbox_image`): a static `/pause` (`cri-images/pause.c`) run as user
//!   65535 that waits for SIGINT/SIGTERM and reaps children.
//! - nginx (`nginx:1.14-2`, and `hostnet-nginx-<arch>` on port 12003) and
//!   httpd (`httpd:2.4.39-4`): a static HTTP server (`cri-images/webserver.c`)
//!   answering 200, titled `nginx: master process ...`, writing
//!   `/var/run/nginx.pid` and logging its name.
//! - nonewprivs (`nonewprivs:1.3`): a setuid-root program printing
//!   `Effective uid: N` (`cri-images/nonewprivs.c`).
//! - the image-user images: `User` 1002, `www-data`, `1003:1004`,
//!   `www-data:www-data`, and uid 1000 whose `/etc/group` puts it in group
//!   50000.
//! - the pull/list images: `test-image-{1,2,3}` are three different images,
//!   `test-image-tags:{1,2,3}` one image under three tags.
//!
//! The C programs are compiled with `gcc -static` when the images are built
//! (Debian's `gcc` and `libc6-dev`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::testimages::{
    self, Descriptor, Entry, ImageConfig, Layout, host_arch, put_image_config, put_layer,
};

/// containerd 1.6's default `sandbox_image`, which the CRI config names too.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";
/// critest's default container image (`framework.DefaultLinuxContainerImage`).
pub const E2E_BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// critest's web server image.
pub const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/// critest's multi-container image.
pub const HTTPD: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4";
/// critest's no_new_privs image.
pub const NONEWPRIVS: &str = "registry.k8s.io/e2e-test-images/nonewprivs:1.3";
/// A Docker Hub busybox, for operator-style tests (`crictl pull busybox`).
pub const DOCKER_BUSYBOX: &str = "docker.io/library/busybox:1.28";

/// The prefix of critest's own test images.
const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools/";

/// Where `cargo xtask deps` unpacks Debian's dynamically linked busybox.
pub const DYNAMIC_BUSYBOX: &str = "/usr/local/lib/berth-tests/busybox/bin/busybox";

/// The port of critest's host-network web server image (`images/hostnet-nginx`).
pub const HOSTNET_NGINX_PORT: u16 = 12003;

/// One built image and every reference it is published under.
#[derive(Debug, Clone)]
pub struct CriImage {
    /// Full references (`host/repo:tag`), all naming this image.
    pub names: Vec<String>,
    /// The image.
    pub layout: Layout,
}

/// A reference split for a registry: `(host, repository, tag)`.
pub fn split_reference(reference: &str) -> Result<(&str, &str, &str)> {
    let (host, rest) = reference
        .split_once('/')
        .with_context(|| format!("image reference {reference:?} has no registry host"))?;
    let (repo, tag) = rest
        .rsplit_once(':')
        .with_context(|| format!("image reference {reference:?} has no tag"))?;
    Ok((host, repo, tag))
}

/// Every image critest and the crictl tests pull, built under `dir`.
pub fn build_all(dir: &Path) -> Result<Vec<CriImage>> {
    let programs = Programs::compile(&dir.join("programs"))?;
    let base = Base::build(&dir.join("base"))?;
    let mut images = Vec::new();
    let mut add = |names: &[&str], layout: Layout| {
        images.push(CriImage {
            names: names.iter().map(|n| (*n).to_string()).collect(),
            layout,
        });
    };

    let pause = ImageSpec::new(PAUSE_IMAGE)
        .entrypoint(&["/pause"])
        .user("65535:65535");
    add(
        &[PAUSE_IMAGE],
        pause.build(
            dir,
            None,
            &[Entry::File("pause".into(), programs.pause.clone(), 0o755)],
        )?,
    );

    add(
        &[
            E2E_BUSYBOX,
            DOCKER_BUSYBOX,
            "docker.io/library/busybox:latest",
        ],
        ImageSpec::new(E2E_BUSYBOX)
            .cmd(&["sh"])
            .build(dir, Some(&base), &[])?,
    );

    let web = |name: &str, binary: &str, port: u16| {
        ImageSpec::new(name)
            .entrypoint(&[binary])
            .env(&format!("STANDIN_PORT={port}"))
    };
    let nginx_files = vec![
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/sbin", 0o755),
        Entry::File("usr/sbin/nginx".into(), programs.webserver.clone(), 0o755),
        Entry::Dir("var", 0o755),
        Entry::Dir("var/run", 0o755),
    ];
    add(
        &[NGINX],
        web(NGINX, "/usr/sbin/nginx", 80).build(dir, Some(&base), &nginx_files)?,
    );
    let hostnet = format!("{CRI_TOOLS}hostnet-nginx-{}:latest", host_arch());
    add(
        &[&hostnet],
        web(&hostnet, "/usr/sbin/nginx", HOSTNET_NGINX_PORT).build(
            dir,
            Some(&base),
            &nginx_files,
        )?,
    );
    add(
        &[HTTPD],
        web(HTTPD, "/usr/local/bin/httpd", 80).build(
            dir,
            Some(&base),
            &[
                Entry::Dir("usr", 0o755),
                Entry::Dir("usr/local", 0o755),
                Entry::Dir("usr/local/bin", 0o755),
                Entry::File(
                    "usr/local/bin/httpd".into(),
                    programs.webserver.clone(),
                    0o755,
                ),
                Entry::Dir("var", 0o755),
                Entry::Dir("var/run", 0o755),
            ],
        )?,
    );
    add(
        &[NONEWPRIVS],
        ImageSpec::new(NONEWPRIVS)
            .entrypoint(&["/usr/local/bin/nnp"])
            .build(
                dir,
                Some(&base),
                &[
                    Entry::Dir("usr", 0o755),
                    Entry::Dir("usr/local", 0o755),
                    Entry::Dir("usr/local/bin", 0o755),
                    // Setuid root: without no_new_privs it runs as uid 0.
                    Entry::File(
                        "usr/local/bin/nnp".into(),
                        programs.nonewprivs.clone(),
                        0o4755,
                    ),
                ],
            )?,
    );

    // Pulled, listed and removed: each a different image (its own label).
    for name in [
        "test-image-1:latest",
        "test-image-2:latest",
        "test-image-3:latest",
        "test-image-latest:latest",
        "test-image-tag:test",
        "test-image-tag:all",
    ] {
        let full = format!("{CRI_TOOLS}{name}");
        add(
            &[&full],
            ImageSpec::new(&full)
                .cmd(&["sh"])
                .build(dir, Some(&base), &[])?,
        );
    }
    let tags: Vec<String> = (1..=3)
        .map(|i| format!("{CRI_TOOLS}test-image-tags:{i}"))
        .collect();
    add(
        &tags.iter().map(String::as_str).collect::<Vec<_>>(),
        ImageSpec::new(&tags[0])
            .cmd(&["sh"])
            .build(dir, Some(&base), &[])?,
    );

    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:www-data"),
    ] {
        let full = format!("{CRI_TOOLS}{name}:latest");
        add(
            &[&full],
            ImageSpec::new(&full)
                .cmd(&["sh"])
                .user(user)
                .build(dir, Some(&base), &[])?,
        );
    }
    let predefined = format!("{CRI_TOOLS}test-image-predefined-group:latest");
    add(
        &[&predefined],
        ImageSpec::new(&predefined)
            .cmd(&["sh"])
            .user("1000")
            .build(
            dir,
            Some(&base),
            &[
                Entry::Dir("etc", 0o755),
                Entry::File(
                    "etc/passwd".into(),
                    format!("{PASSWD}default-user:x:1000:1000::/home/default-user:/bin/sh\n")
                        .into_bytes(),
                    0o644,
                ),
                Entry::File(
                    "etc/group".into(),
                    format!(
                        "{GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
                    )
                    .into_bytes(),
                    0o644,
                ),
            ],
        )?,
    );
    Ok(images)
}

/// The base image's users.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
/// The base image's groups.
const GROUP: &str = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n";

/// The stand-ins' static programs.
struct Programs {
    pause: Vec<u8>,
    webserver: Vec<u8>,
    nonewprivs: Vec<u8>,
}

impl Programs {
    fn compile(dir: &Path) -> Result<Programs> {
        std::fs::create_dir_all(dir)?;
        Ok(Programs {
            pause: compile_static(dir, "pause", include_str!("../cri-images/pause.c"))?,
            webserver: compile_static(dir, "webserver", include_str!("../cri-images/webserver.c"))?,
            nonewprivs: compile_static(
                dir,
                "nonewprivs",
                include_str!("../cri-images/nonewprivs.c"),
            )?,
        })
    }
}

/// Compiles `source` with `gcc -static`; returns the program's bytes.
fn compile_static(dir: &Path, name: &str, source: &str) -> Result<Vec<u8>> {
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source)?;
    let result = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .context("running gcc: run `cargo xtask deps` (Debian packages gcc, libc6-dev)")?;
    if !result.status.success() {
        bail!(
            "gcc -static {name}.c failed (`cargo xtask deps` installs gcc and libc6-dev):\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(std::fs::read(&out)?)
}

/// The e2e busybox root filesystem as one layer, built once and copied into
/// every image that starts from it.
struct Base {
    blob: PathBuf,
    layer: (Descriptor, String),
}

impl Base {
    fn build(dir: &Path) -> Result<Base> {
        testimages::fresh(dir)?;
        let layer = put_layer(dir, &e2e_busybox_entries()?)?;
        Ok(Base {
            blob: dir
                .join("blobs/sha256")
                .join(layer.0.digest.trim_start_matches("sha256:")),
            layer,
        })
    }
}

/// The e2e busybox: Debian's dynamic busybox with every applet a hard link
/// in `/bin`, the host's `pgrep` and `ipcs`, and the libraries all of them
/// load.
fn e2e_busybox_entries() -> Result<Vec<Entry>> {
    let busybox = Path::new(DYNAMIC_BUSYBOX);
    if !busybox.exists() {
        bail!(
            "{DYNAMIC_BUSYBOX} not found: run `cargo xtask deps` (it unpacks Debian's dynamically linked busybox there)"
        );
    }
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::Dir("dev", 0o755),
        Entry::Dir("etc", 0o755),
        Entry::Dir("home", 0o755),
        Entry::Dir("proc", 0o755),
        Entry::Dir("sys", 0o755),
        Entry::Dir("tmp", 0o1777),
        Entry::Dir("root", 0o700),
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/bin", 0o755),
        Entry::Dir("var", 0o755),
        Entry::Dir("var/run", 0o755),
        Entry::File("bin/busybox".into(), std::fs::read(busybox)?, 0o755),
        Entry::File("etc/passwd".into(), PASSWD.as_bytes().to_vec(), 0o644),
        Entry::File("etc/group".into(), GROUP.as_bytes().to_vec(), 0o644),
    ];
    let list = Command::new(busybox).arg("--list").output()?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|a| !a.is_empty() && a != "busybox")
        .collect();
    applets.sort();
    applets.dedup();
    if !applets.iter().any(|a| a == "sh") {
        bail!("{DYNAMIC_BUSYBOX} --list names no sh applet");
    }
    for a in applets {
        entries.push(Entry::Hardlink(format!("bin/{a}"), "bin/busybox".into()));
    }
    let tools = ["/usr/bin/pgrep", "/usr/bin/ipcs"];
    for tool in tools {
        let data = std::fs::read(tool).with_context(|| {
            format!("reading {tool}: run `cargo xtask deps` (Debian packages procps, util-linux)")
        })?;
        entries.push(Entry::File(
            tool.trim_start_matches('/').into(),
            data,
            0o755,
        ));
    }
    let mut libs = BTreeMap::new();
    for program in std::iter::once(DYNAMIC_BUSYBOX).chain(tools) {
        for lib in shared_libraries(program)? {
            libs.insert(lib.clone(), lib);
        }
    }
    for lib in libs.keys() {
        let data = std::fs::read(lib).with_context(|| format!("reading {lib}"))?;
        entries.push(Entry::File(lib.trim_start_matches('/').into(), data, 0o755));
    }
    Ok(entries)
}

/// The shared libraries (and the loader) `program` loads, as `ldd` names
/// them.
fn shared_libraries(program: &str) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd (Debian package libc-bin)")?;
    if !out.status.success() {
        bail!(
            "ldd {program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    Ok(libs)
}

/// One image's name and config, built into its own layout.
struct ImageSpec {
    name: String,
    config: ImageConfig,
}

impl ImageSpec {
    fn new(name: &str) -> ImageSpec {
        let mut config = ImageConfig::default();
        // Every image gets a config of its own, so no two share an image id
        // (critest removes images by id).
        config
            .labels
            .insert("org.berth.test-image".into(), name.into());
        ImageSpec {
            name: name.to_string(),
            config,
        }
    }

    fn entrypoint(mut self, args: &[&str]) -> ImageSpec {
        self.config.entrypoint = args.iter().map(|a| (*a).to_string()).collect();
        self
    }

    fn cmd(mut self, args: &[&str]) -> ImageSpec {
        self.config.cmd = args.iter().map(|a| (*a).to_string()).collect();
        self
    }

    fn user(mut self, user: &str) -> ImageSpec {
        self.config.user = user.to_string();
        self
    }

    fn env(mut self, var: &str) -> ImageSpec {
        self.config.env.push(var.to_string());
        self
    }

    /// Writes the image (the base layer, if given, then `top` if not
    /// empty) as a layout under `dir`.
    fn build(self, dir: &Path, base: Option<&Base>, top: &[Entry]) -> Result<Layout> {
        let safe: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let out = dir.join("layouts").join(safe);
        testimages::fresh(&out)?;
        let mut layers = Vec::new();
        if let Some(base) = base {
            let blobs = out.join("blobs/sha256");
            std::fs::create_dir_all(&blobs)?;
            std::fs::copy(
                &base.blob,
                blobs.join(base.layer.0.digest.trim_start_matches("sha256:")),
            )?;
            layers.push(base.layer.clone());
        }
        if !top.is_empty() {
            layers.push(put_layer(&out, top)?);
        }
        let manifest = put_image_config(&out, host_arch(), &layers, &self.config)?;
        let manifests = vec![(format!("linux/{}", host_arch()), manifest.clone())];
        let (_, repo, tag) = split_reference(&self.name)?;
        testimages::finish(
            &out,
            manifest,
            manifests,
            &layers,
            &format!("{}:{tag}", repo.rsplit('/').next().unwrap_or(repo)),
        )
    }
}
