//! A subscriber that stops reading through berthd's `Events.Subscribe`: the
//! daemon bounds what it queues for it and ends its stream with
//! `RESOURCE_EXHAUSTED` naming the lag, instead of dropping events silently
//! or growing without bound; a new subscription then works as before.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_api::client::Client;
use berth_api::containerd::services::events::v1 as events;
use berth_tests::Daemon;
use events::events_client::EventsClient;
use tokio_stream::StreamExt;
use tonic::Code;

/// Generous bound that turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

async fn connect(d: &Daemon) -> Result<Client> {
    Ok(Client::connect(&d.address)
        .await?
        .with_namespace(d.namespace.clone()))
}

fn payload(i: usize, size: usize) -> prost_types::Any {
    let mut value = format!("{i:04}").into_bytes();
    value.resize(size, b'.');
    prost_types::Any {
        type_url: "lag.test/Payload".into(),
        value,
    }
}

#[test]
fn a_subscriber_that_falls_behind_gets_an_error_status() -> Result<()> {
    let d = Daemon::start()?.in_namespace("events-lag");
    // 40 MiB against the default budget of 4 MiB: far more than the budget
    // plus what HTTP/2 windows and socket buffers hold.
    lag(&d, 1 << 20, 40, 4 << 20)?;
    d.finish()
}

#[test]
fn the_subscriber_budget_is_configurable() -> Result<()> {
    let config = "version = 2\n\
                  [plugins.\"io.containerd.event.v1.exchange\"]\n\
                  subscriber_budget = 262144\n";
    let d = Daemon::start_with_config(Some(config))?.in_namespace("events-lag");
    // 19 MiB against a budget of 256 KiB.
    lag(&d, 64 << 10, 300, 262_144)?;
    d.finish()
}

/// Publishes `count` events of `size` bytes past a subscriber that does not
/// read, then checks it receives some in order and then the lag error naming
/// `budget`, and that a new subscription works.
fn lag(d: &Daemon, size: usize, count: usize, budget: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Separate connections: the idle subscriber fills its connection's
        // flow-control window, which must not hold up the publisher.
        let sub_conn = connect(d).await?;
        let pub_conn = connect(d).await?;
        let mut subscriber =
            EventsClient::with_interceptor(sub_conn.channel(), sub_conn.interceptor());
        let mut publisher =
            EventsClient::with_interceptor(pub_conn.channel(), pub_conn.interceptor());
        let mut slow = subscriber
            .subscribe(events::SubscribeRequest {
                filters: vec![r#"topic=="/lag/big""#.into()],
            })
            .await?
            .into_inner();

        tokio::time::timeout(HANG, async {
            for i in 0..count {
                publisher
                    .publish(events::PublishRequest {
                        topic: "/lag/big".into(),
                        event: Some(payload(i, size)),
                    })
                    .await?;
            }
            anyhow::Ok(())
        })
        .await
        .context("publishing did not finish: a slow subscriber held up publishers")??;

        // The slow subscriber reads some events in order, then the error.
        let mut received = 0;
        let status = tokio::time::timeout(HANG, async {
            loop {
                match slow.next().await {
                    Some(Ok(envelope)) => {
                        let value = envelope.event.context("envelope without event")?.value;
                        assert!(value.starts_with(format!("{received:04}").as_bytes()));
                        received += 1;
                    }
                    Some(Err(status)) => return anyhow::Ok(status),
                    None => bail!("stream ended without an error after {received} events"),
                }
            }
        })
        .await
        .context("the lagging subscriber's stream did not end")??;
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("subscription error")
                && status.message().contains("fell behind"),
            "{status:?}"
        );
        assert!(
            status
                .message()
                .contains(&format!("over the budget of {budget}")),
            "{status:?}"
        );
        assert!(received < count, "received all {received} events");

        // The exchange carries on: a fresh subscription gets the next event.
        let mut fresh = subscriber
            .subscribe(events::SubscribeRequest {
                filters: vec![r#"topic=="/lag/after""#.into()],
            })
            .await?
            .into_inner();
        publisher
            .publish(events::PublishRequest {
                topic: "/lag/after".into(),
                event: Some(payload(0, size)),
            })
            .await?;
        let got = tokio::time::timeout(HANG, fresh.next())
            .await
            .context("no event on the fresh subscription")?
            .context("fresh subscription ended")??;
        assert_eq!(got.topic, "/lag/after");
        anyhow::Ok(())
    })
}
