//! berthd's namespaced, leased views of its content store and snapshotters,
//! as the library traits berth-transfer works over: what a pull writes is
//! recorded in the namespace and held by the pull's lease.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_content::local::LocalStore;
use berth_content::{Digest, Ingester, Provider, ReaderAt, Writer};
use berth_metadata::Db;
use berth_metadata::leases::Resource;
use berth_snapshots::{DirectApply, Info, Labels, Mount, Snapshotter, Usage, Whiteouts};
use berth_transfer::ContentStore;
use tokio::runtime::Handle;

use crate::snapshotters::{self, Snapshotters};

/// The local store as namespace `ns` sees it, recording into `lease`.
#[derive(Debug)]
pub(crate) struct NsContent {
    pub(crate) store: Arc<LocalStore>,
    pub(crate) db: Db,
    pub(crate) ns: String,
    pub(crate) lease: Option<String>,
}

fn content_error(e: berth_metadata::Error) -> berth_content::Error {
    use berth_metadata::Error as E;
    let message = e.to_string();
    match e {
        E::NotFound(_) => berth_content::Error::NotFound(message),
        E::AlreadyExists(_) => berth_content::Error::AlreadyExists(message),
        E::InvalidArgument(_) => berth_content::Error::InvalidArgument(message),
        E::FailedPrecondition(_) => berth_content::Error::FailedPrecondition(message),
        _ => berth_content::Error::Io {
            path: PathBuf::from("metadata"),
            source: std::io::Error::other(message),
        },
    }
}

impl Provider for NsContent {
    fn reader_at(&self, digest: &Digest) -> berth_content::Result<Box<dyn ReaderAt>> {
        self.store.reader_at(digest)
    }
}

impl Ingester for NsContent {
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> berth_content::Result<Box<dyn Writer>> {
        self.store.writer(ref_, total, expected)
    }
}

impl ContentStore for NsContent {
    /// Adds the blob to the namespace (held by the lease), or adds the
    /// labels (and the lease) if the namespace has it already.
    fn add_labels(
        &self,
        digest: &Digest,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> berth_content::Result<()> {
        let digest = digest.to_string();
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let content = self.db.content();
        match content.add(
            &self.ns,
            &digest,
            size,
            labels.clone(),
            self.lease.as_deref(),
        ) {
            Ok(_) => Ok(()),
            Err(berth_metadata::Error::AlreadyExists(_)) => {
                let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                content
                    .update(&self.ns, &digest, labels, &paths)
                    .map_err(content_error)?;
                let Some(lease) = &self.lease else {
                    return Ok(());
                };
                let resource = Resource {
                    id: digest,
                    kind: berth_metadata::leases::CONTENT.to_string(),
                };
                self.db
                    .leases()
                    .add_resource(&self.ns, lease, resource)
                    .map_err(content_error)
            }
            Err(e) => Err(content_error(e)),
        }
    }

    fn ingest_file(&self, ref_: &str) -> Option<std::fs::File> {
        self.store.ingest_file(ref_)
    }
}

/// Snapshotter `name` as namespace `ns` sees it, creating into `lease`.
/// Its methods block: call them off the async threads.
pub(crate) struct NsSnapshotter {
    snapshotters: Arc<Snapshotters>,
    driver: Arc<dyn Snapshotter>,
    ns: String,
    name: String,
    lease: Option<String>,
    runtime: Handle,
}

impl std::fmt::Debug for NsSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsSnapshotter")
            .field("ns", &self.ns)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A namespaced snapshot failure as a driver error, category kept.
fn snapshot_error(e: snapshotters::Error) -> berth_snapshots::Error {
    use berth_metadata::Error as M;
    use berth_snapshots::Error as S;
    match e {
        snapshotters::Error::Driver(d) => d,
        snapshotters::Error::Metadata(m) => {
            let message = m.to_string();
            match m {
                M::NotFound(_) => S::NotFound(message),
                M::AlreadyExists(_) => S::AlreadyExists(message),
                M::InvalidArgument(_) => S::InvalidArgument(message),
                M::FailedPrecondition(_) => S::FailedPrecondition(message),
                _ => S::io("metadata", std::io::Error::other(message)),
            }
        }
        other @ snapshotters::Error::UnknownSnapshotter(_) => S::InvalidArgument(other.to_string()),
        other => S::io("snapshotter", std::io::Error::other(other.to_string())),
    }
}

impl NsSnapshotter {
    /// Snapshotter `name` of `snapshotters` for namespace `ns`; fails for
    /// an unknown snapshotter.
    pub(crate) fn new(
        snapshotters: Arc<Snapshotters>,
        ns: &str,
        name: &str,
        lease: Option<String>,
    ) -> Result<NsSnapshotter, snapshotters::Error> {
        let driver = snapshotters.driver_of(name)?;
        Ok(NsSnapshotter {
            snapshotters,
            driver,
            ns: ns.to_string(),
            name: name.to_string(),
            lease,
            runtime: Handle::current(),
        })
    }

    fn run<T>(
        &self,
        f: impl std::future::Future<Output = snapshotters::Result<T>>,
    ) -> berth_snapshots::Result<T> {
        self.runtime.block_on(f).map_err(snapshot_error)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        view: bool,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        self.run(self.snapshotters.create(
            &self.ns,
            &self.name,
            key,
            parent,
            labels,
            self.lease.as_deref(),
            view,
        ))
    }

    fn backend(&self, key: &str) -> berth_snapshots::Result<String> {
        self.run(self.snapshotters.backend_of(&self.ns, &self.name, key))
    }

    fn direct(&self) -> berth_snapshots::Result<&dyn DirectApply> {
        self.driver.direct_apply().ok_or_else(|| {
            berth_snapshots::Error::FailedPrecondition(format!(
                "snapshotter {} cannot be written directly",
                self.name
            ))
        })
    }
}

impl Snapshotter for NsSnapshotter {
    fn stat(&self, key: &str) -> berth_snapshots::Result<Info> {
        self.run(self.snapshotters.stat(&self.ns, &self.name, key))
    }

    fn update(&self, info: Info, fieldpaths: &[&str]) -> berth_snapshots::Result<Info> {
        let paths = fieldpaths.iter().map(ToString::to_string).collect();
        self.run(
            self.snapshotters
                .update(&self.ns, &self.name, &info.name, info.labels, paths),
        )
    }

    fn usage(&self, key: &str) -> berth_snapshots::Result<Usage> {
        self.run(self.snapshotters.usage(&self.ns, &self.name, key))
    }

    fn mounts(&self, key: &str) -> berth_snapshots::Result<Vec<Mount>> {
        self.run(self.snapshotters.mounts(&self.ns, &self.name, key))
    }

    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        self.create(key, parent, labels, false)
    }

    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> berth_snapshots::Result<Vec<Mount>> {
        self.create(key, parent, labels, true)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> berth_snapshots::Result<()> {
        self.run(self.snapshotters.commit(
            &self.ns,
            &self.name,
            name,
            key,
            labels,
            self.lease.as_deref(),
        ))
    }

    fn remove(&self, key: &str) -> berth_snapshots::Result<()> {
        self.run(self.snapshotters.remove(&self.ns, &self.name, key))
    }

    fn walk(
        &self,
        f: &mut dyn FnMut(&Info) -> berth_snapshots::Result<()>,
    ) -> berth_snapshots::Result<()> {
        let infos = self.run(self.snapshotters.list(&self.ns, &self.name))?;
        infos.iter().try_for_each(f)
    }

    fn cleanup(&self) -> berth_snapshots::Result<()> {
        // The driver's garbage is the collector's business, not a namespace's.
        Ok(())
    }

    fn direct_apply(&self) -> Option<&dyn DirectApply> {
        self.driver.direct_apply().map(|_| self as &dyn DirectApply)
    }
}

impl DirectApply for NsSnapshotter {
    fn whiteouts(&self) -> Whiteouts {
        self.driver
            .direct_apply()
            .map_or(Whiteouts::Remove, DirectApply::whiteouts)
    }

    fn writable_dir(&self, key: &str) -> berth_snapshots::Result<PathBuf> {
        let backend = self.backend(key)?;
        self.direct()?.writable_dir(&backend)
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.driver
            .direct_apply()
            .and_then(DirectApply::staging_dir)
    }

    fn adopt(&self, key: &str, staged: &Path) -> berth_snapshots::Result<()> {
        let backend = self.backend(key)?;
        self.direct()?.adopt(&backend, staged)
    }
}
