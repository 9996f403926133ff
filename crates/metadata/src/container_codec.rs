//! How container records are stored: protobuf, read back from JSON too.
//!
//! Records were JSON with the spec (an encoded protobuf `Any`) in base64;
//! listing a thousand containers spent a third of its time scanning and
//! decoding those strings. They are now written as the protobuf message
//! below, whose bytes are copied as they are. A JSON record always starts
//! with `{`, which no field key of this message encodes to (keys 1 to 11
//! are 0x0a to 0x58), so databases written before keep working: old
//! records are read as JSON and rewritten as protobuf on their next update.

use std::collections::BTreeMap;

use prost::Message;

use crate::containers::{AnyValue, ContainerRecord, Runtime};

/// A container record as stored (without its id, which is the key).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredContainer {
    #[prost(btree_map = "string, string", tag = "1")]
    labels: BTreeMap<String, String>,
    #[prost(string, tag = "2")]
    image: String,
    #[prost(string, tag = "3")]
    runtime_name: String,
    #[prost(message, optional, tag = "4")]
    runtime_options: Option<StoredAny>,
    #[prost(message, optional, tag = "5")]
    spec: Option<StoredAny>,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
    #[prost(btree_map = "string, message", tag = "8")]
    extensions: BTreeMap<String, StoredAny>,
    #[prost(string, tag = "9")]
    sandbox: String,
    #[prost(int64, tag = "10")]
    created: i64,
    #[prost(int64, tag = "11")]
    updated: i64,
}

/// A protobuf `Any` as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

impl From<AnyValue> for StoredAny {
    fn from(a: AnyValue) -> StoredAny {
        StoredAny {
            type_url: a.type_url,
            value: a.value,
        }
    }
}

impl From<StoredAny> for AnyValue {
    fn from(a: StoredAny) -> AnyValue {
        AnyValue {
            type_url: a.type_url,
            value: a.value,
        }
    }
}

/// The bytes stored for `record`.
pub(crate) fn encode(record: &ContainerRecord) -> Vec<u8> {
    let r = record.clone();
    let (created, updated) = r.times();
    StoredContainer {
        labels: r.labels,
        image: r.image,
        runtime_name: r.runtime.name,
        runtime_options: r.runtime.options.map(StoredAny::from),
        spec: r.spec.map(StoredAny::from),
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        extensions: r
            .extensions
            .into_iter()
            .map(|(k, v)| (k, StoredAny::from(v)))
            .collect(),
        sandbox: r.sandbox,
        created,
        updated,
    }
    .encode_to_vec()
}

/// The record stored as `bytes` (protobuf, or JSON from older databases),
/// without its id; the error says what could not be read.
pub(crate) fn decode(bytes: &[u8]) -> Result<ContainerRecord, String> {
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|e| e.to_string());
    }
    let s = StoredContainer::decode(bytes).map_err(|e| e.to_string())?;
    let mut r = ContainerRecord::default();
    r.labels = s.labels;
    r.image = s.image;
    r.runtime = Runtime {
        name: s.runtime_name,
        options: s.runtime_options.map(AnyValue::from),
    };
    r.spec = s.spec.map(AnyValue::from);
    r.snapshotter = s.snapshotter;
    r.snapshot_key = s.snapshot_key;
    r.extensions = s
        .extensions
        .into_iter()
        .map(|(k, v)| (k, AnyValue::from(v)))
        .collect();
    r.sandbox = s.sandbox;
    r.set_times(s.created, s.updated);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ContainerRecord {
        let mut r = ContainerRecord::default();
        r.labels = [("a".to_string(), "1".to_string())].into();
        r.image = "docker.io/library/busybox:latest".into();
        r.runtime = Runtime {
            name: "io.containerd.runc.v2".into(),
            options: Some(AnyValue {
                type_url: "opts".into(),
                value: vec![0, 1, 2, 255],
            }),
        };
        r.spec = Some(AnyValue {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: br#"{"ociVersion":"1.1.0"}"#.to_vec(),
        });
        r.snapshotter = "overlayfs".into();
        r.snapshot_key = "web".into();
        r.extensions = [(
            "ext".to_string(),
            AnyValue {
                type_url: "x".into(),
                value: vec![9; 40],
            },
        )]
        .into();
        r.sandbox = "sb".into();
        r.set_times(1_700_000_000_000_000_001, 1_700_000_000_000_000_002);
        r
    }

    #[test]
    fn protobuf_round_trip_keeps_every_field() {
        let r = full();
        let bytes = encode(&r);
        assert_ne!(bytes.first(), Some(&b'{'));
        assert_eq!(decode(&bytes).unwrap(), r);
    }

    #[test]
    fn json_records_from_older_databases_still_read() {
        let r = full();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(json.first(), Some(&b'{'));
        assert_eq!(decode(&json).unwrap(), r);
    }

    #[test]
    fn no_field_key_looks_like_json() {
        // The first byte of any non-empty encoding is a field key; JSON's
        // `{` must never be one of them, empty fields or not.
        let mut r = ContainerRecord::default();
        assert!(encode(&r).is_empty());
        r.set_times(0, 5);
        assert_eq!(encode(&r).first(), Some(&0x58));
        assert_ne!(encode(&full()).first(), Some(&b'{'));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"{not json").is_err());
        assert!(decode(&[0x0a, 0xff, 0xff]).is_err());
        assert!(decode(&[0xff; 12]).is_err());
    }
}
