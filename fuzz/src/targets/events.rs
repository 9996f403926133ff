//! Event envelopes as clients forward them (`Events.Forward`, shims'
//! `/tasks/*`), through the exchange to a filtered subscriber, and their
//! payloads decoded by type URL as `berthctl events` prints them.

use std::sync::OnceLock;

use berth_api::containerd::types::Envelope as WireEnvelope;
use futures::FutureExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::{Def, PARSER_ITERS};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "events",
            default_iters: PARSER_ITERS,
            dictionary: &[
                "/tasks/exit",
                "/containers/create",
                "containerd.events.TaskExit",
                "types.googleapis.com/",
                "default",
                "k8s.io",
                "/",
                "\u{0}",
            ],
            max_len: 4 << 10,
        },
        check,
    }
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(berth_api::FILE_DESCRIPTOR_SET).expect("berth-api descriptors")
    })
}

fn check(data: &[u8]) {
    let Ok(wire) = WireEnvelope::decode(data) else {
        return;
    };
    let exchange = berth_events::Exchange::with_budget(64 << 10);
    let Ok(mut subscription) = exchange.subscribe(&[
        r#"topic~="/tasks/""#.to_string(),
        format!("namespace=={}", wire.namespace.replace(['"', '\\'], "")),
    ]) else {
        return;
    };
    if let Ok(envelope) = berth_daemon::services::events::from_wire(wire) {
        let name = envelope
            .event
            .type_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if let Some(desc) = pool().get_message_by_name(&name) {
            let _ = DynamicMessage::decode(desc, envelope.event.value.as_slice());
        }
        if exchange.forward(envelope).is_ok() {
            let _ = subscription.recv().now_or_never();
        }
    }
}
