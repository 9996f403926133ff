//! The Debian packages berth builds and tests with, and their install.
//!
//! Plain `std` only: the `xtask` launcher (`xtask/launcher`) compiles this
//! same file before anything that needs `protoc` is built, so a fresh
//! machine gets its packages from the first `cargo xtask` command.

use std::path::Path;
use std::process::Command;

/// What the commands here fail with.
pub(crate) type Result<T> = std::result::Result<T, String>;

/// Debian packages berth needs: protoc for the API crate; runc, containerd
/// (for its `ctr` client and as the benchmark baseline), docker-registry and
/// busybox-static for the end-to-end tests; tmux to drive TTY sessions;
/// openssl to make the certificates of the registry TLS tests.
const PACKAGES: &[(&str, &str)] = &[
    ("protobuf-compiler", "/usr/bin/protoc"),
    (
        "libprotobuf-dev",
        "/usr/include/google/protobuf/empty.proto",
    ),
    ("runc", "/usr/sbin/runc"),
    ("containerd", "/usr/bin/ctr"),
    ("docker-registry", "/usr/bin/docker-registry"),
    ("busybox-static", "/bin/busybox"),
    ("tmux", "/usr/bin/tmux"),
    ("openssl", "/usr/bin/openssl"),
    // Checkpoint/restore tests (berthctl_parity.rs); they skip, saying why,
    // where `criu check` fails (kernels without the features CRIU needs).
    ("criu", "/usr/sbin/criu"),
    // A loop-mounted Btrfs for the reflink test, and filefrag to see
    // shared extents.
    ("btrfs-progs", "/usr/sbin/mkfs.btrfs"),
    ("e2fsprogs", "/usr/sbin/filefrag"),
    // mkfs.erofs: the erofs snapshotter turns committed layers into EROFS
    // images (berthd needs it at run time too).
    ("erofs-utils", "/usr/bin/mkfs.erofs"),
    // containerd 1.6's own .proto files (and the ones they import), which
    // berth-api's upstream_protos test compares berth's protos with.
    (
        "golang-github-containerd-containerd-dev",
        "/usr/share/gocode/src/github.com/containerd/containerd/api/services/tasks/v1/tasks.proto",
    ),
    (
        "golang-github-containerd-cgroups-dev",
        "/usr/share/gocode/src/github.com/containerd/cgroups/stats/v1/metrics.proto",
    ),
    (
        "golang-github-gogo-protobuf-dev",
        "/usr/share/gocode/src/github.com/gogo/protobuf/gogoproto/gogo.proto",
    ),
    (
        "golang-github-gogo-googleapis-dev",
        "/usr/share/gocode/src/github.com/gogo/googleapis/google/rpc/status.proto",
    ),
    (
        "python3-grpcio",
        "/usr/lib/python3/dist-packages/grpc/__init__.py",
    ),
    // Docker Engine 20.10, run by tests on berthd (`--containerd`).
    ("docker.io", "/usr/sbin/dockerd"),
    // The Go client program of tests/goclient (Go; containerd 1.6's sources
    // come with the package above).
    ("golang-go", "/usr/bin/go"),
    // systemd-analyze, which checks the shipped berthd.service (it runs
    // without systemd as init).
    ("systemd", "/usr/bin/systemd-analyze"),
    // A venv for the current grpcio from PyPI (tests/tests/wire_compat.rs).
    ("python3-venv", "/usr/lib/python3.11/ensurepip/__init__.py"),
    // The CRI tests (tests/tests/critest.rs, crictl_operator.rs): pod
    // networks through the CNI bridge, portmap and loopback plugins; the
    // stand-in images' pause, nginx and nonewprivs programs, compiled with
    // `gcc -static`; pgrep and ipcs copied into the e2e busybox image;
    // critest runs ipcmk on the host.
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iptables", "/usr/sbin/iptables"),
    ("iproute2", "/usr/sbin/ip"),
    ("gcc", "/usr/bin/gcc"),
    ("libc6-dev", "/usr/lib/x86_64-linux-gnu/libc.a"),
    ("procps", "/usr/bin/pgrep"),
    ("util-linux", "/usr/bin/ipcs"),
    // The font of `cargo xtask bench scale`'s PNG plots (read as a file).
    (
        "fonts-dejavu-core",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
];

/// Packages unpacked rather than installed, because they conflict with one
/// in [`PACKAGES`]: `(package, directory, probe inside it)`. Debian's
/// dynamically linked `busybox` conflicts with `busybox-static`, which the
/// other tests need; the CRI tests' e2e busybox image needs the dynamic one
/// (its shell runs `/bin/ls` as a file, so critest's masked-paths spec sees
/// the mask; busybox-static runs its applets internally).
const UNPACKED: &[(&str, &str, &str)] = &[(
    "busybox",
    "/usr/local/lib/berth-tests/busybox",
    "bin/busybox",
)];

/// Packages whose install starts a daemon on the default paths; tests use
/// only their binaries, on temporary roots.
const DAEMON_PACKAGES: &[&str] = &["containerd", "docker.io"];

/// Debian's hook that lets `invoke-rc.d` / `deb-systemd-invoke` start a
/// package's service; exit code 101 forbids it.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs whatever of [`PACKAGES`] is missing.
pub(crate) fn deps() -> Result<()> {
    install_packages()?;
    unpack_packages()
}

/// Unpacks each of [`UNPACKED`] whose probe is missing: `apt-get download`,
/// then `dpkg-deb -x` into its directory.
fn unpack_packages() -> Result<()> {
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    for (pkg, dir, probe) in UNPACKED {
        if Path::new(dir).join(probe).exists() {
            continue;
        }
        eprintln!("unpacking {pkg} into {dir}");
        root_sh(
            sudo,
            &format!(
                "set -e; t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT; cd \"$t\"; \
                 chmod 777 \"$t\"; apt-get download -qq {pkg} || {{ apt-get update -qq && apt-get download -qq {pkg}; }}; \
                 mkdir -p {dir}; dpkg-deb -x {pkg}_*.deb {dir}"
            ),
        )?;
    }
    Ok(())
}

/// Installs the [`PACKAGES`] whose probe is missing.
fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut cmd = Command::new(all[0]);
        cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    let daemons = missing.iter().any(|p| DAEMON_PACKAGES.contains(p));
    // Keep the packages' daemons from starting at all, with or without an
    // init system: a policy-rc.d that forbids every start, for the time of
    // the install, unless the machine has one already.
    let own_policy = daemons && !Path::new(POLICY_RC_D).exists();
    if own_policy {
        root_sh(
            sudo,
            &format!("printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 755 {POLICY_RC_D}"),
        )?;
    }
    let installed = apt(&args);
    if own_policy {
        root_sh(sudo, &format!("rm -f {POLICY_RC_D}"))?;
    }
    installed?;
    // Under systemd, socket activation could still start dockerd: stop
    // whatever the packages enabled. Without systemd this does nothing.
    if daemons && Path::new("/run/systemd/system").exists() {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("systemctl"));
        if !sudo.is_empty() {
            cmd.arg("systemctl");
        }
        let _ = cmd
            .args([
                "stop",
                "docker.socket",
                "docker.service",
                "containerd.service",
            ])
            .status();
    }
    Ok(())
}

/// Runs `script` with `sh -c` as root (through `sudo` when given).
fn root_sh(sudo: &[&str], script: &str) -> Result<()> {
    let mut all: Vec<&str> = sudo.to_vec();
    all.extend_from_slice(&["sh", "-c", script]);
    run(Command::new(all[0]).args(&all[1..]))
}
