//! `berthctl events`: streams daemon events until interrupted, through
//! berth-client's subscription.

use crate::context::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Filters (containerd filter syntax on `topic`, `namespace`), OR'd.
    filters: Vec<String>,
}

pub(crate) async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let client = berth_client::Client::from_raw(global.connect().await?, "");
    let filters: Vec<&str> = args.filters.iter().map(String::as_str).collect();
    let mut stream = client.events(&filters).await?;
    while let Some(event) = stream.next().await {
        let event = event?;
        let ts = event
            .timestamp
            .map(|t| humantime::format_rfc3339_nanos(t).to_string())
            .unwrap_or_default();
        // The payload decoded from its type, as ctr prints it (JSON).
        let payload = event
            .any
            .as_ref()
            .map_or(serde_json::Value::Null, crate::json::any);
        if global.json() {
            let line = serde_json::json!({
                "timestamp": ts,
                "namespace": event.namespace,
                "topic": event.topic,
                "event": payload,
            });
            println!("{line}");
        } else {
            println!("{ts} {} {} {payload}", event.namespace, event.topic);
        }
    }
    Ok(())
}
