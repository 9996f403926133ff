//! Connection settings shared by every command.

use anyhow::Context as _;
use berth_api::client::Client;

/// Global flags: where the daemon is and which namespace to act in.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Global {
    /// Address of the daemon's gRPC socket.
    #[arg(
        short = 'a',
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "/run/berth/berthd.sock"
    )]
    pub(crate) address: String,
    /// Namespace to use (env BERTH_NAMESPACE, then CONTAINERD_NAMESPACE).
    #[arg(short = 'n', long, global = true)]
    pub(crate) namespace: Option<String>,
    /// Attach what this command creates to this lease.
    #[arg(long, global = true, env = "BERTH_LEASE")]
    pub(crate) lease: Option<String>,
    /// Output format of list, info and event commands.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub(crate) format: crate::json::Format,
}

impl Global {
    /// Whether output is to be JSON.
    pub(crate) fn json(&self) -> bool {
        self.format == crate::json::Format::Json
    }
}

impl Global {
    /// The namespace: flag, then `BERTH_NAMESPACE`, then `CONTAINERD_NAMESPACE`, then `default`.
    pub(crate) fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| {
                std::env::var("BERTH_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| {
                std::env::var("CONTAINERD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_string())
    }

    /// Connects to the daemon with the namespace set.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let client = Client::connect(&self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        let client = client.with_namespace(self.namespace());
        Ok(match &self.lease {
            Some(lease) => client.with_lease(lease.clone()),
            None => client,
        })
    }
}

/// Typed service clients over one connection.
pub(crate) mod clients {
    use berth_api::client::{Client, ContextInterceptor};
    use berth_api::containerd::services::containers::v1::containers_client::ContainersClient;
    use berth_api::containerd::services::tasks::v1::tasks_client::TasksClient;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    /// A channel carrying the namespace and lease headers.
    pub(crate) type Chan = InterceptedService<Channel, ContextInterceptor>;

    /// The Containers service.
    pub(crate) fn containers(c: &Client) -> ContainersClient<Chan> {
        ContainersClient::with_interceptor(c.channel(), c.interceptor())
    }

    /// The Tasks service.
    pub(crate) fn tasks(c: &Client) -> TasksClient<Chan> {
        TasksClient::with_interceptor(c.channel(), c.interceptor())
    }
}

#[cfg(test)]
mod tests {
    use super::Global;

    // One test, because it changes process-wide environment variables.
    #[test]
    fn namespace_precedence() {
        let g = |ns: Option<&str>| Global {
            address: String::new(),
            namespace: ns.map(str::to_string),
            lease: None,
            format: crate::json::Format::Table,
        };
        // Env mutation is unsafe in edition 2024; check against whatever
        // the environment holds instead.
        let env_berth = std::env::var("BERTH_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty());
        let env_ctr = std::env::var("CONTAINERD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty());
        assert_eq!(g(Some("flag")).namespace(), "flag");
        let expected = env_berth
            .or(env_ctr)
            .unwrap_or_else(|| "default".to_string());
        assert_eq!(g(None).namespace(), expected);
    }
}
