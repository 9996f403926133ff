//! Image references: `busybox` → `docker.io/library/busybox:latest`.
//!
//! The grammar and normalisation are Docker's (`distribution/reference`),
//! which containerd uses through `ParseDockerRef`:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path
//! domain     := host [ ":" port ]          host: DNS-like name, IPv4, or [IPv6]
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! The first `/`-separated element is the domain if it contains a `.` or a
//! `:`, is `localhost`, or has uppercase letters (paths never do); otherwise
//! the domain is `docker.io`. On `docker.io` (and its legacy alias
//! `index.docker.io`) a one-element path gets the `library/` prefix. The whole
//! name (domain, `/`, path) is at most 255 characters.
//!
//! The parser is hand-written, one pass over the bytes; berth-images'
//! `benches/reference.rs` measures it.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::errdefs::{Category, ErrorCategory};

/// The registry that names without a domain belong to (Docker Hub).
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The Docker Hub namespace of official images (`busybox` is `library/busybox`).
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag a reference with neither tag nor digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// The longest a name (domain, `/`, path) may be, in characters.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The longest a tag may be, in characters.
pub const TAG_LENGTH_MAX: usize = 128;

/// A parsed, normalised image reference: `domain/path[:tag][@digest]`.
///
/// Built by [`Reference::parse`] (or `str::parse`), so it is always valid;
/// `Display` prints the canonical form (`docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s` like containerd's `ParseDockerRef`.
    ///
    /// A reference with neither tag nor digest gets the tag `latest`; one
    /// with both keeps only the digest (the digest is what gets pulled).
    /// Use [`Reference::parse_normalized`] to keep exactly what was written.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_normalized(s)?;
        if r.digest.is_some() {
            r.tag = None;
        } else if r.tag.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// Parses and normalises `s` like `ParseNormalizedNamed`: the domain and
    /// `library/` are filled in, but the tag and digest are kept as written
    /// (both, one, or none).
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        parse(s).map_err(|kind| ReferenceError {
            input: s.to_owned(),
            kind,
        })
    }

    /// The registry host, with its port if any (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path below the domain (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The repository, `domain/path` (containerd's `reference.Spec.Locator`).
    pub fn locator(&self) -> String {
        let mut s = String::with_capacity(self.domain.len() + 1 + self.path.len());
        s.push_str(&self.domain);
        s.push('/');
        s.push_str(&self.path);
        s
    }

    /// What the reference points at within its repository, as containerd's
    /// `reference.Spec.Object`: `tag`, `@digest`, `tag@digest`, or empty.
    pub fn object(&self) -> String {
        let mut s = String::new();
        if let Some(tag) = &self.tag {
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest.as_str());
        }
        s
    }

    /// The short form Docker shows: `busybox:latest`, `user/app:1`,
    /// `localhost:5000/x@sha256:...` (Docker Hub's domain and `library/`
    /// dropped).
    pub fn familiar(&self) -> String {
        let mut s = String::new();
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => s.push_str(rest),
                _ => s.push_str(&self.path),
            }
        } else {
            s.push_str(&self.domain);
            s.push('/');
            s.push_str(&self.path);
        }
        self.push_object(&mut s);
        s
    }

    /// This reference with `tag` as its tag (the digest is kept).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag).map_err(|kind| ReferenceError {
            input: format!("{}:{tag}", self.locator()),
            kind,
        })?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// This reference with `digest` as its digest (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Just the repository, without tag or digest.
    pub fn name_only(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    fn push_object(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest.as_str());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.domain)?;
        f.write_str("/")?;
        f.write_str(&self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// Same as [`Reference::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// A reference that does not parse: the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {kind}")]
pub struct ReferenceError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub kind: ReferenceErrorKind,
}

impl ErrorCategory for ReferenceError {
    fn category(&self) -> Category {
        Category::InvalidArgument
    }
}

/// What is wrong with a reference, naming the bad part and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceErrorKind {
    /// Nothing was given.
    #[error("empty reference; give a name such as busybox or docker.io/library/busybox:latest")]
    Empty,
    /// Only a tag and/or digest, no repository name.
    #[error("no repository name before the tag or digest")]
    MissingName,
    /// A bare 64-character hex string: an image ID, not a name.
    #[error(
        "a 64-character hex string is an image ID, not a name; refer to content as name@sha256:<hex>"
    )]
    HexIdentifier,
    /// The repository path has uppercase letters.
    #[error("repository name {0:?} must be lowercase")]
    Uppercase(String),
    /// The name is longer than [`NAME_TOTAL_LENGTH_MAX`].
    #[error("repository name is {0} characters, over the limit of 255")]
    NameTooLong(usize),
    /// The domain is not `host[:port]`.
    #[error("registry host {domain:?} is invalid: {why}")]
    InvalidDomain {
        /// The domain as written.
        domain: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A path component breaks the component grammar.
    #[error("path component {component:?} is invalid: {why}")]
    InvalidPath {
        /// The component as written (empty for `//` or a trailing `/`).
        component: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The tag breaks the tag grammar.
    #[error("tag {tag:?} is invalid: {why}")]
    InvalidTag {
        /// The tag as written (possibly cut short in very long input).
        tag: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The digest does not parse.
    #[error("{0}")]
    InvalidDigest(String),
}

type KindResult<T> = Result<T, ReferenceErrorKind>;

fn parse(s: &str) -> KindResult<Reference> {
    if s.is_empty() {
        return Err(ReferenceErrorKind::Empty);
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReferenceErrorKind::HexIdentifier);
    }

    // The digest follows the first '@' (neither name nor tag may hold one).
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(parse_digest(d)?)),
        None => (s, None),
    };
    // The tag follows the last ':' after the last '/', so a port is not a tag.
    let slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(colon) if slash.is_none_or(|sl| colon > sl) => {
            let tag = &name_tag[colon + 1..];
            validate_tag(tag)?;
            (&name_tag[..colon], Some(tag))
        }
        _ => (name_tag, None),
    };
    if name.is_empty() {
        return Err(ReferenceErrorKind::MissingName);
    }

    let (domain, path) = split_docker_domain(name);
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceErrorKind::Uppercase(path.into_owned()));
    }
    if domain != DEFAULT_DOMAIN {
        validate_domain(domain)?;
    }
    validate_path(&path)?;
    let total = domain.len() + 1 + path.len();
    if total > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceErrorKind::NameTooLong(total));
    }

    Ok(Reference {
        domain: domain.to_owned(),
        path: path.into_owned(),
        tag: tag.map(str::to_owned),
        digest,
    })
}

/// Splits a name into domain and path by Docker's rules, adding `library/`
/// on Docker Hub.
fn split_docker_domain(name: &str) -> (&str, std::borrow::Cow<'_, str>) {
    use std::borrow::Cow;
    let (domain, path) = match name.split_once('/') {
        None => (DEFAULT_DOMAIN, name),
        Some((first, rest)) => {
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase())
            {
                if first == LEGACY_DEFAULT_DOMAIN {
                    (DEFAULT_DOMAIN, rest)
                } else {
                    (first, rest)
                }
            } else {
                (DEFAULT_DOMAIN, name)
            }
        }
    };
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        let mut p = String::with_capacity(OFFICIAL_REPO_PREFIX.len() + path.len());
        p.push_str(OFFICIAL_REPO_PREFIX);
        p.push_str(path);
        (domain, Cow::Owned(p))
    } else {
        (domain, Cow::Borrowed(path))
    }
}

fn validate_domain(domain: &str) -> KindResult<()> {
    let bad = |why| {
        Err(ReferenceErrorKind::InvalidDomain {
            domain: domain.to_owned(),
            why,
        })
    };
    // Host part: [IPv6] or dot-separated DNS-like labels; then :port.
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return bad("an IPv6 address must be closed by ']'");
        };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("an IPv6 address in brackets may only hold hex digits and ':'");
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return bad("only a :port may follow an IPv6 address"),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("empty host name");
        }
        for label in host.split('.') {
            if label.is_empty() {
                return bad("empty label between dots");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return bad("host labels may only hold letters, digits and '-'");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("host labels may not start or end with '-'");
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the port must be digits");
    }
    Ok(())
}

fn validate_path(path: &str) -> KindResult<()> {
    for component in path.split('/') {
        validate_component(component).map_err(|why| ReferenceErrorKind::InvalidPath {
            component: component.to_owned(),
            why,
        })?;
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn validate_component(c: &str) -> Result<(), &'static str> {
    let b = c.as_bytes();
    let Some(&first) = b.first() else {
        return Err("empty (a doubled or trailing '/')");
    };
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(first) {
        return Err("must start with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if alnum(x) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        match x {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => {
                return Err(
                    "only lowercase letters, digits and the separators '.', '_', '__', '-' are allowed",
                );
            }
        }
        match b.get(i) {
            None => return Err("must end with a lowercase letter or digit"),
            Some(&n) if !alnum(n) => {
                return Err(
                    "separators ('.', '_', '__', '-'...) must be single and between letters or digits",
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> KindResult<()> {
    let bad = |why| {
        // Very long input is cut in the message; the rule says enough.
        let shown: String = tag.chars().take(140).collect();
        Err(ReferenceErrorKind::InvalidTag { tag: shown, why })
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let Some(&first) = tag.as_bytes().first() else {
        return bad("empty tag after ':'");
    };
    if !word(first) {
        return bad("must start with a letter, digit or '_'");
    }
    if !tag.bytes().all(|b| word(b) || b == b'.' || b == b'-') {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    if tag.len() > TAG_LENGTH_MAX {
        return bad("longer than 128 characters");
    }
    Ok(())
}

fn parse_digest(d: &str) -> KindResult<Digest> {
    Digest::parse(d).map_err(|e| ReferenceErrorKind::InvalidDigest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    #[test]
    fn good_references_normalise_like_parse_docker_ref() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, String)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest".into()),
            (
                "busybox:1.36".into(),
                "docker.io/library/busybox:1.36".into(),
            ),
            ("user/app".into(), "docker.io/user/app:latest".into()),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/user/app:v1".into(),
                "docker.io/user/app:v1".into(),
            ),
            ("localhost/x".into(), "localhost/x:latest".into()),
            ("localhost:5000/x".into(), "localhost:5000/x:latest".into()),
            (
                "127.0.0.1:5000/a/b:tag".into(),
                "127.0.0.1:5000/a/b:tag".into(),
            ),
            ("[::1]:5000/a:t".into(), "[::1]:5000/a:t".into()),
            (
                "ghcr.io/org/team/app:v1.2.3-rc_1".into(),
                "ghcr.io/org/team/app:v1.2.3-rc_1".into(),
            ),
            ("Example.COM/app".into(), "Example.COM/app:latest".into()),
            ("Registry/app".into(), "Registry/app:latest".into()),
            (
                "a--b__c/d.e-1/f_g".into(),
                "docker.io/a--b__c/d.e-1/f_g:latest".into(),
            ),
            // a bare host:port is a Docker Hub name with a tag, as upstream
            (
                "localhost:5000".into(),
                "docker.io/library/localhost:5000".into(),
            ),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            // tag and digest: ParseDockerRef keeps the digest only
            (
                format!("busybox:1.36@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                format!("localhost:5000/x:t@{d}"),
                format!("localhost:5000/x@{d}"),
            ),
        ];
        for (input, want) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
            let again: Reference = want.parse().unwrap();
            assert_eq!(again, r, "{input}: canonical form re-parses to itself");
        }
    }

    #[test]
    fn parts_locator_object_and_familiar() {
        let d = format!("sha256:{HEX}");
        let r = Reference::parse_normalized(&format!("busybox:1.36@{d}")).unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.digest().unwrap().as_str(), d);
        assert_eq!(r.locator(), "docker.io/library/busybox");
        assert_eq!(r.object(), format!("1.36@{d}"));
        assert_eq!(r.familiar(), format!("busybox:1.36@{d}"));

        let cases = [
            ("busybox", "latest", "busybox:latest"),
            ("user/app:1", "1", "user/app:1"),
            ("docker.io/library/a/b", "latest", "library/a/b:latest"),
            ("localhost:5000/x", "latest", "localhost:5000/x:latest"),
        ];
        for (input, object, familiar) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.object(), object, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
        }
        let r = Reference::parse(&format!("x@{d}")).unwrap();
        assert_eq!(r.object(), format!("@{d}"));
        assert_eq!(r.tag(), None);

        let bare = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(bare.to_string(), "docker.io/library/busybox");
        assert_eq!(bare.object(), "");
        assert_eq!(
            bare.with_tag("v2").unwrap().to_string(),
            "docker.io/library/busybox:v2"
        );
        assert!(bare.with_tag("-bad").is_err());
        assert_eq!(
            Reference::parse("busybox").unwrap().name_only(),
            bare,
            "name_only drops the tag"
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let long_tag = "a".repeat(129);
        let long_name = format!("{}/{}", "r".repeat(200), "p".repeat(60));
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty reference"),
            (HEX.into(), "is an image ID, not a name"),
            (
                "Busybox".into(),
                "repository name \"library/Busybox\" must be lowercase",
            ),
            (
                "user/App".into(),
                "repository name \"user/App\" must be lowercase",
            ),
            ("busybox:".into(), "tag \"\" is invalid: empty tag"),
            (
                "busybox:-x".into(),
                "must start with a letter, digit or '_'",
            ),
            (
                "busybox:a+b".into(),
                "only letters, digits, '_', '.' and '-'",
            ),
            (format!("busybox:{long_tag}"), "longer than 128 characters"),
            (
                "busybox@sha256:abc".into(),
                "sha256 needs 64 hex characters, got 3",
            ),
            ("busybox@".into(), "empty digest"),
            (
                format!("busybox@md5:{HEX}"),
                "unsupported algorithm \"md5\"",
            ),
            (
                long_name,
                "repository name is 271 characters, over the limit of 255",
            ),
            (
                "a--b__c.d/e".into(),
                "host labels may only hold letters, digits and '-'",
            ),
            ("a//b".into(), "path component \"\" is invalid: empty"),
            ("a/b/".into(), "path component \"\" is invalid"),
            (
                "a..b".into(),
                "path component \"a..b\" is invalid: separators",
            ),
            (
                "a___b".into(),
                "path component \"a___b\" is invalid: separators",
            ),
            ("a.-b".into(), "separators"),
            ("-a".into(), "must start with a lowercase letter or digit"),
            ("a-".into(), "must end with a lowercase letter or digit"),
            (
                "a b".into(),
                "only lowercase letters, digits and the separators",
            ),
            (
                "localhost:port/x".into(),
                "registry host \"localhost:port\" is invalid: the port must be digits",
            ),
            (
                "bad_host.com/x".into(),
                "host labels may only hold letters, digits and '-'",
            ),
            ("-x.com/x".into(), "may not start or end with '-'"),
            ("a..com/x".into(), "empty label between dots"),
            ("[::1/x".into(), "closed by ']'"),
            (":tag".into(), "no repository name"),
        ];
        for (input, want) in cases {
            let err = Reference::parse(&input).expect_err(&input);
            let msg = err.to_string();
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(msg.starts_with("invalid reference "), "{msg}");
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn tag_of_exactly_128_characters_is_accepted() {
        let tag = "t".repeat(128);
        let r = Reference::parse(&format!("x:{tag}")).unwrap();
        assert_eq!(r.tag(), Some(tag.as_str()));
    }
}
