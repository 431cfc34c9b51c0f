//! The greeter interface, in two versions: what version negotiation looks like to an adapter.
//!
//! `plinth:greeter/greeter@0.1.0` greets without a name; `@0.2.0` greets by name. One
//! [`Greeter`] trait serves both: on a `0.1.0` plugin the name is not sent.
//!
//! The same adapter loads go-plugin's classic netrpc greeter (`Greet() string`, served as
//! `Plugin.Greet`), whose greeting takes no name either.

use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "wasm")]
use plinth::Error;
#[cfg(feature = "subprocess")]
use plinth::NetRpcConn;
#[cfg(feature = "wasm")]
use plinth::wasm::{Instance, Pool};
use plinth::{Plugin, Result};

#[cfg(feature = "wasm")]
mod v1 {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/greeter-0.1"],
        world: "plinth:greeter/plugin@0.1.0",
        exports: { default: async },
    });
}

#[cfg(feature = "wasm")]
mod v2 {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/greeter-0.2"],
        world: "plinth:greeter/plugin@0.2.0",
        exports: { default: async },
    });
}

#[cfg(feature = "wasm")]
plinth::wasm_bindings!(v1::Plugin, v1::PluginPre<plinth::wasm::HostState>);
#[cfg(feature = "wasm")]
plinth::wasm_bindings!(v2::Plugin, v2::PluginPre<plinth::wasm::HostState>);

/// `plinth:greeter/greeter@0.1.0`.
pub const V1: &str = "plinth:greeter/greeter@0.1.0";
/// `plinth:greeter/greeter@0.2.0`.
pub const V2: &str = "plinth:greeter/greeter@0.2.0";
/// What [`Greeter::version`] says for a go-plugin netrpc greeter.
pub const NETRPC: &str = "go-plugin netrpc Greeter";

/// A plugin that greets.
#[async_trait]
pub trait Greeter: Send + Sync {
    /// A greeting for `name` (plugins of version 0.1.0 do not use the name).
    async fn greet(&self, name: &str) -> Result<String>;
    /// The interface version the plugin was dispensed with.
    fn version(&self) -> &str;
}

/// The adapter for the greeter, accepting some or all of its versions.
#[derive(Debug, Clone)]
pub struct GreeterPlugin {
    // The versions a component may be bound with; an executable has one.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    accepted: Vec<&'static str>,
}

impl GreeterPlugin {
    /// Accepts both versions; the highest the plugin exports wins.
    pub fn new() -> GreeterPlugin {
        GreeterPlugin {
            accepted: vec![V1, V2],
        }
    }

    /// Accepts only the given versions (of [`V1`], [`V2`]).
    pub fn accepting(accepted: &[&'static str]) -> GreeterPlugin {
        GreeterPlugin {
            accepted: accepted.to_vec(),
        }
    }
}

impl Default for GreeterPlugin {
    fn default() -> GreeterPlugin {
        GreeterPlugin::new()
    }
}

impl Plugin for GreeterPlugin {
    type Interface = dyn Greeter;

    fn name(&self) -> &str {
        "greeter"
    }

    #[cfg(feature = "wasm")]
    fn wasm_exports(&self) -> &[&str] {
        &self.accepted
    }

    #[cfg(feature = "wasm")]
    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn Greeter>> {
        let version = instance.interface().to_string();
        match version.as_str() {
            V1 => Ok(Arc::new(GreeterV1(instance.pool()?))),
            V2 => Ok(Arc::new(GreeterV2(instance.pool()?))),
            other => Err(Error::Config {
                reason: format!("the greeter adapter cannot bind {other}"),
            }),
        }
    }

    #[cfg(feature = "subprocess")]
    fn from_netrpc(&self, conn: NetRpcConn) -> Result<Arc<dyn Greeter>> {
        Ok(Arc::new(NetRpcGreeter(conn)))
    }
}

#[cfg(feature = "subprocess")]
struct NetRpcGreeter(NetRpcConn);

#[cfg(feature = "subprocess")]
#[async_trait]
impl Greeter for NetRpcGreeter {
    async fn greet(&self, _name: &str) -> Result<String> {
        // Go's `Greet(args interface{}, resp *string)`: the argument is a nil interface.
        self.0.call("Greet", &()).await
    }

    fn version(&self) -> &str {
        NETRPC
    }
}

#[cfg(feature = "wasm")]
struct GreeterV1(Pool<v1::Plugin>);

#[cfg(feature = "wasm")]
#[async_trait]
impl Greeter for GreeterV1 {
    async fn greet(&self, _name: &str) -> Result<String> {
        self.0
            .call(async |g, store| g.plinth_greeter_greeter().call_greet(store).await)
            .await
    }

    fn version(&self) -> &str {
        V1
    }
}

#[cfg(feature = "wasm")]
struct GreeterV2(Pool<v2::Plugin>);

#[cfg(feature = "wasm")]
#[async_trait]
impl Greeter for GreeterV2 {
    async fn greet(&self, name: &str) -> Result<String> {
        self.0
            .call(async |g, store| g.plinth_greeter_greeter().call_greet(store, name).await)
            .await
    }

    fn version(&self) -> &str {
        V2
    }
}
