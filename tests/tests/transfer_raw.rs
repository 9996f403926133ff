//! Transfer calls no CLI makes, through berth-api's generated gRPC clients:
//! an import stream transferred straight to an export stream (containerd's
//! "echo", which clients use to test their stream plumbing) comes back
//! byte for byte; a registry's "not found" stays NotFound on the wire.

use anyhow::{Context, Result, bail};
use berth_api::client::Client;
use berth_api::containerd::services::streaming::v1::StreamInit;
use berth_api::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_api::containerd::services::transfer::v1::TransferRequest;
use berth_api::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_api::containerd::types::transfer::{
    Data, ImageExportStream, ImageImportStream, ImageStore, OciRegistry, RegistryResolver,
    WindowUpdate,
};
use berth_tests::{Daemon, Registry, testimages};
use prost::{Message, Name};
use tokio::sync::mpsc;

fn any<M: Message + Name>(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

/// One open stream of the Streaming service.
struct Stream {
    id: String,
    to_daemon: mpsc::Sender<prost_types::Any>,
    from_daemon: tonic::Streaming<prost_types::Any>,
}

/// Opens stream `id` and waits for the daemon's acknowledgement.
async fn open(client: &Client, id: &str) -> Result<Stream> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(any(&StreamInit { id: id.to_string() })).await?;
    let mut svc = StreamingClient::with_interceptor(client.channel(), client.interceptor());
    let mut from_daemon = svc
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    from_daemon.message().await?.context("no acknowledgement")?;
    Ok(Stream {
        id: id.to_string(),
        to_daemon: tx,
        from_daemon,
    })
}

/// Sends `data` as the daemon's window allows, then ends the stream.
async fn send_all(mut s: Stream, data: Vec<u8>) -> Result<()> {
    let mut window: i64 = 0;
    let mut rest = data.as_slice();
    while !rest.is_empty() {
        while window <= 0 {
            match s.from_daemon.message().await? {
                Some(m) if m.type_url.ends_with("WindowUpdate") => {
                    window += i64::from(WindowUpdate::decode(m.value.as_slice())?.update);
                }
                Some(_) => {}
                None => bail!("the daemon closed the import stream early"),
            }
        }
        let n = rest
            .len()
            .min(usize::try_from(window).unwrap_or(usize::MAX))
            .min(64 << 10);
        s.to_daemon
            .send(any(&Data {
                data: rest[..n].to_vec(),
            }))
            .await?;
        window -= i64::try_from(n)?;
        rest = &rest[n..];
    }
    drop(s.to_daemon);
    while s.from_daemon.message().await?.is_some() {}
    Ok(())
}

/// Receives everything the daemon sends, granting it room as it goes.
async fn receive_all(mut s: Stream) -> Result<Vec<u8>> {
    let grant = 1 << 20;
    s.to_daemon
        .send(any(&WindowUpdate { update: grant }))
        .await?;
    let (mut out, mut consumed) = (Vec::new(), 0_i32);
    while let Some(m) = s.from_daemon.message().await? {
        if !m.type_url.ends_with("Data") {
            continue;
        }
        let d = Data::decode(m.value.as_slice())?;
        consumed += i32::try_from(d.data.len())?;
        out.extend_from_slice(&d.data);
        if consumed >= grant / 2 {
            let _ = s
                .to_daemon
                .send(any(&WindowUpdate { update: consumed }))
                .await;
            consumed = 0;
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stream_echoes_to_an_export_stream() -> Result<()> {
    let d = Daemon::start()?;
    let layout = testimages::busybox(&d.scratch("busybox"))?;
    let archive = d.scratch("busybox.tar");
    layout.write_archive(&archive)?;
    let payload = std::fs::read(&archive)?;

    let client = Client::connect(&d.address).await?.with_namespace("default");
    let pid = std::process::id();
    let import = open(&client, &format!("echo-import-{pid}")).await?;
    let export = open(&client, &format!("echo-export-{pid}")).await?;
    let req = TransferRequest {
        source: Some(any(&ImageImportStream {
            stream: import.id.clone(),
            ..Default::default()
        })),
        destination: Some(any(&ImageExportStream {
            stream: export.id.clone(),
            ..Default::default()
        })),
        options: None,
    };
    let mut transfer = TransferClient::with_interceptor(client.channel(), client.interceptor());
    let call = tokio::spawn(async move { transfer.transfer(req).await });
    let sender = tokio::spawn(send_all(import, payload.clone()));
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(60), receive_all(export))
        .await
        .context("the echo did not finish within 60s")??;
    call.await??;
    sender.await??;
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs from what was sent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_an_image_the_registry_lacks_is_not_found() -> Result<()> {
    let registry = Registry::start()?;
    let d = Daemon::start()?;
    let client = Client::connect(&d.address).await?.with_namespace("default");
    let req = TransferRequest {
        source: Some(any(&OciRegistry {
            reference: format!("{}/berth/missing:v1", registry.host),
            resolver: Some(RegistryResolver {
                default_scheme: "http".to_string(),
                ..Default::default()
            }),
        })),
        destination: Some(any(&ImageStore::default())),
        options: None,
    };
    let mut transfer = TransferClient::with_interceptor(client.channel(), client.interceptor());
    let Err(status) = transfer.transfer(req).await else {
        bail!("pulling an image the registry does not have succeeded");
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    Ok(())
}
