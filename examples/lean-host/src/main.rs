//! `lean-host PLUGIN KEY VALUE`: loads the kv plugin at PLUGIN (a go-plugin executable), stores
//! VALUE under KEY, reads it back and prints it. A component is refused: this host is built
//! without `plinth`'s `wasm` feature, and the kv adapter ([`KvPlugin`]) with its gRPC and
//! netrpc halves only.

use std::process::ExitCode;

use plinth::{Client, ClientConfig};
use plinth_examples::handshake;
use plinth_examples::kv::KvPlugin;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [plugin, key, value] = args.as_slice() else {
        eprintln!("usage: lean-host PLUGIN KEY VALUE");
        return ExitCode::from(2);
    };
    match run(plugin, key, value).await {
        Ok(stored) => {
            println!("{key} = {stored}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lean-host: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(plugin: &str, key: &str, value: &str) -> plinth::Result<String> {
    let client = Client::start(ClientConfig::file(plugin).handshake(handshake())).await?;
    let outcome = async {
        let kv = client.dispense(&KvPlugin).await?;
        kv.put(key, value.as_bytes()).await?;
        kv.get(key).await
    }
    .await;
    client.kill().await;
    Ok(String::from_utf8_lossy(&outcome?).into_owned())
}
