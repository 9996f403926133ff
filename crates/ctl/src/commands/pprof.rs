//! `berthctl pprof profile`: berthd's CPU profile from its debug endpoint
//! (`[debug] address`), as `ctr pprof profile` fetches containerd's: a
//! gzipped pprof protobuf on stdout, for `go tool pprof` or any pprof
//! reader. ctr's other pprof commands dump Go runtime state (goroutines,
//! heap, blocking, thread creation, execution trace) that a Rust daemon
//! does not have.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::context::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// berthd's debug address: a UNIX socket path or host:port.
    #[arg(short = 'd', long, default_value = "/run/berth/debug.sock")]
    debug_socket: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// CPU profile (a gzipped pprof protobuf, on stdout).
    Profile {
        /// How long to sample (`30s`, `1m`; a bare number is seconds).
        #[arg(short, long, default_value = "30s", value_parser = parse_duration)]
        seconds: Duration,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// `GET path` over HTTP/1.0 on `address`; the body of a 200 answer.
async fn get(address: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: berthd\r\n\r\n");
    let mut answer = Vec::new();
    if address.starts_with('/') {
        let mut s = tokio::net::UnixStream::connect(address)
            .await
            .with_context(|| format!("connecting to the debug socket {address}"))?;
        s.write_all(request.as_bytes()).await?;
        s.read_to_end(&mut answer).await?;
    } else {
        let mut s = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to the debug address {address}"))?;
        s.write_all(request.as_bytes()).await?;
        s.read_to_end(&mut answer).await?;
    }
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("{address}: not an HTTP answer");
    };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let body = answer[end + 4..].to_vec();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!(
            "{address}{path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}

pub(crate) async fn run(_global: &Global, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Profile { seconds } => {
            let secs = seconds.as_secs().max(1);
            let body = get(
                &args.debug_socket,
                &format!("/debug/pprof/profile?seconds={secs}"),
            )
            .await?;
            let mut out = tokio::io::stdout();
            out.write_all(&body).await?;
            out.flush().await?;
        }
    }
    Ok(())
}
