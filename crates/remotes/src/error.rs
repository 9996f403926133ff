//! The crate's error type: containerd's categories, with what a user needs
//! to act on (the host, the auth realm, the registry's own error codes).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use berth_types::{Category, ErrorCategory};

use crate::Digest;

/// A boxed error from the HTTP stack (kept opaque so the HTTP client is not
/// part of the API).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The result of remotes operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad reference, descriptor, option or `hosts.toml`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The registry does not have it (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, 404).
    #[error("{what}: not found{}", detail(.errors))]
    NotFound {
        /// The reference or content asked for.
        what: String,
        /// What the registry said, if it said anything.
        errors: RegistryErrors,
    },

    /// The registry wants credentials that were not given or were refused.
    #[error(
        "{host}: unauthorized{}{}: pass credentials with --user",
        realm.as_deref().map(|r| format!(" (auth realm {r})")).unwrap_or_default(),
        detail(.errors)
    )]
    Unauthorized {
        /// The registry host.
        host: String,
        /// The realm of its challenge (the token server, or the basic realm).
        realm: Option<String>,
        /// What the registry or token server said.
        errors: RegistryErrors,
    },

    /// The credentials were accepted but do not allow this (403, `DENIED`).
    #[error("{host}: permission denied for {what}{}", detail(.errors))]
    PermissionDenied {
        /// The registry host.
        host: String,
        /// The reference or content asked for.
        what: String,
        /// What the registry said.
        errors: RegistryErrors,
    },

    /// Any other error status with a registry error body.
    #[error("{url}: HTTP {status}{}", detail(.errors))]
    Registry {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's errors.
        errors: RegistryErrors,
    },

    /// An error status without a registry error body.
    #[error("{url}: unexpected HTTP status {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    UnexpectedStatus {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// The TLS handshake failed (a plain-HTTP registry, an unknown CA, ...).
    #[error(
        "TLS error talking to {host}: {message} (for a registry without TLS use --plain-http or an \
         http:// server in hosts.toml; for a self-signed certificate set `ca` or `skip_verify = true` \
         in certs.d/{host}/hosts.toml)"
    )]
    Tls {
        /// The host.
        host: String,
        /// The TLS error.
        message: String,
    },

    /// The host could not be reached (connection refused, DNS, timeout).
    #[error("cannot connect to {host}: {}", root_cause(.source.as_ref()))]
    Unavailable {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// The HTTP exchange failed after connecting (reset, bad response, ...).
    #[error("{url}: {}", root_cause(.source.as_ref()))]
    Http {
        /// The request's URL.
        url: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// Content did not have the size its descriptor says.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The content's digest.
        digest: Digest,
        /// The size from the descriptor.
        expected: u64,
        /// The size seen (so far).
        actual: u64,
    },

    /// Content did not have the digest its descriptor says.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest from the descriptor or reference.
        expected: Digest,
        /// The digest of the data.
        actual: Digest,
    },

    /// An operation that cannot go on in the current state (e.g. a streamed
    /// upload that would have to be sent twice).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),

    /// Reading a configuration or certificate file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

impl From<berth_types::DigestError> for Error {
    fn from(e: berth_types::DigestError) -> Error {
        Error::InvalidArgument(e.to_string())
    }
}

impl ErrorCategory for Error {
    fn category(&self) -> Category {
        match self {
            Error::InvalidArgument(_) => Category::InvalidArgument,
            Error::NotFound { .. } => Category::NotFound,
            Error::Unauthorized { .. } => Category::Unauthenticated,
            Error::PermissionDenied { .. } => Category::PermissionDenied,
            Error::FailedPrecondition(_) => Category::FailedPrecondition,
            // A registry that answers badly, cannot be reached or sends
            // content that does not check out: try again, or another host.
            Error::Registry { .. }
            | Error::UnexpectedStatus { .. }
            | Error::Tls { .. }
            | Error::Unavailable { .. }
            | Error::Http { .. }
            | Error::SizeMismatch { .. }
            | Error::DigestMismatch { .. }
            | Error::Io { .. } => Category::Unavailable,
        }
    }
}

/// The innermost error of a chain: what actually happened ("connection
/// refused"), without the wrappers' "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `": CODE: message; ..."` or nothing.
fn detail(errors: &RegistryErrors) -> String {
    if errors.0.is_empty() {
        String::new()
    } else {
        format!(": {errors}")
    }
}

/// One entry of a registry error body (`{"errors":[{"code","message","detail"}]}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegistryError {
    /// The error code, e.g. `MANIFEST_UNKNOWN`.
    #[serde(default)]
    pub code: String,
    /// The human message.
    #[serde(default)]
    pub message: String,
}

/// The errors of a registry error body, possibly none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryErrors(pub Vec<RegistryError>);

impl RegistryErrors {
    /// Parses a registry error body; empty if it is not one.
    pub fn parse(body: &[u8]) -> RegistryErrors {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            errors: Vec<RegistryError>,
        }
        serde_json::from_slice::<Body>(body)
            .map(|b| RegistryErrors(b.errors))
            .unwrap_or_default()
    }

    /// Whether any entry has code `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.0.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for RegistryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => write!(f, "{}: {}", e.code, e.message)?,
                (false, true) => f.write_str(&e.code)?,
                (true, _) => f.write_str(&e.message)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_parse_and_display() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        let errors = RegistryErrors::parse(body);
        assert!(errors.has_code("MANIFEST_UNKNOWN"));
        let e = Error::NotFound {
            what: "127.0.0.1:5000/a:x".into(),
            errors,
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5000/a:x: not found: MANIFEST_UNKNOWN: manifest unknown"
        );
        assert!(RegistryErrors::parse(b"<html>").0.is_empty());
    }

    #[test]
    fn unauthorized_names_host_realm_and_flag() {
        let e = Error::Unauthorized {
            host: "r.example".into(),
            realm: Some("https://auth.example/token".into()),
            errors: RegistryErrors::default(),
        };
        assert_eq!(
            e.to_string(),
            "r.example: unauthorized (auth realm https://auth.example/token): pass credentials with --user"
        );
    }
}
