//! `berthctl version`.

use berth_api::containerd::services::version::v1::version_client::VersionClient;

use crate::context::Global;

pub(crate) async fn run(global: &Global) -> anyhow::Result<()> {
    println!("Client:");
    println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
    println!(
        "  Revision: {}",
        option_env!("BERTH_REVISION").unwrap_or("unknown")
    );
    println!();
    let client = global.connect().await?;
    let mut version = VersionClient::with_interceptor(client.channel(), client.interceptor());
    let reply = version.version(()).await?.into_inner();
    println!("Server:");
    println!("  Version:  {}", reply.version);
    println!("  Revision: {}", reply.revision);
    let mut introspection =
        berth_api::containerd::services::introspection::v1::introspection_client::IntrospectionClient::with_interceptor(
            client.channel(),
            client.interceptor(),
        );
    if let Ok(server) = introspection.server(()).await {
        println!("  UUID: {}", server.into_inner().uuid);
    }
    Ok(())
}
