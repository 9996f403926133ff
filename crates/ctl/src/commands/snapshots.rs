//! `berthctl snapshots prepare|view|commit|ls|tree|mounts|info|usage|rm|label`
//! (`diff` and `unpack` in their own module).

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;
use berth_api::containerd::services::snapshots::v1 as pb;
use berth_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::containerd::types::Mount;

use crate::context::Global;
use crate::{format, table};

/// Label that keeps a snapshot from garbage collection; ctr sets it too.
const GC_ROOT: &str = "containerd.io/gc.root";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only keys.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show disk usage of snapshots (all, or the keys given).
    Usage {
        /// Print sizes in bytes.
        #[arg(short = 'b')]
        bytes: bool,
        /// Snapshot keys.
        keys: Vec<String>,
    },
    /// Remove snapshots.
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Snapshot keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Prepare an active snapshot on a committed one.
    Prepare(CreateArgs),
    /// Print the diff of two snapshots (default: the first's parent) as a layer.
    Diff(super::snapshot_diff::DiffArgs),
    /// Unpack the layers of an image (given by its target digest) into snapshots.
    Unpack(super::snapshot_diff::UnpackArgs),
    /// Create a read-only view of a committed snapshot.
    View(CreateArgs),
    /// Print mount commands for a snapshot.
    #[command(visible_alias = "m", visible_alias = "mount")]
    Mounts {
        /// Where the mount should go.
        target: String,
        /// Snapshot key.
        key: String,
    },
    /// Commit an active snapshot under a name.
    Commit {
        /// Name of the committed snapshot.
        name: String,
        /// Key of the active snapshot.
        key: String,
    },
    /// Show snapshots as a tree of parents and children.
    Tree,
    /// Show a snapshot's information as JSON.
    Info {
        /// Snapshot key.
        key: String,
    },
    /// Set labels (`k=v`; `k=` removes) on a snapshot.
    Label {
        /// Snapshot key.
        key: String,
        /// Labels.
        labels: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Print the mount command for this target.
    #[arg(short = 't', long)]
    target: Option<String>,
    /// Print the mounts as JSON.
    #[arg(long)]
    mounts: bool,
    /// Key of the new snapshot.
    key: String,
    /// Committed parent.
    parent: Option<String>,
}

fn root_label() -> HashMap<String, String> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    HashMap::from([(GC_ROOT.to_string(), now)])
}

fn kind_name(kind: i32) -> &'static str {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::View) => "View",
        Ok(pb::Kind::Active) => "Active",
        Ok(pb::Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

fn print_mounts(target: &str, mounts: &[Mount]) {
    for m in mounts {
        println!(
            "mount -t {} {} {} -o {}",
            m.r#type,
            m.source,
            target,
            m.options.join(",")
        );
    }
}

/// A mount as ctr prints it in JSON (Go field names).
#[derive(serde::Serialize)]
struct MountJson<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "Source")]
    source: &'a str,
    #[serde(rename = "Target")]
    target: &'a str,
    #[serde(rename = "Options")]
    options: &'a [String],
}

/// A snapshot's info as ctr prints it in JSON (Go field names and order).
#[derive(serde::Serialize)]
struct InfoJson<'a> {
    #[serde(rename = "Kind")]
    kind: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Parent", skip_serializing_if = "str::is_empty")]
    parent: &'a str,
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a String, &'a String>,
    #[serde(rename = "Created")]
    created: String,
    #[serde(rename = "Updated")]
    updated: String,
}

fn mounts_json(mounts: &[Mount]) -> String {
    let items: Vec<MountJson<'_>> = mounts
        .iter()
        .map(|m| MountJson {
            kind: &m.r#type,
            source: &m.source,
            target: &m.target,
            options: &m.options,
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_default()
}

fn info_json(i: &pb::Info) -> String {
    serde_json::to_string_pretty(&InfoJson {
        kind: kind_name(i.kind),
        name: &i.name,
        parent: &i.parent,
        labels: i.labels.iter().collect(),
        created: format::time(i.created_at),
        updated: format::time(i.updated_at),
    })
    .unwrap_or_default()
}

async fn list_all(
    svc: &mut SnapshotsClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor,
        >,
    >,
    snapshotter: &str,
) -> anyhow::Result<Vec<pb::Info>> {
    let mut stream = svc
        .list(pb::ListSnapshotsRequest {
            snapshotter: snapshotter.to_string(),
            filters: Vec::new(),
        })
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(batch) = stream.message().await? {
        all.extend(batch.info);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

fn print_tree(infos: &[pb::Info]) {
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let names: std::collections::HashSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    let mut roots = Vec::new();
    for i in infos {
        if i.parent.is_empty() {
            roots.push(i.name.as_str());
        } else {
            children.entry(i.parent.as_str()).or_default().push(&i.name);
            if !names.contains(i.parent.as_str()) && !roots.contains(&i.parent.as_str()) {
                roots.push(i.parent.as_str());
            }
        }
    }
    fn node(name: &str, children: &BTreeMap<&str, Vec<&str>>, level: usize) {
        let mut prefix = "  ".repeat(level);
        if level > 0 {
            prefix.push_str("\\_");
        }
        println!("{prefix} {name}");
        for c in children.get(name).into_iter().flatten() {
            node(c, children, level + 1);
        }
    }
    for r in roots {
        node(r, &children, 0);
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Diff(a) => return super::snapshot_diff::diff(global, &args.snapshotter, a).await,
        Command::Unpack(a) => {
            return super::snapshot_diff::unpack(global, &args.snapshotter, a).await;
        }
        command => run_other(global, args.snapshotter, command).await,
    }
}

async fn run_other(global: &Global, snapshotter: String, command: Command) -> anyhow::Result<()> {
    let args = Args {
        snapshotter,
        command,
    };
    let client = global.connect().await?;
    let mut svc = SnapshotsClient::with_interceptor(client.channel(), client.interceptor());
    let sn = args.snapshotter;
    match args.command {
        Command::Diff(_) | Command::Unpack(_) => unreachable!("handled in run"),
        Command::Ls { quiet } => {
            let infos = list_all(&mut svc, &sn).await?;
            if global.json() {
                return crate::json::print_list(&infos);
            }
            if quiet {
                for i in infos {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            let mut rows = vec![vec!["KEY".into(), "PARENT".into(), "KIND".into()]];
            for i in infos {
                rows.push(vec![
                    i.name.clone(),
                    i.parent.clone(),
                    kind_name(i.kind).into(),
                ]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Usage { bytes, keys } => {
            let keys = if keys.is_empty() {
                list_all(&mut svc, &sn)
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys
            };
            let mut rows = vec![vec!["KEY".into(), "SIZE".into(), "INODES".into()]];
            for key in keys {
                let u = svc
                    .usage(pb::UsageRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    })
                    .await?
                    .into_inner();
                let size = if bytes {
                    u.size.to_string()
                } else {
                    format::size(u.size)
                };
                rows.push(vec![key, size, u.inodes.to_string()]);
            }
            print!("{}", table::render(&rows, 1));
        }
        Command::Rm { keys } => {
            let mut failed = 0;
            for key in keys {
                let r = svc
                    .remove(pb::RemoveSnapshotRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    })
                    .await;
                if let Err(e) = r {
                    eprintln!("berthctl: failed to remove {key:?}: {}", e.message());
                    failed += 1;
                }
            }
            if failed > 0 {
                bail!("{failed} snapshot(s) could not be removed");
            }
        }
        Command::Prepare(a) => {
            let mounts = svc
                .prepare(pb::PrepareSnapshotRequest {
                    snapshotter: sn,
                    key: a.key,
                    parent: a.parent.unwrap_or_default(),
                    labels: root_label(),
                })
                .await?
                .into_inner()
                .mounts;
            print_created(a.target.as_deref(), a.mounts, &mounts);
        }
        Command::View(a) => {
            let mounts = svc
                .view(pb::ViewSnapshotRequest {
                    snapshotter: sn,
                    key: a.key,
                    parent: a.parent.unwrap_or_default(),
                    labels: root_label(),
                })
                .await?
                .into_inner()
                .mounts;
            print_created(a.target.as_deref(), a.mounts, &mounts);
        }
        Command::Mounts { target, key } => {
            let mounts = svc
                .mounts(pb::MountsRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .mounts;
            print_mounts(&target, &mounts);
        }
        Command::Commit { name, key } => {
            svc.commit(pb::CommitSnapshotRequest {
                snapshotter: sn,
                name,
                key,
                labels: root_label(),
                parent: String::new(),
            })
            .await?;
        }
        Command::Tree => print_tree(&list_all(&mut svc, &sn).await?),
        Command::Info { key } => {
            let info = svc
                .stat(pb::StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", info_json(&info));
        }
        Command::Label { key, labels } => {
            let given = format::parse_labels(&labels);
            let info = if given.is_empty() {
                svc.stat(pb::StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .info
            } else {
                let paths = given.keys().map(|k| format!("labels.{k}")).collect();
                let set = given.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                svc.update(pb::UpdateSnapshotRequest {
                    snapshotter: sn,
                    info: Some(pb::Info {
                        name: key,
                        labels: set,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .info
            };
            let labels = info.map(|i| i.labels).unwrap_or_default();
            let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.sort();
            println!("{}", pairs.join(","));
        }
    }
    Ok(())
}

fn print_created(target: Option<&str>, as_json: bool, mounts: &[Mount]) {
    if let Some(t) = target {
        print_mounts(t, mounts);
    }
    if as_json {
        println!("{}", mounts_json(mounts));
    }
}
