//! berth-transfer's [`ContentStore`] over the daemon's gRPC Content
//! service (containerd's `content/proxy`): how the client pulls, imports,
//! exports and pushes on a daemon without a Transfer service.
//!
//! berth-content's traits are synchronous; their methods here block on
//! the runtime the store was made on, and are only called from blocking
//! threads (berth-transfer keeps store calls off the async threads). A
//! writer's `write` queues the data on the Write stream and a task takes
//! the daemon's answers, so a failed write shows at the next write or at
//! `commit`. The queue holds at most [`WRITE_QUEUE_BYTES`]: a write that
//! finds it full waits until the stream has taken enough (backpressure),
//! except on a current-thread runtime's own thread, where waiting would
//! stall the stream that empties it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_api::containerd::services::content::v1 as pb;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_content::{Digest, Digester, Status};
use berth_transfer::ContentStore;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::StreamExt as _;

use crate::client::{Chan, Client};

/// Bytes one read of the Read stream asks for: a sequential reader (a
/// layer applied, an archive written) makes one call per window.
const READ_WINDOW: u64 = 1 << 20;

/// Bytes of written data one Write stream may have queued and not yet
/// taken by the stream.
pub(crate) const WRITE_QUEUE_BYTES: usize = 8 << 20;

/// The room left in one Write stream's queue, in bytes: a write takes
/// permits for its data, given back as the stream takes the message.
#[derive(Debug, Clone)]
struct QueueRoom {
    free: Arc<Semaphore>,
    bytes: usize,
}

impl QueueRoom {
    fn new(bytes: usize) -> QueueRoom {
        QueueRoom {
            free: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// Room for `len` bytes (a message larger than the whole queue takes
    /// all of it), waiting for the stream to take queued data when there
    /// is none. `None` where waiting is impossible: on an async thread of
    /// a current-thread runtime (its stream could not move meanwhile).
    fn reserve(&self, handle: &Handle, len: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(len.min(self.bytes)).unwrap_or(u32::MAX);
        if let Ok(p) = self.free.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        let wait = self.free.clone().acquire_many_owned(n);
        match Handle::try_current() {
            // A plain thread (berth-transfer's blocking calls).
            Err(_) => handle.block_on(wait).ok(),
            // An async worker (a pull's chunk writes) or a blocking
            // thread of a multi-thread runtime: it may wait in place.
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(wait)).ok()
            }
            Ok(_) => None,
        }
    }
}

/// The daemon's content store, seen through its Content service in the
/// client's namespace and lease.
#[derive(Debug, Clone)]
pub(crate) struct RemoteContent {
    client: ContentClient<Chan>,
    handle: Handle,
}

/// Runs `f` to completion from synchronous code on a blocking thread (a
/// call from an async thread would panic: berth-transfer makes none).
fn block<F: std::future::Future>(handle: &Handle, f: F) -> F::Output {
    handle.block_on(f)
}

/// A daemon status as a content-store error, by containerd's category.
fn from_status(what: &str, s: &tonic::Status) -> berth_content::Error {
    use berth_api::Category as C;
    use berth_content::Error as E;
    let msg = format!("{what}: {}", s.message());
    match berth_api::errdefs::category_of(s) {
        C::NotFound => E::NotFound(msg),
        C::AlreadyExists => E::AlreadyExists(msg),
        C::InvalidArgument => E::InvalidArgument(msg),
        C::FailedPrecondition | C::OutOfRange => E::FailedPrecondition(msg),
        C::Unavailable | C::Aborted => E::Unavailable(msg),
        category => E::Io {
            path: PathBuf::from("<content service>"),
            source: std::io::Error::other(format!("{msg} ({category})")),
        },
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RemoteContent {
    /// The Content service of `client` (its namespace and lease), its
    /// calls blocking on the current runtime.
    pub(crate) fn new(client: &Client) -> RemoteContent {
        RemoteContent {
            client: client.content(),
            handle: Handle::current(),
        }
    }
}

impl berth_content::Provider for RemoteContent {
    fn reader_at(
        &self,
        digest: &Digest,
    ) -> berth_content::Result<Box<dyn berth_content::ReaderAt>> {
        let mut c = self.client.clone();
        let info = block(&self.handle, async move {
            c.info(pb::InfoRequest {
                digest: digest.to_string(),
            })
            .await
        })
        .map_err(|s| from_status(&format!("content {digest}"), &s))?
        .into_inner()
        .info
        .unwrap_or_default();
        Ok(Box::new(RemoteReader {
            client: self.client.clone(),
            handle: self.handle.clone(),
            digest: digest.clone(),
            size: to_u64(info.size),
            window: Mutex::new((0, Vec::new())),
        }))
    }
}

/// One blob read through the Read stream, a window at a time.
struct RemoteReader {
    client: ContentClient<Chan>,
    handle: Handle,
    digest: Digest,
    size: u64,
    /// The last window read: its offset and bytes.
    window: Mutex<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for RemoteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl RemoteReader {
    /// Reads `len` bytes at `offset` from the daemon.
    fn fetch(&self, offset: u64, len: u64) -> berth_content::Result<Vec<u8>> {
        let mut c = self.client.clone();
        let digest = self.digest.to_string();
        let what = format!("reading content {digest}");
        block(&self.handle, async move {
            let mut stream = c
                .read(pb::ReadContentRequest {
                    digest,
                    offset: to_i64(offset),
                    size: to_i64(len),
                })
                .await?
                .into_inner();
            let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            while let Some(m) = stream.message().await? {
                data.extend_from_slice(&m.data);
            }
            Ok::<_, tonic::Status>(data)
        })
        .map_err(|s| from_status(&what, &s))
    }
}

impl berth_content::ReaderAt for RemoteReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> berth_content::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut window = self
            .window
            .lock()
            .map_err(|_| berth_content::Error::Unavailable("a reader's window".into()))?;
        let (start, data) = &*window;
        let inside = offset >= *start && offset < *start + data.len() as u64;
        if !inside {
            let len = READ_WINDOW.max(buf.len() as u64).min(self.size - offset);
            let data = self.fetch(offset, len)?;
            if data.is_empty() {
                return Ok(0);
            }
            *window = (offset, data);
        }
        let (start, data) = &*window;
        let from = usize::try_from(offset - start).unwrap_or(usize::MAX);
        let n = buf.len().min(data.len().saturating_sub(from));
        buf[..n].copy_from_slice(&data[from..from + n]);
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl berth_content::Ingester for RemoteContent {
    fn writer(
        &self,
        ref_: &str,
        total: Option<u64>,
        expected: Option<&Digest>,
    ) -> berth_content::Result<Box<dyn berth_content::Writer>> {
        if ref_.is_empty() {
            return Err(berth_content::Error::InvalidArgument(
                "an ingest needs a ref".into(),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel::<Queued>();
        let room = QueueRoom::new(WRITE_QUEUE_BYTES);
        // The first message names the ingest and asks where it stands (a
        // resumed ingest continues at its offset).
        let _ = tx.send((
            pb::WriteContentRequest {
                action: pb::WriteAction::Stat as i32,
                r#ref: ref_.to_string(),
                total: total.map_or(0, to_i64),
                expected: expected.map(ToString::to_string).unwrap_or_default(),
                ..Default::default()
            },
            None,
        ));
        let mut c = self.client.clone();
        let what = format!("ingest {ref_}");
        let (stream, first) = block(&self.handle, async move {
            let mut stream = c
                // The room a message took is given back as the stream
                // takes it.
                .write(
                    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                        .map(|(req, _room): Queued| req),
                )
                .await?
                .into_inner();
            let first = stream.message().await?.ok_or_else(|| {
                tonic::Status::unavailable("the daemon ended the write stream at once")
            })?;
            Ok::<_, tonic::Status>((stream, first))
        })
        .map_err(|s| from_status(&what, &s))?;
        let started_at = first
            .started_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(SystemTime::now);
        let offset = to_u64(first.offset);
        let failure: Arc<Mutex<Option<tonic::Status>>> = Arc::default();
        let answers = {
            let failure = failure.clone();
            self.handle.spawn(async move {
                let mut stream = stream;
                let mut committed = None;
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            if m.action == pb::WriteAction::Commit as i32 {
                                committed = Some(m);
                            }
                        }
                        Ok(None) => return Ok(committed),
                        Err(s) => {
                            if let Ok(mut f) = failure.lock() {
                                *f = Some(s.clone());
                            }
                            return Err(s);
                        }
                    }
                }
            })
        };
        let algorithm = expected.map_or(berth_content::Algorithm::Sha256, Digest::algorithm);
        Ok(Box::new(RemoteWriter {
            ref_: ref_.to_string(),
            tx: Some(tx),
            room,
            answers: Some(answers),
            failure,
            handle: self.handle.clone(),
            offset,
            total,
            expected: expected.cloned(),
            // A resumed ingest's digest is the daemon's to tell.
            hasher: (offset == 0).then(|| algorithm.digester()),
            started_at,
        }))
    }
}

/// The answers of one Write stream: the commit's, or the first failure.
type Answers = tokio::task::JoinHandle<Result<Option<pb::WriteContentResponse>, tonic::Status>>;

/// A queued Write message and the queue room its data holds.
type Queued = (pb::WriteContentRequest, Option<OwnedSemaphorePermit>);

/// One open Write stream.
struct RemoteWriter {
    ref_: String,
    tx: Option<mpsc::UnboundedSender<Queued>>,
    room: QueueRoom,
    answers: Option<Answers>,
    failure: Arc<Mutex<Option<tonic::Status>>>,
    handle: Handle,
    offset: u64,
    total: Option<u64>,
    expected: Option<Digest>,
    hasher: Option<Digester>,
    started_at: SystemTime,
}

impl std::fmt::Debug for RemoteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriter")
            .field("ref", &self.ref_)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl RemoteWriter {
    fn failed(&self) -> berth_content::Result<()> {
        match self.failure.lock().ok().and_then(|f| f.clone()) {
            Some(s) => Err(from_status(&format!("ingest {}", self.ref_), &s)),
            None => Ok(()),
        }
    }

    fn send(&self, req: pb::WriteContentRequest) -> berth_content::Result<()> {
        self.failed()?;
        let room = match req.data.len() {
            0 => None,
            n => self.room.reserve(&self.handle, n),
        };
        // A failure seen while waiting for room.
        self.failed()?;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((req, room)).is_ok());
        if !sent {
            self.failed()?;
            return Err(berth_content::Error::Unavailable(format!(
                "ingest {}: the write stream is closed",
                self.ref_
            )));
        }
        Ok(())
    }
}

impl berth_content::Writer for RemoteWriter {
    fn write(&mut self, data: &[u8]) -> berth_content::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.send(pb::WriteContentRequest {
            action: pb::WriteAction::Write as i32,
            offset: to_i64(self.offset),
            data: data.to_vec(),
            ..Default::default()
        })?;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    fn digest(&self) -> Digest {
        match &self.hasher {
            Some(h) => h.digest(),
            None => self.expected.clone().unwrap_or_else(|| Digest::of(&[])),
        }
    }

    fn status(&self) -> berth_content::Result<Status> {
        self.failed()?;
        Ok(Status {
            ref_: self.ref_.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: SystemTime::now(),
        })
    }

    fn truncate(&mut self, size: u64) -> berth_content::Result<()> {
        if size != 0 {
            return Err(berth_content::Error::InvalidArgument(format!(
                "ingest {}: only a truncation to 0 is supported",
                self.ref_
            )));
        }
        // The daemon truncates when the next write or commit says offset 0.
        self.offset = 0;
        let algorithm = self
            .expected
            .as_ref()
            .map_or(berth_content::Algorithm::Sha256, Digest::algorithm);
        self.hasher = Some(algorithm.digester());
        Ok(())
    }

    fn commit(
        mut self: Box<Self>,
        size: u64,
        expected: Option<&Digest>,
        labels: berth_content::Labels,
    ) -> berth_content::Result<()> {
        let expected = expected.cloned().or_else(|| self.expected.clone());
        self.send(pb::WriteContentRequest {
            action: pb::WriteAction::Commit as i32,
            total: to_i64(size),
            offset: to_i64(self.offset),
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            labels: labels.into_iter().collect(),
            ..Default::default()
        })?;
        // Ending our side ends the daemon's once it has answered.
        self.tx = None;
        let what = format!("committing ingest {}", self.ref_);
        let Some(answers) = self.answers.take() else {
            return Err(berth_content::Error::FailedPrecondition(what));
        };
        let answer = block(&self.handle, answers)
            .map_err(|e| berth_content::Error::Unavailable(format!("{what}: {e}")))?
            .map_err(|s| from_status(&what, &s))?
            .ok_or_else(|| {
                berth_content::Error::Unavailable(format!("{what}: the daemon did not answer"))
            })?;
        if size != 0 && to_u64(answer.offset) != size {
            return Err(berth_content::Error::FailedPrecondition(format!(
                "{what}: {} bytes written, {size} expected",
                answer.offset
            )));
        }
        if let Some(e) = expected
            && !answer.digest.is_empty()
            && answer.digest != e.as_str()
        {
            return Err(berth_content::Error::FailedPrecondition(format!(
                "{what}: unexpected commit digest {}, expected {e}",
                answer.digest
            )));
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> berth_content::Result<()> {
        self.tx = None;
        Ok(())
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        // Closing our side lets the daemon end the stream and the answer
        // task finish on its own.
        self.tx = None;
    }
}

impl ContentStore for RemoteContent {
    fn add_labels(
        &self,
        digest: &Digest,
        _size: u64,
        labels: BTreeMap<String, String>,
    ) -> berth_content::Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let mut c = self.client.clone();
        let req = pb::UpdateRequest {
            info: Some(pb::Info {
                digest: digest.to_string(),
                labels: labels.into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        block(&self.handle, async move { c.update(req).await })
            .map_err(|s| from_status(&format!("labelling content {digest}"), &s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_full_write_queue_waits_until_the_stream_takes_data() {
        let rt = multi_thread();
        let room = QueueRoom::new(10);
        let first = room.reserve(rt.handle(), 8).expect("room");
        // From a plain thread and from an async worker alike, the next
        // 8 bytes wait for the first 8 to leave the queue.
        let (tx, rx) = std::sync::mpsc::channel();
        let (plain, handle) = (room.clone(), rt.handle().clone());
        let tx2 = tx.clone();
        let waiter = std::thread::spawn(move || {
            tx2.send(plain.reserve(&handle, 8)).expect("send");
        });
        let worker = room.clone();
        let handle = rt.handle().clone();
        rt.spawn(async move {
            tx.send(worker.reserve(&handle, 8)).expect("send");
        });
        let limit = Duration::from_secs(10);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a write went past a full queue"
        );
        drop(first);
        let second = rx.recv_timeout(limit).expect("room").expect("a permit");
        assert_eq!(second.num_permits(), 8);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a write went past a full queue"
        );
        drop(second);
        let third = rx.recv_timeout(limit).expect("room").expect("a permit");
        assert_eq!(room.free.available_permits(), 2);
        drop(third);
        waiter.join().expect("join");
        // A message larger than the queue takes all of it.
        let whole = QueueRoom::new(4).reserve(rt.handle(), 100);
        assert_eq!(whole.map(|p| p.num_permits()), Some(4));
    }

    #[test]
    fn a_current_thread_runtime_never_waits_on_its_own_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let room = QueueRoom::new(4);
            let _full = room.reserve(&Handle::current(), 4).expect("room");
            assert!(room.reserve(&Handle::current(), 1).is_none());
        });
    }
}
