//! `berthctl events`: streams daemon events until interrupted.

use berth_api::containerd::services::events::v1::SubscribeRequest;
use berth_api::containerd::services::events::v1::events_client::EventsClient;

use crate::context::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Filters (containerd filter syntax on `topic`, `namespace`), OR'd.
    filters: Vec<String>,
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
        // The payload decoded from its type, as ctr prints it (JSON).
        let event = envelope
            .event
            .as_ref()
            .map_or(serde_json::Value::Null, crate::json::any);
        if global.json() {
            let line = serde_json::json!({
                "timestamp": ts,
                "namespace": envelope.namespace,
                "topic": envelope.topic,
                "event": event,
            });
            println!("{line}");
        } else {
            println!("{ts} {} {} {event}", envelope.namespace, envelope.topic);
        }
    }
    Ok(())
}
