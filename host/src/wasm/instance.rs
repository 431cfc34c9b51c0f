//! A loaded component, and the handle an adapter receives to build its interface from it.
//!
//! `Loaded` is what a client keeps of its component: the compiled code, the plugin's settings
//! and the pools serving it. [`Instance`] is what `Plugin::from_wasm` receives: the component
//! pre-linked against the host's imports, with the interface version that was negotiated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::error::{Error, Result};
use crate::output::Output;
use crate::wasm::dynamic::{Dynamic, Function, exported_functions, imported_functions, resources};
use crate::wasm::engine::Engine;
use crate::wasm::interface::InterfaceName;
use crate::wasm::limits::Limits;
use crate::wasm::pool::{Bindings, Drain, Pool, link_reason};
use crate::wasm::sandbox::Grants;
use crate::wasm::state::HostState;

/// Everything a client knows about its compiled component.
pub(crate) struct Loaded {
    name: Arc<str>,
    engine: Engine,
    component: Component,
    exports: Vec<String>,
    limits: Limits,
    grants: Grants,
    stdout: Output,
    stderr: Output,
    killed: AtomicBool,
    pools: Mutex<Vec<Weak<dyn Drain>>>,
}

/// The per-plugin settings a [`Loaded`] is made from.
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
}

impl Loaded {
    pub(crate) fn new(
        name: Arc<str>,
        engine: Engine,
        component: Component,
        settings: Settings,
    ) -> Loaded {
        let component_type = component.component_type();
        let exports = component_type
            .exports(engine.wasmtime())
            .map(|(name, _)| name.to_owned())
            .collect();
        Loaded {
            name,
            engine,
            component,
            exports,
            limits: settings.limits,
            grants: settings.grants,
            stdout: settings.stdout,
            stderr: settings.stderr,
            killed: AtomicBool::new(false),
            pools: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The component's imported and exported functions.
    pub(crate) fn world(&self) -> (Vec<Function>, Vec<Function>) {
        let engine = self.engine.wasmtime();
        (
            imported_functions(engine, &self.component),
            exported_functions(engine, &self.component),
        )
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }

    pub(crate) fn stdout(&self) -> &Output {
        &self.stdout
    }

    pub(crate) fn stderr(&self) -> &Output {
        &self.stderr
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub(crate) fn register_pool(&self, pool: Weak<dyn Drain>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Stops every pool: idle instances are dropped, new calls fail with [`Error::Killed`].
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        let pools = std::mem::take(&mut *self.pools.lock().unwrap_or_else(|p| p.into_inner()));
        for pool in pools.iter().filter_map(Weak::upgrade) {
            pool.drain();
        }
    }

    /// Links the component against WASI, `plinth:host` and the adapter's own imports.
    pub(crate) fn link(
        self: &Arc<Self>,
        interface: InterfaceName,
        add_imports: impl FnOnce(&mut Linker<HostState>) -> Result<()>,
    ) -> Result<Instance> {
        let pre = self.instantiate_pre(add_imports, false)?;
        Ok(Instance {
            loaded: self.clone(),
            pre,
            interface,
        })
    }

    /// Links the component for calls by name: imports the host does not provide trap.
    pub(crate) fn link_dynamic(self: &Arc<Self>) -> Result<Dynamic> {
        let pre = self.instantiate_pre(|_| Ok(()), true)?;
        let engine = self.engine.wasmtime();
        let functions = exported_functions(engine, &self.component);
        let resources = resources(engine, &self.component);
        Ok(Dynamic::new(
            Pool::new(self.clone(), pre)?,
            functions,
            resources,
        ))
    }

    fn instantiate_pre(
        &self,
        add_imports: impl FnOnce(&mut Linker<HostState>) -> Result<()>,
        unknown_imports_trap: bool,
    ) -> Result<InstancePre<HostState>> {
        let link_error = |e: wasmtime::Error| Error::Link {
            plugin: self.name().to_owned(),
            reason: link_reason(&e),
        };
        let mut linker = Linker::new(self.engine.wasmtime());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
        crate::wasm::symlinks::add_to_linker(&mut linker).map_err(link_error)?;
        crate::wasm::logging::add_to_linker(&mut linker).map_err(link_error)?;
        add_imports(&mut linker)?;
        if unknown_imports_trap {
            self.stub_foreign_imports(&mut linker).map_err(link_error)?;
        }
        linker.instantiate_pre(&self.component).map_err(link_error)
    }
}

impl Loaded {
    /// Links every imported function outside WASI and `plinth:host` to a function that traps.
    ///
    /// (wasmtime's `define_unknown_imports_as_traps` would also shadow WASI imports whose
    /// version differs from the linker's, which the linker otherwise matches by semver.)
    fn stub_foreign_imports(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let engine = self.engine.wasmtime();
        for (name, item) in self.component.component_type().imports(engine) {
            if name.starts_with("wasi:") || name.starts_with("plinth:host/") {
                continue;
            }
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    linker.root().func_new(name, trap_stub(name.to_owned()))?;
                }
                ComponentItem::ComponentInstance(instance) => {
                    let mut stubs = linker.instance(name)?;
                    for (func, item) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(_) = item.ty {
                            stubs.func_new(func, trap_stub(format!("{name}#{func}")))?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

type DynamicFn = dyn Fn(
        wasmtime::StoreContextMut<'_, HostState>,
        wasmtime::component::types::ComponentFunc,
        &[wasmtime::component::Val],
        &mut [wasmtime::component::Val],
    ) -> wasmtime::Result<()>
    + Send
    + Sync;

/// A host function that traps, naming the import the host does not provide.
fn trap_stub(import: String) -> Box<DynamicFn> {
    Box::new(move |_, _, _, _| {
        Err(wasmtime::Error::msg(format!(
            "the guest called {import}, which this host does not provide"
        )))
    })
}

/// A component linked and ready to instantiate, handed to `Plugin::from_wasm`.
pub struct Instance {
    loaded: Arc<Loaded>,
    pre: InstancePre<HostState>,
    interface: InterfaceName,
}

impl Instance {
    /// The interface, with the version negotiated for this dispense.
    pub fn interface(&self) -> &InterfaceName {
        &self.interface
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        self.loaded.name()
    }

    /// A pool of instances serving calls through the generated bindings `B`.
    pub fn pool<B: Bindings>(self) -> Result<Pool<B>> {
        Pool::new(self.loaded, self.pre)
    }
}
