//! A host that launches the Go kv plugin given as its argument, prints the plugin's pid, and
//! then waits to be killed — for the test that a plugin does not outlive a host that dies
//! without cleaning up.

use plinth::{Client, ClientConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: dying-host PLUGIN"))?;
    let client =
        Client::start(ClientConfig::command(path).handshake(plinth_examples::handshake())).await?;
    let pid = client
        .connection()
        .and_then(|connection| connection.pid())
        .ok_or_else(|| anyhow::anyhow!("the plugin has no pid"))?;
    println!("{pid}");
    std::future::pending::<()>().await;
    Ok(())
}
