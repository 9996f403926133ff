//! Just enough of CRI's `runtime.v1.RuntimeService` for `crictl exec`,
//! `attach` and `port-forward`: `Version` (crictl checks the API with it
//! when it connects) and the three streaming calls, which answer with URLs
//! from the streaming server under test. Message and field numbers are
//! cri-api's; every other method answers UNIMPLEMENTED.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_cri_streaming::Server;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Code, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct VersionRequest {
    #[prost(string, tag = "1")]
    pub(crate) version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct VersionResponse {
    #[prost(string, tag = "1")]
    pub(crate) version: String,
    #[prost(string, tag = "2")]
    pub(crate) runtime_name: String,
    #[prost(string, tag = "3")]
    pub(crate) runtime_version: String,
    #[prost(string, tag = "4")]
    pub(crate) runtime_api_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExecRequest {
    #[prost(string, tag = "1")]
    pub(crate) container_id: String,
    #[prost(string, repeated, tag = "2")]
    pub(crate) cmd: Vec<String>,
    #[prost(bool, tag = "3")]
    pub(crate) tty: bool,
    #[prost(bool, tag = "4")]
    pub(crate) stdin: bool,
    #[prost(bool, tag = "5")]
    pub(crate) stdout: bool,
    #[prost(bool, tag = "6")]
    pub(crate) stderr: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AttachRequest {
    #[prost(string, tag = "1")]
    pub(crate) container_id: String,
    #[prost(bool, tag = "2")]
    pub(crate) stdin: bool,
    #[prost(bool, tag = "3")]
    pub(crate) tty: bool,
    #[prost(bool, tag = "4")]
    pub(crate) stdout: bool,
    #[prost(bool, tag = "5")]
    pub(crate) stderr: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PortForwardRequest {
    #[prost(string, tag = "1")]
    pub(crate) pod_sandbox_id: String,
    #[prost(int32, repeated, tag = "2")]
    pub(crate) port: Vec<i32>,
}

/// The `url` field of Exec/Attach/PortForwardResponse.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct UrlResponse {
    #[prost(string, tag = "1")]
    pub(crate) url: String,
}

/// The RuntimeService of the test: answers through `server`.
#[derive(Clone)]
pub(crate) struct RuntimeService {
    pub(crate) server: Arc<Server>,
}

impl tonic::server::NamedService for RuntimeService {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

fn to_status(e: berth_cri_streaming::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

impl<B> tower::Service<http::Request<B>> for RuntimeService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        match req.uri().path() {
            "/runtime.v1.RuntimeService/Version" => unary(req, |_: VersionRequest| {
                Ok(VersionResponse {
                    version: "0.1.0".into(),
                    runtime_name: "berth-cri-streaming-test".into(),
                    runtime_version: "0.1.0".into(),
                    runtime_api_version: "v1".into(),
                })
            }),
            "/runtime.v1.RuntimeService/Exec" => unary(req, move |r: ExecRequest| {
                let url = server
                    .get_exec(berth_cri_streaming::ExecRequest {
                        container_id: r.container_id,
                        cmd: r.cmd,
                        tty: r.tty,
                        stdin: r.stdin,
                        stdout: r.stdout,
                        stderr: r.stderr,
                    })
                    .map_err(to_status)?;
                Ok(UrlResponse { url })
            }),
            "/runtime.v1.RuntimeService/Attach" => unary(req, move |r: AttachRequest| {
                let url = server
                    .get_attach(berth_cri_streaming::AttachRequest {
                        container_id: r.container_id,
                        tty: r.tty,
                        stdin: r.stdin,
                        stdout: r.stdout,
                        stderr: r.stderr,
                    })
                    .map_err(to_status)?;
                Ok(UrlResponse { url })
            }),
            "/runtime.v1.RuntimeService/PortForward" => unary(req, move |r: PortForwardRequest| {
                let url = server
                    .get_port_forward(berth_cri_streaming::PortForwardRequest {
                        pod_sandbox_id: r.pod_sandbox_id,
                        ports: r.port,
                    })
                    .map_err(to_status)?;
                Ok(UrlResponse { url })
            }),
            other => {
                eprintln!("test CRI server: unimplemented {other}");
                Box::pin(async move {
                    let mut response = http::Response::new(tonic::body::Body::empty());
                    let headers = response.headers_mut();
                    headers.insert("grpc-status", (Code::Unimplemented as i32).into());
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(response)
                })
            }
        }
    }
}

/// One unary call answered by `f`.
struct Unary<F>(Option<F>);

impl<Req, Resp, F> tonic::server::UnaryService<Req> for Unary<F>
where
    F: FnOnce(Req) -> Result<Resp, Status> + Send + 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Resp>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let f = self.0.take();
        Box::pin(async move {
            let f = f.ok_or_else(|| Status::internal("called twice"))?;
            f(request.into_inner()).map(tonic::Response::new)
        })
    }
}

fn unary<B, Req, Resp, F>(
    req: http::Request<B>,
    f: F,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    F: FnOnce(Req) -> Result<Resp, Status> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
        Ok(grpc.unary(Unary(Some(f)), req).await)
    })
}
