//! Fault injection helpers: a seeded random source for kill points and the
//! invariants checked after every crash and restart of berthd
//! (`tests/fault_injection.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use berth_api::client::Client;
use berth_api::containerd::services::containers::v1 as containers;
use berth_api::containerd::services::content::v1 as content;
use berth_api::containerd::services::images::v1 as images;
use berth_api::containerd::services::leases::v1 as leases;
use berth_api::containerd::services::snapshots::v1 as snapshots;
use berth_api::containerd::services::tasks::v1 as tasks;
use sha2::Digest;
use tokio_stream::StreamExt;

use crate::{Daemon, ok, shims_of, subscribe, testimages};

/// Bound that turns a hang into a failure (not a timing expectation).
pub const HANG: Duration = Duration::from_secs(30);

/// How long a shim without a task may take to exit before it counts as an
/// orphan: a bound that turns a shim that never exits into a failure.
pub const SHIM_EXIT_BOUND: Duration = Duration::from_secs(5);

/// Iterations per scenario: `BERTH_FAULT_ITERATIONS`, else `default`
/// (kept small so the suite fits CI's budget).
pub fn iterations(default: usize) -> usize {
    std::env::var("BERTH_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small seeded generator (splitmix64): the seed replays every kill point.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `BERTH_FAULT_SEED`, else the clock; the seed is printed.
    pub fn from_env(scenario: &str) -> Rng {
        let seed = std::env::var("BERTH_FAULT_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| (d.as_secs() << 30) ^ u64::from(d.subsec_nanos()))
            });
        eprintln!("fault scenario {scenario}: seed {seed} (replay with BERTH_FAULT_SEED={seed})");
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random fraction of `typical`: where in the operation to kill.
    pub fn point_in(&mut self, typical: Duration) -> Duration {
        let frac = (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64;
        typical.mul_f64(frac)
    }
}

/// Spawns `cmd` (output discarded) to be interrupted.
pub fn spawn_quiet(mut cmd: Command) -> Result<Child> {
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// How long a client the crash interrupted may take to give up before it
/// is killed (by PID; it is ours). Its fate is not an invariant: a `ctr`
/// killed mid-call fails at once, but one that had not connected yet keeps
/// redialling the dead socket (gRPC's blocking dial, no timeout). It must
/// end before berthd restarts, or it would run on during the checks.
pub const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// Waits for a client interrupted by a crash to give up; kills it (and
/// says so) if it has not after [`CLIENT_GRACE`].
pub fn reap(mut child: Child) -> Result<()> {
    let deadline = Instant::now() + CLIENT_GRACE;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!(
                "note: client {} still running {CLIENT_GRACE:?} after the fault; killed",
                child.id()
            );
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Debian's `ctr` command line against `d` (to spawn).
pub fn ctr_cmd(d: &Daemon, args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(crate::ctr_bin()?);
    cmd.arg("--address")
        .arg(&d.address)
        .args(args)
        .env("CONTAINERD_NAMESPACE", &d.namespace);
    Ok(cmd)
}

/// A multi-threaded tokio runtime for the checks' gRPC calls.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A connection in `d`'s namespace.
pub async fn connect(d: &Daemon) -> Result<Client> {
    Ok(Client::connect(&d.address)
        .await?
        .with_namespace(d.namespace.clone()))
}

/// The host platform as the test images name it.
fn host_platform_matches(platform: Option<&serde_json::Value>) -> bool {
    platform.is_none_or(|p| p["os"] == "linux" && p["architecture"] == testimages::host_arch())
}

/// What the state looked like when the invariants were read.
#[derive(Debug, Default)]
struct Snapshot {
    blobs: BTreeMap<String, BTreeMap<String, String>>,
    tasks: BTreeMap<String, i32>,
    containers: BTreeMap<String, String>,
    leases: BTreeMap<String, (BTreeMap<String, String>, Vec<leases::Resource>)>,
    snapshots: BTreeMap<String, snapshots::Info>,
    ingests: Vec<String>,
}

/// Reads blobs, images, snapshots, tasks, containers, leases and ingests,
/// recording the state-independent violations (blob digests, images with
/// missing content, snapshots with missing parents) in `bad`.
async fn read_state(c: &Client, bad: &mut Vec<String>) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let mut cs =
        content::content_client::ContentClient::with_interceptor(c.channel(), c.interceptor());
    let mut list = cs
        .list(content::ListContentRequest::default())
        .await?
        .into_inner();
    while let Some(page) = list.next().await {
        for info in page?.info {
            s.blobs.insert(
                info.digest.clone(),
                info.labels.clone().into_iter().collect(),
            );
        }
    }
    // Every committed blob reads back with its digest and size. One that
    // nothing holds may be collected between the listing and the read (a
    // collection the restart's deletions scheduled, as containerd's would):
    // gone is not corrupt, and whatever an image or lease needs is checked
    // below and after the explicit collection.
    let mut collected = Vec::new();
    for digest in s.blobs.keys() {
        let read = cs
            .read(content::ReadContentRequest {
                digest: digest.clone(),
                ..Default::default()
            })
            .await;
        let mut read = match read {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == tonic::Code::NotFound => {
                collected.push(digest.clone());
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {digest}")),
        };
        let mut hasher = sha2::Sha256::new();
        let mut failed = None;
        while let Some(chunk) = read.next().await {
            match chunk {
                Ok(c) => hasher.update(&c.data),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(e) = failed {
            bad.push(format!("blob {digest} cannot be read: {e}"));
        } else if digest != &format!("sha256:{got}") {
            bad.push(format!("blob {digest} holds data of digest sha256:{got}"));
        }
    }
    for digest in &collected {
        s.blobs.remove(digest);
    }

    // Every image's manifest, config and layers are in content.
    let mut is =
        images::images_client::ImagesClient::with_interceptor(c.channel(), c.interceptor());
    for image in is
        .list(images::ListImagesRequest::default())
        .await?
        .into_inner()
        .images
    {
        let Some(target) = image.target else {
            bad.push(format!("image {} has no target", image.name));
            continue;
        };
        let mut todo = vec![(target.digest, target.media_type)];
        while let Some((digest, media)) = todo.pop() {
            if !s.blobs.contains_key(&digest) {
                bad.push(format!(
                    "image {}: {media} {digest} missing from content",
                    image.name
                ));
                continue;
            }
            if !(media.contains("manifest") || media.contains("index")) {
                continue;
            }
            let mut read = cs
                .read(content::ReadContentRequest {
                    digest: digest.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = read.next().await {
                bytes.extend(chunk?.data);
            }
            let doc: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {digest} of image {}", image.name))?;
            let mut children = Vec::new();
            if let Some(ms) = doc["manifests"].as_array() {
                children.extend(
                    ms.iter()
                        .filter(|m| host_platform_matches(m.get("platform"))),
                );
            }
            if doc["config"].is_object() {
                children.push(&doc["config"]);
            }
            if let Some(ls) = doc["layers"].as_array() {
                children.extend(ls.iter());
            }
            for child in children {
                todo.push((
                    child["digest"].as_str().unwrap_or_default().to_owned(),
                    child["mediaType"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }

    // Every snapshot's parent exists.
    let mut ss = snapshots::snapshots_client::SnapshotsClient::with_interceptor(
        c.channel(),
        c.interceptor(),
    );
    let mut list = ss
        .list(snapshots::ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(page) = list.next().await {
        for info in page?.info {
            s.snapshots.insert(info.name.clone(), info);
        }
    }
    for info in s.snapshots.values() {
        if !info.parent.is_empty() && !s.snapshots.contains_key(&info.parent) {
            bad.push(format!(
                "snapshot {} has parent {} which does not exist",
                info.name, info.parent
            ));
        }
    }

    let mut ts = tasks::tasks_client::TasksClient::with_interceptor(c.channel(), c.interceptor());
    for t in ts
        .list(tasks::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks
    {
        s.tasks.insert(t.id, t.status);
    }
    let mut cc = containers::containers_client::ContainersClient::with_interceptor(
        c.channel(),
        c.interceptor(),
    );
    for ct in cc
        .list(containers::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
    {
        s.containers.insert(ct.id, ct.snapshot_key);
    }
    let mut ls =
        leases::leases_client::LeasesClient::with_interceptor(c.channel(), c.interceptor());
    for l in ls
        .list(leases::ListRequest::default())
        .await?
        .into_inner()
        .leases
    {
        let res = ls
            .list_resources(leases::ListResourcesRequest { id: l.id.clone() })
            .await?
            .into_inner()
            .resources;
        s.leases.insert(l.id, (l.labels.into_iter().collect(), res));
    }
    s.ingests = cs
        .list_statuses(content::ListStatusesRequest::default())
        .await?
        .into_inner()
        .statuses
        .into_iter()
        .map(|st| st.r#ref)
        .collect();
    Ok(s)
}

/// Now as RFC 3339 UTC seconds (`2006-01-02T15:04:05Z`), as ctr writes
/// `containerd.io/gc.expire`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The value following flag `name` in process `pid`'s arguments.
pub fn arg_of(pid: i32, name: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// The checks that hold once garbage was collected: no orphan shim, runc
/// state or mount, no ingest or snapshot without an owner, no expired lease.
fn after_gc(d: &Daemon, s: &Snapshot, phase: &str, bad: &mut Vec<String>) {
    let start = bad.len();
    for pid in shims_of(&d.address) {
        let ns = arg_of(pid, "-namespace").unwrap_or_default();
        let id = arg_of(pid, "-id").unwrap_or_default();
        // A shim told to shut down exits once its queued events are
        // forwarded (bounded by 2 s in berth's shim): one that is on its
        // way out is not an orphan; one still running after the bound is.
        if ns == d.namespace
            && !s.tasks.contains_key(&id)
            && crate::wait_pid_gone(pid, SHIM_EXIT_BOUND).is_err()
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .unwrap_or("?");
            bad.push(format!(
                "orphan shim {pid} (parent {ppid}) for {ns}/{id}: no such task ({})",
                cmdline.trim()
            ));
        }
    }
    let runc_root = d.state.join("runc").join(&d.namespace);
    if let Ok(entries) = std::fs::read_dir(&runc_root) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !s.tasks.contains_key(&id) {
                bad.push(format!("runc state for {id} but no such task"));
            }
        }
    }
    let bundles = d
        .state
        .join("io.containerd.runtime.v2.task")
        .join(&d.namespace);
    for dir in [&d.root, &d.state] {
        for m in crate::mounts_under(dir) {
            let owned = s
                .tasks
                .keys()
                .any(|id| Path::new(&m) == bundles.join(id).join("rootfs"));
            if !owned {
                bad.push(format!("mount {m} owned by no task"));
            }
        }
    }
    let leased = |kind: &str, id: &str| {
        s.leases
            .values()
            .any(|(_, res)| res.iter().any(|r| r.r#type == kind && r.id == id))
    };
    for r in &s.ingests {
        if !leased("ingests", r) {
            bad.push(format!("ingest {r} is held by no lease"));
        }
    }
    let now = now_rfc3339();
    for (id, (labels, _)) in &s.leases {
        if let Some(exp) = labels.get("containerd.io/gc.expire")
            && exp.as_str() < now.as_str()
        {
            bad.push(format!("lease {id} expired at {exp} is still there"));
        }
    }
    // Snapshot owners: containers, leases, images (their config names the
    // unpacked chain), gc.root labels; then everything below them.
    let mut owned: Vec<String> = s
        .containers
        .values()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect();
    for (_, res) in s.leases.values() {
        owned.extend(
            res.iter()
                .filter(|r| r.r#type == "snapshots/overlayfs")
                .map(|r| r.id.clone()),
        );
    }
    for labels in s.blobs.values() {
        owned.extend(
            labels
                .get("containerd.io/gc.ref.snapshot.overlayfs")
                .cloned(),
        );
    }
    owned.extend(
        s.snapshots
            .values()
            .filter(|i| i.labels.contains_key("containerd.io/gc.root"))
            .map(|i| i.name.clone()),
    );
    let mut reach = BTreeSet::new();
    while let Some(k) = owned.pop() {
        if reach.insert(k.clone())
            && let Some(info) = s.snapshots.get(&k)
            && !info.parent.is_empty()
        {
            owned.push(info.parent.clone());
        }
    }
    for name in s.snapshots.keys() {
        if !reach.contains(name) {
            bad.push(format!("snapshot {name} has no owner yet survived GC"));
        }
    }
    for v in &mut bad[start..] {
        *v = format!("{phase}: {v}");
    }
}

/// Runs a garbage collection: creates a throwaway lease and removes it
/// with `--sync`.
pub fn gc(d: &Daemon) -> Result<()> {
    let out = ok(d.ctr(&["leases", "create"])?)?;
    let id = out
        .split_whitespace()
        .next()
        .context("ctr leases create printed no id")?
        .to_owned();
    ok(d.ctr(&["leases", "rm", "--sync", &id])?)?;
    Ok(())
}

/// Checks every invariant on a freshly restarted `d`: blobs verify, images
/// and snapshots are whole, and after a GC nothing is orphaned. Then every
/// task is killed and deleted (its `/tasks/exit` must arrive), containers
/// and the leases of interrupted clients removed, and checked again.
/// Returns the violations.
pub fn check(d: &Daemon, rt: &tokio::runtime::Runtime) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    let c = rt
        .block_on(connect(d))
        .context("berthd does not serve after restart")?;
    rt.block_on(read_state(&c, &mut bad))?;
    gc(d)?;
    let s = rt.block_on(read_state(&c, &mut bad))?;
    after_gc(d, &s, "after GC", &mut bad);

    // Every task is controllable.
    for (id, status) in &s.tasks {
        let watcher = subscribe(d)?;
        let stopped = *status == berth_api::containerd::v1::types::Status::Stopped as i32;
        if !stopped {
            let kill = d.ctr(&["tasks", "kill", "-s", "SIGKILL", id])?;
            if !kill.status.success() {
                bad.push(format!(
                    "task {id}: kill failed: {}",
                    String::from_utf8_lossy(&kill.stderr).trim()
                ));
                continue;
            }
            // The init's exit (an exec's names the exec as `id`).
            let exit = format!("/tasks/exit {{\"container_id\":\"{id}\",\"id\":\"{id}\"");
            if watcher.wait_for(&[&exit], HANG).is_err() {
                bad.push(format!("task {id}: killed but no /tasks/exit arrived"));
            }
        }
        let del = d.ctr(&["tasks", "delete", id])?;
        if !del.status.success() {
            bad.push(format!(
                "task {id}: delete failed: {}",
                String::from_utf8_lossy(&del.stderr).trim()
            ));
        }
    }
    for id in s.containers.keys() {
        let out = d.ctr(&["containers", "delete", id])?;
        if !out.status.success() {
            bad.push(format!(
                "container {id}: delete failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    // Leases of clients the crash interrupted: dropping them must free
    // everything they held.
    for id in s.leases.keys() {
        ok(d.ctr(&["leases", "rm", "--sync", id])?)?;
    }
    let s = rt.block_on(read_state(&c, &mut bad))?;
    after_gc(
        d,
        &s,
        "after removing tasks, containers and leases",
        &mut bad,
    );
    if !s.tasks.is_empty() {
        bad.push(format!(
            "tasks left after kill and delete: {:?}",
            s.tasks.keys()
        ));
    }
    // The state is read three times: report each violation once.
    let mut seen = BTreeSet::new();
    bad.retain(|v| seen.insert(v.clone()));
    Ok(bad)
}

/// Per-scenario tally printed at the end and turned into a failure.
#[derive(Debug, Default)]
pub struct Tally {
    scenario: String,
    iterations: usize,
    violations: Vec<String>,
    /// `(text a violation contains, why it is a known product failure)`.
    known: Vec<(String, String)>,
    known_seen: Vec<String>,
}

impl Tally {
    /// An empty tally for `scenario`.
    pub fn new(scenario: &str) -> Tally {
        Tally {
            scenario: scenario.to_owned(),
            ..Tally::default()
        }
    }

    /// Marks violations containing `pattern` as a known product failure
    /// (`reason` says which and why it is not fixed yet): they are printed
    /// as such and do not fail the test.
    pub fn known_failure(&mut self, pattern: &str, reason: &str) {
        self.known.push((pattern.to_owned(), reason.to_owned()));
    }

    /// Records iteration `i` (what was killed where) and its violations.
    pub fn record(&mut self, what: &str, found: Vec<String>) {
        self.iterations += 1;
        for v in found {
            let line = format!("[{what}] {v}");
            match self.known.iter().find(|(p, _)| v.contains(p.as_str())) {
                Some((_, reason)) => self.known_seen.push(format!("{line} -- {reason}")),
                None => self.violations.push(line),
            }
        }
    }

    /// Prints the tally; fails listing every violation.
    pub fn finish(self, d: &Daemon) -> Result<()> {
        eprintln!(
            "fault scenario {}: {} iterations, {} violations",
            self.scenario,
            self.iterations,
            self.violations.len()
        );
        for k in &self.known_seen {
            eprintln!("KNOWN FAILURE in fault scenario {}: {k}", self.scenario);
        }
        if !self.violations.is_empty() {
            bail!(
                "fault scenario {}: {} violations in {} iterations:\n  {}\nberthd log (tail):\n{}",
                self.scenario,
                self.violations.len(),
                self.iterations,
                self.violations.join("\n  "),
                crate::tail(&d.log(), 60)
            );
        }
        Ok(())
    }
}
