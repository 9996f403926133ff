//! `berthctl plugins ls`.

use berth_api::containerd::services::introspection::v1::PluginsRequest;
use berth_api::containerd::services::introspection::v1::introspection_client::IntrospectionClient;

use crate::context::Global;
use crate::table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List plugins.
    #[command(visible_alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Print detailed information about each plugin.
        #[arg(short, long)]
        detailed: bool,
        /// Filters (containerd filter syntax), OR'd.
        filters: Vec<String>,
    },
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let Command::Ls {
        quiet,
        detailed,
        filters,
    } = args.command;
    let client = global.connect().await?;
    let mut svc = IntrospectionClient::with_interceptor(client.channel(), client.interceptor());
    let plugins = svc
        .plugins(PluginsRequest { filters })
        .await?
        .into_inner()
        .plugins;
    if global.json() {
        return crate::json::print_list(&plugins);
    }
    if quiet {
        for p in plugins {
            println!("{}", p.id);
        }
        return Ok(());
    }
    if detailed {
        for p in plugins {
            println!("Type:          {}", p.r#type);
            println!("ID:            {}", p.id);
            if !p.requires.is_empty() {
                println!("Requires:      {}", p.requires.join(", "));
            }
            for (k, v) in &p.exports {
                println!("Export:        {k}={v}");
            }
            if let Some(err) = &p.init_err {
                println!("Error:         {}", err.message);
            }
            println!();
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "TYPE".to_string(),
        "ID".to_string(),
        "PLATFORMS".to_string(),
        "STATUS".to_string(),
    ]];
    for p in plugins {
        let platforms: Vec<String> = p
            .platforms
            .iter()
            .map(|pl| {
                let mut s = format!("{}/{}", pl.os, pl.architecture);
                if !pl.variant.is_empty() {
                    s.push('/');
                    s.push_str(&pl.variant);
                }
                s
            })
            .collect();
        let status = match &p.init_err {
            None => "ok",
            Some(e) if e.message.contains("skip plugin") => "skip",
            Some(_) => "error",
        };
        rows.push(vec![
            p.r#type,
            p.id,
            if platforms.is_empty() {
                "-".to_string()
            } else {
                platforms.join(",")
            },
            status.to_string(),
        ]);
    }
    print!("{}", table::render(&rows, 4));
    Ok(())
}
