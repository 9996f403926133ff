//! TLS to a real registry serving HTTPS with a certificate from a test CA:
//! refused by default, accepted with `ca` or `skip_verify` in hosts.toml.

mod common;

use anyhow::Result;
use berth_remotes::registry::{Registry, RegistryOptions};
use berth_remotes::{Descriptor, Error, Pushed, Resolver};
use bytes::Bytes;
use common::{LocalRegistry, make_certificates};

#[tokio::test]
async fn self_signed_registry_needs_ca_or_skip_verify() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (ca, cert, key) = make_certificates(certs.path())?;
    let reg = LocalRegistry::start_tls(&cert, &key)?;
    let reference = format!("{}/test/tls:v1", reg.host);
    let blob = Descriptor::of("application/octet-stream", b"over TLS");

    // 127.0.0.1 would be plain HTTP by default: say https explicitly.
    let hosts_dir = tempfile::tempdir()?;
    let dir = hosts_dir.path().join(&reg.host);
    std::fs::create_dir(&dir)?;
    let write = |extra: &str| {
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"https://{}\"\n{extra}", reg.host),
        )
    };

    write("")?;
    let client = Registry::new(RegistryOptions::default().with_hosts_dir(hosts_dir.path()))?;
    let err = client
        .pusher(&reference)?
        .push_bytes(&blob, Bytes::from_static(b"over TLS"))
        .await
        .expect_err("unknown CA");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("skip_verify"), "{err}");

    // The CA, relative to the hosts.toml directory.
    std::fs::copy(&ca, dir.join("test-ca.pem"))?;
    write("ca = \"test-ca.pem\"\n")?;
    let client = Registry::new(RegistryOptions::default().with_hosts_dir(hosts_dir.path()))?;
    let pushed = client
        .pusher(&reference)?
        .push_bytes(&blob, Bytes::from_static(b"over TLS"))
        .await?;
    assert_eq!(pushed, Pushed::Uploaded);

    write("skip_verify = true\n")?;
    let client = Registry::new(RegistryOptions::default().with_hosts_dir(hosts_dir.path()))?;
    let pushed = client
        .pusher(&reference)?
        .push_bytes(&blob, Bytes::from_static(b"over TLS"))
        .await?;
    assert_eq!(pushed, Pushed::Exists);
    Ok(())
}
