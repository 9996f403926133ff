//! Prints the version of the daemon at the socket given as first argument.

use berth_api::client::Client;
use berth_api::containerd::services::version::v1::version_client::VersionClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/run/berth/berthd.sock".to_string());
    let client = Client::connect(&socket).await?;
    let mut version = VersionClient::with_interceptor(client.channel(), client.interceptor());
    let reply = version.version(()).await?.into_inner();
    println!("{} {}", reply.version, reply.revision);
    Ok(())
}
