//! The counter interface: the guest calls back into the host during a call.
//!
//! As in go-plugin's bidirectional example, the host passes an [`AddHelper`] with each `put`.
//! A component's `add-helper.sum` import reaches it directly; an executable dials it through
//! the broker, where the host serves `proto.AddHelper` for the duration of the call. An error
//! from the helper stops the plugin's `put` and comes back from it.

use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "subprocess")]
use plinth::PluginChannel;
#[cfg(feature = "wasm")]
use plinth::wasm::wasmtime::component::{HasSelf, Linker};
#[cfg(feature = "wasm")]
use plinth::wasm::{HostState, Instance, Pool};
#[cfg(feature = "subprocess")]
use plinth::{GrpcConn, MAX_MESSAGE_SIZE};
use plinth::{Plugin, Result};
#[cfg(feature = "subprocess")]
use tonic::service::Routes;

#[cfg(feature = "subprocess")]
use crate::proto::add_helper_server::{self, AddHelperServer};
#[cfg(feature = "subprocess")]
use crate::proto::counter_client::CounterClient;
#[cfg(feature = "subprocess")]
use crate::proto::{CounterGetRequest, CounterPutRequest, SumRequest, SumResponse};

#[cfg(feature = "wasm")]
mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/counter"],
        world: "plinth:counter/plugin@0.1.0",
        imports: { "plinth:counter/add-helper.sum": async | trappable },
        exports: { default: async },
    });
}

#[cfg(feature = "wasm")]
plinth::wasm_bindings!(bindings::Plugin, bindings::PluginPre<HostState>);

#[cfg(feature = "wasm")]
use bindings::plinth::counter::add_helper;

/// The host-side helper the guest calls to add two numbers.
#[async_trait]
pub trait AddHelper: Send + Sync {
    /// Returns `a + b`.
    async fn sum(&self, a: i64, b: i64) -> Result<i64>;
}

/// A counter served by a plugin that adds through the host.
#[async_trait]
pub trait Counter: Send + Sync {
    /// Adds `value` to the count under `key`, calling `helper` to do the sum.
    async fn put(&self, key: &str, value: i64, helper: Arc<dyn AddHelper>) -> Result<()>;
    /// The count under `key`.
    async fn get(&self, key: &str) -> Result<i64>;
}

/// The adapter for `plinth:counter/counter@0.1.0`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterPlugin;

#[cfg(feature = "wasm")]
/// The helper for the call in progress, kept in the instance's host state.
#[derive(Default)]
struct HelperSlot(Option<Arc<dyn AddHelper>>);

#[cfg(feature = "wasm")]
impl add_helper::Host for HelperSlot {
    async fn sum(&mut self, a: i64, b: i64) -> plinth::wasm::wasmtime::Result<i64> {
        let helper = self.0.clone().ok_or_else(|| {
            plinth::wasm::wasmtime::Error::msg("add-helper.sum was called outside of `put`")
        })?;
        Ok(helper.sum(a, b).await?)
    }
}

impl Plugin for CounterPlugin {
    type Interface = dyn Counter;

    fn name(&self) -> &str {
        "counter"
    }

    #[cfg(feature = "wasm")]
    fn wasm_exports(&self) -> &[&str] {
        &["plinth:counter/counter@0.1.0"]
    }

    #[cfg(feature = "wasm")]
    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()> {
        add_helper::add_to_linker::<HostState, HasSelf<HelperSlot>>(linker, |state| {
            state.extension::<HelperSlot>()
        })
        .map_err(|e| plinth::Error::Config {
            reason: format!("cannot add the add-helper import: {e}"),
        })
    }

    #[cfg(feature = "wasm")]
    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn Counter>> {
        Ok(Arc::new(WasmCounter {
            pool: instance.pool()?,
        }))
    }

    #[cfg(feature = "subprocess")]
    fn from_grpc(&self, conn: GrpcConn) -> Result<Arc<dyn Counter>> {
        let client = CounterClient::new(conn.channel())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Arc::new(GrpcCounter { conn, client }))
    }
}

#[cfg(feature = "subprocess")]
struct GrpcCounter {
    conn: GrpcConn,
    client: CounterClient<PluginChannel>,
}

#[cfg(feature = "subprocess")]
#[async_trait]
impl Counter for GrpcCounter {
    async fn put(&self, key: &str, value: i64, helper: Arc<dyn AddHelper>) -> Result<()> {
        let broker = self.conn.broker();
        let id = broker.next_id();
        let service = AddHelperServer::new(HelperService(helper));
        // Served for this call only: dropping `_served` stops it.
        let _served = broker.accept_and_serve(id, Routes::new(service)).await?;
        let request = CounterPutRequest {
            add_server: id,
            key: key.to_owned(),
            value,
        };
        match self.client.clone().put(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.conn.error("/proto.Counter/Put", status).await),
        }
    }

    async fn get(&self, key: &str) -> Result<i64> {
        let request = CounterGetRequest {
            key: key.to_owned(),
        };
        match self.client.clone().get(request).await {
            Ok(response) => Ok(response.into_inner().value),
            Err(status) => Err(self.conn.error("/proto.Counter/Get", status).await),
        }
    }
}

#[cfg(feature = "subprocess")]
/// The host's [`AddHelper`] as the gRPC service the plugin dials.
struct HelperService(Arc<dyn AddHelper>);

#[cfg(feature = "subprocess")]
#[tonic::async_trait]
impl add_helper_server::AddHelper for HelperService {
    async fn sum(
        &self,
        request: tonic::Request<SumRequest>,
    ) -> std::result::Result<tonic::Response<SumResponse>, tonic::Status> {
        let SumRequest { a, b } = request.into_inner();
        match self.0.sum(a, b).await {
            Ok(r) => Ok(tonic::Response::new(SumResponse { r })),
            Err(error) => Err(tonic::Status::unknown(error.to_string())),
        }
    }
}

#[cfg(feature = "wasm")]
struct WasmCounter {
    pool: Pool<bindings::Plugin>,
}

#[cfg(feature = "wasm")]
#[async_trait]
impl Counter for WasmCounter {
    async fn put(&self, key: &str, value: i64, helper: Arc<dyn AddHelper>) -> Result<()> {
        let answer = self
            .pool
            .call(async |counter, store| {
                store.data_mut().extension::<HelperSlot>().0 = Some(helper);
                let answer = counter
                    .plinth_counter_counter()
                    .call_put(&mut *store, key, value)
                    .await;
                store.data_mut().extension::<HelperSlot>().0 = None;
                answer
            })
            .await?;
        answer.map_err(|e| self.pool.guest_error(e))
    }

    async fn get(&self, key: &str) -> Result<i64> {
        let answer = self
            .pool
            .call(async |counter, store| {
                counter.plinth_counter_counter().call_get(store, key).await
            })
            .await?;
        answer.map_err(|e| self.pool.guest_error(e))
    }
}
