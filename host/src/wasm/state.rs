//! The data each guest instance's `Store` carries.
//!
//! [`HostState`] holds the instance's WASI context and resource table, its limiter and call
//! deadline, the plugin's name, and typed extensions where adapters keep what their own host
//! imports need (the counter's `add-helper`, for example).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::wasm::limits::{CallDeadline, StoreLimiter};

/// The host side of one guest instance.
pub struct HostState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    pub(crate) deadline: CallDeadline,
    extensions: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl HostState {
    pub(crate) fn new(
        plugin: Arc<str>,
        wasi: WasiCtx,
        limiter: StoreLimiter,
        deadline: CallDeadline,
    ) -> HostState {
        HostState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            limiter,
            deadline,
            extensions: HashMap::new(),
        }
    }

    /// The name of the plugin this instance belongs to.
    pub fn plugin_name(&self) -> &str {
        &self.plugin
    }

    /// The extension of type `T`, created with its default on first use.
    ///
    /// Adapters keep the state of their own host imports here; each instance has its own.
    pub fn extension<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.extensions
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("extensions are keyed by their own type id")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
