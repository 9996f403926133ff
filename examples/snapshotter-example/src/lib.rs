//! An example of a snapshotter written outside berth's workspace crates.
//!
//! [`AuditSnapshotter`] implements berth's [`Snapshotter`] trait by wrapping
//! another snapshotter (here berth's native driver, see [`open`]) and
//! logging every call with its outcome, keeping per-operation counts. It
//! is plugged into berth both ways a third party can:
//!
//! - **out of process**: `example-proxy-snapshotter` serves it over
//!   containerd's snapshots gRPC API on a UNIX socket, and berthd's
//!   `config.toml` declares it under `[proxy_plugins.NAME]`;
//! - **compiled in**: `example-berthd` is berthd with one more plugin,
//!   [`registration`], added to the built-in list.
//!
//! See this crate's README for the walk-through.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use berth_daemon::plugins::{InitContext, Instance, PluginError, Registration, types};
use berth_daemon::snapshotters::SnapshotterPlugin;
use berth_snapshots::native::NativeSnapshotter;
use berth_snapshots::{Info, Labels, Mount, Result, Snapshotter, Usage};

/// The operations counted, in [`AuditSnapshotter::calls`] order.
pub const OPERATIONS: [&str; 10] = [
    "stat", "update", "usage", "mounts", "prepare", "view", "commit", "remove", "walk", "cleanup",
];

/// A [`Snapshotter`] that logs and counts every call to an inner one.
pub struct AuditSnapshotter<S> {
    inner: S,
    calls: [AtomicU64; 10],
}

impl<S> fmt::Debug for AuditSnapshotter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSnapshotter")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl<S> AuditSnapshotter<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> AuditSnapshotter<S> {
        AuditSnapshotter {
            inner,
            calls: Default::default(),
        }
    }

    /// How many times each operation of [`OPERATIONS`] was called.
    pub fn calls(&self) -> Vec<(&'static str, u64)> {
        OPERATIONS
            .iter()
            .zip(&self.calls)
            .map(|(op, n)| (*op, n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl<S: Snapshotter> AuditSnapshotter<S> {
    /// Runs `f` as operation number `op` on `key`, logging its outcome.
    fn audit<T>(&self, op: usize, key: &str, f: impl FnOnce(&S) -> Result<T>) -> Result<T> {
        self.calls[op].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = f(&self.inner);
        let elapsed_us = started.elapsed().as_micros();
        match &result {
            Ok(_) => tracing::info!(op = OPERATIONS[op], key, elapsed_us, "snapshot call"),
            Err(e) => {
                tracing::info!(op = OPERATIONS[op], key, elapsed_us, error = %e, "snapshot call failed")
            }
        }
        result
    }
}

impl<S: Snapshotter> Snapshotter for AuditSnapshotter<S> {
    fn stat(&self, key: &str) -> Result<Info> {
        self.audit(0, key, |s| s.stat(key))
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> Result<Info> {
        let key = info.name.clone();
        self.audit(1, &key, |s| s.update(info, fieldpaths))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.audit(2, key, |s| s.usage(key))
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.audit(3, key, |s| s.mounts(key))
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.audit(4, key, |s| s.prepare(key, parent, labels))
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.audit(5, key, |s| s.view(key, parent, labels))
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.audit(6, key, |s| s.commit(name, key, labels))
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.audit(7, key, |s| s.remove(key))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        self.audit(8, "", |s| s.walk(f))
    }

    fn cleanup(&self) -> Result<()> {
        self.audit(9, "", |s| s.cleanup())
    }
}

/// The example snapshotter on `root`: berth's native driver, audited.
pub fn open(root: impl AsRef<Path>) -> Result<AuditSnapshotter<NativeSnapshotter>> {
    Ok(AuditSnapshotter::new(NativeSnapshotter::new(root)?))
}

/// The plugin id the compiled-in snapshotter has (`--snapshotter audit`).
pub const PLUGIN_ID: &str = "audit";

/// The registration that compiles the example into a berthd: a plugin of
/// type `io.containerd.snapshotter.v1` with id [`PLUGIN_ID`], configured by
/// `[plugins."io.containerd.snapshotter.v1.audit"] root_path`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::SNAPSHOT,
        id: PLUGIN_ID.into(),
        requires: &[],
        init: init_plugin,
    }
}

/// Builds the snapshotter for berthd: `root_path` if set, else the
/// plugin's own directory under berthd's root.
fn init_plugin(ctx: &mut InitContext<'_>) -> std::result::Result<Instance, PluginError> {
    let root = ctx
        .section
        .and_then(|s| s.get("root_path"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map_or_else(|| ctx.root.clone(), std::path::PathBuf::from);
    ctx.exports
        .insert("root".to_string(), root.display().to_string());
    let sn = open(&root).map_err(PluginError::failed)?;
    Ok(Arc::new(SnapshotterPlugin(Arc::new(sn))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_including_failures() {
        let dir = tempfile::tempdir().unwrap();
        let sn = open(dir.path()).unwrap();
        sn.prepare("a", None, Labels::new()).unwrap();
        assert!(sn.stat("missing").unwrap_err().is_not_found());
        let calls = sn.calls();
        assert!(calls.contains(&("prepare", 1)), "{calls:?}");
        assert!(calls.contains(&("stat", 1)), "{calls:?}");
    }
}
