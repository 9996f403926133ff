//! The registry v2 client: [`Registry`] (a [`Resolver`]) and [`Repository`]
//! (a [`Fetcher`] and [`Pusher`] bound to one repository).
//!
//! Every request goes to the endpoints [`HostsConfig`] lists for the
//! reference's host, in order, skipping those without the needed
//! capability; a failing endpoint (refused connection, error status) passes
//! the request to the next one. Requests are authorised as [`crate::auth`]
//! describes. Each TLS configuration has one HTTP client whose connection
//! pool serves every request to its hosts, and each host admits at most
//! [`RegistryOptions::with_max_concurrent_downloads`] blob downloads at a
//! time (the rest wait their turn).

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::auth::{AuthHeader, Authorizer, Credentials, repository_scope};
use crate::error::{RegistryErrors, Result};
use crate::hosts::{HostsConfig, RegistryHost};
use crate::reference::RemoteRef;
use crate::tls::{TlsKey, build_client};
use crate::{
    ByteStream, Descriptor, Digest, Error, Fetcher, MAX_MANIFEST_SIZE, PushReader, Pushed, Pusher,
    Resolver, is_manifest_type,
};

/// The `Accept` header of a resolve: every manifest type berth understands.
/// (One literal so it is a constant; a test checks it against the media
/// type constants.)
const RESOLVE_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, */*";

/// How much of an error body is read to find the registry's error codes.
const MAX_ERROR_BODY: usize = 64 << 10;

/// containerd's default `max_concurrent_downloads`.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// The settings of a [`Registry`].
#[derive(Clone)]
pub struct RegistryOptions {
    hosts: HostsConfig,
    credentials: Option<Arc<dyn Credentials>>,
    max_concurrent_downloads: usize,
    user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            hosts: HostsConfig::default(),
            credentials: None,
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("hosts", &self.hosts)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<callback>"),
            )
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl RegistryOptions {
    /// Reads per-host configuration from `dir/<host>/hosts.toml` (containerd's
    /// `certs.d` layout, see [`crate::hosts`]).
    pub fn with_hosts_dir(mut self, dir: impl Into<std::path::PathBuf>) -> RegistryOptions {
        self.hosts.dir = Some(dir.into());
        self
    }

    /// Uses plain HTTP for hosts whose configuration does not name a scheme
    /// (the `--plain-http` flag).
    pub fn with_plain_http(mut self, plain_http: bool) -> RegistryOptions {
        self.hosts.plain_http = plain_http;
        self
    }

    /// Replaces the whole hosts configuration.
    pub fn with_hosts(mut self, hosts: HostsConfig) -> RegistryOptions {
        self.hosts = hosts;
        self
    }

    /// Asks `credentials` for a user and secret when a host wants them.
    pub fn with_credentials(mut self, credentials: impl Credentials + 'static) -> RegistryOptions {
        self.credentials = Some(Arc::new(credentials));
        self
    }

    /// At most `n` blob downloads at a time per host (at least 1; default 3).
    pub fn with_max_concurrent_downloads(mut self, n: usize) -> RegistryOptions {
        self.max_concurrent_downloads = n.max(1);
        self
    }

    /// The `User-Agent` header (default `berth/<version>`).
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> RegistryOptions {
        self.user_agent = user_agent.into();
        self
    }
}

/// A registry v2 client: resolves references and hands out [`Repository`]
/// clients. Cheap to clone; clones share clients, tokens and limits.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// What clones of a [`Registry`] share.
struct Inner {
    options: RegistryOptions,
    auth: Authorizer,
    /// One client (and so one connection pool) per TLS configuration.
    clients: Mutex<HashMap<TlsKey, reqwest::Client>>,
    /// The endpoints of each registry name, resolved once.
    endpoints: Mutex<HashMap<String, Arc<[Endpoint]>>>,
    /// The download limit of each endpoint host.
    download_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One endpoint, ready to send to.
#[derive(Clone)]
struct Endpoint {
    host: RegistryHost,
    /// Whether requests carry `?ns=<registry name>`.
    mirror: bool,
    client: reqwest::Client,
    download_limit: Arc<Semaphore>,
}

impl Registry {
    /// A client with `options`.
    pub fn new(options: RegistryOptions) -> Result<Registry> {
        let auth = Authorizer::new(options.credentials.clone());
        Ok(Registry {
            inner: Arc::new(Inner {
                options,
                auth,
                clients: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                download_limits: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client for the repository of `reference` (`host/repo[:tag][@digest]`).
    ///
    /// Errors: [`Error::InvalidArgument`] for a malformed reference or
    /// `hosts.toml`, [`Error::Io`] for unreadable configuration.
    pub fn repository(&self, reference: &str) -> Result<Repository> {
        let reference = RemoteRef::parse(reference)?;
        let endpoints = self.endpoints(&reference.host)?;
        Ok(Repository {
            inner: self.inner.clone(),
            reference,
            endpoints,
        })
    }

    /// The endpoints for registry `name`, from the cache or configuration.
    fn endpoints(&self, name: &str) -> Result<Arc<[Endpoint]>> {
        let inner = &self.inner;
        if let Some(e) = lock(&inner.endpoints).get(name) {
            return Ok(e.clone());
        }
        let mut endpoints = Vec::new();
        for host in inner.options.hosts.registry_hosts(name)? {
            let key = TlsKey::of(&host);
            let cached = lock(&inner.clients).get(&key).cloned();
            let client = match cached {
                Some(c) => c,
                None => {
                    let c = build_client(&key, &inner.options.user_agent)?;
                    lock(&inner.clients).entry(key).or_insert(c).clone()
                }
            };
            let download_limit = lock(&inner.download_limits)
                .entry(host.host.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(inner.options.max_concurrent_downloads)))
                .clone();
            endpoints.push(Endpoint {
                mirror: host.is_mirror_of(name),
                host,
                client,
                download_limit,
            });
        }
        let endpoints: Arc<[Endpoint]> = endpoints.into();
        lock(&inner.endpoints).insert(name.to_owned(), endpoints.clone());
        Ok(endpoints)
    }
}

#[async_trait]
impl Resolver for Registry {
    async fn resolve(&self, reference: &str) -> Result<(String, Descriptor)> {
        let desc = self.repository(reference)?.resolve().await?;
        Ok((reference.to_owned(), desc))
    }

    fn fetcher(&self, reference: &str) -> Result<Box<dyn Fetcher>> {
        Ok(Box::new(self.repository(reference)?))
    }

    fn pusher(&self, reference: &str) -> Result<Box<dyn Pusher>> {
        Ok(Box::new(self.repository(reference)?))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client for one repository of one registry: fetches, pushes, resolves
/// its reference.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
    reference: RemoteRef,
    endpoints: Arc<[Endpoint]>,
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("reference", &self.reference.display())
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| format!("{}://{}{}", e.host.scheme, e.host.host, e.host.path))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Which capability a request needs.
#[derive(Debug, Clone, Copy)]
enum Need {
    Pull,
    Resolve,
    Push,
}

impl Repository {
    /// The reference this client was made for.
    pub fn reference(&self) -> String {
        self.reference.display()
    }

    /// Endpoints usable for `need`, in order.
    fn endpoints_for(&self, need: Need) -> Vec<&Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| {
                let c = e.host.capabilities;
                match need {
                    Need::Pull => c.pull,
                    Need::Resolve => c.pull && c.resolve,
                    Need::Push => c.push,
                }
            })
            .collect()
    }

    /// `<scheme>://<host><path>/<repository>/<parts...>[?ns=<name>]`.
    fn url(&self, ep: &Endpoint, parts: &[&str]) -> Result<Url> {
        let mut s = format!(
            "{}://{}{}/{}",
            ep.host.scheme,
            ep.host.host,
            ep.host.path.trim_end_matches('/'),
            self.reference.repository
        );
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        let mut url = Url::parse(&s)
            .map_err(|e| Error::InvalidArgument(format!("bad registry URL {s:?}: {e}")))?;
        if ep.mirror {
            url.query_pairs_mut()
                .append_pair("ns", &self.reference.host);
        }
        Ok(url)
    }

    /// Sends one request, answering auth challenges: on a `401` the challenge
    /// is recorded and the request built again and retried once; `408` and
    /// `429` are retried twice after a pause.
    async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        method: Method,
        url: &Url,
        mut decorate: impl FnMut(reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let auth_host = authority(url);
        let mut unauthorized_retries = 0;
        let mut busy_retries = 0u32;
        loop {
            let mut rb = ep.client.request(method.clone(), url.clone());
            for (k, v) in &ep.host.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            rb = match self
                .inner
                .auth
                .authorize(&ep.client, &auth_host, scopes)
                .await?
            {
                None => rb,
                Some(AuthHeader::Basic(c)) => rb.basic_auth(&c.username, Some(c.secret.expose())),
                Some(AuthHeader::Bearer(t)) => rb.bearer_auth(t.expose()),
            };
            let rb = decorate(rb)?;
            tracing::debug!(%method, %url, "request");
            let resp = rb
                .send()
                .await
                .map_err(|e| transport_error(e, &auth_host, url))?;
            let status = resp.status();
            tracing::debug!(%method, %url, %status, "response");
            match status {
                StatusCode::UNAUTHORIZED => {
                    let challenges: Vec<String> = resp
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .collect();
                    let errors = RegistryErrors::parse(&read_error_body(resp).await);
                    if unauthorized_retries > 0 {
                        return Err(Error::Unauthorized {
                            host: auth_host.clone(),
                            realm: self.inner.auth.realm(&auth_host),
                            errors,
                        });
                    }
                    unauthorized_retries += 1;
                    let refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
                    self.inner.auth.add_challenge(&auth_host, &refs, errors)?;
                }
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS if busy_retries < 2 => {
                    busy_retries += 1;
                    let wait = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_millis(500) * busy_retries)
                        .min(Duration::from_secs(10));
                    tracing::info!(%url, %status, ?wait, "registry busy, retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// Resolves this client's reference: `HEAD` (then `GET` if the registry
    /// does not say the digest and size) on `/manifests/<tag|digest>`, and
    /// for a digest also `/blobs/<digest>`.
    pub async fn resolve(&self) -> Result<Descriptor> {
        let r = &self.reference;
        let (paths, need) = match (&r.digest, &r.tag) {
            (Some(d), _) => (
                vec![("manifests", d.to_string()), ("blobs", d.to_string())],
                Need::Pull,
            ),
            (None, Some(t)) => (vec![("manifests", t.clone())], Need::Resolve),
            (None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "reference {} has no tag or digest to resolve",
                    r.display()
                )));
            }
        };
        let hosts = self.endpoints_for(need);
        if hosts.is_empty() {
            return Err(Error::NotFound {
                what: format!("{}: no host may resolve it", r.display()),
                errors: RegistryErrors::default(),
            });
        }
        let scopes = [repository_scope(&r.repository, false)];
        let mut first_err = None;
        let mut not_found = RegistryErrors::default();
        for (kind, object) in &paths {
            for ep in &hosts {
                match self.resolve_at(ep, &scopes, kind, object).await {
                    Ok(desc) => {
                        tracing::debug!(reference = %r.display(), digest = %desc.digest, host = %ep.host.host, "resolved");
                        return Ok(desc);
                    }
                    Err(Error::NotFound { errors, .. }) => {
                        tracing::debug!(host = %ep.host.host, "not found there, trying next host");
                        if !errors.0.is_empty() {
                            not_found = errors;
                        }
                    }
                    Err(e) => {
                        tracing::info!(host = %ep.host.host, error = %e, "resolve failed, trying next host");
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Err(first_err.unwrap_or(Error::NotFound {
            what: r.display(),
            errors: not_found,
        }))
    }

    /// Resolves at one endpoint; 404 is [`Error::NotFound`].
    async fn resolve_at(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        kind: &str,
        object: &str,
    ) -> Result<Descriptor> {
        let url = self.url(ep, &[kind, object])?;
        let what = self.reference.display();
        let accept = |rb: reqwest::RequestBuilder| Ok(rb.header(ACCEPT, RESOLVE_ACCEPT));
        let mut resp = self.send(ep, scopes, Method::HEAD, &url, accept).await?;
        let mut have_body = false;
        // Some registries do not implement HEAD on manifests.
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            resp = self.send(ep, scopes, Method::GET, &url, accept).await?;
            have_body = true;
        }
        if !resp.status().is_success() {
            return Err(status_error(resp, &ep.host.host, what).await);
        }
        let media_type = content_type(&resp);
        let header_size = header_u64(&resp, CONTENT_LENGTH.as_str());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let expected = self.reference.digest.clone();
        let mut digest = expected.clone();
        let mut size = header_size;
        if digest.is_none()
            && let (Some(h), Some(_)) = (&header_digest, header_size)
        {
            digest = Some(Digest::parse(h).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{}: bad Docker-Content-Digest {h:?}: {e}",
                    ep.host.host
                ))
            })?);
        }
        if digest.is_none() || size.is_none() || have_body {
            tracing::debug!(%url, "no digest or size in the headers, fetching the manifest");
            if !have_body {
                resp = self.send(ep, scopes, Method::GET, &url, accept).await?;
                if !resp.status().is_success() {
                    return Err(status_error(resp, &ep.host.host, what).await);
                }
            }
            let data = read_limited(resp, MAX_MANIFEST_SIZE, &url).await?;
            let algorithm = expected
                .as_ref()
                .map_or(berth_types::Algorithm::CANONICAL, Digest::algorithm);
            let actual = algorithm.digest(&data);
            if let Some(e) = &expected
                && *e != actual
            {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual,
                });
            }
            digest = Some(actual);
            size = Some(data.len() as u64);
        }
        let (Some(digest), Some(size)) = (digest, size) else {
            return Err(Error::FailedPrecondition(format!(
                "{url}: the registry gave no digest or size"
            )));
        };
        if size > MAX_MANIFEST_SIZE {
            return Err(Error::FailedPrecondition(format!(
                "{url}: rejecting a {size}-byte manifest (limit {MAX_MANIFEST_SIZE})"
            )));
        }
        Ok(Descriptor::new(media_type, digest, size))
    }

    /// Fetches a whole manifest from the first endpoint that has it, checked
    /// against `desc`.
    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Bytes> {
        let scopes = [repository_scope(&self.reference.repository, false)];
        let accept = format!("{}, */*", desc.media_type);
        let mut first_err = None;
        let mut not_found = RegistryErrors::default();
        for ep in self.endpoints_for(Need::Pull) {
            let attempt = async {
                let url = self.url(ep, &["manifests", desc.digest.as_str()])?;
                let resp = self
                    .send(ep, &scopes, Method::GET, &url, |rb| {
                        Ok(rb.header(ACCEPT, accept.as_str()))
                    })
                    .await?;
                if !resp.status().is_success() {
                    return Err(status_error(resp, &ep.host.host, self.what(desc)).await);
                }
                let data = read_limited(resp, desc.size, &url)
                    .await
                    .map_err(|e| match e {
                        Error::FailedPrecondition(_) => Error::SizeMismatch {
                            digest: desc.digest.clone(),
                            expected: desc.size,
                            actual: desc.size + 1,
                        },
                        e => e,
                    })?;
                verify(desc, &data)?;
                Ok(data)
            };
            match attempt.await {
                Ok(data) => return Ok(data),
                Err(Error::NotFound { errors, .. }) => {
                    if !errors.0.is_empty() {
                        not_found = errors;
                    }
                }
                Err(e) => {
                    tracing::info!(host = %ep.host.host, error = %e, "fetch failed, trying next host");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Error::NotFound {
            what: self.what(desc),
            errors: not_found,
        }))
    }

    /// `<digest> (<media type>) in <reference>`.
    fn what(&self, desc: &Descriptor) -> String {
        format!(
            "{} ({}) in {}/{}",
            desc.digest, desc.media_type, self.reference.host, self.reference.repository
        )
    }

    /// Opens a blob at one endpoint from `offset`; returns the response and
    /// how many leading bytes to drop (when the server ignored the range).
    async fn open_blob(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<(reqwest::Response, u64)> {
        let scopes = [repository_scope(&self.reference.repository, false)];
        let url = self.url(ep, &["blobs", desc.digest.as_str()])?;
        let accept = format!("{}, */*", desc.media_type);
        let resp = self
            .send(ep, &scopes, Method::GET, &url, |rb| {
                let rb = rb.header(ACCEPT, accept.as_str());
                Ok(if offset > 0 {
                    rb.header(RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                })
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(resp, &ep.host.host, self.what(desc)).await);
        }
        if offset == 0 {
            return Ok((resp, 0));
        }
        // "Accept-Ranges: bytes" is not to be trusted: check what came back.
        if status == StatusCode::PARTIAL_CONTENT {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !range.starts_with(&format!("bytes {offset}-")) {
                return Err(Error::FailedPrecondition(format!(
                    "{url}: asked for bytes {offset}- and got content range {range:?}"
                )));
            }
            Ok((resp, 0))
        } else {
            tracing::debug!(%url, offset, "server ignored the range, skipping to the offset");
            Ok((resp, offset))
        }
    }

    /// Mounts blob `desc` from repository `from` of the same registry
    /// (cross-repository blob mount), so it need not be uploaded. Returns
    /// whether the registry mounted it; `false` means push it normally.
    pub async fn mount(&self, desc: &Descriptor, from: &str) -> Result<bool> {
        let Some(ep) = self.endpoints_for(Need::Push).into_iter().next() else {
            return Err(self.no_push_host());
        };
        let scopes = [
            repository_scope(&self.reference.repository, true),
            repository_scope(from, false),
        ];
        let mut url = self.url(ep, &["blobs", "uploads", ""])?;
        url.query_pairs_mut()
            .append_pair("mount", desc.digest.as_str())
            .append_pair("from", from);
        let resp = self
            .send(ep, &scopes, Method::POST, &url, |rb| {
                Ok(rb.header(CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                tracing::debug!(digest = %desc.digest, from, "mounted");
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // The registry started an ordinary upload instead; cancel it.
                if let Some(loc) = location(&resp, &url) {
                    let _ = self.send(ep, &scopes, Method::DELETE, &loc, Ok).await;
                }
                Ok(false)
            }
            _ => Err(status_error(resp, &ep.host.host, self.what(desc)).await),
        }
    }

    fn no_push_host(&self) -> Error {
        Error::FailedPrecondition(format!(
            "no host of {} may be pushed to (check capabilities in hosts.toml)",
            self.reference.host
        ))
    }

    /// `HEAD url`: `Some(response)` if it exists, `None` if not (or if we may
    /// not look: the push itself will say what is wrong).
    async fn exists(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        url: &Url,
        desc: &Descriptor,
    ) -> Result<Option<reqwest::Response>> {
        let accept = format!("{}, */*", desc.media_type);
        let resp = match self
            .send(ep, scopes, Method::HEAD, url, |rb| {
                Ok(rb.header(ACCEPT, accept.as_str()))
            })
            .await
        {
            Ok(r) => r,
            Err(e @ Error::Unauthorized { .. }) => {
                tracing::debug!(error = %e, "cannot check existence, pushing anyway");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            s if s.is_success() => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(resp, &ep.host.host, self.what(desc)).await),
        }
    }

    async fn push_manifest(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        mut reader: PushReader,
    ) -> Result<Pushed> {
        let scopes = [repository_scope(&self.reference.repository, true)];
        // The tag, unless the reference pins another digest.
        let object = match (&self.reference.tag, &self.reference.digest) {
            (Some(t), None) => t.clone(),
            (Some(t), Some(d)) if *d == desc.digest => t.clone(),
            _ => desc.digest.to_string(),
        };
        let url = self.url(ep, &["manifests", &object])?;
        if let Some(resp) = self.exists(ep, &scopes, &url, desc).await? {
            let remote = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok());
            if object == desc.digest.as_str() || remote == Some(desc.digest.as_str()) {
                tracing::debug!(%url, "manifest exists");
                return Ok(Pushed::Exists);
            }
        }
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(Error::InvalidArgument(format!(
                "manifest {} of {} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit",
                desc.digest, desc.size
            )));
        }
        let mut data = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        (&mut reader)
            .take(desc.size + 1)
            .read_to_end(&mut data)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("reading the data of {desc}: {e}")))?;
        verify(desc, &data)?;
        let body = Bytes::from(data);
        let resp = self
            .send(ep, &scopes, Method::PUT, &url, |rb| {
                Ok(rb
                    .header(CONTENT_TYPE, desc.media_type.as_str())
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &ep.host.host, self.what(desc)).await);
        }
        tracing::debug!(%url, digest = %desc.digest, "manifest pushed");
        Ok(Pushed::Uploaded)
    }

    async fn push_blob(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        reader: PushReader,
    ) -> Result<Pushed> {
        let scopes = [repository_scope(&self.reference.repository, true)];
        let blob_url = self.url(ep, &["blobs", desc.digest.as_str()])?;
        if self.exists(ep, &scopes, &blob_url, desc).await?.is_some() {
            tracing::debug!(url = %blob_url, "blob exists");
            return Ok(Pushed::Exists);
        }
        let start = self.url(ep, &["blobs", "uploads", ""])?;
        let resp = self
            .send(ep, &scopes, Method::POST, &start, |rb| {
                Ok(rb.header(CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => return Ok(Pushed::Exists),
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => {}
            _ => return Err(status_error(resp, &ep.host.host, self.what(desc)).await),
        }
        let Some(mut put_url) = location(&resp, &start) else {
            return Err(Error::FailedPrecondition(format!(
                "{start}: the registry started an upload without a Location"
            )));
        };
        put_url
            .query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        // A monolithic upload: the whole blob in one PUT, streamed. The body
        // cannot be replayed, so a 401 here is final (the POST above already
        // fetched any token the host wants).
        let mut reader = Some(reader);
        let size = desc.size;
        let digest = desc.digest.clone();
        let resp = self
            .send(ep, &scopes, Method::PUT, &put_url, |rb| {
                let Some(r) = reader.take() else {
                    return Err(Error::FailedPrecondition(
                        "the upload was refused and its data stream cannot be sent again".into(),
                    ));
                };
                let body = reqwest::Body::wrap_stream(SizedStream {
                    inner: tokio_util::io::ReaderStream::with_capacity(r, 256 << 10),
                    remaining: size,
                    size,
                    digest: digest.clone(),
                });
                Ok(rb
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(body))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &ep.host.host, self.what(desc)).await);
        }
        tracing::debug!(url = %blob_url, "blob pushed");
        Ok(Pushed::Uploaded)
    }
}

#[async_trait]
impl Fetcher for Repository {
    async fn fetch_from(&self, desc: &Descriptor, offset: u64) -> Result<ByteStream> {
        if offset > desc.size {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is past the end of {desc}"
            )));
        }
        if is_manifest_type(&desc.media_type) {
            if desc.size > MAX_MANIFEST_SIZE {
                return Err(Error::InvalidArgument(format!(
                    "manifest {desc} exceeds the {MAX_MANIFEST_SIZE}-byte limit"
                )));
            }
            let data = self.fetch_manifest(desc).await?;
            let rest = data.slice(
                usize::try_from(offset)
                    .unwrap_or(data.len())
                    .min(data.len())..,
            );
            return Ok(Box::pin(futures::stream::iter(
                (!rest.is_empty()).then_some(Ok(rest)),
            )));
        }
        if offset == desc.size {
            // Nothing left to read (a range request would get 416).
            return Ok(Box::pin(futures::stream::empty()));
        }
        let mut first_err = None;
        let mut not_found = RegistryErrors::default();
        for ep in self.endpoints_for(Need::Pull) {
            // Held until the stream is dropped: the download counts against
            // the host's limit for as long as it runs.
            let Ok(permit) = ep.download_limit.clone().acquire_owned().await else {
                continue; // never closed
            };
            match self.open_blob(ep, desc, offset).await {
                Ok((resp, skip)) => {
                    return Ok(Box::pin(BlobStream {
                        url: resp.url().to_string(),
                        inner: Box::pin(resp.bytes_stream()),
                        skip,
                        remaining: desc.size - offset,
                        size: desc.size,
                        digest: desc.digest.clone(),
                        done: false,
                        permit: Some(permit),
                    }));
                }
                Err(Error::NotFound { errors, .. }) => {
                    if !errors.0.is_empty() {
                        not_found = errors;
                    }
                }
                Err(e) => {
                    tracing::info!(host = %ep.host.host, error = %e, "fetch failed, trying next host");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Error::NotFound {
            what: self.what(desc),
            errors: not_found,
        }))
    }
}

#[async_trait]
impl Pusher for Repository {
    async fn push(&self, desc: &Descriptor, reader: PushReader) -> Result<Pushed> {
        // Pushes go to the first endpoint that takes them, without fallback:
        // content must end up in one place.
        let Some(ep) = self.endpoints_for(Need::Push).into_iter().next() else {
            return Err(self.no_push_host());
        };
        if is_manifest_type(&desc.media_type) {
            self.push_manifest(ep, desc, reader).await
        } else {
            self.push_blob(ep, desc, reader).await
        }
    }
}

/// A blob download: drops `skip` leading bytes, yields exactly
/// `remaining` bytes or fails, holds a download permit.
struct BlobStream {
    url: String,
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    skip: u64,
    remaining: u64,
    size: u64,
    digest: Digest,
    done: bool,
    /// The host's download permit, given back when the stream ends or drops.
    permit: Option<OwnedSemaphorePermit>,
}

impl BlobStream {
    /// Ends the stream, releasing its download permit, with `item`.
    fn finish(&mut self, item: Option<Result<Bytes>>) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        self.permit = None;
        Poll::Ready(item)
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if this.skip > 0 {
                        let n = usize::try_from(this.skip)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len());
                        chunk = chunk.slice(n..);
                        this.skip -= n as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    let n = chunk.len() as u64;
                    if n > this.remaining {
                        let err = Error::SizeMismatch {
                            digest: this.digest.clone(),
                            expected: this.size,
                            actual: this.size - this.remaining + n,
                        };
                        return this.finish(Some(Err(err)));
                    }
                    this.remaining -= n;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let err = Error::Http {
                        url: this.url.clone(),
                        source: Box::new(e),
                    };
                    return this.finish(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    if this.remaining > 0 {
                        let err = Error::SizeMismatch {
                            digest: this.digest.clone(),
                            expected: this.size,
                            actual: this.size - this.remaining,
                        };
                        return this.finish(Some(Err(err)));
                    }
                    return this.finish(None);
                }
            }
        }
    }
}

/// An upload body that must be exactly `size` bytes long.
struct SizedStream<S> {
    inner: S,
    remaining: u64,
    size: u64,
    digest: Digest,
}

impl<S> Stream for SizedStream<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::result::Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if n > this.remaining {
                    let actual = this.size - this.remaining + n;
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(Error::SizeMismatch {
                        digest: this.digest.clone(),
                        expected: this.size,
                        actual,
                    })));
                }
                this.remaining -= n;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Io {
                path: "<push reader>".into(),
                source: e,
            }))),
            Poll::Ready(None) if this.remaining > 0 => {
                let actual = this.size - this.remaining;
                this.remaining = 0;
                Poll::Ready(Some(Err(Error::SizeMismatch {
                    digest: this.digest.clone(),
                    expected: this.size,
                    actual,
                })))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Checks `data` against `desc`'s size and digest.
fn verify(desc: &Descriptor, data: &[u8]) -> Result<()> {
    if data.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: data.len() as u64,
        });
    }
    let actual = desc.digest.algorithm().digest(data);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// `host[:port]` of `url`, the key for auth state and credentials.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// The `Content-Type` without parameters.
fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

/// A header as a number (from the header map: for `HEAD`, the body size
/// hint is 0 whatever `Content-Length` says).
fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The upload `Location`, resolved against the request URL.
fn location(resp: &reqwest::Response, base: &Url) -> Option<Url> {
    let loc = resp.headers().get(LOCATION)?.to_str().ok()?;
    base.join(loc).ok()
}

/// Reads a whole body of at most `limit` bytes; more is
/// [`Error::FailedPrecondition`].
async fn read_limited(resp: reqwest::Response, limit: u64, url: &Url) -> Result<Bytes> {
    if header_u64(&resp, CONTENT_LENGTH.as_str()).is_some_and(|n| n > limit) {
        return Err(Error::FailedPrecondition(format!(
            "{url}: response larger than {limit} bytes"
        )));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Http {
            url: url.to_string(),
            source: Box::new(e),
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Error::FailedPrecondition(format!(
                "{url}: response larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// The first [`MAX_ERROR_BODY`] bytes of a body.
async fn read_error_body(resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out
}

/// The error for an unsuccessful response about `what` from `host`.
async fn status_error(resp: reqwest::Response, host: &str, what: String) -> Error {
    let status = resp.status();
    let url = resp.url().to_string();
    let body = read_error_body(resp).await;
    let errors = RegistryErrors::parse(&body);
    let unknown = ["MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"]
        .iter()
        .any(|c| errors.has_code(c));
    match status {
        StatusCode::NOT_FOUND => Error::NotFound { what, errors },
        _ if unknown => Error::NotFound { what, errors },
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            host: host.to_owned(),
            realm: None,
            errors,
        },
        StatusCode::FORBIDDEN => Error::PermissionDenied {
            host: host.to_owned(),
            what,
            errors,
        },
        _ if !errors.0.is_empty() => Error::Registry {
            url,
            status: status.as_u16(),
            errors,
        },
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned();
            Error::UnexpectedStatus {
                url,
                status: status.as_u16(),
                body: text,
            }
        }
    }
}

/// Classifies a failed exchange: TLS, unreachable host, or other HTTP error.
fn transport_error(e: reqwest::Error, host: &str, url: &Url) -> Error {
    if let Some(message) = tls_message(&e) {
        return Error::Tls {
            host: host.to_owned(),
            message,
        };
    }
    if e.is_connect() || e.is_timeout() {
        return Error::Unavailable {
            host: host.to_owned(),
            source: Box::new(e.without_url()),
        };
    }
    Error::Http {
        url: url.to_string(),
        source: Box::new(e.without_url()),
    }
}

/// The rustls error somewhere in `e`'s chain, if any. (hyper-rustls wraps it
/// in `io::Error`s, whose `source` skips the wrapped error, so those are
/// opened with `get_ref`.)
fn tls_message(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn resolve_accept_lists_every_manifest_type() {
        for t in [
            OCI_INDEX,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_MANIFEST,
        ] {
            assert!(RESOLVE_ACCEPT.contains(t), "{t}");
        }
    }

    #[test]
    fn verify_checks_size_then_digest() {
        let desc = Descriptor::of(OCI_MANIFEST, b"{}");
        verify(&desc, b"{}").unwrap();
        assert!(matches!(
            verify(&desc, b"{ }"),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            verify(&desc, b"[]"),
            Err(Error::DigestMismatch { .. })
        ));
    }

    /// A blob stream over `chunks`, expecting `size` bytes after `skip`.
    fn blob_stream(chunks: &[&'static [u8]], skip: u64, size: u64, offset: u64) -> BlobStream {
        let items: Vec<reqwest::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        BlobStream {
            url: "http://test/blob".into(),
            inner: Box::pin(futures::stream::iter(items)),
            skip,
            remaining: size - offset,
            size,
            digest: Digest::of(b""),
            done: false,
            permit: Some(permit),
        }
    }

    async fn collect(mut s: BlobStream) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn blob_stream_skips_when_the_range_was_ignored() {
        // The server sent the whole 10 bytes; the caller asked from 4.
        let s = blob_stream(&[b"012", b"34", b"56789"], 4, 10, 4);
        assert_eq!(collect(s).await.unwrap(), b"456789");
        let s = blob_stream(&[b"0123456789"], 0, 10, 0);
        assert_eq!(collect(s).await.unwrap(), b"0123456789");
    }

    #[tokio::test]
    async fn blob_stream_fails_on_wrong_lengths() {
        let long = blob_stream(&[b"0123", b"456789", b"x"], 0, 10, 0);
        assert!(matches!(
            collect(long).await,
            Err(Error::SizeMismatch { actual: 11, .. })
        ));
        let short = blob_stream(&[b"0123"], 0, 10, 0);
        assert!(matches!(
            collect(short).await,
            Err(Error::SizeMismatch { actual: 4, .. })
        ));
    }

    #[test]
    fn authority_keeps_the_port() {
        let u = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_eq!(authority(&u), "127.0.0.1:5000");
        let u = Url::parse("https://registry-1.docker.io/v2/").unwrap();
        assert_eq!(authority(&u), "registry-1.docker.io");
    }
}
