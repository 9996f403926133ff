//! What a Kubernetes node operator does with `crictl` (cri-tools v1.32.0,
//! from the shared tools), against a CRI daemon on a temporary root with
//! the project's stand-in images and a CNI bridge of its own: pull, run a
//! pod, create and start a container in it, list, exec, read logs and
//! stats, port-forward to it, then stop and remove the pod.
//!
//! `containerd_*` runs Debian's containerd 1.6.20 (the reference, and the
//! proof of the harness and images); `berthd_*` runs berthd through the
//! same session.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_tests::cri_daemon::{CriDaemon, CriDaemonKind};
use berth_tests::cri_env::CriEnv;
use berth_tests::cri_images::{DOCKER_BUSYBOX, NGINX};
use berth_tests::{Watcher, ok};

/// A hang guard for waits on the container's output, not a timing
/// expectation.
const HANG: Duration = Duration::from_secs(60);

/// `crictl` output as text, failing with everything it printed.
fn crictl(d: &CriDaemon, args: &[&str]) -> Result<String> {
    ok(d.crictl(args)?).with_context(|| format!("crictl {}", args.join(" ")))
}

/// One HTTP GET of `/` at `addr`; returns the whole response.
fn http_get(addr: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(HANG))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The operator's session against `kind`.
fn operate(kind: CriDaemonKind) -> Result<()> {
    let env = CriEnv::start()?;
    let d = CriDaemon::start(kind, &env)?;
    if !d.serves_cri()? {
        d.finish()?;
        env.finish()?;
        bail!("{kind:?}'s CRI plugin answered Version with Unimplemented");
    }
    let version = crictl(&d, &["version"])?;
    if !version.contains("RuntimeApiVersion:  v1") {
        bail!("crictl version: {version}");
    }

    // Pull by the upstream names; the mirrors send them to the registry.
    crictl(&d, &["pull", NGINX])?;
    crictl(&d, &["pull", "busybox:1.28"])?;
    let images = crictl(&d, &["images"])?;
    for name in [
        "registry.k8s.io/e2e-test-images/nginx",
        "docker.io/library/busybox",
    ] {
        if !images.contains(name) {
            bail!("crictl images does not list {name}:\n{images}");
        }
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["inspecti", "-o", "json", DOCKER_BUSYBOX])?)?;
    if inspect["status"]["repoTags"][0] != DOCKER_BUSYBOX {
        bail!("crictl inspecti {DOCKER_BUSYBOX}: {inspect}");
    }

    let logs = d.scratch("pod-logs");
    std::fs::create_dir_all(&logs)?;
    let pod_json = d.scratch("pod.json");
    std::fs::write(
        &pod_json,
        serde_json::to_vec(&serde_json::json!({
            "metadata": {
                "name": "berth-operator",
                "namespace": "default",
                "uid": format!("berth-operator-{}", std::process::id()),
                "attempt": 1,
            },
            "log_directory": logs,
            "port_mappings": [{"container_port": 80}],
            "linux": {},
        }))?,
    )?;
    let web_json = d.scratch("web.json");
    std::fs::write(
        &web_json,
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"name": "web"},
            "image": {"image": NGINX},
            "log_path": "web.log",
            "linux": {},
        }))?,
    )?;
    let pod = crictl(&d, &["runp", &pod_json.to_string_lossy()])?
        .trim()
        .to_string();
    let status: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["inspectp", "-o", "json", &pod])?)?;
    if status["status"]["state"] != "SANDBOX_READY" {
        bail!("pod {pod} is not ready: {status}");
    }
    let ip = status["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !env.cni.contains(&ip) {
        bail!(
            "pod IP {ip:?} is not in the test network {}",
            env.cni.subnet
        );
    }

    let web = crictl(
        &d,
        &[
            "create",
            &pod,
            &web_json.to_string_lossy(),
            &pod_json.to_string_lossy(),
        ],
    )?
    .trim()
    .to_string();
    crictl(&d, &["start", &web])?;
    let ps: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["ps", "-o", "json", "--pod", &pod])?)?;
    let listed = ps["containers"].as_array().cloned().unwrap_or_default();
    if listed.len() != 1 || listed[0]["id"] != web || listed[0]["state"] != "CONTAINER_RUNNING" {
        bail!("crictl ps --pod {pod}: {ps}");
    }

    // The server logs once it listens: follow the log until then.
    let follow = Watcher::spawn(d.crictl_command(&["logs", "-f", &web])?)?;
    follow.wait_for(&["nginx: listening on port 80"], HANG)?;
    drop(follow);
    let logs_now = crictl(&d, &["logs", &web])?;
    if !logs_now.contains("nginx: listening on port 80") {
        bail!("crictl logs {web}: {logs_now}");
    }

    let exec: &[&str] = &["exec", &web];
    let echoed = crictl(&d, &[exec, &["echo", "hello from exec"]].concat())?;
    if echoed != "hello from exec\n" {
        bail!("crictl exec {web} echo printed {echoed:?}");
    }
    let pid = crictl(&d, &[exec, &["cat", "/var/run/nginx.pid"]].concat())?;
    let cmdline = crictl(
        &d,
        &[exec, &["cat", &format!("/proc/{}/cmdline", pid.trim())]].concat(),
    )?;
    if !cmdline.starts_with("nginx: master process") {
        bail!("nginx's pid {pid:?} has command line {cmdline:?}");
    }

    let stats: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["stats", "-o", "json", "--id", &web])?)?;
    let stat = &stats["stats"][0];
    if stat["attributes"]["id"] != web || stat["memory"]["workingSetBytes"]["value"].is_null() {
        bail!("crictl stats --id {web}: {stats}");
    }

    // The pod network answers on the pod IP, and port-forward reaches it
    // from the host's loopback.
    let direct = http_get(&format!("{ip}:80"))?;
    if !direct.starts_with("HTTP/1.1 200") || !direct.contains("Welcome to nginx") {
        bail!("GET http://{ip}:80/ answered:\n{direct}");
    }
    let local = berth_tests::registry::free_port()?;
    let forward =
        Watcher::spawn(d.crictl_command(&["port-forward", &pod, &format!("{local}:80")])?)?;
    forward.wait_for(&["Forwarding from"], HANG)?;
    let forwarded = http_get(&format!("127.0.0.1:{local}"))?;
    drop(forward);
    if !forwarded.starts_with("HTTP/1.1 200") || !forwarded.contains("Welcome to nginx") {
        bail!("GET through crictl port-forward answered:\n{forwarded}");
    }

    crictl(&d, &["stopp", &pod])?;
    let stopped: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["inspectp", "-o", "json", &pod])?)?;
    if stopped["status"]["state"] != "SANDBOX_NOTREADY" {
        bail!("pod {pod} after stopp: {stopped}");
    }
    crictl(&d, &["rmp", &pod])?;
    let pods = crictl(&d, &["pods", "-q"])?;
    if !pods.trim().is_empty() {
        bail!("crictl pods after rmp: {pods}");
    }
    d.finish()?;
    env.finish()?;
    Ok(())
}

#[test]
fn containerd_serves_crictl_operator() -> Result<()> {
    operate(CriDaemonKind::Containerd)
}

#[test]
fn berthd_serves_crictl_operator() -> Result<()> {
    operate(CriDaemonKind::Berthd)
}
