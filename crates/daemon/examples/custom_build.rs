//! A custom build of berthd with one extra plugin.
//!
//! Third-party crates extend berthd by adding a [`Registration`] to the
//! built-in list and calling [`berth_daemon::run_with`]. Here the extra
//! plugin is an internal one that only logs; a snapshotter crate would
//! register type `io.containerd.snapshotter.v1` and return its driver.
//!
//! Run: `cargo run -p berth-daemon --example custom_build -- /tmp/custom`

use std::sync::Arc;

use berth_daemon::plugins::{InitContext, Instance, PluginError, Registration, builtins, types};

fn hello(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    ctx.exports
        .insert("greeting".to_string(), "hello".to_string());
    tracing::info!(root = %ctx.root.display(), "hello plugin initialised");
    Ok(Arc::new(()))
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
        id: "hello",
        requires: &[],
        init: hello,
    });
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    berth_daemon::run_with(config, registrations, shutdown).await?;
    Ok(())
}
