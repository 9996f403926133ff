//! `containerd.services.content.v1.Content`: each call on the namespace's
//! view of the shared content store, berth-metadata's [`NamespacedContent`].
//!
//! Blobs are stored once (the content plugin's store); the metadata DB
//! records which namespaces hold each blob and their labels. Ingest refs are
//! kept per namespace (the view prefixes the backend ref with `<namespace>/`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::containerd::events::ContentDelete;
use berth_api::containerd::services::content::v1::content_server::Content;
use berth_api::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, Info as WireInfo, InfoRequest, InfoResponse,
    ListContentRequest, ListContentResponse, ListStatusesRequest, ListStatusesResponse,
    ReadContentRequest, ReadContentResponse, Status as WireStatus, StatusRequest, StatusResponse,
    UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_content::{Digest, IngestManager, Manager, Provider, Store, Writer};
use berth_events::Exchange;
use berth_metadata::{Db, NamespacedContent, NamespacedWriter};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::blocking;
use crate::wire::{pack, to_timestamp};

/// Bytes per Read response and per List batch size, as containerd uses.
const READ_CHUNK: usize = 1 << 20;
const LIST_BATCH: usize = 100;

fn parse_digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(|e| Status::invalid_argument(format!("digest {s:?}: {e}")))
}

fn wire_info(i: berth_content::Info) -> WireInfo {
    WireInfo {
        digest: i.digest.to_string(),
        size: i64::try_from(i.size).unwrap_or(i64::MAX),
        created_at: Some(to_timestamp(i.created_at)),
        updated_at: Some(to_timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

fn wire_status(s: berth_content::Status) -> WireStatus {
    WireStatus {
        started_at: Some(to_timestamp(s.started_at)),
        updated_at: Some(to_timestamp(s.updated_at)),
        r#ref: s.ref_,
        offset: i64::try_from(s.offset).unwrap_or(i64::MAX),
        total: s.total.and_then(|t| i64::try_from(t).ok()).unwrap_or(0),
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

/// The lease named in a call's `containerd-lease` header, if any.
pub(crate) fn lease_of<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(berth_api::LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Serves the content API over the content plugin's store and the metadata DB.
#[derive(Clone)]
pub(crate) struct ContentService {
    store: Arc<dyn Store>,
    db: Db,
    exchange: Arc<Exchange>,
    pull_bytes: Option<prometheus_client::metrics::counter::Counter>,
    early: Option<Arc<super::early::EarlyApply>>,
}

impl ContentService {
    /// A service over `store` and `db`, publishing on `exchange`.
    pub(crate) fn new(store: Arc<dyn Store>, db: Db, exchange: Arc<Exchange>) -> ContentService {
        ContentService {
            store,
            db,
            exchange,
            pull_bytes: None,
            early: None,
        }
    }

    /// Offers every blob committed through Write to `early` (see
    /// [`super::early`]).
    pub(crate) fn with_early_apply(
        mut self,
        early: Arc<super::early::EarlyApply>,
    ) -> ContentService {
        self.early = Some(early);
        self
    }

    /// Counts every byte written through ingests into `counter` (the
    /// daemon's pull bytes).
    pub(crate) fn with_pull_bytes(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> ContentService {
        self.pull_bytes = Some(counter);
        self
    }
}

impl std::fmt::Debug for ContentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentService").finish_non_exhaustive()
    }
}

impl ContentService {
    /// Namespace `ns`'s view of the store, writing into `lease`.
    fn view(&self, ns: &str, lease: Option<String>) -> NamespacedContent<dyn Store> {
        NamespacedContent::new(self.store.clone(), self.db.clone(), ns).with_lease(lease)
    }

    /// The Write call under `span`: opens the ingest, then runs it in a task.
    async fn open_write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
        span: tracing::Span,
    ) -> Result<Response<BoxStream<WriteContentResponse>>, Status> {
        let ns = super::namespace_of(&request)?;
        span.record("namespace", ns.as_str());
        let lease = lease_of(&request);
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::invalid_argument("write stream closed before its first message")
        })?;
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        span.record("ref", first.r#ref.as_str());
        if !first.expected.is_empty() {
            span.record("expected", first.expected.as_str());
        }
        let session = WriteSession {
            view: self.view(&ns, lease),
            reference: first.r#ref.clone(),
            total: first.total,
            expected: first.expected.clone(),
            pull_bytes: self.pull_bytes.clone(),
            early: self.early.clone(),
        };
        let writer = session.open().await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<WriteContentResponse, Status>>(4);
        // The ingest goes on after this call returns: under the same span.
        let ingest = tracing::debug_span!(parent: &span, "content.ingest");
        tokio::spawn(
            async move {
                match session.run(writer, first, &mut incoming, &tx).await {
                    Ok(()) => tracing::debug!("ingest ended"),
                    Err(status) => {
                        if status.code() != tonic::Code::AlreadyExists {
                            tracing::debug!(error = %status.message(), "content write failed");
                        }
                        let _ = tx.send(Err(status)).await;
                    }
                }
            }
            .instrument(ingest),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let digest = parse_digest(&request.into_inner().digest)?;
        let view = self.view(&ns, None);
        let info = blocking(move || view.info(&digest).map_err(crate::wire::status)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(wire_info(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("update request has no info"))?;
        let mut change = berth_content::Info::new(parse_digest(&info.digest)?);
        change.labels = info.labels.into_iter().collect();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let view = self.view(&ns, None);
        let info = blocking(move || {
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            view.update(change, &paths).map_err(crate::wire::status)
        })
        .await?;
        Ok(Response::new(UpdateResponse {
            info: Some(wire_info(info)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        request: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = super::namespace_of(&request)?;
        let filter = berth_filters::parse_all(&request.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let view = self.view(&ns, None);
        let infos = blocking(move || view.list().map_err(crate::wire::status)).await?;
        let infos: Vec<WireInfo> = infos
            .into_iter()
            .map(wire_info)
            .filter(|i| {
                let size = i.size.to_string();
                let labels: BTreeMap<String, String> = i
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let fields = berth_filters::Fields::new()
                    .with("digest", &i.digest)
                    .with("size", &size)
                    .with_labels(&labels);
                filter.matches(&fields)
            })
            .collect();
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(&self, request: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = super::namespace_of(&request)?;
        let parsed = parse_digest(&request.into_inner().digest)?;
        let digest = parsed.to_string();
        // The record goes; the file with the next collection.
        let view = self.view(&ns, None);
        blocking(move || view.delete(&parsed).map_err(crate::wire::status)).await?;
        if let Err(e) =
            self.exchange
                .publish(&ns, "/content/delete", pack(&ContentDelete { digest }))
        {
            tracing::warn!(error = %e, "cannot publish /content/delete");
        }
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        request: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = super::namespace_of(&request)?;
        let req = request.into_inner();
        let digest = parse_digest(&req.digest)?;
        let view = self.view(&ns, None);
        let reader = blocking(move || view.reader_at(&digest).map_err(crate::wire::status)).await?;
        let size = reader.size();
        let offset = u64::try_from(req.offset.max(0)).unwrap_or(0);
        if offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes"
            )));
        }
        let wanted = u64::try_from(req.size).unwrap_or(0);
        let end = if wanted == 0 {
            size
        } else {
            size.min(offset.saturating_add(wanted))
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ReadContentResponse, Status>>(4);
        // One blocking reader per call, pread-ing 1 MiB at a time.
        tokio::task::spawn_blocking(move || {
            let mut at = offset;
            while at < end {
                let len = usize::try_from((end - at).min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
                let mut buf = vec![0; len];
                let msg = match reader.read_exact_at(&mut buf, at) {
                    Ok(()) => Ok(ReadContentResponse {
                        offset: i64::try_from(at).unwrap_or(i64::MAX),
                        data: buf,
                    }),
                    Err(e) => Err(crate::wire::status(e)),
                };
                let failed = msg.is_err();
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
                at += len as u64;
            }
        });
        // The stream ends as soon as its last chunk is out, not when the
        // reader thread drops its sender: a client that resets the stream
        // once it has every byte (ctr does) then finds the call already
        // answered OK, as with containerd, instead of a cancelled one.
        let chunks = futures::stream::unfold((rx, offset), move |(mut rx, at)| async move {
            if at >= end {
                return None;
            }
            let msg = rx.recv().await?;
            let next = match &msg {
                Ok(m) => at.saturating_add(m.data.len() as u64),
                Err(_) => end,
            };
            Some((msg, (rx, next)))
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let reference = request.into_inner().r#ref;
        let view = self.view(&ns, None);
        let status = blocking(move || view.status(&reference).map_err(crate::wire::status)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(wire_status(status)),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = super::namespace_of(&request)?;
        let filter = berth_filters::parse_all(&request.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let view = self.view(&ns, None);
        let all = blocking(move || view.list_statuses().map_err(crate::wire::status)).await?;
        let statuses = all
            .into_iter()
            .map(wire_status)
            .filter(|s| filter.matches(&berth_filters::Fields::new().with("ref", &s.r#ref)))
            .collect();
        Ok(Response::new(ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        // One span for the whole ingest: namespace, ref and digest let a
        // pull's layers be followed through the log.
        let span = tracing::info_span!(
            "content.write",
            namespace = tracing::field::Empty,
            "ref" = tracing::field::Empty,
            expected = tracing::field::Empty
        );
        self.open_write(request, span.clone())
            .instrument(span)
            .await
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ns = super::namespace_of(&request)?;
        let reference = request.into_inner().r#ref;
        let view = self.view(&ns, None);
        blocking(move || view.abort(&reference).map_err(crate::wire::status)).await?;
        Ok(Response::new(()))
    }
}

/// One Write stream: the containerd stat/write/commit protocol.
struct WriteSession {
    /// The namespace's view, writing into the call's lease.
    view: NamespacedContent<dyn Store>,
    reference: String,
    total: i64,
    expected: String,
    pull_bytes: Option<prometheus_client::metrics::counter::Counter>,
    early: Option<Arc<super::early::EarlyApply>>,
}

impl WriteSession {
    /// Opens (or resumes) the writer; a blob the namespace or the shared
    /// store already has ends the session with AlreadyExists, which clients
    /// treat as done.
    async fn open(&self) -> Result<NamespacedWriter, Status> {
        let expected = if self.expected.is_empty() {
            None
        } else {
            Some(parse_digest(&self.expected)?)
        };
        let total = u64::try_from(self.total).ok().filter(|t| *t > 0);
        let (view, reference) = (self.view.clone(), self.reference.clone());
        blocking(move || {
            view.open_writer(&reference, total, expected.as_ref())
                .map_err(crate::wire::status)
        })
        .await
    }

    async fn run(
        &self,
        writer: NamespacedWriter,
        mut req: WriteContentRequest,
        incoming: &mut Streaming<WriteContentRequest>,
        tx: &tokio::sync::mpsc::Sender<Result<WriteContentResponse, Status>>,
    ) -> Result<(), Status> {
        let mut writer = Some(writer);
        let mut last: Option<WriteContentResponse>;
        let mut total = self.total;
        let mut expected = self.expected.clone();
        loop {
            if req.total > 0 {
                total = req.total;
            }
            if !req.expected.is_empty() {
                expected = req.expected.clone();
            }
            let action = WriteAction::try_from(req.action).map_err(|_| {
                Status::invalid_argument(format!("unknown write action {}", req.action))
            })?;
            let mut w = writer
                .take()
                .ok_or_else(|| Status::internal("writer already consumed"))?;
            let exp = expected.clone();
            let early = self.early.clone();
            if let Some(c) = &self.pull_bytes {
                c.inc_by(req.data.len() as u64);
            }
            let (w, msg) = blocking(move || {
                let status = w.status().map_err(crate::wire::status)?;
                let mut msg = WriteContentResponse {
                    action: action as i32,
                    offset: i64::try_from(status.offset).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                match action {
                    WriteAction::Stat => {
                        msg.digest = w.digest().to_string();
                        msg.started_at = Some(to_timestamp(status.started_at));
                        msg.updated_at = Some(to_timestamp(status.updated_at));
                        msg.total = total;
                        Ok((Some(w), msg))
                    }
                    WriteAction::Write | WriteAction::Commit => {
                        if req.offset > 0 && req.offset != msg.offset {
                            return Err(Status::out_of_range(format!(
                                "write @{} must occur at current offset {}",
                                req.offset, msg.offset
                            )));
                        }
                        if req.offset == 0 && msg.offset > 0 {
                            w.truncate(0).map_err(crate::wire::status)?;
                            msg.offset = 0;
                        }
                        if !req.data.is_empty() {
                            w.write(&req.data).map_err(crate::wire::status)?;
                            msg.offset += i64::try_from(req.data.len()).unwrap_or(i64::MAX);
                        }
                        msg.digest = w.digest().to_string();
                        if action == WriteAction::Write {
                            return Ok((Some(w), msg));
                        }
                        let expected = if exp.is_empty() {
                            None
                        } else {
                            Some(parse_digest(&exp)?)
                        };
                        let size = u64::try_from(total).unwrap_or(0);
                        let digest = expected.clone().unwrap_or_else(|| w.digest());
                        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
                        let committed_size = msg.offset;
                        // Stored and recorded in the namespace and the lease.
                        let fresh = w
                            .commit_fresh(size, expected.as_ref(), labels)
                            .map_err(crate::wire::status)?;
                        if let (true, Some(early)) = (fresh, &early) {
                            early.offer(&digest, u64::try_from(committed_size).unwrap_or(0));
                        }
                        Ok((None, msg))
                    }
                }
            })
            .await?;
            writer = w;
            last = Some(msg.clone());
            if tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
            if action == WriteAction::Commit {
                break;
            }
            match incoming.message().await? {
                Some(next) => req = next,
                None => break,
            }
        }
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || Box::new(w).close()).await;
        }
        // containerd's server sends its last answer once more when a stream
        // ends well (after the commit, or when the client closes its side).
        if let Some(m) = last {
            let _ = tx.send(Ok(m)).await;
        }
        Ok(())
    }
}
