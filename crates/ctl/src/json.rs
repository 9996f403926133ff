//! Machine-readable output: any API message rendered as JSON through the
//! API's own descriptor set, with protobuf field names (`container_id`, as
//! ctr's JSON shows them) and default-valued fields left out.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

/// The output format every list and info command takes (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Columns, as ctr prints them.
    #[default]
    Table,
    /// JSON: an array for lists, an object for one record, one object per
    /// line for streams (`events`).
    Json,
}

/// The descriptor pool of the whole API, decoded once.
fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(berth_api::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
}

/// `bytes`, a message of type `full_name`, as JSON; `None` when the type is
/// unknown to the API or the bytes do not decode as it.
pub(crate) fn decode(full_name: &str, bytes: &[u8]) -> Option<Value> {
    let desc = pool()?.get_message_by_name(full_name)?;
    let msg = DynamicMessage::decode(desc, bytes).ok()?;
    msg.serialize_with_options(serde_json::value::Serializer, &options())
        .ok()
}

/// A typed API message as JSON (`null` if it cannot be rendered, which the
/// API's own types never hit).
pub(crate) fn message<M: prost::Message + prost::Name>(m: &M) -> Value {
    decode(&M::full_name(), &m.encode_to_vec()).unwrap_or(Value::Null)
}

/// An `Any` payload as JSON: decoded when its type is part of the API,
/// else its type and size (a payload of a type berth does not know).
pub(crate) fn any(a: &prost_types::Any) -> Value {
    let name = a.type_url.rsplit('/').next().unwrap_or_default();
    decode(name, &a.value)
        .unwrap_or_else(|| serde_json::json!({ "@type": a.type_url, "size": a.value.len() }))
}

/// Prints `items` as one JSON array.
pub(crate) fn print_list<M: prost::Message + prost::Name>(items: &[M]) -> anyhow::Result<()> {
    let values: Vec<Value> = items.iter().map(message).collect();
    println!("{}", serde_json::to_string_pretty(&values)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_api::containerd::events::TaskExit;
    use berth_api::containerd::services::namespaces::v1::Namespace;

    #[test]
    fn messages_use_proto_field_names_and_skip_defaults() {
        let ns = Namespace {
            name: "dev".into(),
            labels: [("team".to_string(), "infra".to_string())].into(),
        };
        assert_eq!(
            super::message(&ns),
            serde_json::json!({"name": "dev", "labels": {"team": "infra"}})
        );
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 0,
            exited_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        };
        let v = super::message(&exit);
        assert_eq!(v["container_id"], "c1");
        assert_eq!(v["pid"], 42);
        assert!(v.get("exit_status").is_none(), "defaults are left out: {v}");
        assert_eq!(v["exited_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn unknown_any_types_show_their_type_and_size() {
        let a = prost_types::Any {
            type_url: "example.com/Unknown".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(
            super::any(&a),
            serde_json::json!({"@type": "example.com/Unknown", "size": 3})
        );
        let exit = TaskExit {
            container_id: "c1".into(),
            ..TaskExit::default()
        };
        let a = prost_types::Any {
            type_url: "containerd.events.TaskExit".into(),
            value: prost::Message::encode_to_vec(&exit),
        };
        assert_eq!(super::any(&a), serde_json::json!({"container_id": "c1"}));
    }
}
