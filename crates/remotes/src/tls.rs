//! One pooled HTTP client per TLS configuration.
//!
//! reqwest builds the rustls configuration: the system's trust store
//! (`rustls-native-certs`) plus the endpoint's extra CAs, an optional client
//! certificate, and, for `skip_verify`, rustls' "dangerous" custom verifier
//! that accepts any server certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hosts::RegistryHost;
use crate::{Error, Result};

/// The TLS settings that make two endpoints need different clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsKey {
    skip_verify: bool,
    ca: Vec<PathBuf>,
    client: Vec<(PathBuf, Option<PathBuf>)>,
}

impl TlsKey {
    /// The settings of `host` (none for plain HTTP).
    pub(crate) fn of(host: &RegistryHost) -> TlsKey {
        if host.scheme != "https" {
            return TlsKey::default();
        }
        TlsKey {
            skip_verify: host.skip_verify.unwrap_or(false),
            ca: host.ca.clone(),
            client: host.client.clone(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Builds a client for `key`. Connections are pooled per client and reused
/// across requests (keep-alive, HTTP/2 where the server offers it).
pub(crate) fn build_client(key: &TlsKey, user_agent: &str) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::limited(10));
    if key.skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    for path in &key.ca {
        let pem = read(path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::InvalidArgument(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    // rustls takes one client certificate; the first pair wins, as the
    // server would pick only one anyway.
    if let Some((cert, key_file)) = key.client.first() {
        if key.client.len() > 1 {
            tracing::warn!(cert = %cert.display(), "several client certificates configured, using the first");
        }
        let mut pem = read(cert)?;
        if let Some(k) = key_file {
            pem.push(b'\n');
            pem.extend(read(k)?);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            Error::InvalidArgument(format!("client certificate {}: {e}", cert.display()))
        })?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| Error::InvalidArgument(format!("building the HTTP client: {e}")))
}
