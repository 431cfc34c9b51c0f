//! The per-interface adapter a host author writes, and sets of them.
//!
//! A [`Plugin`] says how to build the host's typed interface (`Arc<dyn Kv>`) from a plugin: for
//! a wasm component, which WIT interface versions it binds, which host imports it adds, and how
//! it wraps the instance pool; for a go-plugin executable, how it wraps the gRPC connection
//! ([`Plugin::from_grpc`], go-plugin's `GRPCClient`). Several versions in
//! [`Plugin::wasm_exports`] play the part of `VersionedPlugins` for components; for executables
//! the negotiated application protocol version is [`GrpcConn::version`].
//! A [`PluginSet`] holds adapters by name for [`Client::dispense_named`](crate::Client::dispense_named).

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[cfg(feature = "wasm")]
use wasmtime::component::Linker;

use crate::error::{Error, Result};
#[cfg(feature = "subprocess")]
use crate::grpc::GrpcConn;
#[cfg(feature = "subprocess")]
use crate::netrpc::NetRpcConn;
#[cfg(feature = "wasm")]
use crate::wasm::{HostState, Instance};

/// An adapter from a plugin to the host's typed interface.
///
/// ```ignore
/// impl plinth::Plugin for KvPlugin {
///     type Interface = dyn Kv;
///     fn name(&self) -> &str { "kv" }
///     fn wasm_exports(&self) -> &[&str] { &["plinth:kv/store@0.1.0"] }
///     fn from_wasm(&self, instance: plinth::wasm::Instance) -> plinth::Result<Arc<dyn Kv>> {
///         Ok(Arc::new(WasmKv { pool: instance.pool()? }))
///     }
///     fn from_grpc(&self, conn: plinth::GrpcConn) -> plinth::Result<Arc<dyn Kv>> {
///         Ok(Arc::new(GrpcKv { client: KvClient::new(conn.channel()), conn }))
///     }
/// }
/// ```
// `from_wasm` and `from_grpc` build from a plugin, and take `&self` because the adapter
// carries its own settings: the names follow go-plugin's adapters.
#[allow(clippy::wrong_self_convention)]
pub trait Plugin: Send + Sync + 'static {
    /// The interface the host calls, usually a trait object (`dyn Kv`).
    type Interface: ?Sized + Send + Sync + 'static;

    /// The plugin's name in a [`PluginSet`] and in logs (`"kv"`).
    fn name(&self) -> &str;

    /// The WIT interfaces this adapter can bind, one per supported version
    /// (`"plinth:kv/store@0.1.0"`). Dispensing picks the highest one the component exports;
    /// [`Instance::interface`] says which. Default: none (a gRPC-only adapter).
    fn wasm_exports(&self) -> &[&str] {
        &[]
    }

    /// Adds the host imports this interface needs (callbacks such as the counter's
    /// `add-helper`) to the linker. WASI and `plinth:host` are already there.
    #[cfg(feature = "wasm")]
    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()> {
        let _ = linker;
        Ok(())
    }

    /// Builds the interface from a linked component. Default: [`Error::BackendUnsupported`].
    #[cfg(feature = "wasm")]
    fn from_wasm(&self, instance: Instance) -> Result<Arc<Self::Interface>> {
        Err(Error::BackendUnsupported {
            plugin: instance.plugin_name().to_owned(),
            adapter: self.name().to_owned(),
            backend: "wasm",
        })
    }

    /// Builds the interface from a connection to a go-plugin executable (go-plugin's
    /// `GRPCClient`). Default: [`Error::BackendUnsupported`].
    #[cfg(feature = "subprocess")]
    fn from_grpc(&self, conn: GrpcConn) -> Result<Arc<Self::Interface>> {
        Err(Error::BackendUnsupported {
            plugin: conn.name().to_owned(),
            adapter: self.name().to_owned(),
            backend: "gRPC",
        })
    }

    /// Builds the interface from a dispensed legacy `netrpc` plugin (go-plugin's `Client` of a
    /// `net/rpc` plugin). Default: [`Error::BackendUnsupported`].
    #[cfg(feature = "subprocess")]
    fn from_netrpc(&self, conn: NetRpcConn) -> Result<Arc<Self::Interface>> {
        Err(Error::BackendUnsupported {
            plugin: conn.name().to_owned(),
            adapter: self.name().to_owned(),
            backend: "netrpc",
        })
    }
}

/// A [`Plugin`] with its interface type erased, so adapters of different interfaces can share
/// one [`PluginSet`].
#[allow(clippy::wrong_self_convention)]
pub(crate) trait ErasedPlugin: Send + Sync {
    fn name(&self) -> &str;
    #[cfg(feature = "wasm")]
    fn wasm_exports(&self) -> &[&str];
    #[cfg(feature = "wasm")]
    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()>;
    fn interface_type(&self) -> (TypeId, &'static str);
    /// Returns a `Box<Arc<Interface>>`.
    #[cfg(feature = "wasm")]
    fn from_wasm_erased(&self, instance: Instance) -> Result<Box<dyn Any + Send + Sync>>;
    /// Returns a `Box<Arc<Interface>>`.
    #[cfg(feature = "subprocess")]
    fn from_grpc_erased(&self, conn: GrpcConn) -> Result<Box<dyn Any + Send + Sync>>;
    /// Returns a `Box<Arc<Interface>>`.
    #[cfg(feature = "subprocess")]
    fn from_netrpc_erased(&self, conn: NetRpcConn) -> Result<Box<dyn Any + Send + Sync>>;
}

impl<P: Plugin> ErasedPlugin for P {
    fn name(&self) -> &str {
        Plugin::name(self)
    }

    #[cfg(feature = "wasm")]
    fn wasm_exports(&self) -> &[&str] {
        Plugin::wasm_exports(self)
    }

    #[cfg(feature = "wasm")]
    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()> {
        Plugin::link_wasm(self, linker)
    }

    fn interface_type(&self) -> (TypeId, &'static str) {
        (
            TypeId::of::<Arc<P::Interface>>(),
            std::any::type_name::<Arc<P::Interface>>(),
        )
    }

    #[cfg(feature = "wasm")]
    fn from_wasm_erased(&self, instance: Instance) -> Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(self.from_wasm(instance)?))
    }

    #[cfg(feature = "subprocess")]
    fn from_grpc_erased(&self, conn: GrpcConn) -> Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(self.from_grpc(conn)?))
    }

    #[cfg(feature = "subprocess")]
    fn from_netrpc_erased(&self, conn: NetRpcConn) -> Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(self.from_netrpc(conn)?))
    }
}

/// Adapters by name, as go-plugin's `PluginSet`.
///
/// ```no_run
/// use plinth::{Client, ClientConfig, PluginSet};
/// use plinth_examples::kv::{Kv, KvPlugin};
///
/// # async fn run() -> plinth::Result<()> {
/// let config = ClientConfig::wasm("plugins/kv.wasm").plugins(PluginSet::new().with(KvPlugin));
/// let client = Client::start(config).await?;
/// // go-plugin's `raw.Dispense("kv")` and type assertion, checked.
/// let kv = client.dispense_named::<dyn Kv>("kv").await?;
/// kv.put("hello", b"world").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<dyn ErasedPlugin>>,
}

impl PluginSet {
    /// An empty set.
    pub fn new() -> PluginSet {
        PluginSet::default()
    }

    /// Adds `plugin` under its [`Plugin::name`], replacing any adapter of that name.
    pub fn with(mut self, plugin: impl Plugin) -> PluginSet {
        self.insert(plugin);
        self
    }

    /// Adds `plugin` under its [`Plugin::name`], replacing any adapter of that name.
    pub fn insert(&mut self, plugin: impl Plugin) {
        let name = Plugin::name(&plugin).to_owned();
        self.plugins.insert(name, Arc::new(plugin));
    }

    /// The names in the set, sorted.
    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ErasedPlugin>> {
        self.plugins.get(name)
    }
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.plugins.keys()).finish()
    }
}
