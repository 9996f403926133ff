//! Lists namespaces the way `berthctl namespaces ls -q` does, through the
//! typed client, against the socket given as first argument.

use berth_api::client::Client;
use berth_api::containerd::services::namespaces::v1::ListNamespacesRequest;
use berth_api::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/run/berth/berthd.sock".to_string());
    let client = Client::connect(&socket).await?;
    let mut svc = NamespacesClient::with_interceptor(client.channel(), client.interceptor());
    for ns in svc
        .list(ListNamespacesRequest::default())
        .await?
        .into_inner()
        .namespaces
    {
        println!("{}", ns.name);
    }
    Ok(())
}
