//! `berthctl namespaces create|ls|label|rm`.

use anyhow::{Context as _, bail};
use berth_api::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_api::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
    UpdateNamespaceRequest,
};

use crate::context::Global;
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a new namespace, with optional labels `key=value`.
    #[command(visible_alias = "c")]
    Create {
        /// Namespace name.
        name: String,
        /// Labels, `key=value`.
        labels: Vec<String>,
    },
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Set or clear labels (`key=` clears) on a namespace.
    Label {
        /// Namespace name.
        name: String,
        /// Labels, `key=value`.
        labels: Vec<String>,
    },
    /// Remove one or more namespaces (they must be empty).
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// Namespace names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    let mut svc = NamespacesClient::with_interceptor(client.channel(), client.interceptor());
    match args.command {
        Command::Create { name, labels } => {
            svc.create(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name: name.clone(),
                    labels: crate::format::parse_labels(&labels),
                }),
            })
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        }
        Command::Ls { quiet } => {
            let mut namespaces = svc
                .list(ListNamespacesRequest::default())
                .await?
                .into_inner()
                .namespaces;
            namespaces.sort_by(|a, b| a.name.cmp(&b.name));
            if global.json() {
                return crate::json::print_list(&namespaces);
            }
            if quiet {
                for ns in namespaces {
                    println!("{}", ns.name);
                }
            } else {
                let mut rows = vec![vec!["NAME".to_string(), "LABELS".to_string()]];
                rows.extend(namespaces.iter().map(|ns| {
                    vec![
                        ns.name.clone(),
                        if ns.labels.is_empty() {
                            String::new()
                        } else {
                            crate::format::labels(&ns.labels)
                        },
                    ]
                }));
                print!("{}", table::render(&rows, 1));
            }
        }
        Command::Label { name, labels } => {
            let labels = crate::format::parse_labels(&labels);
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            svc.update(UpdateNamespaceRequest {
                namespace: Some(Namespace {
                    name: name.clone(),
                    labels,
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            })
            .await
            .with_context(|| format!("labelling namespace {name}"))?;
        }
        Command::Rm { names } => {
            let mut failed = 0;
            for name in names {
                match svc
                    .delete(DeleteNamespaceRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    // As ctr: deleting what is already gone is not a failure.
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        eprintln!("berthctl: {}", e.message());
                    }
                    Err(e) => {
                        eprintln!("berthctl: unable to delete {name}: {}", e.message());
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} namespace(s) could not be deleted");
            }
        }
    }
    Ok(())
}
