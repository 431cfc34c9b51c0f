//! The counter interface: the guest calls back into the host during a call.
//!
//! As in go-plugin's bidirectional example, the host passes an [`AddHelper`] with each `put`;
//! the guest's `add-helper.sum` import reaches it. An error from the helper stops the guest and
//! comes back from `put` unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use plinth::wasm::wasmtime::component::{HasSelf, Linker};
use plinth::wasm::{HostState, Instance, Pool};
use plinth::{Plugin, Result};

mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/counter"],
        world: "plinth:counter/plugin@0.1.0",
        imports: { "plinth:counter/add-helper.sum": async | trappable },
        exports: { default: async },
    });
}

plinth::wasm_bindings!(bindings::Plugin, bindings::PluginPre<HostState>);

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

/// The helper for the call in progress, kept in the instance's host state.
#[derive(Default)]
struct HelperSlot(Option<Arc<dyn AddHelper>>);

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

    fn wasm_exports(&self) -> &[&str] {
        &["plinth:counter/counter@0.1.0"]
    }

    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()> {
        add_helper::add_to_linker::<HostState, HasSelf<HelperSlot>>(linker, |state| {
            state.extension::<HelperSlot>()
        })
        .map_err(|e| plinth::Error::Config {
            reason: format!("cannot add the add-helper import: {e}"),
        })
    }

    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn Counter>> {
        Ok(Arc::new(WasmCounter {
            pool: instance.pool()?,
        }))
    }
}

struct WasmCounter {
    pool: Pool<bindings::Plugin>,
}

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
