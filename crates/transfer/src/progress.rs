//! Progress of a transfer: plain events handed to a callback the caller
//! gives (a server forwards them to its clients, a CLI draws bars).

use std::sync::Arc;

use berth_images::manifest::Descriptor;

/// One progress event, as containerd's transfer service reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// What happened: `resolving`, `resolved`, `downloading`, `complete`,
    /// `exists`, `unpacking`, `unpacked`, `uploading`, `pushed`, `saved`, ...
    pub event: String,
    /// What it is about: a reference, or `layer-<digest>`, `manifest-<digest>`.
    pub name: String,
    /// Bytes done.
    pub progress: u64,
    /// Bytes in all (0 when unknown).
    pub total: u64,
    /// The blob concerned, if any.
    pub desc: Option<Descriptor>,
}

/// Where progress goes: a callback, or nowhere ([`Progress::none`]).
///
/// The callback runs on the transfer's tasks: it must be quick and must not
/// block (drop events rather than wait for a slow reader).
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("reporting", &self.sink.is_some())
            .finish()
    }
}

impl Progress {
    /// Progress that goes nowhere.
    pub fn none() -> Progress {
        Progress::default()
    }

    /// Progress handed to `f`, one event at a time.
    pub fn to(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Progress {
        Progress {
            sink: Some(Arc::new(f)),
        }
    }

    /// Reports `event` about `name` (`progress` of `total` bytes).
    pub fn event(
        &self,
        event: &str,
        name: &str,
        progress: u64,
        total: u64,
        desc: Option<&Descriptor>,
    ) {
        let Some(sink) = &self.sink else { return };
        sink(ProgressEvent {
            event: event.to_string(),
            name: name.to_string(),
            progress,
            total,
            desc: desc.cloned(),
        });
    }
}
