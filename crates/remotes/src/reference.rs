//! The split of a reference that talking to a registry needs: host,
//! repository path, tag and digest. The grammar is Docker's, parsed once by
//! `berth_types::Reference`; here the host must be explicit (as containerd's
//! resolver wants it), so `busybox` is refused rather than guessed.

use berth_types::Reference;
use berth_types::reference::{DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN};

use crate::{Digest, Error, Result};

/// `host/repository[:tag][@digest]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteRef {
    /// The registry host (`docker.io`, `localhost:5000`).
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
        let r =
            Reference::parse_normalized(s).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // Docker's rules put a name without a registry host on Docker Hub;
        // a resolver is given the host explicitly.
        let explicit = r.domain() != DEFAULT_DOMAIN
            || [DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN]
                .iter()
                .any(|d| s.strip_prefix(d).is_some_and(|rest| rest.starts_with('/')));
        if !explicit {
            return Err(Error::InvalidArgument(format!(
                "invalid reference {s:?}: want host/repository[:tag][@digest] with an explicit host"
            )));
        }
        Ok(RemoteRef {
            host: r.domain().to_owned(),
            repository: r.path().to_owned(),
            tag: r.tag().map(str::to_owned),
            digest: r.digest().cloned(),
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
            "user/app:1",
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
