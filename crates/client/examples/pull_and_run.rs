//! Pulls an image and runs `echo` in a container made from it, with the
//! task's output on ours: berth-client's README example.
//!
//! Usage: `pull_and_run [SOCKET] [IMAGE] [NAMESPACE]`

use berth_client::{Client, Stdio};

#[tokio::main]
async fn main() -> Result<(), berth_client::Error> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .unwrap_or_else(|| "/run/berth/berthd.sock".into());
    let image = args
        .next()
        .unwrap_or_else(|| "docker.io/library/busybox:latest".into());
    let namespace = args.next().unwrap_or_else(|| "example".into());

    let client = Client::connect(socket).await?.with_namespace(namespace);
    let image = client.pull(&image).await?;
    let container = client
        .new_container("hello")
        .image(&image)
        .image_config(&image)
        .args(["echo", "hello from a container"])
        .create()
        .await?;
    let mut task = container.new_task(Stdio::inherit()).await?;
    let exit = task.wait().await?;
    task.start().await?;
    let status = exit.await?;
    task.delete().await?;
    container.delete().await?;
    println!("exit status {}", status.code);
    Ok(())
}
