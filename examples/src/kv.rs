//! The kv interface: `get` and `put` of byte values, with the guest's errors as values.

use std::sync::Arc;

use async_trait::async_trait;
use plinth::wasm::{Instance, Pool};
use plinth::{Plugin, Result};

mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/kv"],
        world: "plinth:kv/plugin@0.1.0",
        exports: { default: async },
    });
}

plinth::wasm_bindings!(
    bindings::Plugin,
    bindings::PluginPre<plinth::wasm::HostState>
);

/// A key/value store served by a plugin.
#[async_trait]
pub trait Kv: Send + Sync {
    /// The value stored under `key`; a missing key is the plugin's error.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Stores `value` under `key`.
    async fn put(&self, key: &str, value: &[u8]) -> Result<()>;
}

/// The adapter for `plinth:kv/store@0.1.0`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvPlugin;

impl Plugin for KvPlugin {
    type Interface = dyn Kv;

    fn name(&self) -> &str {
        "kv"
    }

    fn wasm_exports(&self) -> &[&str] {
        &["plinth:kv/store@0.1.0"]
    }

    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn Kv>> {
        Ok(Arc::new(WasmKv {
            pool: instance.pool()?,
        }))
    }
}

struct WasmKv {
    pool: Pool<bindings::Plugin>,
}

#[async_trait]
impl Kv for WasmKv {
    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let answer = self
            .pool
            .call(async |kv, store| kv.plinth_kv_store().call_get(store, key).await)
            .await?;
        answer.map_err(|e| self.pool.guest_error(e))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let answer = self
            .pool
            .call(async |kv, store| kv.plinth_kv_store().call_put(store, key, value).await)
            .await?;
        answer.map_err(|e| self.pool.guest_error(e))
    }
}
