//! Sandbox and container records: ordinary containerd containers in
//! `k8s.io`, told apart by the label `io.cri-containerd.kind` and carrying
//! the CRI's own metadata in an extension, as containerd's CRI plugin keeps
//! them. So they survive a daemon restart with the rest of the metadata.

use std::collections::HashMap;

use berth_api::containerd::services::containers::v1 as cpb;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{CriError, Result};

/// Label naming what a containerd container is to the CRI.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// [`KIND_LABEL`] of a pod's pause container.
pub const KIND_SANDBOX: &str = "sandbox";
/// [`KIND_LABEL`] of an application container.
pub const KIND_CONTAINER: &str = "container";
/// Extension holding a sandbox's metadata.
pub const SANDBOX_EXTENSION: &str = "io.cri-containerd.sandbox.metadata";
/// Extension holding a container's metadata.
pub const CONTAINER_EXTENSION: &str = "io.cri-containerd.container.metadata";
/// Type URL of berth's JSON metadata documents in those extensions.
const META_TYPE_URL: &str = "berth.dev/cri/Metadata";

/// What the CRI keeps of a pod sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxMeta {
    /// Sandbox id.
    pub id: String,
    /// Reserved name (`name_namespace_uid_attempt`).
    pub name: String,
    /// The request's `PodSandboxConfig`, protobuf encoded, hex.
    pub config: String,
    /// Network namespace path ("" with host network).
    pub netns: String,
    /// Pod IP and further IPs.
    pub ips: Vec<String>,
    /// Runtime handler.
    pub runtime_handler: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The CNI results were torn down (the pod is stopped).
    pub network_down: bool,
}

/// What the CRI keeps of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// Container id.
    pub id: String,
    /// Reserved name.
    pub name: String,
    /// Owning sandbox.
    pub sandbox_id: String,
    /// The request's `ContainerConfig`, protobuf encoded, hex.
    pub config: String,
    /// Image id (config digest).
    pub image_id: String,
    /// Image reference as asked for.
    pub image_ref: String,
    /// Absolute log file path ("" when none).
    pub log_path: String,
    /// Nanoseconds since the epoch; 0 when not yet.
    pub created_at: i64,
    /// Start time.
    pub started_at: i64,
    /// Exit time (kept when the task is deleted).
    pub finished_at: i64,
    /// Exit code.
    pub exit_code: i32,
    /// Why it exited (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// Stdio FIFOs the task was started with.
    pub stdout: String,
    /// Stderr FIFO.
    pub stderr: String,
}

/// Hex of a message's protobuf encoding.
pub fn encode<M: Message>(m: &M) -> String {
    m.encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The message hex-encoded by [`encode`].
pub fn decode<M: Message + Default>(hex: &str) -> Result<M> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    let bytes = bytes.ok_or_else(|| CriError::Internal("corrupt CRI metadata (hex)".into()))?;
    M::decode(bytes.as_slice())
        .map_err(|e| CriError::Internal(format!("corrupt CRI metadata: {e}")))
}

/// The extension value of `meta`.
pub fn to_any<T: Serialize>(meta: &T) -> prost_types::Any {
    prost_types::Any {
        type_url: META_TYPE_URL.to_string(),
        value: serde_json::to_vec(meta).unwrap_or_default(),
    }
}

/// The metadata in `record`'s extension `key`.
pub fn from_record<T: for<'de> Deserialize<'de>>(record: &cpb::Container, key: &str) -> Result<T> {
    let any = record
        .extensions
        .get(key)
        .ok_or_else(|| CriError::Internal(format!("container {} has no {key}", record.id)))?;
    serde_json::from_slice(&any.value)
        .map_err(|e| CriError::Internal(format!("container {}: corrupt {key}: {e}", record.id)))
}

/// Labels of a record: the CRI's kind plus the user's.
pub fn record_labels(kind: &str, user: &HashMap<String, String>) -> HashMap<String, String> {
    let mut labels = user.clone();
    labels.insert(KIND_LABEL.to_string(), kind.to_string());
    labels
}

/// Nanoseconds since the epoch now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A new 64-hex-digit id, as containerd generates.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_hex() {
        let c = berth_api::runtime::v1::PodSandboxConfig {
            hostname: "h".into(),
            ..Default::default()
        };
        let back: berth_api::runtime::v1::PodSandboxConfig = decode(&encode(&c)).expect("decode");
        assert_eq!(back.hostname, "h");
        assert_eq!(new_id().len(), 64);
        assert!(decode::<berth_api::runtime::v1::PodSandboxConfig>("zz").is_err());
    }
}
