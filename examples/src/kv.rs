//! The kv interface: `get` and `put` of byte values, with the plugin's errors as values.
//!
//! [`KvPlugin`] builds it from a component exporting `plinth:kv/store@0.1.0`, from a go-plugin
//! executable serving `proto.KV` over gRPC, or from a legacy netrpc one in the shape of
//! go-plugin's KV example (`Put(map[string]interface{})`, `Get(string) []byte`): the host code
//! is the same.

#[cfg(feature = "subprocess")]
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "subprocess")]
use plinth::PluginChannel;
#[cfg(feature = "subprocess")]
use plinth::gob::Value;
#[cfg(feature = "wasm")]
use plinth::wasm::{Instance, Pool};
#[cfg(feature = "subprocess")]
use plinth::{GrpcConn, MAX_MESSAGE_SIZE, NetRpcConn};
use plinth::{Plugin, Result};

#[cfg(feature = "subprocess")]
use crate::proto::kv_client::KvClient;
#[cfg(feature = "subprocess")]
use crate::proto::{GetRequest, PutRequest};

#[cfg(feature = "wasm")]
mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/kv"],
        world: "plinth:kv/plugin@0.1.0",
        exports: { default: async },
    });
}

#[cfg(feature = "wasm")]
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

    #[cfg(feature = "wasm")]
    fn wasm_exports(&self) -> &[&str] {
        &["plinth:kv/store@0.1.0"]
    }

    #[cfg(feature = "wasm")]
    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn Kv>> {
        Ok(Arc::new(WasmKv {
            pool: instance.pool()?,
        }))
    }

    #[cfg(feature = "subprocess")]
    fn from_grpc(&self, conn: GrpcConn) -> Result<Arc<dyn Kv>> {
        let client = KvClient::new(conn.channel())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Arc::new(GrpcKv { conn, client }))
    }

    #[cfg(feature = "subprocess")]
    fn from_netrpc(&self, conn: NetRpcConn) -> Result<Arc<dyn Kv>> {
        Ok(Arc::new(NetRpcKv(conn)))
    }
}

#[cfg(feature = "subprocess")]
struct NetRpcKv(NetRpcConn);

#[cfg(feature = "subprocess")]
#[async_trait]
impl Kv for NetRpcKv {
    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.0.call("Get", key).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        // A `map[string]interface{}`: each value travels under its Go type name.
        let args = BTreeMap::from([
            ("key".to_owned(), Value::String(key.to_owned())),
            ("value".to_owned(), Value::Bytes(value.to_vec())),
        ]);
        self.0.call("Put", &args).await
    }
}

#[cfg(feature = "subprocess")]
struct GrpcKv {
    conn: GrpcConn,
    client: KvClient<PluginChannel>,
}

#[cfg(feature = "subprocess")]
#[async_trait]
impl Kv for GrpcKv {
    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let request = GetRequest {
            key: key.to_owned(),
        };
        match self.client.clone().get(request).await {
            Ok(response) => Ok(response.into_inner().value),
            Err(status) => Err(self.conn.error("/proto.KV/Get", status).await),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let request = PutRequest {
            key: key.to_owned(),
            value: value.to_vec(),
        };
        match self.client.clone().put(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.conn.error("/proto.KV/Put", status).await),
        }
    }
}

#[cfg(feature = "wasm")]
struct WasmKv {
    pool: Pool<bindings::Plugin>,
}

#[cfg(feature = "wasm")]
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
