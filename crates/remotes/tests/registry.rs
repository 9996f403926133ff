//! The registry client against a real registry: Debian's `docker-registry`
//! on 127.0.0.1, one per test.

mod common;

use std::time::Duration;

use anyhow::Result;
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Descriptor, Digest, Error, Fetcher, Pushed, Pusher, Resolver};
use berth_types::media::OCI_MANIFEST;
use bytes::Bytes;
use common::{LocalRegistry, free_port, noise};
use futures::StreamExt;

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A one-layer image: (layer, config, manifest) bytes and descriptors.
struct Image {
    layer: (Descriptor, Vec<u8>),
    config: (Descriptor, Vec<u8>),
    manifest: (Descriptor, Vec<u8>),
}

fn image(seed: u64) -> Image {
    let layer = noise(300_000, seed);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of(&layer)
    )
    .into_bytes();
    let ld = Descriptor::of(LAYER_TYPE, &layer);
    let cd = Descriptor::of(CONFIG_TYPE, &config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{CONFIG_TYPE}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{LAYER_TYPE}","digest":"{}","size":{}}}]}}"#,
        cd.digest, cd.size, ld.digest, ld.size
    )
    .into_bytes();
    Image {
        layer: (ld, layer),
        config: (cd, config),
        manifest: (Descriptor::of(OCI_MANIFEST, &manifest), manifest),
    }
}

/// Pushes `img` to `reference`: layer, config, then the manifest.
async fn push_image(pusher: &dyn Pusher, img: &Image) -> Result<()> {
    for (desc, data) in [&img.layer, &img.config, &img.manifest] {
        let pushed = pusher.push_bytes(desc, Bytes::from(data.clone())).await?;
        assert_eq!(pushed, Pushed::Uploaded, "{desc}");
    }
    Ok(())
}

/// Everything a fetch yields, concatenated.
async fn fetch_all(fetcher: &dyn Fetcher, desc: &Descriptor, offset: u64) -> Result<Vec<u8>> {
    let mut s = fetcher.fetch_from(desc, offset).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn push_resolve_fetch_round_trip() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let reference = format!("{}/test/app:v1", reg.host);
    let img = image(1);

    let pusher = client.pusher(&reference)?;
    push_image(pusher.as_ref(), &img).await?;
    // A second push finds everything in place.
    for (desc, data) in [&img.layer, &img.config, &img.manifest] {
        let again = pusher.push_bytes(desc, Bytes::from(data.clone())).await?;
        assert_eq!(again, Pushed::Exists, "{desc}");
    }

    let (name, desc) = client.resolve(&reference).await?;
    assert_eq!(name, reference);
    assert_eq!(desc, img.manifest.0);

    // By digest too, with and without the tag.
    let by_digest = format!("{}/test/app@{}", reg.host, desc.digest);
    assert_eq!(client.resolve(&by_digest).await?.1, desc);
    let both = format!("{reference}@{}", desc.digest);
    assert_eq!(client.resolve(&both).await?.1, desc);

    let fetcher = client.fetcher(&name)?;
    for (d, data) in [&img.manifest, &img.config, &img.layer] {
        let got = fetch_all(fetcher.as_ref(), d, 0).await?;
        assert_eq!(Digest::of(&got), d.digest);
        assert_eq!(&got, data);
    }
    Ok(())
}

#[tokio::test]
async fn range_fetch_resumes_at_an_offset() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let reference = format!("{}/test/range:v1", reg.host);
    let img = image(2);
    push_image(client.pusher(&reference)?.as_ref(), &img).await?;

    let fetcher = client.fetcher(&reference)?;
    let (desc, data) = &img.layer;
    for offset in [1u64, 100_000, desc.size - 1] {
        let tail = fetch_all(fetcher.as_ref(), desc, offset).await?;
        assert_eq!(tail, data[usize::try_from(offset)?..], "offset {offset}");
    }
    assert!(
        fetch_all(fetcher.as_ref(), desc, desc.size)
            .await?
            .is_empty()
    );
    let err = fetcher
        .fetch_from(desc, desc.size + 1)
        .await
        .err()
        .expect("past the end");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    // Manifests resume too (fetched whole and verified, then cut).
    let (mdesc, mdata) = &img.manifest;
    assert_eq!(fetch_all(fetcher.as_ref(), mdesc, 10).await?, mdata[10..]);
    Ok(())
}

#[tokio::test]
async fn missing_content_is_not_found() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let img = image(3);
    let reference = format!("{}/test/present:v1", reg.host);
    push_image(client.pusher(&reference)?.as_ref(), &img).await?;

    let missing_tag = format!("{}/test/present:nope", reg.host);
    let err = client.resolve(&missing_tag).await.expect_err("missing tag");
    assert!(err.is_not_found(), "{err}");
    // (A HEAD answer has no body, so no registry error code to show.)
    assert!(err.to_string().contains(&missing_tag), "{err}");

    let missing_repo = format!("{}/test/absent:v1", reg.host);
    let err = client
        .resolve(&missing_repo)
        .await
        .expect_err("missing repo");
    assert!(err.is_not_found(), "{err}");

    let ghost = Descriptor::of(LAYER_TYPE, b"never pushed");
    let fetcher = client.fetcher(&reference)?;
    let err = fetcher.fetch(&ghost).await.err().expect("missing blob");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(ghost.digest.as_str()), "{err}");

    let ghost_manifest = Descriptor::of(OCI_MANIFEST, b"{}");
    let err = fetcher
        .fetch(&ghost_manifest)
        .await
        .err()
        .expect("missing manifest");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");

    // A reference without tag or digest cannot be resolved.
    let err = client
        .resolve(&format!("{}/test/present", reg.host))
        .await
        .expect_err("no object");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn fetched_content_is_checked_against_the_descriptor() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let reference = format!("{}/test/check:v1", reg.host);
    let img = image(4);
    push_image(client.pusher(&reference)?.as_ref(), &img).await?;
    let fetcher = client.fetcher(&reference)?;

    // A manifest descriptor with the wrong size.
    let mut wrong = img.manifest.0.clone();
    wrong.size += 1;
    let err = fetch_all(fetcher.as_ref(), &wrong, 0)
        .await
        .expect_err("size");
    assert!(
        matches!(
            err.downcast_ref::<Error>(),
            Some(Error::SizeMismatch { .. })
        ),
        "{err}"
    );

    // A blob longer than its descriptor says.
    let mut short = img.layer.0.clone();
    short.size -= 10;
    let err = fetch_all(fetcher.as_ref(), &short, 0)
        .await
        .expect_err("size");
    assert!(
        matches!(
            err.downcast_ref::<Error>(),
            Some(Error::SizeMismatch { .. })
        ),
        "{err}"
    );

    // Pushing data that is not what the descriptor says.
    let pusher = client.pusher(&format!("{}/test/check:v2", reg.host))?;
    let manifest = &img.manifest.0;
    let err = pusher
        .push_bytes(manifest, Bytes::from_static(b"{}"))
        .await
        .expect_err("manifest mismatch");
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    let claimed = Descriptor::of(LAYER_TYPE, b"abc");
    let err = pusher
        .push_bytes(&claimed, Bytes::from_static(b"abd"))
        .await
        .expect_err("blob mismatch");
    assert!(err.to_string().contains("DIGEST_INVALID"), "{err}");
    Ok(())
}

#[tokio::test]
async fn mirrors_are_tried_in_order_with_fallback() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let img = image(5);
    // Push straight to the registry.
    let direct = Registry::new(RegistryOptions::default())?;
    push_image(
        direct
            .pusher(&format!("{}/test/mirrored:v1", reg.host))?
            .as_ref(),
        &img,
    )
    .await?;

    // `registry.invalid` is served by a dead mirror, then by the registry.
    let certs = tempfile::tempdir()?;
    let dir = certs.path().join("registry.invalid");
    std::fs::create_dir(&dir)?;
    let dead = free_port()?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host
        ),
    )?;
    let client = Registry::new(RegistryOptions::default().with_hosts_dir(certs.path()))?;
    let reference = "registry.invalid/test/mirrored:v1";
    let (_, desc) = client.resolve(reference).await?;
    assert_eq!(desc, img.manifest.0);
    let fetcher = client.fetcher(reference)?;
    assert_eq!(
        fetch_all(fetcher.as_ref(), &img.layer.0, 0).await?,
        img.layer.1
    );

    // A live mirror (the same registry, reached as a mirror with `?ns=`)
    // in front of a dead server.
    let mirror_dir = certs.path().join("other.invalid");
    std::fs::create_dir(&mirror_dir)?;
    std::fs::write(
        mirror_dir.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:{dead}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host
        ),
    )?;
    let (_, desc) = client.resolve("other.invalid/test/mirrored:v1").await?;
    assert_eq!(desc, img.manifest.0);

    // With only the dead host, the error says it cannot connect.
    let dead_only = certs.path().join("dead.invalid");
    std::fs::create_dir(&dead_only)?;
    std::fs::write(
        dead_only.join("hosts.toml"),
        format!("server = \"http://127.0.0.1:{dead}\"\n"),
    )?;
    let err = client
        .resolve("dead.invalid/test/mirrored:v1")
        .await
        .expect_err("dead");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn https_to_a_plain_http_registry_suggests_plain_http() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let certs = tempfile::tempdir()?;
    let dir = certs.path().join(&reg.host);
    std::fs::create_dir(&dir)?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"https://{}\"\n", reg.host),
    )?;
    let client = Registry::new(RegistryOptions::default().with_hosts_dir(certs.path()))?;
    let err = client
        .resolve(&format!("{}/test/tls:v1", reg.host))
        .await
        .expect_err("tls");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("--plain-http") && msg.contains("skip_verify"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn cross_repository_mount() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let img = image(6);
    push_image(
        client
            .pusher(&format!("{}/test/source:v1", reg.host))?
            .as_ref(),
        &img,
    )
    .await?;
    let target = client.repository(&format!("{}/test/target:v1", reg.host))?;
    assert!(target.mount(&img.layer.0, "test/source").await?);
    assert_eq!(fetch_all(&target, &img.layer.0, 0).await?, img.layer.1);
    let ghost = Descriptor::of(LAYER_TYPE, b"not there");
    assert!(!target.mount(&ghost, "test/source").await?);
    Ok(())
}

#[tokio::test]
async fn manifests_push_by_digest_without_a_tag() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default())?;
    let img = image(7);
    push_image(
        client
            .pusher(&format!("{}/test/untagged", reg.host))?
            .as_ref(),
        &img,
    )
    .await?;
    let by_digest = format!("{}/test/untagged@{}", reg.host, img.manifest.0.digest);
    assert_eq!(client.resolve(&by_digest).await?.1, img.manifest.0);
    let err = client
        .resolve(&format!("{}/test/untagged:latest", reg.host))
        .await
        .expect_err("no tag was pushed");
    assert!(err.is_not_found(), "{err}");
    Ok(())
}

#[tokio::test]
async fn blob_downloads_are_limited_per_host() -> Result<()> {
    let reg = LocalRegistry::start()?;
    let client = Registry::new(RegistryOptions::default().with_max_concurrent_downloads(1))?;
    let reference = format!("{}/test/limit:v1", reg.host);
    let img = image(8);
    push_image(client.pusher(&reference)?.as_ref(), &img).await?;
    let fetcher = client.fetcher(&reference)?;

    let first = fetcher.fetch(&img.layer.0).await?;
    // The second download waits for the first to be dropped.
    let waiting = {
        let fetcher = client.fetcher(&reference)?;
        let config = img.config.0.clone();
        tokio::spawn(async move { fetcher.fetch(&config).await })
    };
    // Meanwhile a whole download through another client (no shared
    // limit) completes: a second download that did not wait would have
    // had its chance to finish too. The check below is an ordering, so a
    // slow machine can only make it miss a bug, never fail a good limiter.
    let other = Registry::new(RegistryOptions::default())?;
    let mut elsewhere = other.fetcher(&reference)?.fetch(&img.config.0).await?;
    while let Some(c) = elsewhere.next().await {
        c?;
    }
    assert!(
        !waiting.is_finished(),
        "second download started while the first ran"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("second download after the first ended")??;
    let mut got = Vec::new();
    while let Some(c) = second.next().await {
        got.extend_from_slice(&c?);
    }
    assert_eq!(got, img.config.1);
    // A finished download gives its turn back even before it is dropped.
    let mut held = tokio::time::timeout(Duration::from_secs(10), fetcher.fetch(&img.layer.0))
        .await
        .expect("the finished download released its permit")?;
    drop(second);
    assert!(held.next().await.is_some());
    drop(held);
    // Manifests are not counted: they are small and needed first.
    let mut held = fetcher.fetch(&img.layer.0).await?;
    assert!(
        !fetch_all(fetcher.as_ref(), &img.manifest.0, 0)
            .await?
            .is_empty()
    );
    assert!(held.next().await.is_some());
    Ok(())
}
