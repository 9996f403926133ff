//! The `docker` scenario: Docker Engine (`dockerd --containerd`, on
//! overlay2) on each daemon under test ([`DockerOn`]), optionally through
//! a gRPC timing proxy ([`GRPC_PROXY_VAR`]): `docker run --rm` latency and
//! the daemon's RSS with running Docker containers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::Daemon;
use super::report::{Better, Goal, Row, Summary, print_and_save};
use super::{in_turn, rounds, target_dir, timed};
use crate::{Result, cleanup};

/// `docker run --rm` samples per daemon and round, alternating: a run
/// takes ~0.1 s on overlay2. Five samples left the median at the mercy of
/// one slow run on this shared machine (0.72 and 0.85 in two runs a minute
/// apart); fifty in one round still spread 0.74–0.84 between runs of the
/// scenario, so the samples come from [`rounds`] dockerd pairs.
const DOCKER_RUNS: usize = 20;

/// Number of running Docker containers the `docker` scenario measures RSS with.
const DOCKER_CONTAINERS: usize = 50;

/// Environment variable naming a built `contrib/grpc-timing-proxy`: when
/// set, the `docker` scenario puts one between each dockerd and its daemon
/// and keeps its per-call log as `<target>/bench/docker-<daemon>-calls.log`.
const GRPC_PROXY_VAR: &str = "BERTH_BENCH_GRPC_PROXY";

/// A dockerd on a daemon under test, registered for cleanup while it runs.
struct DockerOn {
    /// Always there until dropped (taken first, before the proxy stops).
    dockerd: Option<berth_tests::docker::Dockerd>,
    pid: u32,
    /// The Dockerd's temporary directory (registered for cleanup).
    dir: PathBuf,
    /// The timing proxy between dockerd and the daemon, if any, and when
    /// it started (its log's time zero, give or take its start-up).
    proxy: Option<(std::process::Child, Instant)>,
    /// The daemon's name (where dockerd's debug log goes, with a proxy).
    name: &'static str,
}

impl DockerOn {
    fn start(d: &Daemon) -> Result<DockerOn> {
        let mut proxy = None;
        let mut address = d.address.clone();
        if let Some(bin) = std::env::var_os(GRPC_PROXY_VAR) {
            let listen = d.address.with_extension("proxy.sock");
            let dir = target_dir().join("bench");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let log = std::fs::File::create(dir.join(format!("docker-{}-calls.log", d.name)))
                .map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .arg(&listen)
                .arg(&d.address)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {GRPC_PROXY_VAR}: {e}"))?;
            let started = Instant::now();
            cleanup::process(child.id());
            while !listen.exists() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            proxy = Some((child, started));
            address = listen;
        }
        let dockerd = berth_tests::docker::Dockerd::builder(&address)
            .storage_driver(berth_tests::docker::StorageDriver::Overlay2)
            .start()
            .map_err(|e| format!("{e:#}"))?;
        let pid = dockerd.pid().unwrap_or_default();
        cleanup::process(pid);
        // On Ctrl-C: the overlay mounts under its data root, and the data
        // root's own bind mount, go with its directory.
        let dir = dockerd.dir().to_path_buf();
        cleanup::dir(&dir);
        dockerd.load_busybox().map_err(|e| format!("{e:#}"))?;
        Ok(DockerOn {
            dockerd: Some(dockerd),
            pid,
            dir,
            proxy,
            name: d.name,
        })
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = match &self.dockerd {
            Some(d) => d.command(args),
            None => Command::new("false"),
        };
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }
}

impl Drop for DockerOn {
    fn drop(&mut self) {
        if let (Some(d), Some(_)) = (&self.dockerd, &self.proxy) {
            let path = target_dir().join(format!("bench/docker-{}-dockerd.log", self.name));
            let _ = std::fs::write(path, d.log());
        }
        // The Dockerd stops itself (by PID) and its containers, unmounts
        // what is left under its data root and removes its directory.
        drop(self.dockerd.take());
        cleanup::forget(self.pid);
        cleanup::remove_dir(&self.dir);
        if let Some((mut p, _)) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
            cleanup::forget(p.id());
        }
    }
}

/// `docker`: Docker Engine on berthd and on containerd, the same dockerd
/// setup and image on both; the storage driver is overlay2, Docker's
/// default (the Docker tests keep vfs, which mounts nothing): one overlay
/// mount per container, set up and torn down by dockerd, no copy of the
/// image's files.
pub(super) fn scenario_docker(berth: &Daemon, containerd: &Daemon, s: &mut Summary) -> Result<()> {
    let mut latency =
        Row::new("docker run --rm busybox true", "ms", Better::Lower).goal(Goal::AtMost(0.8));
    let mut rss = Row::new(
        format!("daemon RSS, {DOCKER_CONTAINERS} docker containers"),
        "MB",
        Better::Lower,
    )
    .goal(Goal::AtMost(0.25));
    for round in 0..rounds() {
        // Fresh dockerds each round: one dockerd pair's luck (its Go
        // runtime's pacing, where its threads run) moved a whole run's ratio
        // by ±0.04; pooling rounds averages it out, as the cri scenario does.
        let dockers = [DockerOn::start(berth)?, DockerOn::start(containerd)?];
        let pairs = [(berth, &dockers[0]), (containerd, &dockers[1])];
        for (_, k) in pairs {
            timed(k.docker(&["run", "--rm", "busybox", "true"]))?;
        }
        let mut runs_log: Vec<String> = vec![String::new(), String::new()];
        for n in 0..DOCKER_RUNS {
            for i in in_turn(n, [0, 1]) {
                let (d, k) = pairs[i];
                let began = Instant::now();
                let t = timed(k.docker(&["run", "--rm", "busybox", "true"]))?;
                latency.push(d, t.as_secs_f64() * 1000.0);
                if let Some((_, zero)) = &k.proxy {
                    // On the proxy log's clock: where the command began and ended.
                    let at = |i: Instant| i.duration_since(*zero).as_secs_f64() * 1000.0;
                    runs_log[i].push_str(&format!(
                        "{:10.3} docker run --rm began\n{:10.3} docker run --rm ended\n",
                        at(began),
                        at(began + t)
                    ));
                }
            }
        }
        // The logs kept are the last round's (each round's proxy has a
        // clock of its own).
        for (i, (d, k)) in pairs.into_iter().enumerate() {
            if k.proxy.is_some() {
                let path = target_dir().join(format!("bench/docker-{}-runs.log", d.name));
                std::fs::write(&path, &runs_log[i])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        if round + 1 < rounds() {
            continue;
        }
        for (d, k) in pairs {
            for i in 0..DOCKER_CONTAINERS {
                let name = format!("m{i}");
                timed(k.docker(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"]))?;
            }
            std::thread::sleep(Duration::from_millis(500));
            rss.push(d, d.rss_kib() as f64 / 1024.0);
            let names: Vec<String> = (0..DOCKER_CONTAINERS).map(|i| format!("m{i}")).collect();
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            timed(k.docker(&args))?;
        }
    }
    print_and_save("docker", &mut [latency, rss], s)
}
