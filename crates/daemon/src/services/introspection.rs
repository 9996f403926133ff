//! `containerd.services.introspection.v1.Introspection`: plugins and server info.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use berth_api::CategoryCode;
use berth_api::containerd::services::introspection::v1::introspection_server::Introspection;
use berth_api::containerd::services::introspection::v1::{
    Plugin as WirePlugin, PluginInfoRequest, PluginInfoResponse, PluginsRequest, PluginsResponse,
    ServerResponse,
};
use berth_api::containerd::types::{RuntimeInfo, RuntimeRequest};
use berth_api::proto::google::rpc::Status as RpcStatus;
use berth_runtime::manager::ShimManager;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::plugins::{Plugin, PluginError};

/// The runtime plugin's type (its id is `task`).
const RUNTIME_PLUGIN_TYPE: &str = "io.containerd.runtime.v2";

/// Lists plugins and reports the server's identity.
#[derive(Debug, Clone)]
pub(crate) struct IntrospectionService {
    plugins: Arc<Vec<WirePlugin>>,
    uuid: String,
    shims: Option<Arc<ShimManager>>,
}

impl IntrospectionService {
    /// A service reporting `plugins` (itself included by the caller) and a
    /// server uuid kept in `root/uuid`, created on first start.
    pub(crate) fn new(
        plugins: Vec<WirePlugin>,
        root: &Path,
    ) -> std::io::Result<IntrospectionService> {
        Ok(IntrospectionService {
            plugins: Arc::new(plugins),
            uuid: load_or_create_uuid(root)?,
            shims: None,
        })
    }

    /// This service answering the runtime plugin's `PluginInfo` with
    /// options (containerd 2.x's `RuntimeInfo`) through `shims`.
    pub(crate) fn with_runtime(mut self, shims: Option<Arc<ShimManager>>) -> IntrospectionService {
        self.shims = shims;
        self
    }

    /// containerd's runtime plugin info: the shim for the request's runtime
    /// run with `-info`, the options (an encoded `Any`) on its stdin, its
    /// stdout an encoded `RuntimeInfo`.
    async fn runtime_info(&self, options: &prost_types::Any) -> Result<prost_types::Any, Status> {
        let Some(shims) = &self.shims else {
            return Err(Status::failed_precondition(
                "cannot get extra info, plugin not successfully loaded",
            ));
        };
        if !(options.type_url == RUNTIME_REQUEST_URL
            || options
                .type_url
                .ends_with(&format!("/{RUNTIME_REQUEST_URL}")))
        {
            return Err(Status::unimplemented(format!(
                "unknown request type {}: not implemented",
                options.type_url
            )));
        }
        let req = RuntimeRequest::decode(options.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("RuntimeRequest: {e}")))?;
        let runtime = if req.runtime_path.is_empty() {
            berth_runtime::manager::RUNC_RUNTIME
        } else {
            req.runtime_path.as_str()
        };
        let binary = shims.resolve(runtime, "").map_err(|e| {
            // The manager words it for a task start; here it is the lookup alone.
            let text = e.to_string();
            Status::unknown(
                text.trim_start_matches("failed to start shim: ")
                    .to_string(),
            )
        })?;
        let input = req.options.map(|o| o.encode_to_vec()).unwrap_or_default();
        let stdout = run_info(&binary, input).await?;
        let info = RuntimeInfo::decode(stdout.as_slice()).map_err(|e| {
            Status::unknown(format!(
                "failed to unmarshal stdout from [{} -info] into *types.RuntimeInfo: {e}",
                binary.display()
            ))
        })?;
        Ok(prost_types::Any {
            type_url: RUNTIME_INFO_URL.to_string(),
            value: info.encode_to_vec(),
        })
    }
}

/// Type URL of the runtime plugin's info request.
const RUNTIME_REQUEST_URL: &str = "containerd.types.RuntimeRequest";
/// Type URL of its answer.
const RUNTIME_INFO_URL: &str = "containerd.types.RuntimeInfo";

/// Runs `<binary> -info` with `input` on stdin; its stdout.
async fn run_info(binary: &Path, input: Vec<u8>) -> Result<Vec<u8>, Status> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary)
        .arg("-info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Status::unknown(format!("failed to run [{} -info]: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A shim that exits without reading is reported by its status.
        let _ = stdin.write_all(&input).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Status::unknown(format!("failed to run [{} -info]: {e}", binary.display())))?;
    if !out.status.success() {
        return Err(Status::unknown(format!(
            "failed to run [{} -info]: {} (stderr: {:?})",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// The wire form of an initialised (or failed) plugin.
pub(crate) fn wire_plugin(p: &Plugin) -> WirePlugin {
    WirePlugin {
        r#type: p.plugin_type.clone(),
        id: p.id.clone(),
        requires: p.requires.clone(),
        platforms: Vec::new(),
        exports: p.exports.clone().into_iter().collect(),
        capabilities: p.capabilities.clone(),
        init_err: p.instance.as_ref().err().map(|e| RpcStatus {
            code: match e {
                PluginError::Skipped(_) => berth_api::Category::NotFound.code(),
                PluginError::Failed(_) => berth_api::Category::Unknown.code(),
            },
            message: e.to_string(),
            details: Vec::new(),
        }),
    }
}

/// Reads the server uuid, writing a new one atomically if there is none.
fn load_or_create_uuid(root: &Path) -> std::io::Result<String> {
    let path = root.join("uuid");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "server uuid file is invalid; writing a new one")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(root)?;
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = root.join("uuid.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Field access for the filter language over a wire plugin.
struct PluginFields<'a>(&'a WirePlugin);

impl berth_filters::Adaptor for PluginFields<'_> {
    fn field(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        let p = self.0;
        match path {
            ["type"] => Some(Cow::Borrowed(p.r#type.as_str())),
            ["id"] => Some(Cow::Borrowed(p.id.as_str())),
            ["capabilities"] => {
                (!p.capabilities.is_empty()).then(|| Cow::Owned(p.capabilities.join(",")))
            }
            ["exports", key @ ..] if !key.is_empty() => p
                .exports
                .get(&key.join("."))
                .map(|v| Cow::Borrowed(v.as_str())),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        request: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = berth_filters::parse_all(&request.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let plugins = self
            .plugins
            .iter()
            .filter(|p| filter.matches(&PluginFields(p)))
            .cloned()
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn plugin_info(
        &self,
        request: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let req = request.into_inner();
        let plugin = self
            .plugins
            .iter()
            .find(|p| p.r#type == req.r#type && p.id == req.id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("plugin {}.{} not found", req.r#type, req.id))
            })?;
        let extra = match &req.options {
            None => None,
            Some(_) if plugin.init_err.is_some() => {
                return Err(Status::failed_precondition(
                    "cannot get extra info, plugin not successfully loaded: failed precondition",
                ));
            }
            Some(options) if plugin.r#type == RUNTIME_PLUGIN_TYPE && plugin.id == "task" => {
                Some(self.runtime_info(options).await?)
            }
            Some(_) => {
                return Err(Status::unimplemented(
                    "plugin does not provided extra information: not implemented",
                ));
            }
        };
        Ok(Response::new(PluginInfoResponse {
            plugin: Some(plugin),
            extra,
        }))
    }

    async fn server(&self, _request: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: pid_namespace(),
            deprecations: Vec::new(),
        }))
    }
}

/// The inode of this process's pid namespace, as containerd reports it.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_uuid(dir.path()).unwrap();
        let b = load_or_create_uuid(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
