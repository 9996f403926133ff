//! A namespaced, leased view of a shared content store (containerd's
//! `metadata/content.go`): [`NamespacedContent`] implements berth-content's
//! traits over any store, recording in the [`Db`].
//!
//! Blobs are stored once, in the backend store, for every namespace. What a
//! namespace sees is its records in the DB ([`crate::content`]):
//!
//! - **Reads** check the record first: a blob that only namespace `b` holds
//!   is [`Error::NotFound`](berth_content::Error::NotFound) from namespace `a`,
//!   although the bytes are on disk.
//! - **Ingests** are the namespace's own: ref `r` of namespace `ns` is the
//!   backend's ingest `ns/r` (namespace names cannot contain `/`), and
//!   statuses list only the namespace's, under their own refs. With a lease,
//!   the lease holds the ingest from the moment the writer opens.
//! - **Commits** commit the backend writer and record the blob, with its
//!   labels, in the namespace and in the lease, under
//!   [`Db::while_blob_files_kept`] so a collection cannot delete the file in
//!   between. Writing is untouched: no DB work per chunk.
//! - A blob the backend has already (another namespace pulled it) is shared
//!   rather than uploaded again: opening a writer with its digest records it
//!   and answers [`Error::AlreadyExists`](berth_content::Error::AlreadyExists),
//!   which writers treat as done ([`berth_content::write_blob`] does).
//! - **Labels, info, walk** are the namespace's records; **delete** removes
//!   the record only, and the next garbage collection
//!   ([`Db::collect_garbage`]) reports the blob for its file to be deleted
//!   once no namespace holds it.
//!
//! The backend's own labels are not used: a namespace's labels live in its
//! record, and the backend is committed to without labels.

use std::path::PathBuf;
use std::sync::Arc;

use berth_content::{
    Digest, IngestManager, Ingester, Labels, Manager, Provider, ReaderAt, Status, Store, Writer,
};

use crate::content::{ContentRecord, ContentStore};
use crate::db::Db;
use crate::leases::{self, Resource};

/// The content store `S` as namespace `ns` sees it, recording what it
/// commits into an optional lease. See the [module docs](self).
///
/// Cheap to clone; the backend is shared (`Arc<S>`, so `S` may be
/// `dyn Store`). Every method blocks (file I/O and short DB transactions):
/// from async code call it through `spawn_blocking`.
pub struct NamespacedContent<S: ?Sized> {
    store: Arc<S>,
    db: Db,
    ns: String,
    lease: Option<String>,
    /// Set by [`NamespacedContent::relabelled_after_commit`].
    relabelled: bool,
}

impl<S: ?Sized> Clone for NamespacedContent<S> {
    fn clone(&self) -> Self {
        NamespacedContent {
            store: self.store.clone(),
            db: self.db.clone(),
            ns: self.ns.clone(),
            lease: self.lease.clone(),
            relabelled: self.relabelled,
        }
    }
}

impl<S: ?Sized> std::fmt::Debug for NamespacedContent<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespacedContent")
            .field("ns", &self.ns)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A metadata error as a content error, its category and message kept.
pub fn content_error(e: crate::Error) -> berth_content::Error {
    use crate::Error as E;
    use berth_content::Error as C;
    match e {
        E::NotFound(m) => C::NotFound(m),
        E::AlreadyExists(m) => C::AlreadyExists(m),
        E::InvalidArgument(m) => C::InvalidArgument(m),
        E::FailedPrecondition(m) => C::FailedPrecondition(m),
        other => C::Io {
            path: PathBuf::from("metadata"),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// The lease resource of ingest `reference` (the namespace's ref).
fn ingest_resource(reference: &str) -> Resource {
    Resource {
        id: reference.to_string(),
        kind: leases::INGESTS.to_string(),
    }
}

/// The [`berth_content::Info`] of a namespace's record.
fn info_of(r: ContentRecord) -> berth_content::Result<berth_content::Info> {
    let digest = Digest::parse(&r.digest).map_err(|e| {
        berth_content::Error::InvalidArgument(format!("recorded digest {:?}: {e}", r.digest))
    })?;
    Ok(berth_content::Info {
        digest,
        size: u64::try_from(r.size).unwrap_or(0),
        created_at: r.created_at,
        updated_at: r.updated_at,
        labels: r.labels,
    })
}

/// Adds blob `digest` of namespace `ns` to `lease`, if given.
fn lease_content(
    db: &Db,
    ns: &str,
    lease: Option<&str>,
    digest: &str,
) -> berth_content::Result<()> {
    let Some(lease) = lease else {
        return Ok(());
    };
    let resource = Resource {
        id: digest.to_string(),
        kind: leases::CONTENT.to_string(),
    };
    db.leases()
        .add_resource(ns, lease, resource)
        .map_err(content_error)
}

fn size_i64(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl<S: ?Sized> NamespacedContent<S> {
    /// `store` as namespace `ns` sees it, recorded in `db`, with no lease.
    pub fn new(store: Arc<S>, db: Db, ns: impl Into<String>) -> NamespacedContent<S> {
        NamespacedContent {
            store,
            db,
            ns: ns.into(),
            lease: None,
            relabelled: false,
        }
    }

    /// For a caller that, as a transfer does, records every blob it commits
    /// again with [`NamespacedContent::add_labels`] at once, under its own
    /// lease: a commit's record is written without waiting for the disk
    /// (the `add_labels` that follows makes it durable; a crash in between
    /// leaves the blob unrecorded, for the transfer to record when it runs
    /// again), and ingests are not put in the lease, so that deleting a
    /// failed transfer's lease leaves them to be resumed. Saves two durable
    /// writes per blob.
    pub fn relabelled_after_commit(mut self) -> NamespacedContent<S> {
        self.relabelled = true;
        self
    }

    /// The same view, holding what it writes in `lease` (containerd's
    /// `containerd-lease` header). The lease must exist when writers open.
    pub fn with_lease(mut self, lease: Option<String>) -> NamespacedContent<S> {
        self.lease = lease;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The lease, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// The shared backend store.
    pub fn backend(&self) -> &Arc<S> {
        &self.store
    }

    /// The backend's ingest ref for this namespace's ref `reference`.
    pub fn backend_ref(&self, reference: &str) -> String {
        format!("{}/{reference}", self.ns)
    }

    /// This namespace's ref for backend ingest ref `bref`, `None` if the
    /// ingest is another namespace's.
    pub fn namespace_ref<'a>(&self, bref: &'a str) -> Option<&'a str> {
        bref.strip_prefix(self.ns.as_str())?.strip_prefix('/')
    }

    /// `status` with the backend ref turned into the namespace's.
    fn own_status(&self, mut status: Status) -> Option<Status> {
        status.ref_ = self.namespace_ref(&status.ref_)?.to_string();
        Some(status)
    }

    /// Records blob `digest` (`size` bytes, already in the backend) in the
    /// namespace with `labels` and in the lease; for a blob the namespace
    /// holds already, sets `labels` on its record (keys given, others kept)
    /// and adds it to the lease.
    ///
    /// What a transfer does once it has a blob, to hold and label it.
    pub fn add_labels(
        &self,
        digest: &Digest,
        size: u64,
        labels: Labels,
    ) -> berth_content::Result<()> {
        let digest = digest.to_string();
        self.db
            .while_blob_files_kept(|| {
                self.db.content().record(
                    &self.ns,
                    &digest,
                    size_i64(size),
                    labels,
                    true,
                    self.lease.as_deref(),
                    None,
                )
            })
            .map(drop)
            .map_err(content_error)
    }

    /// Adds blob `digest` to the lease, if there is one.
    fn lease_content(&self, digest: &str) -> berth_content::Result<()> {
        lease_content(&self.db, &self.ns, self.lease.as_deref(), digest)
    }

    fn release_ingest(&self, reference: &str) {
        if let Some(l) = &self.lease
            && let Err(e) = self.db.leases().release_ingest(&self.ns, l, reference)
        {
            tracing::debug!(namespace = %self.ns, lease = %l, reference, error = %e, "cannot release ingest from its lease");
        }
    }
}

impl<S: Store + ?Sized + 'static> NamespacedContent<S> {
    /// Opens, or resumes, the namespace's ingest `reference`, as
    /// [`Ingester::writer`] does, returning the concrete writer (whose
    /// [`NamespacedWriter::commit_fresh`] tells a new blob from a shared one).
    pub fn open_writer(
        &self,
        reference: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> berth_content::Result<NamespacedWriter> {
        if reference.is_empty() {
            return Err(berth_content::Error::InvalidArgument(
                "ref must not be empty".into(),
            ));
        }
        let bref = self.backend_ref(reference);
        self.db.while_blob_files_kept(|| {
            if let Some(d) = expected
                && self.db.content().info(&self.ns, d.as_str()).is_ok()
            {
                // As containerd's: the lease holds it all the same
                // (a relabelling caller's add_labels will).
                if !self.relabelled {
                    self.lease_content(d.as_str())?;
                }
                return Err(berth_content::Error::AlreadyExists(format!("content {d}")));
            }
            // As containerd's addIngestLease: the lease holds the ingest,
            // so deleting the lease aborts it. Recorded before the ingest
            // exists, so a crash in between leaves no ingest without its lease.
            if let Some(l) = self.lease.as_ref().filter(|_| !self.relabelled) {
                self.db
                    .leases()
                    .add_resource(&self.ns, l, ingest_resource(reference))
                    .map_err(content_error)?;
            }
            let opened =
                match self.store.writer(&bref, total, expected) {
                    Ok(w) => Ok(w),
                    Err(berth_content::Error::AlreadyExists(m)) => {
                        // Stored for another namespace: share it, no upload needed.
                        match expected {
                            Some(d) => self.share(d).and(Err(berth_content::Error::AlreadyExists(
                                format!("content {d}"),
                            ))),
                            None => Err(berth_content::Error::AlreadyExists(m)),
                        }
                    }
                    // The backend names its own ref; the caller knows its own.
                    Err(berth_content::Error::Unavailable(m)) => Err(
                        berth_content::Error::Unavailable(m.replacen(&bref, reference, 1)),
                    ),
                    Err(e) => Err(e),
                };
            if opened.is_err() {
                self.release_ingest(reference);
            }
            opened.map(|inner| NamespacedWriter {
                inner,
                db: self.db.clone(),
                ns: self.ns.clone(),
                lease: self.lease.clone(),
                reference: reference.to_string(),
                lazy: self.relabelled,
            })
        })
    }

    /// Records blob `d`, present in the backend, in the namespace and lease.
    fn share(&self, d: &Digest) -> berth_content::Result<()> {
        let info = self.store.info(d)?;
        let content = self.db.content();
        let record = if self.relabelled {
            ContentStore::record_lazily
        } else {
            ContentStore::record
        };
        record(
            &content,
            &self.ns,
            d.as_str(),
            size_i64(info.size),
            Labels::new(),
            false,
            self.lease.as_deref(),
            None,
        )
        .map(drop)
        .map_err(content_error)
    }
}

impl<S: Provider + ?Sized> Provider for NamespacedContent<S> {
    /// Opens blob `digest` if the namespace holds it; [`NotFound`] if not,
    /// even when another namespace's copy is on disk.
    ///
    /// [`NotFound`]: berth_content::Error::NotFound
    fn reader_at(&self, digest: &Digest) -> berth_content::Result<Box<dyn ReaderAt>> {
        self.db
            .content()
            .info(&self.ns, digest.as_str())
            .map_err(content_error)?;
        self.store.reader_at(digest)
    }
}

impl<S: Store + ?Sized + 'static> Ingester for NamespacedContent<S> {
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> berth_content::Result<Box<dyn Writer>> {
        Ok(Box::new(self.open_writer(ref_, total, expected)?))
    }
}

impl<S: ?Sized + Send + Sync> Manager for NamespacedContent<S> {
    fn info(&self, digest: &Digest) -> berth_content::Result<berth_content::Info> {
        let r = self
            .db
            .content()
            .info(&self.ns, digest.as_str())
            .map_err(content_error)?;
        info_of(r)
    }

    fn update(
        &self,
        info: berth_content::Info,
        fieldpaths: &[&str],
    ) -> berth_content::Result<berth_content::Info> {
        let paths: Vec<String> = fieldpaths.iter().map(ToString::to_string).collect();
        let r = self
            .db
            .content()
            .update(&self.ns, info.digest.as_str(), info.labels, &paths)
            .map_err(content_error)?;
        info_of(r)
    }

    fn walk(
        &self,
        f: &mut dyn FnMut(berth_content::Info) -> berth_content::Result<()>,
    ) -> berth_content::Result<()> {
        let records = self.db.content().list(&self.ns).map_err(content_error)?;
        for r in records {
            f(info_of(r)?)?;
        }
        Ok(())
    }

    /// Removes the namespace's record; the file goes with the next garbage
    /// collection once no namespace holds the blob.
    fn delete(&self, digest: &Digest) -> berth_content::Result<()> {
        self.db
            .content()
            .delete(&self.ns, digest.as_str())
            .map(drop)
            .map_err(content_error)
    }
}

impl<S: IngestManager + ?Sized> IngestManager for NamespacedContent<S> {
    fn status(&self, ref_: &str) -> berth_content::Result<Status> {
        let s = self.store.status(&self.backend_ref(ref_))?;
        self.own_status(s)
            .ok_or_else(|| berth_content::Error::NotFound(format!("ingest {ref_}")))
    }

    fn list_statuses(&self) -> berth_content::Result<Vec<Status>> {
        Ok(self
            .store
            .list_statuses()?
            .into_iter()
            .filter_map(|s| self.own_status(s))
            .collect())
    }

    fn abort(&self, ref_: &str) -> berth_content::Result<()> {
        self.store.abort(&self.backend_ref(ref_))
    }
}

/// One ingest of a [`NamespacedContent`]: writes go straight to the
/// backend's writer; the commit records the blob in the namespace and lease.
#[derive(Debug)]
pub struct NamespacedWriter {
    inner: Box<dyn Writer>,
    db: Db,
    ns: String,
    lease: Option<String>,
    reference: String,
    /// Record without waiting for the disk (see
    /// [`NamespacedContent::relabelled_after_commit`]).
    lazy: bool,
}

impl NamespacedWriter {
    /// Commits like [`Writer::commit`] and says whether the backend stored
    /// a new blob (`true`) or had it already (`false`, the namespace's
    /// record was added all the same). [`berth_content::Error::AlreadyExists`]
    /// if the namespace holds the blob already.
    pub fn commit_fresh(
        self,
        size: u64,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> berth_content::Result<bool> {
        let NamespacedWriter {
            inner,
            db,
            ns,
            lease,
            reference,
            lazy,
        } = self;
        let committed_size = inner.status()?.offset;
        let digest = expected.cloned().unwrap_or_else(|| inner.digest());
        db.while_blob_files_kept(|| {
            let fresh = match inner.commit(size, expected, Labels::new()) {
                Ok(()) => true,
                Err(berth_content::Error::AlreadyExists(_)) => false,
                Err(e) => return Err(e),
            };
            // Recorded, held by the lease instead of the ingest, in one
            // transaction; a blob the namespace had is AlreadyExists, and
            // the lease holds it all the same, as containerd's commit does.
            let content = db.content();
            let record = if lazy {
                ContentStore::record_lazily
            } else {
                ContentStore::record
            };
            let new = record(
                &content,
                &ns,
                digest.as_str(),
                size_i64(committed_size),
                labels,
                false,
                lease.as_deref(),
                Some(&reference),
            )
            .map_err(content_error)?;
            if new {
                Ok(fresh)
            } else {
                Err(berth_content::Error::AlreadyExists(format!(
                    "content {digest}"
                )))
            }
        })
    }
}

impl Writer for NamespacedWriter {
    fn write(&mut self, data: &[u8]) -> berth_content::Result<()> {
        self.inner.write(data)
    }

    fn digest(&self) -> Digest {
        self.inner.digest()
    }

    fn status(&self) -> berth_content::Result<Status> {
        let mut s = self.inner.status()?;
        s.ref_.clone_from(&self.reference);
        Ok(s)
    }

    fn truncate(&mut self, size: u64) -> berth_content::Result<()> {
        self.inner.truncate(size)
    }

    fn commit(
        self: Box<Self>,
        size: u64,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> berth_content::Result<()> {
        self.commit_fresh(size, expected, labels).map(drop)
    }

    fn close(self: Box<Self>) -> berth_content::Result<()> {
        self.inner.close()
    }
}
