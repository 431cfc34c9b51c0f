//! A kv adapter with a gRPC half only, for hosts built without `plinth`'s `wasm` feature.
//!
//! [`GrpcKvPlugin`] dispenses `Arc<dyn Kv>` from a go-plugin executable that serves the example
//! kv service (the Go fixtures, the Rust `kv-plugin`, the Python plugin). It is the adapter a
//! subprocess-only host writes: no `wasm_exports`, no `from_wasm`, nothing from wasmtime.

use std::sync::Arc;

use async_trait::async_trait;
use plinth::{GrpcConn, MAX_MESSAGE_SIZE, Plugin, PluginChannel, Result};
use plinth_example_plugins::proto::kv_client::KvClient;
use plinth_example_plugins::proto::{GetRequest, PutRequest};

pub use plinth_example_plugins::handshake;

/// The host's view of a key-value store plugin.
#[async_trait]
pub trait Kv: Send + Sync {
    /// The value stored under `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Stores `value` under `key`.
    async fn put(&self, key: &str, value: &[u8]) -> Result<()>;
}

/// Builds a [`Kv`] from a go-plugin executable's gRPC connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcKvPlugin;

impl Plugin for GrpcKvPlugin {
    type Interface = dyn Kv;

    fn name(&self) -> &str {
        "kv"
    }

    fn from_grpc(&self, conn: GrpcConn) -> Result<Arc<dyn Kv>> {
        let client = KvClient::new(conn.channel())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Arc::new(GrpcKv { conn, client }))
    }
}

struct GrpcKv {
    conn: GrpcConn,
    client: KvClient<PluginChannel>,
}

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
