//! The minimal split of a fully qualified reference that talking to a
//! registry needs: host, repository path, tag and digest. Normalising short
//! names (`busybox`) is `berth-images`' job; here the host must be explicit.

use crate::{Digest, Error, Result};

/// `host/repository[:tag][@digest]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteRef {
    /// The registry host as written in the reference (`docker.io`, `localhost:5000`).
    pub(crate) host: String,
    /// The repository path below the host (`library/busybox`).
    pub(crate) repository: String,
    /// The tag, if any.
    pub(crate) tag: Option<String>,
    /// The digest, if any.
    pub(crate) digest: Option<Digest>,
}

impl RemoteRef {
    /// Splits `s`; errors are [`Error::InvalidArgument`] naming `s`.
    pub(crate) fn parse(s: &str) -> Result<RemoteRef> {
        let invalid = |why: &str| Error::InvalidArgument(format!("invalid reference {s:?}: {why}"));
        let (name, digest) = match s.split_once('@') {
            Some((name, d)) => (
                name,
                Some(Digest::parse(d).map_err(|e| invalid(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/', so a port
        // in the host is not taken for one.
        let slash = name.rfind('/');
        let (locator, tag) = match name.rfind(':') {
            Some(colon) if slash.is_none_or(|sl| colon > sl) => {
                (&name[..colon], Some(name[colon + 1..].to_owned()))
            }
            _ => (name, None),
        };
        let Some((host, repository)) = locator.split_once('/') else {
            return Err(invalid(
                "want host/repository[:tag][@digest] with an explicit host",
            ));
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        {
            return Err(invalid("bad host"));
        }
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                    && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            })
        {
            return Err(invalid(
                "repository path components must be lowercase letters, digits and . _ -",
            ));
        }
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(invalid("bad tag"));
            }
        }
        Ok(RemoteRef {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The reference as text.
    pub(crate) fn display(&self) -> String {
        let mut s = format!("{}/{}", self.host, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_repo_tag_digest() {
        let r = RemoteRef::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "a/b", Some("v1"))
        );
        assert!(r.digest.is_none());

        let d = Digest::of(b"x");
        let r = RemoteRef::parse(&format!("docker.io/library/busybox@{d}")).unwrap();
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref(), Some(&d));

        let r = RemoteRef::parse(&format!("h:1/x:t@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.display(), format!("h:1/x:t@{d}"));

        let r = RemoteRef::parse("localhost:5000/a").unwrap();
        assert_eq!((r.host.as_str(), r.tag), ("localhost:5000", None));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "busybox",
            "h/",
            "h/A",
            "h/a:",
            "h/a:-x",
            "h/a@sha256:12",
            "/a",
            "h//a",
            "",
        ] {
            let err = RemoteRef::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }
}
