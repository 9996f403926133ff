//! SPDY/3.1, as Kubernetes' `httpstream/spdy` speaks it: the HTTP upgrade
//! (`Upgrade: SPDY/3.1`), the frames, and a server-side session.

mod dict;
pub(crate) mod frame;
pub(crate) mod session;

pub(crate) use session::{Session, Stream};

/// The `Upgrade` token of a SPDY request.
pub(crate) const UPGRADE: &str = "SPDY/3.1";
