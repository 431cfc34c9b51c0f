//! One plugin's lifecycle: [`ClientConfig`] says what to load and how, [`Client`] loads it and
//! dispenses typed interfaces from it until it is killed.
//!
//! The names follow go-plugin's `ClientConfig` and `Client` so that a migrating host finds
//! them: `plugins`, `checksum` (`SecureConfig`), `stdout`/`stderr` (`SyncStdout`/`SyncStderr`),
//! `dispense`, `kill`, `exited`. The wasm settings (grants, limits, cache) are added alongside.

use std::any::type_name;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::kind::FileKind;
use crate::plugin::{ErasedPlugin, Plugin, PluginSet};
use crate::secure::Checksum;
use crate::wasm::instance::{Loaded, Settings};
use crate::wasm::interface::{InterfaceName, negotiate};
use crate::wasm::{CacheOutcome, Engine, Grants, Limits, Output};

/// Where a plugin's code comes from.
#[derive(Clone)]
enum Source {
    WasmFile(PathBuf),
    WasmBytes(Arc<[u8]>),
}

/// What to load and how to run it.
///
/// ```no_run
/// use std::time::Duration;
/// use plinth::ClientConfig;
/// use plinth::wasm::{Access, Grants};
///
/// let config = ClientConfig::wasm("plugins/kv.wasm")
///     .grants(Grants::none().dir("/var/lib/kv", "/data", Access::ReadWrite))
///     .max_memory(64 << 20)
///     .call_timeout(Duration::from_secs(5))
///     .cache_dir("/var/cache/plinth");
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    source: Source,
    name: Option<String>,
    plugins: PluginSet,
    checksum: Option<Checksum>,
    grants: Grants,
    limits: Limits,
    stdout: Output,
    stderr: Output,
    cache_dir: Option<PathBuf>,
    engine: Option<Engine>,
}

impl ClientConfig {
    /// Loads the component at `path`. The plugin's name defaults to the file's stem.
    pub fn wasm(path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig::from_source(Source::WasmFile(path.into()))
    }

    /// Loads a component from memory under the plugin name `name`.
    pub fn wasm_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> ClientConfig {
        ClientConfig::from_source(Source::WasmBytes(bytes.into())).name(name)
    }

    fn from_source(source: Source) -> ClientConfig {
        ClientConfig {
            source,
            name: None,
            plugins: PluginSet::new(),
            checksum: None,
            grants: Grants::none(),
            limits: Limits::default(),
            stdout: Output::default(),
            stderr: Output::default(),
            cache_dir: None,
            engine: None,
        }
    }

    /// The plugin's name in logs and errors.
    pub fn name(mut self, name: impl Into<String>) -> ClientConfig {
        self.name = Some(name.into());
        self
    }

    /// The adapters [`Client::dispense_named`] can use.
    pub fn plugins(mut self, plugins: PluginSet) -> ClientConfig {
        self.plugins = plugins;
        self
    }

    /// Refuses to load unless the plugin's bytes hash to `checksum` (go-plugin's `SecureConfig`).
    pub fn checksum(mut self, checksum: Checksum) -> ClientConfig {
        self.checksum = Some(checksum);
        self
    }

    /// What the sandbox lets the guest touch. Default: nothing.
    pub fn grants(mut self, grants: Grants) -> ClientConfig {
        self.grants = grants;
        self
    }

    /// All resource limits at once. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> ClientConfig {
        self.limits = limits;
        self
    }

    /// The largest linear memory one instance may grow to, in bytes. Default: 256 MiB.
    pub fn max_memory(mut self, bytes: usize) -> ClientConfig {
        self.limits.max_memory = bytes;
        self
    }

    /// How long one call may run. Default: 30 seconds.
    pub fn call_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.limits.call_timeout = Some(timeout);
        self
    }

    /// Lets calls run without a deadline.
    pub fn no_call_timeout(mut self) -> ClientConfig {
        self.limits.call_timeout = None;
        self
    }

    /// How many instances may serve calls at once. Default: 16. Instances do not share
    /// memory: use 1 for a guest that keeps state in memory (see [`Limits::max_instances`]).
    pub fn max_instances(mut self, count: usize) -> ClientConfig {
        self.limits.max_instances = count;
        self
    }

    /// Where the guest's stdout lines go. Default: [`Output::Tracing`].
    pub fn stdout(mut self, output: Output) -> ClientConfig {
        self.stdout = output;
        self
    }

    /// Where the guest's stderr lines go. Default: [`Output::Tracing`].
    pub fn stderr(mut self, output: Output) -> ClientConfig {
        self.stderr = output;
        self
    }

    /// Caches compiled components in `dir`. Default: no disk cache (compiled components are
    /// still shared within the process).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> ClientConfig {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Runs the plugin on `engine` instead of [`Engine::shared`].
    pub fn engine(mut self, engine: Engine) -> ClientConfig {
        self.engine = Some(engine);
        self
    }

    fn plugin_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.source {
            Source::WasmFile(path) => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            Source::WasmBytes(_) => "plugin".to_owned(),
        }
    }
}

/// A loaded plugin, ready to dispense interfaces.
///
/// A `Client` is cheap to share (`Send + Sync`); the interfaces it dispenses are too, and
/// concurrent calls run on separate instances.
pub struct Client {
    loaded: Arc<Loaded>,
    plugins: PluginSet,
    checksum: Checksum,
    cache: CacheOutcome,
}

impl Client {
    /// Reads, checks and compiles the plugin.
    ///
    /// Fails with [`Error::Read`], [`Error::NotAComponent`], [`Error::ChecksumMismatch`],
    /// [`Error::Grant`] or [`Error::Compile`].
    pub async fn start(config: ClientConfig) -> Result<Client> {
        let name = config.plugin_name();
        let bytes = match &config.source {
            Source::WasmFile(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                Arc::from(bytes)
            }
            Source::WasmBytes(bytes) => bytes.clone(),
        };
        let found = FileKind::detect(&bytes);
        if found != FileKind::Component {
            return Err(Error::NotAComponent {
                plugin: name,
                found,
            });
        }
        let checksum = Checksum::of(&bytes);
        if let Some(pinned) = &config.checksum
            && *pinned != checksum
        {
            return Err(Error::ChecksumMismatch {
                plugin: name,
                expected: pinned.to_string(),
                actual: checksum.to_string(),
            });
        }
        config.grants.validate()?;
        let engine = match config.engine {
            Some(engine) => engine,
            None => Engine::shared()?,
        };
        let (component, cache) = engine
            .compile(&name, bytes, checksum, config.cache_dir.as_deref())
            .await?;
        tracing::debug!(plugin = %name, %checksum, ?cache, "plugin loaded");
        let settings = Settings {
            limits: config.limits,
            grants: config.grants,
            stdout: config.stdout,
            stderr: config.stderr,
        };
        Ok(Client {
            loaded: Arc::new(Loaded::new(name.into(), engine, component, settings)),
            plugins: config.plugins,
            checksum,
            cache,
        })
    }

    /// Builds the typed interface `plugin` adapts, with the highest interface version both
    /// sides support.
    ///
    /// Fails with [`Error::InterfaceNotExported`], [`Error::UnsupportedVersion`],
    /// [`Error::Link`] or [`Error::Killed`].
    pub async fn dispense<P: Plugin>(&self, plugin: &P) -> Result<Arc<P::Interface>> {
        let instance = self.link(plugin)?;
        plugin.from_wasm(instance)
    }

    /// Builds the interface of the adapter named `name` in the configured [`PluginSet`],
    /// checking that it is the requested type `I` (`dyn Kv`).
    ///
    /// Fails as [`Client::dispense`] does, and with [`Error::UnknownPlugin`] or
    /// [`Error::TypeMismatch`].
    pub async fn dispense_named<I: ?Sized + Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> Result<Arc<I>> {
        let plugin = self.plugins.get(name).ok_or_else(|| Error::UnknownPlugin {
            name: name.to_owned(),
            available: self.plugins.names(),
        })?;
        let (found_id, found) = plugin.interface_type();
        let mismatch = || Error::TypeMismatch {
            name: name.to_owned(),
            expected: type_name::<Arc<I>>(),
            found,
        };
        if found_id != std::any::TypeId::of::<Arc<I>>() {
            return Err(mismatch());
        }
        let instance = self.link(&**plugin)?;
        let interface = plugin.from_wasm_erased(instance)?;
        interface
            .downcast::<Arc<I>>()
            .map(|boxed| *boxed)
            .map_err(|_| mismatch())
    }

    /// Every exported function of the component, callable by name with dynamic values, for
    /// hosts (and tools) without an adapter. Imports the host does not provide trap if called.
    pub async fn dispense_dynamic(&self) -> Result<crate::wasm::Dynamic> {
        if self.loaded.is_killed() {
            return Err(Error::Killed {
                plugin: self.name().to_owned(),
            });
        }
        self.loaded.link_dynamic()
    }

    fn link<P: ErasedPlugin + ?Sized>(&self, plugin: &P) -> Result<crate::wasm::Instance> {
        if self.loaded.is_killed() {
            return Err(Error::Killed {
                plugin: self.name().to_owned(),
            });
        }
        let accepted = plugin
            .wasm_exports()
            .iter()
            .map(|name| name.parse::<InterfaceName>())
            .collect::<Result<Vec<_>>>()?;
        if accepted.is_empty() {
            return Err(Error::Config {
                reason: format!(
                    "the adapter {:?} names no wasm interface to bind",
                    plugin.name()
                ),
            });
        }
        let interface = negotiate(self.name(), self.loaded.exports(), &accepted)?;
        tracing::debug!(plugin = self.name(), %interface, "interface negotiated");
        self.loaded
            .link(interface, |linker| plugin.link_wasm(linker))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.loaded.name()
    }

    /// The sha256 of the plugin's bytes, as a host would pin it.
    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    /// Where the compiled component came from: compiled now, or a cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The names of everything the component exports (`plinth:kv/store@0.1.0`, ...).
    pub fn exports(&self) -> &[String] {
        self.loaded.exports()
    }

    /// Every function the component imports (what it needs from the host), with its type.
    pub fn imported_functions(&self) -> Vec<crate::wasm::Function> {
        self.loaded.world().0
    }

    /// Every function the component exports, with its type.
    pub fn exported_functions(&self) -> Vec<crate::wasm::Function> {
        self.loaded.world().1
    }

    /// Stops the plugin: idle instances are dropped and every later call, through any
    /// interface dispensed from this client, fails with [`Error::Killed`]. Calls already
    /// running finish. Calling it again does nothing.
    pub async fn kill(&self) {
        self.loaded.kill();
    }

    /// Whether the plugin was killed.
    pub fn exited(&self) -> bool {
        self.loaded.is_killed()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name())
            .field("checksum", &self.checksum)
            .field("cache", &self.cache)
            .field("exited", &self.exited())
            .finish_non_exhaustive()
    }
}
