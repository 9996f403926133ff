//! A custom build of berthd with two extra plugins: a snapshotter and an
//! internal plugin.
//!
//! Third-party crates extend berthd by adding a [`Registration`] to the
//! built-in list and calling [`berth_daemon::run_with`]. A snapshotter crate
//! registers type `io.containerd.snapshotter.v1` and returns its driver (any
//! `berth_snapshots::Snapshotter`) wrapped in a [`SnapshotterPlugin`]; it is
//! then listed by `ctr plugins ls` and used with
//! `ctr snapshot --snapshotter <id> ...`, exactly like a built-in one. Here
//! the snapshotter is berth's own native driver under the id `copying`.
//!
//! Run: `cargo run -p berth-daemon --example custom_build -- /tmp/custom`

use std::sync::Arc;

use berth_daemon::plugins::{InitContext, Instance, PluginError, Registration, builtins, types};
use berth_daemon::snapshotters::SnapshotterPlugin;

fn hello(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    ctx.exports
        .insert("greeting".to_string(), "hello".to_string());
    tracing::info!(root = %ctx.root.display(), "hello plugin initialised");
    Ok(Arc::new(()))
}

fn copying_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let driver =
        berth_snapshots::native::NativeSnapshotter::new(&ctx.root).map_err(PluginError::failed)?;
    ctx.exports
        .insert("root".to_string(), ctx.root.display().to_string());
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/berth-custom".to_string());
    let mut config = berth_daemon::Config {
        root: format!("{base}/root").into(),
        state: format!("{base}/state").into(),
        ..Default::default()
    };
    config.grpc.address = format!("{base}/state/berthd.sock").into();

    let mut registrations = builtins::registrations();
    registrations.push(Registration {
        plugin_type: types::INTERNAL,
        id: "hello".into(),
        requires: &[],
        init: hello,
    });
    registrations.push(Registration {
        plugin_type: types::SNAPSHOT,
        id: "copying".into(),
        requires: &[],
        init: copying_snapshotter,
    });
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    berth_daemon::run_with(config, registrations, shutdown).await?;
    Ok(())
}
