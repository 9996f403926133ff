//! `berthctl events`: streams daemon events until interrupted.

use berth_api::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use berth_api::containerd::services::events::v1::SubscribeRequest;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use prost::Message;

use crate::context::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Filters (containerd filter syntax on `topic`, `namespace`), OR'd.
    filters: Vec<String>,
}

/// A readable form of an event payload: decoded for known types, else its type.
fn describe(any: &prost_types::Any) -> String {
    fn show<M: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
        M::decode(bytes).map_or_else(|e| format!("<undecodable: {e}>"), |m| format!("{m:?}"))
    }
    match any.type_url.rsplit('/').next().unwrap_or_default() {
        "containerd.events.NamespaceCreate" => show::<NamespaceCreate>(&any.value),
        "containerd.events.NamespaceUpdate" => show::<NamespaceUpdate>(&any.value),
        "containerd.events.NamespaceDelete" => show::<NamespaceDelete>(&any.value),
        other => format!("<{other}, {} bytes>", any.value.len()),
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = global.connect().await?;
    let mut svc = EventsClient::with_interceptor(client.channel(), client.interceptor());
    let mut stream = svc
        .subscribe(SubscribeRequest {
            filters: args.filters,
        })
        .await?
        .into_inner();
    while let Some(envelope) = stream.message().await? {
        let ts = envelope
            .timestamp
            .and_then(|t| std::time::SystemTime::try_from(t).ok())
            .map(|t| humantime::format_rfc3339_nanos(t).to_string())
            .unwrap_or_default();
        let event = envelope.event.as_ref().map(describe).unwrap_or_default();
        println!("{ts} {} {} {event}", envelope.namespace, envelope.topic);
    }
    Ok(())
}
