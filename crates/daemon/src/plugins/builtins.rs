//! berth's built-in plugins, listed explicitly (Rust has no `init()`).
//!
//! A custom build of berthd adds its own registrations to this list, e.g. a
//! snapshotter crate's driver wrapped in a `Registration` of type
//! `io.containerd.snapshotter.v1`.

use std::sync::Arc;

use berth_api::containerd::services::content::v1::content_server::ContentServer;
use berth_api::containerd::services::events::ttrpc::v1::create_events;
use berth_api::containerd::services::events::v1::events_server::EventsServer;
use berth_api::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_api::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_api::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_api::containerd::services::version::v1::version_server::VersionServer;
use berth_content::local::LocalStore;
use berth_events::Exchange;
use berth_metadata::Db;

use super::{GrpcService, InitContext, Instance, PluginError, Registration, TtrpcService, types};
use crate::services;

/// Largest gRPC message accepted or sent (content chunks are 1 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// Every built-in registration, in no particular order.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration {
            plugin_type: types::EVENT,
            id: "exchange",
            requires: &[],
            init: exchange,
        },
        Registration {
            plugin_type: types::CONTENT,
            id: "content",
            requires: &[],
            init: content_store,
        },
        Registration {
            plugin_type: types::METADATA,
            id: "redb",
            requires: &[types::EVENT, types::CONTENT],
            init: metadata,
        },
        Registration {
            plugin_type: types::GC,
            id: "scheduler",
            requires: &[types::METADATA, types::CONTENT],
            init: gc_scheduler,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "content",
            requires: &[types::CONTENT, types::METADATA, types::EVENT, types::GC],
            init: content_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "leases",
            requires: &[types::METADATA, types::GC],
            init: leases_service,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "version",
            requires: &[],
            init: version,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "healthcheck",
            requires: &[],
            init: healthcheck,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "namespaces",
            requires: &[types::METADATA, types::EVENT],
            init: namespaces,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "events",
            requires: &[types::EVENT],
            init: events,
        },
        Registration {
            plugin_type: types::TTRPC,
            id: "events",
            requires: &[types::EVENT],
            init: ttrpc_events,
        },
        Registration {
            plugin_type: types::GRPC,
            id: "introspection",
            requires: &["*"],
            init: introspection,
        },
    ]
}

fn exchange(_: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    Ok(Arc::new(Exchange::new()))
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
    let collector = services::gc::Collector::new((*db).clone(), store);
    collector.start();
    Ok(Arc::new(collector))
}

fn content_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let store = ctx.get::<LocalStore>(types::CONTENT)?;
    let db = ctx.get::<Db>(types::METADATA)?;
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    let gc = ctx.get::<services::gc::Collector>(types::GC)?;
    Ok(Arc::new(GrpcService::new(
        ContentServer::new(services::content::ContentService::new(
            store,
            (*db).clone(),
            exchange,
            (*gc).clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
    )))
}

fn leases_service(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let db = ctx.get::<Db>(types::METADATA)?;
    let gc = ctx.get::<services::gc::Collector>(types::GC)?;
    Ok(Arc::new(GrpcService::new(LeasesServer::new(
        services::leases::LeasesService::new((*db).clone(), (*gc).clone()),
    ))))
}

fn metadata(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let path = ctx.root.join("meta.redb");
    let db = Db::open(&path).map_err(PluginError::failed)?;
    ctx.exports
        .insert("DB".to_string(), path.display().to_string());
    Ok(Arc::new(db))
}

fn version(_: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    Ok(Arc::new(GrpcService::new(VersionServer::new(
        services::version::VersionService,
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
    Ok(Arc::new(GrpcService::new(NamespacesServer::new(
        services::namespaces::NamespacesService::new((*db).clone(), exchange),
    ))))
}

fn events(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
    let exchange = ctx.get::<Exchange>(types::EVENT)?;
    Ok(Arc::new(GrpcService::new(EventsServer::new(
        services::events::EventsService::new(exchange),
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
    let svc =
        services::introspection::IntrospectionService::new(plugins, &ctx.root).map_err(|e| {
            PluginError::failed(format!(
                "cannot keep the server uuid in {}: {e}",
                ctx.root.display()
            ))
        })?;
    Ok(Arc::new(GrpcService::new(IntrospectionServer::new(svc))))
}
