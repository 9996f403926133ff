//! Registry authentication: credentials from the caller, the
//! `WWW-Authenticate` challenge, basic auth and bearer tokens.
//!
//! The flow is the registry v2 token protocol (the same containerd follows):
//!
//! 1. A request goes out without credentials (or with what is cached for its
//!    host and scope).
//! 2. A `401` carries `WWW-Authenticate: Bearer realm="https://auth/token",
//!    service="registry",scope="repository:foo:pull"` (or `Basic realm=...`).
//! 3. For bearer, a token is fetched: `GET realm?service=..&scope=..`, with
//!    the caller's [`Credentials`] for the host as basic auth if it has any
//!    (anonymous otherwise); or, when the caller's secret is an identity
//!    token (empty user name), an OAuth2 `POST realm` with
//!    `grant_type=refresh_token`. Tokens are cached per host and scope until
//!    they expire.
//! 4. The request is retried once; a second `401` is
//!    [`crate::Error::Unauthorized`].
//!
//! Secrets and tokens are never logged: [`Secret`] and [`Credential`] print
//! as `<redacted>`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::error::{Error, RegistryErrors, Result};

/// A secret string (password, identity token, bearer token) that never
/// shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself; use only to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

/// A user name and secret for one registry host.
///
/// An empty `username` with a secret means the secret is an identity
/// (refresh) token, as in Docker's credential helpers.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name; may be empty for an identity token.
    pub username: String,
    /// The password or identity token.
    pub secret: Secret,
}

impl Credential {
    /// A user name and password.
    pub fn new(username: impl Into<String>, secret: impl Into<Secret>) -> Credential {
        Credential {
            username: username.into(),
            secret: secret.into(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Supplies credentials by registry host (`host[:port]` of the endpoint
/// being talked to, e.g. `registry-1.docker.io`).
///
/// Implemented for closures `Fn(&str) -> Option<Credential>`.
pub trait Credentials: Send + Sync {
    /// The credential for `host`, if the caller has one.
    fn credentials(&self, host: &str) -> Option<Credential>;
}

impl<F> Credentials for F
where
    F: Fn(&str) -> Option<Credential> + Send + Sync,
{
    fn credentials(&self, host: &str) -> Option<Credential> {
        self(host)
    }
}

/// Credentials from a fixed table, with an optional fallback for any host
/// (what `--user` on the command line gives).
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials {
    by_host: HashMap<String, Credential>,
    any: Option<Credential>,
}

impl StaticCredentials {
    /// No credentials.
    pub fn new() -> StaticCredentials {
        StaticCredentials::default()
    }

    /// Adds `credential` for `host`.
    pub fn with_host(
        mut self,
        host: impl Into<String>,
        credential: Credential,
    ) -> StaticCredentials {
        self.by_host.insert(host.into(), credential);
        self
    }

    /// Uses `credential` for every host without its own entry.
    pub fn with_any_host(mut self, credential: Credential) -> StaticCredentials {
        self.any = Some(credential);
        self
    }
}

impl Credentials for StaticCredentials {
    fn credentials(&self, host: &str) -> Option<Credential> {
        self.by_host.get(host).or(self.any.as_ref()).cloned()
    }
}

/// An authentication scheme of a `WWW-Authenticate` challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Basic`.
    Basic,
    /// `Bearer` (token server).
    Bearer,
}

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme the registry asks for.
    pub scheme: AuthScheme,
    /// Lower-cased parameter names to values.
    pub params: HashMap<String, String>,
}

/// Parses `WWW-Authenticate` header values (one challenge per value, as
/// registries send them); unknown schemes are skipped; bearer sorts first.
pub fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = values.into_iter().filter_map(parse_challenge).collect();
    out.sort_by_key(|c| match c.scheme {
        AuthScheme::Bearer => 0,
        AuthScheme::Basic => 1,
    });
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_control() && !" \t\"(),/:;<=>?@[]\\{}".contains(c)
}

/// `scheme k=v, k="quoted \" v"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let s = header.trim_start();
    let end = s.find(|c| !is_token_char(c)).unwrap_or(s.len());
    let scheme = match s[..end].to_ascii_lowercase().as_str() {
        "basic" => AuthScheme::Basic,
        "bearer" => AuthScheme::Bearer,
        _ => return None,
    };
    let mut rest = &s[end..];
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let kend = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
        if kend == 0 {
            break;
        }
        let key = rest[..kend].to_ascii_lowercase();
        rest = rest[kend..].trim_start();
        let Some(after_eq) = rest.strip_prefix('=') else {
            break;
        };
        rest = after_eq.trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let Some(consumed) = closed else {
                break; // unterminated quote: ignore the rest
            };
            value = v;
            rest = &quoted[consumed..];
        } else {
            let vend = rest
                .find(|c| !is_token_char(c) && c != '/' && c != ':')
                .unwrap_or(rest.len());
            value = rest[..vend].to_owned();
            rest = &rest[vend..];
        }
        params.insert(key, value);
    }
    Some(Challenge { scheme, params })
}

/// What to put in a request's `Authorization` header.
#[derive(Debug, Clone)]
pub(crate) enum AuthHeader {
    /// `Basic base64(user:secret)`.
    Basic(Credential),
    /// `Bearer <token>`.
    Bearer(Secret),
}

/// A fetched token and when to stop using it.
#[derive(Debug)]
struct Token {
    value: Secret,
    expires: Instant,
}

/// A host's bearer setup: where tokens come from, and the tokens so far.
#[derive(Debug)]
struct BearerState {
    realm: String,
    service: Option<String>,
    /// Scopes the challenge itself asked for, added to every token request.
    challenge_scopes: Vec<String>,
    /// Tokens by the space-joined sorted scope list.
    tokens: HashMap<String, Arc<OnceCell<Token>>>,
}

/// How one host wants requests authorised.
#[derive(Debug)]
enum HostAuth {
    /// The credential, and the realm of the challenge.
    Basic(Credential, Option<String>),
    Bearer(BearerState),
}

/// Authorises requests per host: remembers each host's challenge and caches
/// bearer tokens per scope.
pub(crate) struct Authorizer {
    credentials: Option<Arc<dyn Credentials>>,
    hosts: Mutex<HashMap<String, HostAuth>>,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<callback>"),
            )
            .finish_non_exhaustive()
    }
}

/// Tokens without `expires_in` live 60 s (the token spec's default); they
/// are dropped a little early so none expires in flight.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl Authorizer {
    /// An authoriser using `credentials`, if any.
    pub(crate) fn new(credentials: Option<Arc<dyn Credentials>>) -> Authorizer {
        Authorizer {
            credentials,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The `Authorization` for a request to `host` needing `scopes`, or
    /// `None` if the host has not asked for any. May fetch a token through
    /// `client`.
    pub(crate) async fn authorize(
        &self,
        client: &reqwest::Client,
        host: &str,
        scopes: &[String],
    ) -> Result<Option<AuthHeader>> {
        let (cell, request) = {
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            match hosts.get_mut(host) {
                None => return Ok(None),
                Some(HostAuth::Basic(c, _)) => return Ok(Some(AuthHeader::Basic(c.clone()))),
                Some(HostAuth::Bearer(b)) => {
                    let mut all: Vec<String> =
                        scopes.iter().chain(&b.challenge_scopes).cloned().collect();
                    all.sort();
                    all.dedup();
                    let key = all.join(" ");
                    let cell = b.tokens.entry(key).or_default();
                    if cell.get().is_some_and(|t| t.expires <= Instant::now()) {
                        *cell = Arc::default();
                    }
                    let request = TokenRequest {
                        host: host.to_owned(),
                        realm: b.realm.clone(),
                        service: b.service.clone(),
                        scopes: all,
                    };
                    (cell.clone(), request)
                }
            }
        };
        // Concurrent requests for the same scope wait for one token fetch.
        let token = cell
            .get_or_try_init(|| self.fetch_token(client, &request))
            .await?;
        Ok(Some(AuthHeader::Bearer(token.value.clone())))
    }

    /// Takes in a `401` from `host` for a request that needed `scopes`:
    /// records its challenge so the retry is authorised, dropping any token
    /// the failed request used. `errors` (the 401's body) go into the error
    /// if the challenge cannot be answered.
    ///
    /// Errors with [`Error::Unauthorized`] if no challenge can be answered
    /// (basic auth without credentials, an unknown scheme).
    pub(crate) fn add_challenge(
        &self,
        host: &str,
        www_authenticate: &[&str],
        errors: RegistryErrors,
    ) -> Result<()> {
        let challenges = parse_challenges(www_authenticate.iter().copied());
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        for c in &challenges {
            match c.scheme {
                AuthScheme::Bearer => {
                    let Some(realm) = c.params.get("realm").filter(|r| !r.is_empty()) else {
                        continue;
                    };
                    let challenge_scopes = c
                        .params
                        .get("scope")
                        .map(|s| {
                            s.split(' ')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    tracing::debug!(host, realm = %realm, "bearer challenge");
                    // A new challenge replaces the host's state, and with it
                    // every cached token (the failed one included).
                    hosts.insert(
                        host.to_owned(),
                        HostAuth::Bearer(BearerState {
                            realm: realm.clone(),
                            service: c.params.get("service").cloned(),
                            challenge_scopes,
                            tokens: HashMap::new(),
                        }),
                    );
                    return Ok(());
                }
                AuthScheme::Basic => {
                    if let Some(cred) = self.credentials.as_ref().and_then(|c| c.credentials(host))
                        && !cred.username.is_empty()
                        && !cred.secret.expose().is_empty()
                    {
                        tracing::debug!(host, "basic challenge");
                        hosts.insert(
                            host.to_owned(),
                            HostAuth::Basic(cred, c.params.get("realm").cloned()),
                        );
                        return Ok(());
                    }
                }
            }
        }
        hosts.remove(host);
        Err(Error::Unauthorized {
            host: host.to_owned(),
            realm: challenges
                .first()
                .and_then(|c| c.params.get("realm").cloned()),
            errors,
        })
    }

    /// The realm the host's last challenge named, for error messages.
    pub(crate) fn realm(&self, host: &str) -> Option<String> {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        match hosts.get(host) {
            Some(HostAuth::Bearer(b)) => Some(b.realm.clone()),
            Some(HostAuth::Basic(_, realm)) => realm.clone(),
            None => None,
        }
    }

    /// Fetches a token: OAuth2 refresh-token `POST` for an identity token,
    /// else `GET` with optional basic credentials.
    async fn fetch_token(&self, client: &reqwest::Client, req: &TokenRequest) -> Result<Token> {
        let cred = self
            .credentials
            .as_ref()
            .and_then(|c| c.credentials(&req.host));
        let unauthorized = |errors| Error::Unauthorized {
            host: req.host.clone(),
            realm: Some(req.realm.clone()),
            errors,
        };
        let mut url = url::Url::parse(&req.realm).map_err(|e| {
            Error::InvalidArgument(format!(
                "{}: token realm {:?} is not a URL: {e}",
                req.host, req.realm
            ))
        })?;
        tracing::debug!(host = %req.host, realm = %req.realm, scopes = ?req.scopes, "fetching token");
        let builder = match &cred {
            Some(c) if c.username.is_empty() && !c.secret.expose().is_empty() => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", c.secret.expose());
                form.append_pair("client_id", "berth");
                if let Some(s) = &req.service {
                    form.append_pair("service", s);
                }
                if !req.scopes.is_empty() {
                    form.append_pair("scope", &req.scopes.join(" "));
                }
                client
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(form.finish())
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &req.service {
                        q.append_pair("service", s);
                    }
                    for s in &req.scopes {
                        q.append_pair("scope", s);
                    }
                }
                let b = client.get(url);
                match &cred {
                    Some(c) if !c.username.is_empty() => {
                        b.basic_auth(&c.username, Some(c.secret.expose()))
                    }
                    _ => b,
                }
            }
        };
        let resp = builder.send().await.map_err(|e| Error::Http {
            url: req.realm.clone(),
            source: Box::new(e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::Http {
            url: req.realm.clone(),
            source: Box::new(e),
        })?;
        if !status.is_success() {
            tracing::debug!(host = %req.host, %status, "token request refused");
            return Err(unauthorized(RegistryErrors::parse(&body)));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::InvalidArgument(format!("{}: bad token response: {e}", req.realm))
        })?;
        let value = if parsed.access_token.is_empty() {
            parsed.token
        } else {
            parsed.access_token
        };
        if value.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: the token server sent no token",
                req.realm
            )));
        }
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(Token {
            value: Secret(value),
            expires: Instant::now()
                + lifetime
                    .saturating_sub(TOKEN_EXPIRY_MARGIN)
                    .max(Duration::from_secs(1)),
        })
    }
}

/// The inputs of one token fetch.
#[derive(Debug)]
struct TokenRequest {
    host: String,
    realm: String,
    service: Option<String>,
    scopes: Vec<String>,
}

/// The token scope for pulling (and pushing) repository `repo`.
pub(crate) fn repository_scope(repo: &str, push: bool) -> String {
    if push {
        format!("repository:{repo}:pull,push")
    } else {
        format!("repository:{repo}:pull")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let cs = parse_challenges([
            r#"Basic realm="Registry Realm""#,
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        ]);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].scheme, AuthScheme::Bearer);
        assert_eq!(cs[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(cs[0].params["service"], "registry.docker.io");
        assert_eq!(cs[0].params["scope"], "repository:library/busybox:pull");
        assert_eq!(cs[1].scheme, AuthScheme::Basic);
        assert_eq!(cs[1].params["realm"], "Registry Realm");
    }

    #[test]
    fn parses_odd_spacing_escapes_and_tokens() {
        let cs = parse_challenges([
            r#"bearer  Realm = "http://a/t\"x" ,error=insufficient_scope, scope=repository:a:pull"#,
            "Negotiate abc",
            "",
            r#"Bearer realm="unterminated"#,
        ]);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].params["realm"], "http://a/t\"x");
        assert_eq!(cs[0].params["error"], "insufficient_scope");
        assert_eq!(cs[0].params["scope"], "repository:a:pull");
        assert!(cs[1].params.is_empty());
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Credential::new("alice", "hunter2");
        let shown = format!(
            "{c:?} {:?}",
            StaticCredentials::new().with_any_host(c.clone())
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"));
    }

    #[test]
    fn basic_without_credentials_is_unauthorized() {
        let a = Authorizer::new(None);
        let err = a
            .add_challenge("h:1", &[r#"Basic realm="r""#], RegistryErrors::default())
            .unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { ref realm, .. } if realm.as_deref() == Some("r"))
        );
        let creds = StaticCredentials::new().with_host("h:1", Credential::new("u", "p"));
        let a = Authorizer::new(Some(Arc::new(creds)));
        a.add_challenge("h:1", &[r#"Basic realm="r""#], RegistryErrors::default())
            .unwrap();
    }
}
