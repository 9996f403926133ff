//! What berthd says it is: `berthd --version` and the Version API.
//!
//! `version` is containerd's API level berth implements, then berth's own
//! crate version as semver build metadata (`1.7.0+berth.0.1.0`), so clients
//! that gate features on the server's containerd version see the API level
//! they can use. `revision` is the git commit berthd was built from
//! (`BERTH_REVISION` at build time; `unknown` when not set).
//!
//! ctr prints `WARNING: version mismatch` whenever the server's version
//! string differs from its own. berth reports its real version rather than
//! imitating one client's, so every ctr shows that warning; it is harmless.

/// The upstream-compatible version, as the Version API reports it.
pub(crate) const VERSION: &str = crate::VERSION;

/// The git commit berthd was built from (`BERTH_REVISION`), or `unknown`.
pub(crate) const REVISION: &str = match option_env!("BERTH_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The package path printed after the program name, as containerd prints
/// `github.com/containerd/containerd`.
pub(crate) const PACKAGE: &str = "github.com/berth-dev/berth";

/// The `--version` text after the program name:
/// `github.com/berth-dev/berth 1.7.0+berth.0.1.0 <revision>`.
pub fn version_text() -> String {
    format!("{PACKAGE} {VERSION} {REVISION}")
}
