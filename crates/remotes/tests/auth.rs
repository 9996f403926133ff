//! Registry authentication against a small in-test HTTP server that plays
//! both a registry (answering 401 with a challenge) and its token server.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use berth_remotes::auth::{Credential, StaticCredentials};
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Digest, Error, Resolver};
use berth_types::media::OCI_MANIFEST;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `base64("alice:s3cret")`.
const ALICE_BASIC: &str = "Basic YWxpY2U6czNjcmV0";
const MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

/// One request the server saw.
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    target: String,
    authorization: Option<String>,
}

/// The fake registry + token server; stops when dropped.
struct AuthServer {
    host: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthServer {
    async fn start() -> Result<AuthServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (h, hs) = (host.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (h, hs) = (h.clone(), hs.clone());
                tokio::spawn(async move {
                    let _ = handle(conn, &h, &hs).await;
                });
            }
        });
        Ok(AuthServer { host, hits, task })
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits lock").clone()
    }

    fn token_requests(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.target.starts_with("/token"))
            .collect()
    }
}

/// Serves one request per connection (`Connection: close`).
async fn handle(mut conn: TcpStream, host: &str, hits: &Mutex<Vec<Hit>>) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 << 10 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    hits.lock().expect("hits lock").push(Hit {
        method: method.clone(),
        target: target.clone(),
        authorization: authorization.clone(),
    });

    let realm = format!("http://{host}/token");
    let auth = authorization.as_deref();
    let unauthorized_body =
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = if target
        .starts_with("/token")
    {
        match auth {
            None => (
                "200 OK",
                vec![],
                br#"{"token":"tok-anon","expires_in":300}"#.to_vec(),
            ),
            Some(ALICE_BASIC) => (
                "200 OK",
                vec![],
                br#"{"access_token":"tok-alice","expires_in":300}"#.to_vec(),
            ),
            Some(_) => (
                "401 Unauthorized",
                vec![],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_vec(),
            ),
        }
    } else if let Some(rest) = target.strip_prefix("/v2/basic/") {
        let _ = rest;
        if auth == Some(ALICE_BASIC) {
            manifest_response()
        } else {
            (
                "401 Unauthorized",
                vec![(
                    "WWW-Authenticate".into(),
                    r#"Basic realm="berth-test""#.into(),
                )],
                unauthorized_body.as_bytes().to_vec(),
            )
        }
    } else if let Some(rest) = target.strip_prefix("/v2/") {
        let repo = rest.split("/manifests/").next().unwrap_or_default();
        let allowed = match repo {
            "public/x" => auth == Some("Bearer tok-anon") || auth == Some("Bearer tok-alice"),
            _ => auth == Some("Bearer tok-alice"),
        };
        if allowed {
            manifest_response()
        } else {
            (
                "401 Unauthorized",
                vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        r#"Bearer realm="{realm}",service="berth-test",scope="repository:{repo}:pull""#
                    ),
                )],
                unauthorized_body.as_bytes().to_vec(),
            )
        }
    } else {
        ("404 Not Found", vec![], Vec::new())
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&body);
    }
    conn.write_all(&out).await?;
    conn.shutdown().await?;
    Ok(())
}

fn manifest_response() -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    (
        "200 OK",
        vec![
            ("Content-Type".into(), OCI_MANIFEST.into()),
            (
                "Docker-Content-Digest".into(),
                Digest::of(MANIFEST).to_string(),
            ),
        ],
        MANIFEST.to_vec(),
    )
}

fn alice() -> StaticCredentials {
    StaticCredentials::new().with_any_host(Credential::new("alice", "s3cret"))
}

#[tokio::test]
async fn anonymous_bearer_token_is_fetched_once_per_scope() -> Result<()> {
    let srv = AuthServer::start().await?;
    let client = Registry::new(RegistryOptions::default())?;
    let (_, desc) = client.resolve(&format!("{}/public/x:v1", srv.host)).await?;
    assert_eq!(desc.digest, Digest::of(MANIFEST));
    assert_eq!(desc.size, MANIFEST.len() as u64);
    assert_eq!(desc.media_type, OCI_MANIFEST);

    let hits = srv.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert_eq!(
        (hits[0].method.as_str(), hits[0].authorization.as_deref()),
        ("HEAD", None)
    );
    assert_eq!(
        hits[1].target,
        "/token?service=berth-test&scope=repository%3Apublic%2Fx%3Apull"
    );
    assert_eq!(hits[1].authorization, None);
    assert_eq!(hits[2].authorization.as_deref(), Some("Bearer tok-anon"));

    // Same scope: the cached token is sent straight away.
    client.resolve(&format!("{}/public/x:v2", srv.host)).await?;
    assert_eq!(srv.token_requests().len(), 1);
    let last = srv.hits().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer tok-anon"));
    Ok(())
}

#[tokio::test]
async fn credentials_go_to_the_token_server() -> Result<()> {
    let srv = AuthServer::start().await?;
    let client = Registry::new(RegistryOptions::default().with_credentials(alice()))?;
    client
        .resolve(&format!("{}/private/x:v1", srv.host))
        .await?;
    let tokens = srv.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].authorization.as_deref(), Some(ALICE_BASIC));
    let last = srv.hits().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer tok-alice"));
    Ok(())
}

#[tokio::test]
async fn refused_access_is_unauthorized_after_one_retry() -> Result<()> {
    let srv = AuthServer::start().await?;
    let realm = format!("http://{}/token", srv.host);

    // Anonymous token, but the repository wants alice: one retry, then an error.
    let client = Registry::new(RegistryOptions::default())?;
    let err = client
        .resolve(&format!("{}/private/x:v1", srv.host))
        .await
        .expect_err("unauthorized");
    match &err {
        Error::Unauthorized { host, realm: r, .. } => {
            assert_eq!(host, &srv.host);
            assert_eq!(r.as_deref(), Some(realm.as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("--user"), "{err}");
    let manifest_requests = srv
        .hits()
        .iter()
        .filter(|h| h.target.contains("/manifests/"))
        .count();
    assert_eq!(manifest_requests, 2);

    // Wrong credentials: the token server refuses them.
    let wrong = StaticCredentials::new().with_any_host(Credential::new("alice", "wrong"));
    let client = Registry::new(RegistryOptions::default().with_credentials(wrong))?;
    let err = client
        .resolve(&format!("{}/private/x:v1", srv.host))
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("bad credentials"), "{err}");
    Ok(())
}

#[tokio::test]
async fn basic_auth() -> Result<()> {
    let srv = AuthServer::start().await?;
    let reference = format!("{}/basic/x:v1", srv.host);

    let client = Registry::new(RegistryOptions::default().with_credentials(alice()))?;
    client.resolve(&reference).await?;
    let last = srv.hits().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some(ALICE_BASIC));
    assert!(srv.token_requests().is_empty());

    // Wrong credentials: one retry with them, then the basic realm is named.
    let wrong = StaticCredentials::new().with_any_host(Credential::new("alice", "wrong"));
    let client = Registry::new(RegistryOptions::default().with_credentials(wrong))?;
    let err = client
        .resolve(&reference)
        .await
        .expect_err("wrong credentials");
    match &err {
        Error::Unauthorized { realm, .. } => assert_eq!(realm.as_deref(), Some("berth-test")),
        other => panic!("{other:?}"),
    }

    let anonymous = Registry::new(RegistryOptions::default())?;
    let err = anonymous
        .resolve(&reference)
        .await
        .expect_err("no credentials");
    match &err {
        Error::Unauthorized { realm, .. } => assert_eq!(realm.as_deref(), Some("berth-test")),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() -> Result<()> {
    let options = RegistryOptions::default().with_credentials(alice());
    let client = Registry::new(options.clone())?;
    let shown = format!("{options:?} {client:?} {:?}", alice());
    assert!(!shown.contains("s3cret"), "{shown}");
    Ok(())
}
