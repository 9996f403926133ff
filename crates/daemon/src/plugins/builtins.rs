//! berth's built-in plugins, listed explicitly (Rust has no `init()`).
//!
//! A custom build of berthd adds its own registrations to this list, e.g. a
//! snapshotter crate's driver wrapped in a `Registration` of type
//! `io.containerd.snapshotter.v1`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_api::containerd::services::content::v1::content_server::ContentServer;
use berth_api::containerd::services::diff::v1::diff_server::DiffServer;
use berth_api::containerd::services::events::ttrpc::v1::create_events;
use berth_api::containerd::services::events::v1::events_server::EventsServer;
use berth_api::containerd::services::images::v1::images_server::ImagesServer;
use berth_api::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_api::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_api::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_api::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_api::containerd::services::streaming::v1::streaming_server::StreamingServer;
use berth_api::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_api::containerd::services::transfer::v1::transfer_server::TransferServer;
use berth_api::containerd::services::version::v1::version_server::VersionServer;
use berth_content::local::LocalStore;
use berth_events::Exchange;
use berth_metadata::Db;

use super::{GrpcService, InitContext, Instance, PluginError, Registration, TtrpcService, types};
use crate::services;
use crate::snapshotters::{SnapshotterPlugin, Snapshotters};

/// Largest gRPC message accepted or sent (content chunks are 1 MiB).
/// Applies `[grpc] max_recv_message_size` / `max_send_message_size`
/// (containerd's defaults: 16 MiB each) to a generated tonic server.
macro_rules! sized {
    ($ctx:expr, $server:expr) => {
        $server
            .max_decoding_message_size($ctx.config.grpc.max_recv_message_size)
            .max_encoding_message_size($ctx.config.grpc.max_send_message_size)
    };
}

/// Every built-in registration, in no particular order.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration {
            plugin_type: types::INTERNAL,
            id: Cow::Borrowed("metrics"),
            requires: &[],
            init: metrics_registry,
        },
        Registration {
            plugin_type: types::EVENT,
            id: Cow::Borrowed("exchange"),
            requires: &[],
            init: exchange,
        },
        Registration {
            plugin_type: types::CONTENT,
            id: Cow::Borrowed("content"),
            requires: &[],
            init: content_store,
        },
        Registration {
            plugin_type: types::METADATA,
            id: Cow::Borrowed("redb"),
            requires: &[types::EVENT, types::CONTENT],
            init: metadata,
        },
        Registration {
            plugin_type: types::GC,
            id: Cow::Borrowed("scheduler"),
            requires: &[types::METADATA, types::CONTENT, types::INTERNAL],
            init: gc_scheduler,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("content"),
            requires: &[
                types::CONTENT,
                types::METADATA,
                types::EVENT,
                types::GC,
                types::INTERNAL,
            ],
            init: content_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("leases"),
            requires: &[types::METADATA, types::GC],
            init: leases_service,
        },
        Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Borrowed("overlayfs"),
            requires: &[],
            init: overlay_snapshotter,
        },
        Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Borrowed("native"),
            requires: &[],
            init: native_snapshotter,
        },
        Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Borrowed("blockfile"),
            requires: &[],
            init: blockfile_snapshotter,
        },
        Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Borrowed("erofs"),
            requires: &[],
            init: erofs_snapshotter,
        },
        Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Borrowed("btrfs"),
            requires: &[],
            init: btrfs_snapshotter,
        },
        Registration {
            plugin_type: types::SERVICE,
            id: Cow::Borrowed("snapshots-service"),
            requires: &[types::SNAPSHOT, types::METADATA, types::EVENT, types::GC],
            init: snapshots_layer,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("snapshots"),
            requires: &[types::SERVICE, types::GC],
            init: snapshots_service,
        },
        Registration {
            plugin_type: types::RUNTIME,
            id: Cow::Borrowed("task"),
            requires: &[types::EVENT],
            init: shim_manager,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("tasks"),
            requires: &[types::RUNTIME, types::METADATA],
            init: tasks_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("diff"),
            requires: &[types::CONTENT, types::METADATA, types::GC],
            init: diff_service,
        },
        Registration {
            plugin_type: types::STREAMING,
            id: Cow::Borrowed("manager"),
            requires: &[],
            init: streaming_manager,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("streaming"),
            requires: &[types::STREAMING],
            init: streaming_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("transfer"),
            requires: &[
                types::CONTENT,
                types::METADATA,
                types::SERVICE,
                types::EVENT,
                types::STREAMING,
                types::INTERNAL,
            ],
            init: transfer_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("containers"),
            requires: &[types::METADATA, types::EVENT, types::GC],
            init: containers_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("images"),
            requires: &[types::METADATA, types::EVENT, types::GC],
            init: images_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("version"),
            requires: &[],
            init: version,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("healthcheck"),
            requires: &[],
            init: healthcheck,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("namespaces"),
            requires: &[types::METADATA, types::EVENT],
            init: namespaces,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("events"),
            requires: &[types::EVENT],
            init: events,
        },
        Registration {
            plugin_type: types::TTRPC,
            id: Cow::Borrowed("events"),
            requires: &[types::EVENT],
            init: ttrpc_events,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed(berth_cri::PLUGIN_ID),
            requires: &[
                types::CONTENT,
                types::METADATA,
                types::SERVICE,
                types::EVENT,
                types::STREAMING,
                types::RUNTIME,
                types::INTERNAL,
            ],
            init: cri_plugin,
        },
        Registration {
            plugin_type: types::INTERNAL,
            id: Cow::Borrowed("restart"),
            // After everything (it is internal, like the metrics plugin the
            // services require, so it cannot name their types).
            requires: &["*"],
            init: restart_monitor,
        },
        Registration {
            plugin_type: types::GRPC,
            id: Cow::Borrowed("introspection"),
            requires: &["*"],
            init: introspection,
        },
    ]
}

/// One snapshotter registration per `[proxy_plugins.NAME]` of type `snapshot`.
pub(crate) fn proxy_registrations(config: &crate::Config) -> Vec<Registration> {
    config
        .proxy_plugins
        .iter()
        .filter(|(_, p)| p.kind == "snapshot")
        .map(|(name, _)| Registration {
            plugin_type: types::SNAPSHOT,
            id: Cow::Owned(name.clone()),
            requires: &[],
            init: proxy_snapshotter,
        })
        .collect()
}

/// The snapshotter root: `root_path` from the plugin's section, else its own directory.
fn snapshotter_root(ctx: &mut InitContext<'_>) -> std::path::PathBuf {
    let root = ctx
        .section
        .and_then(|s| s.get("root_path"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map_or_else(|| ctx.root.clone(), std::path::PathBuf::from);
    ctx.exports
        .insert("root".to_string(), root.display().to_string());
    root
}

fn overlay_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let root = snapshotter_root(ctx);
    let driver =
        berth_snapshots::overlay::OverlaySnapshotter::new(&root).map_err(PluginError::failed)?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

fn native_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let root = snapshotter_root(ctx);
    let driver =
        berth_snapshots::native::NativeSnapshotter::new(&root).map_err(PluginError::failed)?;
    // Loaded by default but rarely picked: its open store's allocator
    // state (~0.5 MB) is paid only once it is used.
    driver.close_until_used().map_err(PluginError::failed)?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

/// Skipped, as containerd's, where the root is not on Btrfs.
fn btrfs_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let root = snapshotter_root(ctx);
    let driver = berth_snapshots::btrfs::BtrfsSnapshotter::new(&root).map_err(|e| {
        if e.is_failed_precondition() {
            PluginError::Skipped(e.to_string())
        } else {
            PluginError::failed(e)
        }
    })?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

/// containerd 2.x's keys: `scratch_file`, `fs_type`, `mount_options`,
/// `recreate_scratch`; skipped, as containerd's, without a scratch file.
fn blockfile_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    use berth_snapshots::blockfile::{BlockfileConfig, BlockfileSnapshotter};
    let root = snapshotter_root(ctx);
    let section = ctx.section;
    let text = |key: &str| -> Result<Option<String>, PluginError> {
        match section.and_then(|s| s.get(key)) {
            None => Ok(None),
            Some(toml::Value::String(v)) => Ok(Some(v.clone()).filter(|v| !v.is_empty())),
            Some(other) => Err(PluginError::failed(format!(
                "blockfile: {key} must be a string, not {other}"
            ))),
        }
    };
    let mount_options = match section.and_then(|s| s.get("mount_options")) {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    PluginError::failed(format!(
                        "blockfile: mount_options must be strings, not {v}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(PluginError::failed(format!(
                "blockfile: mount_options must be a list of strings, not {other}"
            )));
        }
    };
    let recreate_scratch = match section.and_then(|s| s.get("recreate_scratch")) {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(PluginError::failed(format!(
                "blockfile: recreate_scratch must be true or false, not {other}"
            )));
        }
    };
    let config = BlockfileConfig {
        scratch_file: text("scratch_file")?.map(std::path::PathBuf::from),
        fs_type: text("fs_type")?,
        mount_options,
        recreate_scratch,
    };
    let driver = BlockfileSnapshotter::new(&root, config).map_err(|e| {
        if e.is_failed_precondition() {
            PluginError::Skipped(e.to_string())
        } else {
            PluginError::failed(e)
        }
    })?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

/// containerd 2.1's `erofs` (root_path only); skipped without EROFS.
fn erofs_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let root = snapshotter_root(ctx);
    let driver = berth_snapshots::erofs::ErofsSnapshotter::new(&root).map_err(|e| {
        if e.is_failed_precondition() {
            PluginError::Skipped(e.to_string())
        } else {
            PluginError::failed(e)
        }
    })?;
    // As the native snapshotter: the store is opened again once used.
    driver.close_until_used().map_err(PluginError::failed)?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

fn proxy_snapshotter(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let proxy = ctx
        .config
        .proxy_plugins
        .get(&ctx.id)
        .ok_or_else(|| PluginError::failed(format!("no [proxy_plugins.{}] section", ctx.id)))?;
    let address = std::path::PathBuf::from(&proxy.address);
    ctx.exports
        .insert("address".to_string(), proxy.address.clone());
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| PluginError::failed(format!("no async runtime for the proxy client: {e}")))?;
    let driver = berth_snapshots::proxy::RemoteSnapshotter::connect_lazy(&ctx.id, &address, handle);
    Ok(Arc::new(SnapshotterPlugin(Arc::new(driver))))
}

fn snapshots_layer(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    let gc = ctx.get::<crate::gc::Collector>(types::GC)?;
    let drivers: BTreeMap<String, Arc<dyn berth_snapshots::Snapshotter>> = ctx
        .all()
        .iter()
        .filter(|p| p.plugin_type == types::SNAPSHOT)
        .filter_map(|p| {
            let instance = p.instance.as_ref().ok()?;
            let plugin = instance.clone().downcast::<SnapshotterPlugin>().ok()?;
            Some((p.id.clone(), plugin.0.clone()))
        })
        .collect();
    let layer = Arc::new(Snapshotters::new(drivers, (*db).clone(), exchange));
    gc.add_sweeper(layer.clone());
    // Finish what a crash interrupted, then drop what no record refers to.
    // Recovery before serving: until it ran, an interrupted commit's key
    // would be listed Active and a retried commit refused.
    let startup = layer.clone();
    ctx.before_serving(async move {
        startup.recover().await;
        // Removing orphans takes each driver's exclusive lock, so calls
        // may run meanwhile.
        tokio::spawn(async move { startup.reconcile_all().await });
    });
    Ok(layer)
}

fn shim_manager(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let exe = std::env::current_exe()
        .map_err(|e| PluginError::failed(format!("cannot find berthd's own path: {e}")))?;
    let bin_dir = exe.parent().map_or_else(
        || std::path::PathBuf::from("/usr/local/bin"),
        std::path::Path::to_path_buf,
    );
    // `[plugins."io.containerd.runtime.v2.task".shims]`: runtime name = binary.
    let shims = ctx
        .section
        .and_then(|s| s.get("shims"))
        .and_then(|v| v.as_table())
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), std::path::PathBuf::from(p))))
                .collect()
        })
        .unwrap_or_default();
    let config = berth_runtime::manager::ManagerConfig {
        state: ctx.state.clone(),
        grpc_address: ctx.config.grpc.address.clone(),
        ttrpc_address: crate::socket::ttrpc_address(&ctx.config.grpc.address),
        publish_binary: exe,
        bin_dir,
        shims,
    };
    let manager =
        Arc::new(berth_runtime::manager::ShimManager::new(config).map_err(PluginError::failed)?);
    let reconnect = manager.clone();
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    // Reconnect before serving: a client that lists or kills tasks right
    // after a restart (Docker's live-restore, kubelet) must find them.
    let died = manager.take_dead_shims();
    let exchange_later = exchange.clone();
    ctx.before_serving(async move {
        // A shim that dies while berthd runs took its task along: say so,
        // as containerd's cleanupAfterDeadShim does.
        if let Some(mut died) = died {
            tokio::spawn(async move {
                while let Some((ns, id)) = died.recv().await {
                    publish_dead_task(&exchange_later, &ns, &id);
                }
            });
        }
        let (_, dead) = reconnect.reconnect_all().await;
        // A task whose shim died with it exited unseen: say so, as containerd does.
        for (ns, id) in dead {
            publish_dead_task(&exchange, &ns, &id);
        }
    });
    Ok(manager)
}

/// Publishes `/tasks/exit` and `/tasks/delete` for task `id` whose shim
/// died with it (exit status 255: nobody saw the real one).
fn publish_dead_task(exchange: &Exchange, ns: &str, id: &str) {
    let now = std::time::SystemTime::now();
    {
        use berth_api::containerd::events::{TaskDelete, TaskExit};
        let exit = TaskExit {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: 0,
            exit_status: 255,
            exited_at: Some(now.into()),
        };
        let delete = TaskDelete {
            container_id: id.to_string(),
            pid: 0,
            exit_status: 255,
            exited_at: Some(now.into()),
            id: String::new(),
        };
        let _ = exchange.publish(ns, "/tasks/exit", crate::wire::pack(&exit));
        let _ = exchange.publish(ns, "/tasks/delete", crate::wire::pack(&delete));
    }
}

fn tasks_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let manager = ctx.get::<berth_runtime::manager::ShimManager>(types::RUNTIME)?;
    let runc_root = ctx.config.state.join("runc");
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        TasksServer::new(services::tasks::TasksService::new(
            (*db).clone(),
            manager,
            runc_root
        ),)
    ))))
}

/// containerd's restart monitor (`[plugins."io.containerd.internal.v1.restart"]
/// interval = "10s"`).
fn restart_monitor(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let interval = match ctx.section.and_then(|s| s.get("interval")) {
        None => crate::restart::DEFAULT_INTERVAL,
        Some(v) => v
            .as_str()
            .and_then(crate::restart::parse_go_duration)
            .ok_or_else(|| {
                PluginError::failed(format!(
                    "interval {v}: not a duration (write it as containerd does, e.g. \"10s\" or \"500ms\")"
                ))
            })?,
    };
    let db = ctx.get::<Db>(types::METADATA)?;
    let manager = ctx.get::<berth_runtime::manager::ShimManager>(types::RUNTIME)?;
    let snapshotters = ctx.get::<Snapshotters>(types::SERVICE)?;
    let tasks =
        services::tasks::TasksService::new((*db).clone(), manager, ctx.config.state.join("runc"));
    let monitor = crate::restart::Monitor::new((*db).clone(), tasks, snapshotters);
    tokio::spawn(monitor.clone().run(interval));
    Ok(Arc::new(monitor))
}

fn diff_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let store = ctx.get::<LocalStore>(types::CONTENT)?;
    let db = ctx.get::<Db>(types::METADATA)?;
    let tmp = services::diff::tmp_mounts(&ctx.config.state);
    crate::private::create_private_dir(&tmp);
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        DiffServer::new(
            services::diff::DiffService::new(store.clone(), (*db).clone(), tmp).with_early_apply(
                services::early::EarlyApply::shared(
                    services::early::staging_dir(&ctx.config.root),
                    store,
                )
            )
        )
    ))))
}

fn streaming_manager(_ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    Ok(Arc::new(crate::transfer::Streams::default()))
}

fn streaming_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let streams = ctx.get::<crate::transfer::Streams>(types::STREAMING)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        StreamingServer::new(crate::transfer::StreamingService::new((*streams).clone()),)
    ))))
}

fn transfer_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let service = build_transfer(ctx)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        TransferServer::new(service)
    ))))
}

/// The Transfer service's engine, as the Transfer service and the CRI
/// plugin both use it.
fn build_transfer(
    ctx: &mut InitContext<'_>,
) -> Result<crate::transfer::TransferService, PluginError> {
    let store = ctx.get::<LocalStore>(types::CONTENT)?;
    let db = ctx.get::<Db>(types::METADATA)?;
    let layer = ctx.get::<Snapshotters>(types::SERVICE)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    let streams = ctx.get::<crate::transfer::Streams>(types::STREAMING)?;
    let mut service = crate::transfer::TransferService::new(
        store as crate::transfer::Backend,
        (*db).clone(),
        layer,
        exchange,
        &ctx.config.state,
        (*streams).clone(),
    );
    if let Ok(m) = ctx.get::<crate::metrics::Metrics>(types::INTERNAL) {
        service = service.with_pull_bytes(m.pull_bytes.clone());
    }
    // Where containerd 2 keeps the transfer service's settings.
    let local = ctx.config.plugin_section("io.containerd.transfer.v1.local");
    if let Some(v) = local.and_then(|s| s.get("stall_timeout")) {
        let limit = crate::config::parse_duration(v).ok_or_else(|| {
            PluginError::failed(format!(
                "stall_timeout = {v}: expected a duration such as \"30s\", \"5m\" or a number of seconds"
            ))
        })?;
        service = service.with_stall_timeout(limit);
    }
    Ok(service)
}

/// containerd's CRI plugin (`[plugins."io.containerd.grpc.v1.cri"]`):
/// RuntimeService and ImageService on the daemon's socket.
fn cri_plugin(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    // Version 3 files split the CRI settings as containerd 2 does.
    let config = if ctx.config.version >= 3 {
        berth_cri::CriConfig::from_v3_sections(
            ctx.section,
            ctx.config.plugin_section("io.containerd.cri.v1.runtime"),
            ctx.config.plugin_section("io.containerd.cri.v1.images"),
        )
    } else {
        berth_cri::CriConfig::from_section(ctx.section)
    }
    .map_err(PluginError::failed)?;
    let transfer = build_transfer(ctx)?;
    let puller = Arc::new(crate::cri::DaemonPuller {
        puller: transfer.puller(),
        pull_bytes: transfer.pull_bytes(),
    });
    let image_fs = ctx
        .all()
        .iter()
        .find(|p| p.plugin_type == types::SNAPSHOT && p.id == config.containerd.snapshotter)
        .and_then(|p| p.exports.get("root"))
        .map_or_else(|| ctx.root.clone(), std::path::PathBuf::from);
    let paths = berth_cri::CriPaths {
        root: ctx.root.clone(),
        state: ctx.state.clone(),
        socket: ctx.config.grpc.address.clone(),
        image_fs,
    };
    ctx.exports
        .insert("sandbox_image".to_string(), config.sandbox_image.clone());
    let cri = berth_cri::Cri::new(config, paths, crate::build_info::VERSION, puller)
        .map_err(PluginError::failed)?;
    // containerd starts the streaming server (exec, attach, port-forward)
    // with the plugin.
    let stream_addr = cri.start_streaming().map_err(PluginError::failed)?;
    ctx.exports
        .insert("stream_server".to_string(), stream_addr.to_string());
    Ok(Arc::new(
        GrpcService::new(sized!(ctx, cri.runtime_server())).with(sized!(ctx, cri.image_server())),
    ))
}

fn containers_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        ContainersServer::new(services::containers::ContainersService::new(
            (*db).clone(),
            exchange
        ),)
    ))))
}

fn images_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    let gc = ctx.get::<crate::gc::Collector>(types::GC)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        ImagesServer::new(services::images::ImagesService::new(
            (*db).clone(),
            exchange,
            (*gc).clone()
        ),)
    ))))
}

fn snapshots_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let layer = ctx.get::<Snapshotters>(types::SERVICE)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        SnapshotsServer::new(services::snapshots::SnapshotsService::new(layer),)
    ))))
}

/// The daemon's metrics registry, which services record into and the
/// `[metrics]` endpoint encodes.
fn metrics_registry(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let histogram = ctx.config.metrics.grpc_histogram;
    ctx.exports
        .insert("grpc_histogram".to_string(), histogram.to_string());
    Ok(Arc::new(crate::metrics::Metrics::new(histogram)))
}

/// The event exchange. berth's own setting (containerd has none):
/// `subscriber_budget`, the bytes of events queued for one subscriber before
/// its subscription ends with an error (see crates/events/README.md).
fn exchange(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let section = ctx.config.plugin_section("io.containerd.event.v1.exchange");
    let Some(v) = section.and_then(|s| s.get("subscriber_budget")) else {
        return Ok(Arc::new(Exchange::new()));
    };
    let budget = v
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            PluginError::failed(format!(
                "subscriber_budget = {v}: expected a positive number of bytes, e.g. 4194304"
            ))
        })?;
    ctx.exports
        .insert("subscriber_budget".to_string(), budget.to_string());
    Ok(Arc::new(Exchange::with_budget(budget)))
}

fn content_store(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let store = LocalStore::open(&ctx.root).map_err(PluginError::failed)?;
    ctx.exports
        .insert("root".to_string(), ctx.root.display().to_string());
    Ok(Arc::new(store))
}

fn gc_scheduler(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let store = ctx.get::<LocalStore>(types::CONTENT)?;
    let collector = crate::gc::Collector::new((*db).clone(), store);
    if let Ok(m) = ctx.get::<crate::metrics::Metrics>(types::INTERNAL) {
        collector.set_metrics(m);
    }
    let config = crate::gc::scheduler::SchedulerConfig::from_section(ctx.section)
        .map_err(PluginError::failed)?;
    ctx.exports.extend([
        (
            "PauseThreshold".to_string(),
            config.pause_threshold.to_string(),
        ),
        (
            "DeletionThreshold".to_string(),
            config.deletion_threshold.to_string(),
        ),
        (
            "MutationThreshold".to_string(),
            config.mutation_threshold.to_string(),
        ),
        (
            "ScheduleDelay".to_string(),
            go_duration_string(config.schedule_delay),
        ),
    ]);
    collector.start(config);
    Ok(Arc::new(collector))
}

/// A duration as Go's `time.Duration.String` writes it ("0s", "100ms",
/// "1.5s", "1m30s"), for the exports containerd shows.
fn go_duration_string(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let trim = |v: f64| {
        let s = format!("{v:.9}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos as f64 / 1e6));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = trim((secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn content_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let store = ctx.get::<LocalStore>(types::CONTENT)?;
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    // Early apply reads the local store's files directly (see services::early).
    let early = services::early::EarlyApply::shared(
        services::early::staging_dir(&ctx.config.root),
        store.clone(),
    );
    let mut service = services::content::ContentService::new(store, (*db).clone(), exchange)
        .with_early_apply(early);
    if let Ok(m) = ctx.get::<crate::metrics::Metrics>(types::INTERNAL) {
        service = service.with_pull_bytes(m.pull_bytes.clone());
    }
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        ContentServer::new(service)
    ))))
}

fn leases_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let gc = ctx.get::<crate::gc::Collector>(types::GC)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        LeasesServer::new(services::leases::LeasesService::new(
            (*db).clone(),
            (*gc).clone()
        ),)
    ))))
}

fn metadata(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let path = ctx.root.join("meta.redb");
    let db = Db::open(&path).map_err(PluginError::failed)?;
    ctx.exports
        .insert("DB".to_string(), path.display().to_string());
    Ok(Arc::new(db))
}

fn version(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        VersionServer::new(services::version::VersionService,)
    ))))
}

fn healthcheck(_: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    // The reporter starts with the overall service ("") SERVING.
    let (_reporter, service) = tonic_health::server::health_reporter();
    Ok(Arc::new(GrpcService::new(service)))
}

fn namespaces(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        NamespacesServer::new(services::namespaces::NamespacesService::new(
            (*db).clone(),
            exchange
        ),)
    ))))
}

fn events(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        EventsServer::new(services::events::EventsService::new(exchange),)
    ))))
}

fn ttrpc_events(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    let svc = services::events::TtrpcEventsService::new(exchange);
    Ok(Arc::new(TtrpcService::new(create_events(Arc::new(svc)))))
}

fn introspection(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let mut plugins: Vec<_> = ctx
        .all()
        .iter()
        .map(services::introspection::wire_plugin)
        .collect();
    // Introspection lists itself too, as containerd does.
    plugins.push(berth_api::containerd::services::introspection::v1::Plugin {
        r#type: types::GRPC.to_string(),
        id: "introspection".to_string(),
        requires: vec!["*".to_string()],
        ..Default::default()
    });
    // The runtime plugin answers PluginInfo with options (RuntimeInfo).
    let shims = ctx
        .get::<berth_runtime::manager::ShimManager>(types::RUNTIME)
        .ok();
    let svc = services::introspection::IntrospectionService::new(plugins, &ctx.root)
        .map_err(|e| {
            PluginError::failed(format!(
                "cannot keep the server uuid in {}: {e}",
                ctx.root.display()
            ))
        })?
        .with_runtime(shims);
    Ok(Arc::new(GrpcService::new(sized!(
        ctx,
        IntrospectionServer::new(svc)
    ))))
}
