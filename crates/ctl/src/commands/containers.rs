//! `berthctl containers ls|info|rm|label` (and `create`, `checkpoint`,
//! `restore`, in their own modules).

use anyhow::bail;
use berth_api::containerd::services::containers::v1 as pb;

use crate::context::{Global, clients};
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a container from an image (run's flags; start it with `tasks start`).
    Create(Box<super::run::Args>),
    /// Checkpoint a container (CRIU): its task, spec and, on request, its image and rw layer.
    Checkpoint(super::checkpoint::ContainerCheckpointArgs),
    /// Restore a container from a checkpoint image.
    Restore(super::checkpoint::RestoreArgs),
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax), OR'd.
        filters: Vec<String>,
    },
    /// Show a container's record as JSON.
    Info {
        /// Container id.
        id: String,
    },
    /// Delete containers (their tasks must be gone).
    #[command(
        visible_alias = "delete",
        visible_alias = "del",
        visible_alias = "remove"
    )]
    Rm {
        /// Container ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set labels (`k=v`; `k=` removes) on a container.
    Label {
        /// Container id.
        id: String,
        /// Labels.
        labels: Vec<String>,
    },
}

/// The JSON `info` prints: the record, with the spec decoded when it is JSON.
fn info_json(c: &pb::Container) -> serde_json::Value {
    let spec = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut labels: Vec<(&String, &String)> = c.labels.iter().collect();
    labels.sort();
    serde_json::json!({
        "ID": c.id,
        "Labels": labels.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "Image": c.image,
        "Runtime": {"Name": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default()},
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": crate::format::time(c.created_at),
        "UpdatedAt": crate::format::time(c.updated_at),
        "Spec": spec,
    })
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Create(a) => return super::run::create(global, *a).await,
        Command::Checkpoint(a) => return super::checkpoint::container_checkpoint(global, a).await,
        Command::Restore(a) => return super::checkpoint::restore(global, a).await,
        _ => {}
    }
    let client = global.connect().await?;
    let mut svc = clients::containers(&client);
    match args.command {
        Command::Create(_) | Command::Checkpoint(_) | Command::Restore(_) => {
            unreachable!("handled above")
        }
        Command::Ls { quiet, filters } => {
            let mut list = svc
                .list(pb::ListContainersRequest { filters })
                .await?
                .into_inner()
                .containers;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            if global.json() {
                // The same records `containers info` prints, spec decoded.
                let all: Vec<serde_json::Value> = list.iter().map(info_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if quiet {
                for c in list {
                    println!("{}", c.id);
                }
                return Ok(());
            }
            let mut rows = vec![vec!["CONTAINER".into(), "IMAGE".into(), "RUNTIME".into()]];
            for c in list {
                let image = if c.image.is_empty() {
                    "-".to_string()
                } else {
                    c.image
                };
                rows.push(vec![
                    c.id,
                    image,
                    c.runtime.map(|r| r.name).unwrap_or_default(),
                ]);
            }
            print!("{}", table::render(&rows, 4));
        }
        Command::Info { id } => {
            let c = svc
                .get(pb::GetContainerRequest { id })
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&info_json(&c))?);
        }
        Command::Rm { ids } => {
            let mut failed = 0;
            for id in ids {
                if let Err(e) = svc
                    .delete(pb::DeleteContainerRequest { id: id.clone() })
                    .await
                {
                    eprintln!(
                        "berthctl: failed to delete container {id:?}: {}",
                        e.message()
                    );
                    failed += 1;
                }
            }
            if failed > 0 {
                bail!("{failed} container(s) could not be deleted");
            }
        }
        Command::Label { id, labels } => {
            let given = crate::format::parse_labels(&labels);
            let paths = given.keys().map(|k| format!("labels.{k}")).collect();
            let c = svc
                .update(pb::UpdateContainerRequest {
                    container: Some(pb::Container {
                        id,
                        labels: given.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            let mut pairs: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.sort();
            println!("{}", pairs.join(","));
        }
    }
    Ok(())
}
