//! Resolves a reference and fetches its root manifest or index, then every
//! blob a manifest names, verifying each one.
//!
//! ```text
//! cargo run -p berth-remotes --example pull -- 127.0.0.1:5000/library/busybox:latest
//! cargo run -p berth-remotes --example pull -- --hosts-dir /etc/berth/certs.d docker.io/library/busybox:latest
//! ```

use anyhow::{Context, Result, bail};
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Descriptor, Fetcher, Resolver};
use futures::StreamExt;

/// Fetches `desc` whole and checks its digest.
async fn fetch(fetcher: &dyn Fetcher, desc: &Descriptor) -> Result<Vec<u8>> {
    let mut stream = fetcher.fetch(desc).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    let actual = desc.digest.algorithm().digest(&data);
    if actual != desc.digest {
        bail!("{}: got {actual}", desc.digest);
    }
    Ok(data)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut options = RegistryOptions::default();
    let mut reference = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plain-http" => options = options.with_plain_http(true),
            "--hosts-dir" => {
                options = options.with_hosts_dir(args.next().context("--hosts-dir DIR")?)
            }
            _ => reference = Some(a),
        }
    }
    let Some(reference) = reference else {
        bail!("usage: pull [--plain-http] [--hosts-dir DIR] HOST/REPO:TAG");
    };

    let registry = Registry::new(options)?;
    let (name, desc) = registry.resolve(&reference).await?;
    println!("{name}: {desc}");
    let fetcher = registry.fetcher(&name)?;
    let manifest = fetch(fetcher.as_ref(), &desc).await?;
    let json: serde_json::Value = serde_json::from_slice(&manifest)?;

    // An image manifest names its config and layers; an index names manifests.
    let config = json.get("config").into_iter();
    let layers = json
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten();
    let manifests = json
        .get("manifests")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten();
    for d in config.chain(layers).chain(manifests) {
        let child: Descriptor = serde_json::from_value(d.clone())?;
        let data = fetch(fetcher.as_ref(), &child).await?;
        println!("  {child}: {} bytes verified", data.len());
    }
    Ok(())
}
