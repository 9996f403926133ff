//! The CRI plugin end to end with the real `crictl` against berthd: images
//! pulled from a local registry, a pod on the host's network and one on a
//! CNI bridge network made by the test, containers created, started,
//! exec'd into, logged, stopped and removed, and a berthd restart in the
//! middle (pods and containers survive it with their true states).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_tests::cri_env::bridge_plugin;
use berth_tests::crictl::Crictl;
use berth_tests::registry::Registry;
use berth_tests::{Daemon, fails, ok, pause, testimages};

/// A registry holding `busybox:1` and the pause image `pause:1`.
fn registry(d: &Path) -> Result<(Registry, String, String)> {
    let reg = Registry::start()?;
    let busybox = testimages::busybox(&d.join("busybox"))?;
    let pause = pause::image(&d.join("pause"))?;
    let busybox = reg.push_layout(&busybox, "busybox", "1")?;
    let pause = reg.push_layout(&pause, "pause", "1")?;
    Ok((reg, busybox, pause))
}

/// berthd configured as a CRI runtime: sandbox image from `pause`, CNI
/// plugins from Debian's package, networks from `conf_dir`.
fn daemon(pause: &str, conf_dir: &Path) -> Result<Daemon> {
    daemon_with_cni(pause, conf_dir, Path::new("/usr/lib/cni"))
}

/// [`daemon`] with CNI plugins from `bin_dir`.
fn daemon_with_cni(pause: &str, conf_dir: &Path, bin_dir: &Path) -> Result<Daemon> {
    std::fs::create_dir_all(conf_dir)?;
    let config = format!(
        r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  an_option_from_a_newer_containerd = "ignored"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{}"
    conf_dir = "{}"
"#,
        bin_dir.display(),
        conf_dir.display()
    );
    Daemon::start_with_config(Some(&config))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<String> {
    std::fs::write(path, serde_json::to_vec_pretty(v)?)?;
    Ok(path.display().to_string())
}

/// The pod config crictl sends: `network` 2 is NODE (the host's network).
fn pod_config(name: &str, log_dir: &Path, host_network: bool) -> serde_json::Value {
    let mut pod = serde_json::json!({
        "metadata": {"name": name, "namespace": "berth-test", "uid": format!("uid-{name}"), "attempt": 0},
        "hostname": name,
        "log_directory": log_dir,
        "dns_config": {"servers": ["10.0.0.10"], "searches": ["berth.test"], "options": ["ndots:2"]},
        "linux": {},
    });
    if host_network {
        pod["linux"] =
            serde_json::json!({"security_context": {"namespace_options": {"network": 2}}});
    }
    pod
}

fn container_config(name: &str, image: &str, command: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": image},
        "command": command,
        "envs": [{"key": "GREETING", "value": "hello-cri"}],
        "log_path": format!("{name}.log"),
        "linux": {"resources": {"oom_score_adj": -999}},
    })
}

/// The state crictl shows for container `id`.
fn container_state(c: &Crictl, id: &str) -> Result<String> {
    let v = c.json(&["inspect", "-o", "json", id])?;
    Ok(v["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn pod_state(c: &Crictl, id: &str) -> Result<String> {
    let v = c.json(&["inspectp", "-o", "json", id])?;
    Ok(v["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn crictl_runs_a_host_network_pod_across_a_restart() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
    let (reg, busybox, pause) = registry(scratch.path())?;
    let mut d = daemon(&pause, &scratch.path().join("net.d"))?;
    let c = Crictl::new(&d)?;

    let version = c.ok(&["version"])?;
    assert!(version.contains("RuntimeName:  containerd"), "{version}");
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");
    let info = c.json(&["info", "-o", "json"])?;
    let conditions = info["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|k| k["type"] == "RuntimeReady" && k["status"] == true),
        "{info}"
    );
    // No network configuration yet: NetworkReady is false, as containerd says.
    assert!(
        conditions
            .iter()
            .any(|k| k["type"] == "NetworkReady" && k["status"] == false),
        "{info}"
    );

    // Images: pulled through the CRI, visible in k8s.io to ctr.
    let image_id = c.ok(&["pull", &busybox])?;
    assert!(image_id.contains("sha256:"), "{image_id}");
    let images = c.ok(&["images"])?;
    assert!(
        images.contains(
            &busybox
                .rsplit_once(':')
                .map_or(busybox.as_str(), |x| x.0)
                .to_string()
        ),
        "{images}"
    );
    let inspected = c.json(&["inspecti", "-o", "json", &busybox])?;
    assert_eq!(
        inspected["status"]["repoTags"][0].as_str(),
        Some(busybox.as_str()),
        "{inspected}"
    );
    let ctr_images = ok(d.ctr(&["-n", "k8s.io", "images", "ls"])?)?;
    assert!(ctr_images.contains(&busybox), "{ctr_images}");
    assert!(
        ctr_images.contains("io.cri-containerd.image=managed"),
        "{ctr_images}"
    );

    // A pod on the host's network: the pause image is pulled on demand.
    let logs = scratch.path().join("logs");
    let pod_json = write_json(
        &scratch.path().join("pod.json"),
        &pod_config("hostpod", &logs, true),
    )?;
    let pod = c.ok(&["runp", &pod_json])?;
    assert_eq!(pod.len(), 64, "{pod}");
    assert_eq!(pod_state(&c, &pod)?, "SANDBOX_READY");
    let pods = c.ok(&["pods", "-q"])?;
    assert!(pods.contains(&pod), "{pods}");

    let ctr_json = write_json(
        &scratch.path().join("c1.json"),
        &container_config(
            "c1",
            &busybox,
            &[
                "sh",
                "-c",
                // "bye" is written on SIGTERM, after the restart: the log
                // copier must have been reattached.
                "trap 'echo bye; exit 0' TERM; echo $GREETING; echo to-err >&2; while true; do sleep 1; done",
            ],
        ),
    )?;
    let cid = c.ok(&["create", &pod, &ctr_json, &pod_json])?;
    assert_eq!(container_state(&c, &cid)?, "CONTAINER_CREATED");
    c.ok(&["start", &cid])?;
    assert_eq!(container_state(&c, &cid)?, "CONTAINER_RUNNING");
    let ps = c.ok(&["ps", "-q"])?;
    assert!(ps.contains(&cid), "{ps}");

    // ExecSync: output, exit code, the pod's files.
    let out = c.ok(&["exec", "-s", &cid, "cat", "/etc/resolv.conf"])?;
    assert!(
        out.contains("nameserver 10.0.0.10") && out.contains("search berth.test"),
        "{out}"
    );
    let failed = c.run(&[
        "exec",
        "-s",
        &cid,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ])?;
    // crictl reports a failed command with its exit code and stderr.
    assert!(!failed.status.success(), "{failed:?}");
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(said.contains("exited with 3: err"), "{failed:?}");
    // restrict_oom_score_adj: asked -999, got no lower than berthd's own.
    let own: i64 =
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", d.pid().unwrap_or(0)))?
            .trim()
            .parse()?;
    let adj: i64 = c
        .ok(&["exec", "-s", &cid, "cat", "/proc/self/oom_score_adj"])?
        .parse()?;
    assert_eq!(adj, (-999_i64).max(own));

    // berthd restarts: the pod and the container are still there, running.
    d.restart()?;
    assert_eq!(pod_state(&c, &pod)?, "SANDBOX_READY");
    assert_eq!(container_state(&c, &cid)?, "CONTAINER_RUNNING");
    let out = c.ok(&["exec", "-s", &cid, "echo", "after-restart"])?;
    assert_eq!(out, "after-restart");

    // UpdateContainerResources reaches the container's cgroup.
    c.ok(&["update", "--memory", "67108864", &cid])?;
    assert_eq!(memory_limit(&cid)?, 67_108_864);
    // Stats come from the shim's cgroup metrics.
    let stats = c.json(&["stats", "-o", "json", &cid])?;
    let mine = stats["stats"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["attributes"]["id"] == cid.as_str()))
        .cloned()
        .with_context(|| format!("{cid} not in {stats}"))?;
    let used: u64 = mine["memory"]["workingSetBytes"]["value"]
        .as_str()
        .unwrap_or("0")
        .parse()?;
    assert!(used > 0, "{mine}");

    // Stop: the exit is recorded, the log holds everything in CRI format.
    c.ok(&["stop", "-t", "30", &cid])?;
    let status = c.json(&["inspect", "-o", "json", &cid])?;
    assert_eq!(status["status"]["state"], "CONTAINER_EXITED", "{status}");
    assert_eq!(status["status"]["exitCode"], 0, "{status}");
    assert_eq!(status["status"]["reason"], "Completed", "{status}");
    let log = std::fs::read_to_string(logs.join("c1.log"))?;
    let records: Vec<Vec<&str>> = log.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert!(
        records
            .iter()
            .any(|r| r.get(1..) == Some(&["stdout", "F", "hello-cri"][..])),
        "{log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.get(1..) == Some(&["stdout", "F", "bye"][..])),
        "{log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.get(1..) == Some(&["stderr", "F", "to-err"][..])),
        "{log}"
    );
    assert!(
        records
            .iter()
            .all(|r| r[0].ends_with('Z') && r[0].contains('T')),
        "{log}"
    );
    let crictl_logs = c.run(&["logs", &cid])?;
    assert!(
        String::from_utf8_lossy(&crictl_logs.stdout).contains("hello-cri"),
        "{crictl_logs:?}"
    );

    c.ok(&["rm", &cid])?;
    let left = c.ok(&["ps", "-a", "-q"])?;
    assert!(!left.contains(&cid), "{left}");
    c.ok(&["stopp", &pod])?;
    assert_eq!(pod_state(&c, &pod)?, "SANDBOX_NOTREADY");
    c.ok(&["stopp", &pod])?;
    c.ok(&["rmp", &pod])?;
    let pods = c.ok(&["pods", "-q"])?;
    assert!(!pods.contains(&pod), "{pods}");
    fails(c.run(&["inspectp", &pod])?)?;

    c.ok(&["rmi", &busybox])?;
    let images = c.ok(&["images", "-q"])?;
    assert!(!images.contains(&image_id), "{images}");
    drop(reg);
    d.finish()
}

/// The memory limit of container `id`'s cgroup (`/k8s.io/<id>`), v1 or v2.
fn memory_limit(id: &str) -> Result<u64> {
    let v1 = format!("/sys/fs/cgroup/memory/k8s.io/{id}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/k8s.io/{id}/memory.max");
    let text = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .with_context(|| format!("reading {v1} or {v2}"))?;
    Ok(text.trim().parse()?)
}

/// A bridge made by the test for one pod network, removed when dropped
/// (ipMasq off: the plugins add no iptables rules).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn crictl_runs_a_pod_on_a_cni_bridge() -> Result<()> {
    if !Path::new("/usr/lib/cni/bridge").exists() {
        bail!(
            "/usr/lib/cni/bridge not found: run `cargo xtask deps` (Debian package containernetworking-plugins)"
        );
    }
    let scratch = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
    let (reg, busybox, pause) = registry(scratch.path())?;
    let conf_dir = scratch.path().join("net.d");
    let d = daemon(&pause, &conf_dir)?;
    let c = Crictl::new(&d)?;

    // A network of this test's own: bridge and subnet unique to this run.
    let n = std::process::id();
    let bridge = Bridge(format!("bt{:x}", n % 0xfffff));
    let subnet = format!("10.{}.{}", 200 + (n % 50), (n / 50) % 250);
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("berth-test-{n}"),
        "plugins": [bridge_plugin(
            &bridge.0,
            &format!("{subnet}.0/24"),
            &scratch.path().join("ipam"),
        )],
    });
    write_json(&conf_dir.join("10-berth-test.conflist"), &conflist)?;
    let info = c.json(&["info", "-o", "json"])?;
    let conditions = info["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|k| k["type"] == "NetworkReady" && k["status"] == true),
        "{info}"
    );

    c.ok(&["pull", &busybox])?;
    let logs = scratch.path().join("logs");
    let pod_json = write_json(
        &scratch.path().join("pod.json"),
        &pod_config("netpod", &logs, false),
    )?;
    let pod = c.ok(&["runp", &pod_json])?;
    let status = c.json(&["inspectp", "-o", "json", &pod])?;
    let ip = status["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with(&format!("{subnet}.")), "{status}");
    let netns = status["info"]["netns"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(Path::new(&netns).exists(), "{status}");

    let ctr_json = write_json(&scratch.path().join("c.json"), &{
        // A user by name, looked up in the image's /etc/passwd.
        let mut web = container_config("web", &busybox, &["sleep", "3600"]);
        web["linux"]["security_context"] = serde_json::json!({"run_as_username": "nobody"});
        web
    })?;
    let cid = c.ok(&["create", &pod, &ctr_json, &pod_json])?;
    c.ok(&["start", &cid])?;
    let addr = c.ok(&["exec", "-s", &cid, "ip", "-4", "addr", "show", "eth0"])?;
    assert!(addr.contains(&format!("{ip}/24")), "{addr}");
    // The pod's loopback interface is up (berth sets it up itself).
    let lo = c.ok(&["exec", "-s", &cid, "ip", "-4", "addr", "show", "lo"])?;
    assert!(lo.contains("127.0.0.1/8") && lo.contains(",UP"), "{lo}");
    assert_eq!(c.ok(&["exec", "-s", &cid, "id", "-u"])?, "65534");
    let hostname = c.ok(&["exec", "-s", &cid, "hostname"])?;
    assert_eq!(hostname, "netpod");

    // Stopping the pod stops its containers and tears the network down.
    c.ok(&["stopp", &pod])?;
    assert_eq!(container_state(&c, &cid)?, "CONTAINER_EXITED");
    assert!(
        !Path::new(&netns).exists(),
        "the pod's netns {netns} is still there"
    );
    let status = c.json(&["inspectp", "-o", "json", &pod])?;
    assert_eq!(status["status"]["network"]["ip"], "", "{status}");
    c.ok(&["rmp", &pod])?;
    let all = c.ok(&["ps", "-a", "-q"])?;
    assert!(!all.contains(&cid), "{all}");
    drop(reg);
    drop(bridge);
    d.finish()
}

#[test]
fn pod_starts_run_side_by_side_and_one_of_a_name_wins() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
    let (reg, _busybox, pause) = registry(scratch.path())?;
    let d = daemon(&pause, &scratch.path().join("net.d"))?;
    let c = Crictl::new(&d)?;
    c.ok(&["pull", &pause])?;
    let logs = scratch.path().join("logs");
    let twin = write_json(
        &scratch.path().join("twin.json"),
        &pod_config("twin", &logs, true),
    )?;
    let other = write_json(
        &scratch.path().join("other.json"),
        &pod_config("other", &logs, true),
    )?;
    // Three starts at once: two of one name, one of another.
    let runs = [&twin, &twin, &other]
        .into_iter()
        .map(|config| {
            c.command(&["runp", config])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("spawning crictl runp")
        })
        .collect::<Result<Vec<_>>>()?;
    let outs = runs
        .into_iter()
        .map(|child| berth_tests::crictl::wait_output(child, std::time::Duration::from_secs(120)))
        .collect::<Result<Vec<_>>>()?;
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let twins_started = outs[..2].iter().filter(|o| o.status.success()).count();
    assert_eq!(twins_started, 1, "{} | {}", said(&outs[0]), said(&outs[1]));
    let refused = outs[..2]
        .iter()
        .find(|o| !o.status.success())
        .map(said)
        .unwrap_or_default();
    assert!(
        refused.contains("failed to reserve sandbox name"),
        "{refused}"
    );
    assert!(outs[2].status.success(), "{}", said(&outs[2]));
    let pods: Vec<String> = c.ok(&["pods", "-q"])?.lines().map(str::to_string).collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for pod in &pods {
        c.ok(&["stopp", pod])?;
        c.ok(&["rmp", pod])?;
    }
    drop(reg);
    d.finish()
}

/// A CNI plugin that fails its ADD (after a while: the pause task is up
/// by then) with a CNI error, and does nothing on DEL.
const FAILING_PLUGIN: &str = r#"#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
    sleep 0.3
    printf '{"cniVersion":"1.0.0","code":100,"msg":"berth-test refuses ADD"}'
    exit 1
fi
"#;

#[test]
fn a_failing_cni_add_leaves_no_pod_behind() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new("/usr/lib/cni").join(plugin).exists() {
            bail!(
                "/usr/lib/cni/{plugin} not found: run `cargo xtask deps` (Debian package containernetworking-plugins)"
            );
        }
    }
    let scratch = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
    let (reg, _busybox, pause) = registry(scratch.path())?;
    // Debian's plugins, and one that fails, in a plugin directory of the
    // test's own.
    let bin_dir = scratch.path().join("cni-bin");
    std::fs::create_dir_all(&bin_dir)?;
    for plugin in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(plugin), bin_dir.join(plugin))?;
    }
    let failing = bin_dir.join("berth-test-fail");
    std::fs::write(&failing, FAILING_PLUGIN)?;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755))?;
    let conf_dir = scratch.path().join("net.d");
    let d = daemon_with_cni(&pause, &conf_dir, &bin_dir)?;
    let c = Crictl::new(&d)?;

    // The bridge plugin attaches the pod (an address from host-local),
    // then the next plugin of the list fails.
    let n = std::process::id();
    let bridge = Bridge(format!("bf{:x}", n % 0xfffff));
    let subnet = format!("10.{}.{}", 200 + (n % 50), (n / 50 + 7) % 250);
    let network = format!("berth-fail-{n}");
    let ipam = scratch.path().join("ipam");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            bridge_plugin(&bridge.0, &format!("{subnet}.0/24"), &ipam),
            {"type": "berth-test-fail"},
        ],
    });
    write_json(&conf_dir.join("10-berth-fail.conflist"), &conflist)?;

    let pod_json = write_json(
        &scratch.path().join("pod.json"),
        &pod_config("failpod", &scratch.path().join("logs"), false),
    )?;
    let failed = c.run(&["runp", &pod_json])?;
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "runp succeeded: {said}");
    assert!(
        said.contains("berth-test refuses ADD") && said.contains("berth-test-fail"),
        "the error does not name the CNI failure: {said}"
    );
    // The pause task was made while the network was (and is gone again).
    let log = d.log();
    assert!(
        log.contains("task started"),
        "no pause task was started:\n{log}"
    );

    // Nothing of the pod is left: no sandbox, record, task, active
    // snapshot, namespace, address or host-side interface.
    assert_eq!(c.ok(&["pods", "-q"])?, "");
    assert_eq!(
        ok(d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"])?)?.trim(),
        ""
    );
    assert_eq!(
        ok(d.ctr(&["-n", "k8s.io", "tasks", "ls", "-q"])?)?.trim(),
        ""
    );
    let snapshots = ok(d.ctr(&["-n", "k8s.io", "snapshots", "ls"])?)?;
    assert!(!snapshots.contains("Active"), "{snapshots}");
    let netns_dir = d.state.join("io.containerd.grpc.v1.cri").join("netns");
    let namespaces: Vec<_> = match std::fs::read_dir(&netns_dir) {
        Ok(dir) => dir.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        namespaces.is_empty(),
        "network namespaces left: {namespaces:?}"
    );
    let allocated: Vec<String> = std::fs::read_dir(ipam.join(&network))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        allocated.is_empty(),
        "addresses still allocated: {allocated:?}"
    );
    let ports = Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge.0])
        .output()?;
    let ports = String::from_utf8_lossy(&ports.stdout);
    assert_eq!(ports.trim(), "", "interfaces left on {}", bridge.0);
    d.assert_clean()?;
    drop(reg);
    drop(bridge);
    d.finish()
}

#[test]
fn crictl_pulls_through_a_configured_mirror() -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("berth-cri").tempdir()?;
    let (reg, busybox, _) = registry(scratch.path())?;
    // A registry name that resolves nowhere: only the mirror can serve it.
    let config = format!(
        r#"version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."mirror.invalid"]
  endpoint = ["http://{}"]
"#,
        reg.host
    );
    let d = Daemon::start_with_config(Some(&config))?;
    let c = Crictl::new(&d)?;
    let wanted = busybox.replace(&reg.host, "mirror.invalid");
    c.ok(&["pull", &wanted])?;
    let inspected = c.json(&["inspecti", "-o", "json", &wanted])?;
    assert_eq!(
        inspected["status"]["repoTags"][0].as_str(),
        Some(wanted.as_str()),
        "{inspected}"
    );
    drop(reg);
    d.finish()
}

#[test]
fn disabled_plugins_turns_the_cri_off() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    ))?;
    let c = Crictl::new(&d)?;
    let out = fails(c.run(&["version"])?)?;
    assert!(out.contains("Unimplemented"), "{out}");
    let plugins = ok(d.ctr(&["plugins", "ls"])?)?;
    assert!(
        !plugins
            .lines()
            .any(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri ")),
        "{plugins}"
    );
    d.finish()
}

#[test]
fn a_version_3_config_sets_the_cri_as_containerd_2_does() -> Result<()> {
    let d = Daemon::start_with_config(Some(
        r#"version = 3
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.invalid/pause:3.10"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
"#,
    ))?;
    let c = Crictl::new(&d)?;
    let info = c.json(&["info", "-o", "json"])?;
    let config = &info["config"];
    assert_eq!(
        config["sandboxImage"], "registry.invalid/pause:3.10",
        "{info}"
    );
    assert_eq!(config["restrictOOMScoreAdj"], true, "{info}");
    assert_eq!(config["cni"]["binDir"], "/usr/lib/cni", "{info}");
    d.finish()
}
