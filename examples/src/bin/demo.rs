//! The Plinth demo: loads the bundled example guests and Go plugins and shows each feature once.
//!
//! Run it with `cargo xtask demo`, which builds the wasm guests and the Go plugins (`tests/go`)
//! first. (`cargo run -p plinth-examples --bin demo` builds the guests only and skips the Go part
//! when its binaries are missing.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use plinth::wasm::{Access, Grants, Output};
use plinth::{Client, ClientConfig, HandshakeConfig, PluginSet, Protocol};
use plinth_examples::counter::{AddHelper, CounterPlugin};
use plinth_examples::greeter::GreeterPlugin;
use plinth_examples::kv::{Kv, KvPlugin};
use plinth_examples::{go_plugin, guest, handshake};

/// The host's side of the counter's callback.
struct HostAdder;

#[async_trait]
impl AddHelper for HostAdder {
    async fn sum(&self, a: i64, b: i64) -> plinth::Result<i64> {
        Ok(a + b)
    }
}

fn main() -> anyhow::Result<()> {
    plinth_examples::build_guests().map_err(anyhow::Error::msg)?;
    tokio::runtime::Runtime::new()?.block_on(demo())
}

async fn demo() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    section("greeter: version negotiation");
    let greeter = Client::start(ClientConfig::wasm(guest("greeter"))).await?;
    let hello = greeter.dispense(&GreeterPlugin::new()).await?;
    println!("{} -> {}", hello.version(), hello.greet("Plinth").await?);
    let old = Client::start(ClientConfig::wasm(guest("greeter-v1"))).await?;
    let hello = old.dispense(&GreeterPlugin::new()).await?;
    println!("{} -> {}", hello.version(), hello.greet("Plinth").await?);

    section("kv: values and errors across the boundary");
    let plugins = PluginSet::new().with(KvPlugin).with(GreeterPlugin::new());
    let kv_client = Client::start(
        ClientConfig::wasm(guest("kv"))
            .plugins(plugins)
            .max_instances(1),
    )
    .await?;
    let kv: Arc<dyn Kv> = kv_client.dispense_named("kv").await?;
    kv.put("hello", b"world").await?;
    println!(
        "get(hello) -> {:?}",
        String::from_utf8_lossy(&kv.get("hello").await?)
    );
    println!("get(nothing) -> {}", kv.get("nothing").await.unwrap_err());
    if let Some(checksum) = kv_client.checksum() {
        println!("sha256 to pin: {checksum}");
    }

    section("kv-files: a granted directory");
    let dir = std::env::temp_dir().join(format!("plinth-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the demo's data directory")?;
    let files = Client::start(
        ClientConfig::wasm(guest("kv-files")).grants(Grants::none().dir(
            &dir,
            "/data",
            Access::ReadWrite,
        )),
    )
    .await?;
    let store = files.dispense(&KvPlugin).await?;
    store
        .put("greeting.txt", b"written by a sandboxed guest")
        .await?;
    let on_disk = std::fs::read_to_string(dir.join("greeting.txt"))?;
    println!(
        "the host reads {}: {on_disk:?}",
        dir.join("greeting.txt").display()
    );
    println!(
        "escape attempt -> {}",
        store.get("../../etc/passwd").await.unwrap_err()
    );
    std::fs::remove_dir_all(&dir).ok();

    section("counter: the guest calls back into the host");
    let counter_client = Client::start(ClientConfig::wasm(guest("counter"))).await?;
    let counter = counter_client.dispense(&CounterPlugin).await?;
    for value in [1, 2, 39] {
        counter.put("answer", value, Arc::new(HostAdder)).await?;
    }
    println!("get(answer) -> {}", counter.get("answer").await?);

    section("misbehave: faults are errors, not crashes");
    let chaos = Client::start(
        ClientConfig::wasm(guest("misbehave"))
            .max_memory(32 << 20)
            .call_timeout(Duration::from_millis(500))
            .stdout(Output::Inherit)
            .stderr(Output::Inherit),
    )
    .await?;
    let chaos = chaos.dispense(&KvPlugin).await?;
    for key in [
        "loop",
        "alloc",
        "panic",
        "env:HOME",
        "read:/etc/hostname",
        "print",
    ] {
        match chaos.get(key).await {
            Ok(value) => println!("get({key}) -> {:?}", String::from_utf8_lossy(&value)),
            Err(e) => println!("get({key}) -> error: {}", first_line(&e.to_string())),
        }
    }

    section("concurrency: 64 tasks, one plugin");
    let greeter = Client::start(ClientConfig::wasm(guest("greeter")).max_instances(8)).await?;
    let hello = greeter.dispense(&GreeterPlugin::new()).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let hello = hello.clone();
        tasks.spawn(async move { hello.greet(&format!("task {i}")).await });
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        result??;
        answered += 1;
    }
    println!("{answered} of 64 calls answered, on up to 8 instances");

    kv_client.kill().await;
    println!("\nafter kill: {}", kv.get("hello").await.unwrap_err());

    go_plugins().await
}

/// The same adapters on go-plugin executables written in Go.
async fn go_plugins() -> anyhow::Result<()> {
    if !go_plugin("kv-plugin").exists() {
        println!("\n(the Go plugins are not built; `cargo xtask demo` builds them)");
        return Ok(());
    }
    section("one host, three kinds of plugin: the kv adapter on a component and on Go executables");
    for path in [guest("kv"), go_plugin("kv-plugin"), go_plugin("netrpc-kv")] {
        // `file` looks at the first bytes: a component is loaded, an executable launched.
        let config = ClientConfig::file(&path)
            .handshake(handshake())
            .allowed_protocols([Protocol::Grpc, Protocol::NetRpc]);
        let client = Client::start(config).await?;
        let kv = client.dispense(&KvPlugin).await?;
        kv.put("from", b"the same host code").await?;
        let value = kv.get("from").await?;
        let kind = match client.connection() {
            Some(connection) => format!(
                "go-plugin executable, {} v{} over {} with AutoMTLS",
                connection.protocol(),
                connection.negotiated_version(),
                connection.address().network()
            ),
            None => "wasm component, in-process".to_owned(),
        };
        println!(
            "{:<14} {kind}: get(from) -> {:?}",
            client.name(),
            String::from_utf8_lossy(&value)
        );
        client.kill().await;
    }

    section("netrpc: go-plugin's classic Greeter, served over net/rpc and gob");
    let client = Client::start(
        ClientConfig::command(go_plugin("netrpc-greeter"))
            .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
            .allowed_protocols([Protocol::NetRpc]),
    )
    .await?;
    let greeter = client.dispense(&GreeterPlugin::new()).await?;
    println!("greet() -> {:?}", greeter.greet("").await?);
    client.kill().await;

    section("counter: the Go plugin calls the host back through the broker");
    let client =
        Client::start(ClientConfig::command(go_plugin("counter-plugin")).handshake(handshake()))
            .await?;
    let counter = client.dispense(&CounterPlugin).await?;
    for value in [1, 2, 39] {
        counter.put("n", value, Arc::new(HostAdder)).await?;
    }
    println!("put 1, 2, 39 -> get(n) = {}", counter.get("n").await?);

    section("reattach: what another host needs to attach to the running plugin");
    let config = client
        .reattach_config()
        .context("an executable has a reattach config")?;
    println!("{}", config.to_json());
    client.kill().await;
    println!(
        "killed: {}",
        client
            .connection()
            .and_then(|c| c.exit_status())
            .unwrap_or_default()
    );
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
