//! Writing a small blob into the content store in one call, as
//! containerd's client `writeContent` does for indexes and options.

use std::collections::HashMap;

use anyhow::bail;
use berth_api::client::Client;
use berth_api::containerd::services::content::v1::content_client::ContentClient;
use berth_api::containerd::services::content::v1::{WriteAction, WriteContentRequest};
use berth_api::containerd::types::Descriptor;
use sha2::Digest as _;

/// Writes `data` under ingest ref `reference` and commits it with `labels`;
/// content that already exists counts as written.
pub(crate) async fn write(
    client: &Client,
    media_type: &str,
    reference: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> anyhow::Result<Descriptor> {
    write_checked(client, media_type, reference, data, labels, true).await
}

/// [`write()`]; with `exists_ok` false, content that already exists is an
/// error (`commit failed: content <digest>: already exists`, as ctr's
/// `content edit` reports it).
pub(crate) async fn write_checked(
    client: &Client,
    media_type: &str,
    reference: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
    exists_ok: bool,
) -> anyhow::Result<Descriptor> {
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&data));
    let size = i64::try_from(data.len())?;
    let mut content = ContentClient::with_interceptor(client.channel(), client.interceptor());
    let requests = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.to_string(),
            total: size,
            data,
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.to_string(),
            total: size,
            offset: size,
            expected: digest.clone(),
            labels,
            ..Default::default()
        },
    ];
    let written = async {
        let mut responses = content
            .write(tokio_stream::iter(requests))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    match written {
        Ok(()) => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists && exists_ok => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            bail!("commit failed: content {digest}: already exists")
        }
        Err(e) => bail!("writing {reference}: {}", e.message()),
    }
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: HashMap::new(),
    })
}

/// A descriptor as OCI JSON (`mediaType`, `digest`, `size`, `annotations`).
pub(crate) fn descriptor_json(d: &Descriptor) -> serde_json::Value {
    let mut v = serde_json::json!({
        "mediaType": d.media_type,
        "digest": d.digest,
        "size": d.size,
    });
    if !d.annotations.is_empty() {
        v["annotations"] = serde_json::json!(d.annotations);
    }
    v
}
