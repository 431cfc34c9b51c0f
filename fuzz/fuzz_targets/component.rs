//! Loading a component from untrusted bytes: a plugin or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::{Client, ClientConfig};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        if let Ok(client) = Client::start(ClientConfig::wasm_bytes("fuzz", data.to_vec())).await {
            client.kill().await;
        }
    });
});
