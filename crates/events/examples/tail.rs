//! Publishes a few events and prints the ones a filtered subscription sees,
//! like `ctr events` against a live daemon.
//!
//! `cargo run -p berth-events --example tail -- 'topic~="^/tasks/"' 'namespace==k8s.io'`

use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use berth_events::{Exchange, topics};
use prost_types::Any;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let exchange = Exchange::new();
    let mut subscription = match exchange.subscribe(&filters) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };

    let publisher = exchange.clone();
    tokio::spawn(async move {
        for (namespace, topic) in [
            ("default", topics::IMAGE_CREATE),
            ("default", topics::CONTAINER_CREATE),
            ("default", topics::TASK_CREATE),
            ("k8s.io", topics::TASK_START),
            ("default", topics::TASK_EXIT),
        ] {
            let event = Any {
                type_url: format!("containerd.events.{}", topic.replace('/', "")),
                value: Vec::new(),
            };
            if let Err(err) = publisher.publish(namespace, topic, event) {
                eprintln!("publish: {err}");
            }
        }
        // Dropping the last exchange handle ends the subscription below.
    });
    drop(exchange);

    while let Some(envelope) = subscription.recv().await {
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let since_epoch = envelope
            .timestamp
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        println!(
            "{}.{:09} {} {} {}",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
            envelope.namespace,
            envelope.topic,
            envelope.event.type_url
        );
    }
    ExitCode::SUCCESS
}
