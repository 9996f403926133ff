//! `containerd.services.version.v1.Version`.

use berth_api::containerd::services::version::v1::VersionResponse;
use berth_api::containerd::services::version::v1::version_server::Version;
use tonic::{Request, Response, Status};

/// Reports the daemon version.
#[derive(Debug, Clone, Default)]
pub(crate) struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: crate::build_info::VERSION.to_string(),
            revision: crate::build_info::REVISION.to_string(),
        }))
    }
}
