//! The command tree, one module per `ctr` command.

mod bench_api;
mod blob;
mod checkpoint;
mod containers;
mod content;
mod content_edit;
mod content_fetch;
mod events;
mod image_archive;
mod image_mount;
mod images;
pub(crate) mod leases;
mod namespaces;
mod oci;
mod plugins;
mod pprof;
pub(crate) mod run;
mod shim;
mod snapshot_diff;
mod snapshots;
mod stress;
pub(crate) mod tasks;
mod unpack;
mod version;

use clap::{Parser, Subcommand};

use crate::context::Global;

/// berthctl: command-line client for berthd (containerd's `ctr` commands).
#[derive(Debug, Parser)]
#[command(name = "berthctl", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the client and server versions.
    Version,
    /// Provides information about daemon plugins.
    #[command(visible_alias = "plugin")]
    Plugins(plugins::Args),
    /// Manage namespaces.
    #[command(visible_alias = "namespace", visible_alias = "ns")]
    Namespaces(namespaces::Args),
    /// Manage content.
    Content(content::Args),
    /// Manage leases.
    #[command(visible_alias = "lease")]
    Leases(leases::Args),
    /// Run a container from an image (or, with --rootfs, a directory).
    Run(Box<run::Args>),
    /// Manage containers.
    #[command(visible_alias = "container", visible_alias = "c")]
    Containers(containers::Args),
    /// Manage tasks.
    #[command(visible_alias = "task", visible_alias = "t")]
    Tasks(tasks::Args),
    /// Manage snapshots.
    #[command(visible_alias = "snapshot", visible_alias = "snap")]
    Snapshots(snapshots::Args),
    /// Manage images.
    #[command(visible_alias = "image", visible_alias = "i")]
    Images(images::Args),
    /// Pull an image from a registry (same as `images pull`).
    Pull(images::PullArgs),
    /// Push an image to a registry (same as `images push`).
    Push(images::PushArgs),
    /// OCI tools.
    Oci(oci::Args),
    /// berthd's CPU profile from its debug endpoint (pprof format).
    Pprof(pprof::Args),
    /// Interact with a shim directly (over its ttrpc socket).
    Shim(shim::Args),
    /// Display daemon events.
    #[command(visible_alias = "event")]
    Events(events::Args),
    /// Run containers (or execs) in a loop and report throughput, like containerd-stress.
    Stress(stress::Args),
    /// Small-call API throughput, for `cargo xtask bench api`.
    #[command(hide = true)]
    BenchApi(bench_api::Args),
}

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => version::run(&cli.global).await,
        Command::Plugins(args) => plugins::run(&cli.global, args).await,
        Command::Namespaces(args) => namespaces::run(&cli.global, args).await,
        Command::Events(args) => events::run(&cli.global, args).await,
        Command::Oci(args) => oci::run(&cli.global, args),
        Command::Images(args) => images::run(&cli.global, args).await,
        Command::Pull(args) => images::pull(&cli.global, args).await,
        Command::Push(args) => images::push(&cli.global, args).await,
        Command::Content(args) => content::run(&cli.global, args).await,
        Command::Leases(args) => leases::run(&cli.global, args).await,
        Command::Snapshots(args) => snapshots::run(&cli.global, args).await,
        Command::Run(args) => run::run(&cli.global, *args).await,
        Command::Containers(args) => containers::run(&cli.global, args).await,
        Command::Tasks(args) => tasks::run(&cli.global, args).await,
        Command::Pprof(args) => pprof::run(&cli.global, args).await,
        Command::Shim(args) => shim::run(&cli.global, args).await,
        Command::Stress(args) => stress::run(&cli.global, args).await,
        Command::BenchApi(args) => bench_api::run(&cli.global, args).await,
    }
}
