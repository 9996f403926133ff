//! Plugins: the registry and berth's built-in registrations.
//!
//! Drivers know nothing of plugins; this module is where they are wrapped
//! into registrations with a type, an id, requirements and an init function.

pub mod builtins;
mod registry;

pub use registry::{
    InitContext, InitFn, Initialised, Instance, Plugin, PluginError, Registration, RegistryError,
    StartupWork, init_all, init_all_staged, sort, types,
};

use std::collections::HashMap;

/// A gRPC service plugin's instance: adds its service to the server's routes.
pub struct GrpcService {
    add: Box<dyn Fn(&mut tonic::service::RoutesBuilder) + Send + Sync>,
}

impl GrpcService {
    /// Wraps a tonic server `svc` (e.g. `VersionServer::new(..)`).
    pub fn new<S>(svc: S) -> GrpcService
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        GrpcService {
            add: Box::new(move |routes| {
                routes.add_service(svc.clone());
            }),
        }
    }

    /// The same plugin serving `svc` too (a plugin with several services,
    /// as the CRI's RuntimeService and ImageService).
    pub fn with<S>(self, svc: S) -> GrpcService
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let first = self.add;
        GrpcService {
            add: Box::new(move |routes| {
                first(routes);
                routes.add_service(svc.clone());
            }),
        }
    }

    /// Adds the service to `routes`.
    pub fn register(&self, routes: &mut tonic::service::RoutesBuilder) {
        (self.add)(routes);
    }
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcService")
    }
}

/// A ttrpc service plugin's instance: the method table ttrpc serves,
/// handed to the server once (ttrpc's tables cannot be cloned).
pub struct TtrpcService(std::sync::Mutex<Option<HashMap<String, ttrpc::asynchronous::Service>>>);

impl TtrpcService {
    /// Wraps a generated `create_<service>` table.
    pub fn new(methods: HashMap<String, ttrpc::asynchronous::Service>) -> TtrpcService {
        TtrpcService(std::sync::Mutex::new(Some(methods)))
    }

    /// Takes the table; later calls get an empty one.
    pub fn take(&self) -> HashMap<String, ttrpc::asynchronous::Service> {
        self.0
            .lock()
            .map(|mut m| m.take().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for TtrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtrpcService")
    }
}
