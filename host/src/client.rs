//! One plugin's lifecycle: [`ClientConfig`] says what to load and how, [`Client`] loads it and
//! dispenses typed interfaces from it until it is killed.
//!
//! The same `Client` runs a wasm component in-process or a go-plugin executable as a child
//! process; which one is configuration ([`ClientConfig::wasm`], [`ClientConfig::command`], or
//! [`ClientConfig::file`] to decide from the file's first bytes), never code.
//!
//! The names follow go-plugin's `ClientConfig` and `Client` so that a migrating host finds
//! them: `plugins`, `versioned_plugins`, `handshake`, `checksum` (`SecureConfig`), `auto_mtls`,
//! `reattach`, `stdout`/`stderr` (`SyncStdout`/`SyncStderr`), `dispense`, `kill`, `exited`.
//! The wasm settings (grants, limits, cache) are added alongside.

use std::any::type_name;
#[cfg(feature = "subprocess")]
use std::collections::BTreeMap;
#[cfg(feature = "subprocess")]
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(any(feature = "wasm", feature = "subprocess"))]
use std::time::Duration;

#[cfg(feature = "subprocess")]
use plinth_subprocess::{
    AutoMtls, Connection, HandshakeConfig, Protocol, ReattachConfig, StdioSinks,
};

use crate::error::{Error, Result};
#[cfg(feature = "subprocess")]
use crate::grpc::GrpcConn;
use crate::kind::FileKind;
#[cfg(feature = "subprocess")]
use crate::netrpc::NetRpcConn;
use crate::output::Output;
#[cfg(feature = "subprocess")]
use crate::output::{Stream, chunk_sink};
#[cfg(feature = "wasm")]
use crate::plugin::ErasedPlugin;
use crate::plugin::{Plugin, PluginSet};
use crate::secure::Checksum;
#[cfg(feature = "wasm")]
use crate::wasm::cache::CacheLocation;
#[cfg(feature = "wasm")]
use crate::wasm::engine::uses_concurrency;
#[cfg(feature = "wasm")]
use crate::wasm::instance::{Loaded, Settings};
#[cfg(feature = "wasm")]
use crate::wasm::interface::{InterfaceName, negotiate};
#[cfg(feature = "wasm")]
use crate::wasm::{CacheOutcome, Engine, Grants, Limits};

/// Where a plugin's code comes from.
#[derive(Clone)]
enum Source {
    #[cfg(feature = "wasm")]
    WasmFile(PathBuf),
    #[cfg(feature = "wasm")]
    WasmBytes(Arc<[u8]>),
    #[cfg(feature = "subprocess")]
    Command {
        path: PathBuf,
        args: Vec<OsString>,
    },
    Detect(PathBuf),
    #[cfg(feature = "subprocess")]
    Reattach(ReattachConfig),
}

/// The settings that only apply to go-plugin executables.
#[cfg(feature = "subprocess")]
#[derive(Clone)]
struct SubprocessSettings {
    handshake: Option<HandshakeConfig>,
    versioned: BTreeMap<u32, PluginSet>,
    allowed_protocols: Vec<Protocol>,
    auto_mtls: Option<AutoMtls>,
    tls: Option<Arc<rustls::ClientConfig>>,
    multiplex: bool,
    start_timeout: Duration,
    kill_grace: Duration,
    inherit_stdin: bool,
    skip_host_env: bool,
    env: Vec<(OsString, OsString)>,
    managed: bool,
}

#[cfg(feature = "subprocess")]
impl Default for SubprocessSettings {
    fn default() -> SubprocessSettings {
        SubprocessSettings {
            handshake: None,
            versioned: BTreeMap::new(),
            allowed_protocols: vec![Protocol::Grpc],
            auto_mtls: None,
            tls: None,
            multiplex: false,
            start_timeout: plinth_subprocess::DEFAULT_START_TIMEOUT,
            kill_grace: plinth_subprocess::DEFAULT_KILL_GRACE,
            inherit_stdin: false,
            skip_host_env: false,
            env: Vec::new(),
            managed: false,
        }
    }
}

/// What to load and how to run it.
///
/// A component, sandboxed:
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
///
/// A go-plugin executable, with the handshake it was built with:
///
/// ```no_run
/// use plinth::{AutoMtls, ClientConfig, HandshakeConfig};
///
/// let config = ClientConfig::command("plugins/kv-plugin")
///     .handshake(HandshakeConfig::new(1, "PLINTH_PLUGIN", "kv"))
///     .auto_mtls(AutoMtls::Require);
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    source: Source,
    name: Option<String>,
    plugins: PluginSet,
    checksum: Option<Checksum>,
    stdout: Output,
    stderr: Output,
    #[cfg(feature = "wasm")]
    wasm: WasmSettings,
    #[cfg(feature = "subprocess")]
    subprocess: SubprocessSettings,
}

/// The settings that only apply to components.
#[cfg(feature = "wasm")]
#[derive(Clone, Default)]
struct WasmSettings {
    grants: Grants,
    limits: Limits,
    cache: Option<CacheLocation>,
    engine: Option<Engine>,
}

impl ClientConfig {
    /// Loads `path` as a component or launches it as an executable, whichever its first bytes
    /// say it is: one host binary serves both kinds of plugin. A kind this build has no backend
    /// for is refused with [`Error::BackendDisabled`].
    pub fn file(path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig::from_source(Source::Detect(path.into()))
    }

    fn from_source(source: Source) -> ClientConfig {
        ClientConfig {
            source,
            name: None,
            plugins: PluginSet::new(),
            checksum: None,
            stdout: Output::default(),
            stderr: Output::default(),
            #[cfg(feature = "wasm")]
            wasm: WasmSettings::default(),
            #[cfg(feature = "subprocess")]
            subprocess: SubprocessSettings::default(),
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

    /// Where the plugin's stdout lines go. Default: [`Output::Tracing`].
    pub fn stdout(mut self, output: Output) -> ClientConfig {
        self.stdout = output;
        self
    }

    /// Where the plugin's stderr lines go. Default: [`Output::Tracing`].
    pub fn stderr(mut self, output: Output) -> ClientConfig {
        self.stderr = output;
        self
    }

    fn plugin_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let stem = |path: &std::path::Path| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        };
        let file_name = |path: &std::path::Path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        };
        match &self.source {
            #[cfg(feature = "wasm")]
            Source::WasmFile(path) => stem(path),
            Source::Detect(path) if path.extension().is_some_and(|e| e == "wasm") => stem(path),
            Source::Detect(path) => file_name(path),
            #[cfg(feature = "subprocess")]
            Source::Command { path, .. } => file_name(path),
            #[cfg(feature = "wasm")]
            Source::WasmBytes(_) => "plugin".to_owned(),
            #[cfg(feature = "subprocess")]
            Source::Reattach(config) => format!("pid {}", config.pid),
        }
    }
}

#[cfg(feature = "wasm")]
impl ClientConfig {
    /// Loads the component at `path`. The plugin's name defaults to the file's stem.
    pub fn wasm(path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig::from_source(Source::WasmFile(path.into()))
    }

    /// Loads a component from memory under the plugin name `name`.
    pub fn wasm_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> ClientConfig {
        ClientConfig::from_source(Source::WasmBytes(bytes.into())).name(name)
    }
    /// What the sandbox lets the guest touch. Default: nothing.
    pub fn grants(mut self, grants: Grants) -> ClientConfig {
        self.wasm.grants = grants;
        self
    }

    /// All resource limits at once. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> ClientConfig {
        self.wasm.limits = limits;
        self
    }

    /// The largest linear memory one instance may grow to, in bytes. Default: 256 MiB.
    pub fn max_memory(mut self, bytes: usize) -> ClientConfig {
        self.wasm.limits.max_memory = bytes;
        self
    }

    /// How long one call may run. Default: 30 seconds.
    pub fn call_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.wasm.limits.call_timeout = Some(timeout);
        self
    }

    /// Lets calls run without a deadline.
    pub fn no_call_timeout(mut self) -> ClientConfig {
        self.wasm.limits.call_timeout = None;
        self
    }

    /// How many instances may serve calls at once. Default: 16. Instances do not share
    /// memory: use 1 for a guest that keeps state in memory (see [`Limits::max_instances`]).
    pub fn max_instances(mut self, count: usize) -> ClientConfig {
        self.wasm.limits.max_instances = count;
        self
    }

    /// Caches compiled components in `dir`, so a component is compiled once per machine rather
    /// than once per process. Default: no disk cache (compiled components are still shared
    /// within the process).
    ///
    /// A cache entry is native code that runs outside the sandbox, so the cache trusts only
    /// this user: `dir` is created `0700` and refused ([`Error::UntrustedCache`], naming the
    /// path and its owner or mode) when it or a directory above it is owned by another user or
    /// writable by group or others. Each entry carries a MAC, under a secret key created in
    /// `dir` on first use (`0600`), over the component's sha256, the engine's compatibility
    /// hash and the native code: an entry copied from another component or altered in any way
    /// is compiled again from the checked bytes (with a warning), never loaded. Anyone who can
    /// read the key and write the directory can run code in the host, so keep both private.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> ClientConfig {
        self.wasm.cache = Some(CacheLocation {
            path: dir.into(),
            read_only: false,
        });
        self
    }

    /// Loads compiled components from `dir` and never writes to it: a cache filled by a user
    /// the host trusts (for example when an image was built), which this user may not own.
    ///
    /// Opting in extends trust to the directory's owner: it (and every directory above it)
    /// must still not be writable by group or others, its key file must belong to the owner,
    /// and each entry's MAC is checked as for [`ClientConfig::cache_dir`]. Components missing
    /// from it, or whose entry fails the check, are compiled in memory.
    pub fn read_only_cache_dir(mut self, dir: impl Into<PathBuf>) -> ClientConfig {
        self.wasm.cache = Some(CacheLocation {
            path: dir.into(),
            read_only: true,
        });
        self
    }

    /// Runs the plugin on `engine` instead of [`Engine::shared`].
    pub fn engine(mut self, engine: Engine) -> ClientConfig {
        self.wasm.engine = Some(engine);
        self
    }
}

#[cfg(feature = "subprocess")]
impl ClientConfig {
    /// Launches the go-plugin executable at `path` and speaks go-plugin's gRPC protocol to it.
    /// Needs a [`ClientConfig::handshake`]. The plugin's name defaults to the file name.
    pub fn command(path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig::from_source(Source::Command {
            path: path.into(),
            args: Vec::new(),
        })
    }

    /// Connects to a go-plugin plugin that is already running (go-plugin's `Reattach`);
    /// see [`plinth_subprocess::reattach`]. The plugin is not killed unless asked, and never
    /// when `config.test` is set.
    pub fn reattach(config: ReattachConfig) -> ClientConfig {
        ClientConfig::from_source(Source::Reattach(config))
    }

    /// Arguments for an executable plugin.
    pub fn args<I: Into<OsString>>(mut self, args: impl IntoIterator<Item = I>) -> ClientConfig {
        if let Source::Command { args: list, .. } = &mut self.source {
            list.extend(args.into_iter().map(Into::into));
        }
        self
    }

    /// The go-plugin handshake (magic cookie and base protocol version) an executable plugin
    /// was built with. Required for executables.
    pub fn handshake(mut self, handshake: HandshakeConfig) -> ClientConfig {
        self.subprocess.handshake = Some(handshake);
        self
    }

    /// Adapter sets per application protocol version (go-plugin's `VersionedPlugins`): the
    /// versions are offered to an executable plugin, and [`Client::dispense_named`] uses the set
    /// of the version it chose. [`ClientConfig::plugins`] is the set of the handshake's version.
    pub fn versioned_plugins(mut self, sets: BTreeMap<u32, PluginSet>) -> ClientConfig {
        self.subprocess.versioned = sets;
        self
    }

    /// The RPC protocols an executable may speak (go-plugin's `AllowedProtocols`). Default:
    /// gRPC only (a Go host defaults to netrpc only); add [`Protocol::NetRpc`] to load legacy
    /// `net/rpc` plugins, which dispense through [`Plugin::from_netrpc`].
    pub fn allowed_protocols(
        mut self,
        protocols: impl IntoIterator<Item = Protocol>,
    ) -> ClientConfig {
        self.subprocess.allowed_protocols = protocols.into_iter().collect();
        self
    }

    /// Whether an executable is offered mutual TLS with certificates generated for this launch
    /// (go-plugin's `AutoMTLS`, a bool there), and what happens when it answers without a
    /// certificate:
    ///
    /// - [`AutoMtls::Prefer`], the default (go-plugin's is off): mutual TLS when the plugin
    ///   takes it up, else plaintext with a `WARN` event (target `plinth::auto_mtls`) naming
    ///   the plugin, so that plugins written without go-plugin (go-plugin's own Python
    ///   example) load.
    /// - [`AutoMtls::Require`]: such a plugin is refused with
    ///   [`Error::AutoMtlsUnsupported`](crate::subprocess::Error::AutoMtlsUnsupported) and
    ///   killed.
    /// - [`AutoMtls::Off`]: no certificate is offered; a plugin that sends one anyway is refused
    ///   with [`Error::UnexpectedCertificate`](crate::subprocess::Error::UnexpectedCertificate).
    ///
    /// [`AutoMtls`] says what plaintext exposes on a Unix socket and on TCP. With
    /// [`ClientConfig::tls`] the default is `Off`, and a policy that offers a certificate beside
    /// it fails the start with a configuration error. A reattached plugin exchanges no
    /// certificates: `Require` then means it must be reached over [`ClientConfig::tls`].
    pub fn auto_mtls(mut self, policy: AutoMtls) -> ClientConfig {
        self.subprocess.auto_mtls = Some(policy);
        self
    }

    /// Dials an executable plugin with this TLS configuration (go-plugin's `TLSConfig`) instead
    /// of AutoMTLS.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> ClientConfig {
        self.subprocess.tls = Some(config);
        self
    }

    /// Runs the broker multiplexed over the main connection (go-plugin's
    /// `GRPCBrokerMultiplex`). Default: off.
    pub fn multiplex(mut self, on: bool) -> ClientConfig {
        self.subprocess.multiplex = on;
        self
    }

    /// How long an executable has to print its handshake line. Default: 1 minute.
    pub fn start_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.subprocess.start_timeout = timeout;
        self
    }

    /// How long a killed executable has to exit before SIGKILL. Default: 2 seconds.
    pub fn kill_grace(mut self, grace: Duration) -> ClientConfig {
        self.subprocess.kill_grace = grace;
        self
    }

    /// Gives an executable plugin the host's stdin, so it can use the terminal. Default: off.
    pub fn inherit_stdin(mut self, on: bool) -> ClientConfig {
        self.subprocess.inherit_stdin = on;
        self
    }

    /// Starts an executable without the host's environment (go-plugin's `SkipHostEnv`).
    pub fn skip_host_env(mut self, on: bool) -> ClientConfig {
        self.subprocess.skip_host_env = on;
        self
    }

    /// Sets an environment variable for an executable plugin. (A component sees only the
    /// variables its [`Grants`] name.)
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> ClientConfig {
        self.subprocess.env.push((key.into(), value.into()));
        self
    }

    /// Registers an executable plugin for [`cleanup_clients`] (go-plugin's `Managed`).
    pub fn managed(mut self, on: bool) -> ClientConfig {
        self.subprocess.managed = on;
        self
    }

    #[cfg(feature = "subprocess")]
    fn subprocess_config(
        &self,
        base: plinth_subprocess::Config,
    ) -> Result<plinth_subprocess::Config> {
        let settings = &self.subprocess;
        let handshake = match (&settings.handshake, &self.source) {
            (Some(handshake), _) => handshake.clone(),
            (None, Source::Reattach(_)) => HandshakeConfig::new(1, "", ""),
            (None, _) => {
                return Err(Error::Config {
                    reason: format!(
                        "plugin {} is an executable: ClientConfig::handshake must name the magic cookie it was built with",
                        self.plugin_name()
                    ),
                });
            }
        };
        let mut versions: Vec<u32> = settings.versioned.keys().copied().collect();
        if versions.is_empty() || !self.plugins.names().is_empty() {
            versions.push(handshake.protocol_version);
        }
        versions.sort_unstable();
        versions.dedup();
        let name: Arc<str> = self.plugin_name().into();
        let mut config = base
            .name(name.to_string())
            .handshake(handshake)
            .versions(versions)
            .allowed_protocols(settings.allowed_protocols.iter().copied())
            .multiplex(settings.multiplex)
            .start_timeout(settings.start_timeout)
            .kill_grace(settings.kill_grace)
            .inherit_stdin(settings.inherit_stdin)
            .skip_host_env(settings.skip_host_env)
            .managed(settings.managed)
            .stdio(StdioSinks {
                stdout: Some(chunk_sink(
                    name.clone(),
                    Stream::Stdout,
                    self.stdout.clone(),
                )),
                stderr: Some(chunk_sink(name, Stream::Stderr, self.stderr.clone())),
            });
        for (key, value) in &settings.env {
            config = config.env(key.clone(), value.clone());
        }
        if let Some(policy) = settings.auto_mtls {
            config = config.auto_mtls(policy);
        }
        if let Some(tls) = &settings.tls {
            config = config.tls(tls.clone());
        }
        if let Some(checksum) = &self.checksum {
            config = config.checksum(*checksum.as_bytes());
        }
        Ok(config)
    }
}

/// Kills every executable plugin started with [`ClientConfig::managed`] and waits for them
/// (go-plugin's `CleanupClients`). Call it once before the host exits.
#[cfg(feature = "subprocess")]
pub async fn cleanup_clients() {
    plinth_subprocess::cleanup_clients().await;
}

/// A loaded plugin, ready to dispense interfaces.
///
/// A `Client` is cheap to share (`Send + Sync`); the interfaces it dispenses are too. Concurrent
/// calls to a component run on separate instances; calls to an executable share its HTTP/2
/// connection.
///
/// The same host code serves a Go plugin and a component; only the configuration differs:
///
/// ```no_run
/// use plinth::{Client, ClientConfig, HandshakeConfig};
/// use plinth_examples::kv::KvPlugin;
///
/// # async fn run() -> plinth::Result<()> {
/// let config = ClientConfig::file("plugins/kv-plugin") // an executable or a .wasm
///     .handshake(HandshakeConfig::new(1, "PLINTH_PLUGIN", "kv"));
/// let client = Client::start(config).await?;
/// let kv = client.dispense(&KvPlugin).await?;
/// kv.put("hello", b"world").await?;
/// if let Some(reattach) = client.reattach_config() {
///     println!("attach another host with {}", reattach.to_json());
/// }
/// client.kill().await;
/// # Ok(())
/// # }
/// ```
pub struct Client {
    name: Arc<str>,
    backend: Backend,
    plugins: PluginSet,
}

enum Backend {
    #[cfg(feature = "wasm")]
    Wasm {
        loaded: Arc<Loaded>,
        checksum: Checksum,
        cache: CacheOutcome,
    },
    #[cfg(feature = "subprocess")]
    Subprocess {
        connection: Connection,
        checksum: Option<Checksum>,
        /// The adapter sets per application protocol version.
        versioned: BTreeMap<u32, PluginSet>,
    },
}

impl Client {
    /// Loads the plugin: reads, checks and compiles a component, or launches an executable,
    /// completes the go-plugin handshake and connects to it.
    ///
    /// Fails with [`Error::Read`], [`Error::NotAComponent`], [`Error::ChecksumMismatch`],
    /// [`Error::Grant`] or [`Error::Compile`] for components, and [`Error::Config`] or
    /// [`Error::Subprocess`] (which says what the plugin did: exited, timed out, printed a bad
    /// handshake, ...) for executables.
    pub async fn start(config: ClientConfig) -> Result<Client> {
        let source = match &config.source {
            Source::Detect(path) => detect(&config, path).await?,
            other => other.clone(),
        };
        match source {
            #[cfg(feature = "subprocess")]
            Source::Command { path, args } => {
                let base = plinth_subprocess::Config::command(path).args(args);
                Client::start_subprocess(&config, base).await
            }
            #[cfg(feature = "subprocess")]
            Source::Reattach(reattach) => {
                let base = plinth_subprocess::Config::reattach(reattach);
                Client::start_subprocess(&config, base).await
            }
            #[cfg(feature = "wasm")]
            Source::WasmFile(path) => {
                let bytes = tokio::fs::read(&path).await.map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                Client::start_wasm(config, Arc::from(bytes)).await
            }
            #[cfg(feature = "wasm")]
            Source::WasmBytes(bytes) => Client::start_wasm(config, bytes).await,
            Source::Detect(_) => unreachable!("detection resolves the source"),
        }
    }

    #[cfg(feature = "subprocess")]
    async fn start_subprocess(
        config: &ClientConfig,
        base: plinth_subprocess::Config,
    ) -> Result<Client> {
        let connection = Connection::start(config.subprocess_config(base)?).await?;
        tracing::debug!(
            plugin = connection.name(),
            version = connection.negotiated_version(),
            address = %connection.address(),
            "plugin connected"
        );
        Ok(Client {
            name: connection.name().into(),
            backend: Backend::Subprocess {
                connection,
                checksum: config.checksum,
                versioned: config.subprocess.versioned.clone(),
            },
            plugins: config.plugins.clone(),
        })
    }

    #[cfg(feature = "wasm")]
    async fn start_wasm(config: ClientConfig, bytes: Arc<[u8]>) -> Result<Client> {
        let name = config.plugin_name();
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
        let wasm = config.wasm;
        wasm.grants.validate()?;
        let concurrency = uses_concurrency(&bytes);
        let needs_concurrency = |remedy| Error::NeedsConcurrency {
            plugin: name.clone(),
            remedy,
        };
        let engine = match wasm.engine {
            Some(engine) if concurrency && !engine.concurrency() => {
                return Err(needs_concurrency(
                    "its engine was made without EngineConfig::concurrency",
                ));
            }
            Some(engine) => engine,
            None if concurrency && !cfg!(feature = "component-model-async") => {
                return Err(needs_concurrency(
                    "build plinth with its `component-model-async` feature",
                ));
            }
            None => Engine::shared_for(concurrency)?,
        };
        let (component, cache) = engine
            .compile(&name, bytes, checksum, wasm.cache.as_ref())
            .await?;
        tracing::debug!(plugin = %name, %checksum, ?cache, "plugin loaded");
        let settings = Settings {
            limits: wasm.limits,
            grants: wasm.grants,
            stdout: config.stdout,
            stderr: config.stderr,
        };
        Ok(Client {
            name: name.as_str().into(),
            backend: Backend::Wasm {
                loaded: Arc::new(Loaded::new(name.into(), engine, component, settings)),
                checksum,
                cache,
            },
            plugins: config.plugins,
        })
    }

    /// Builds the typed interface `plugin` adapts: from a component with the highest
    /// interface version both sides support, from an executable with its gRPC half.
    ///
    /// Fails with [`Error::InterfaceNotExported`], [`Error::UnsupportedVersion`],
    /// [`Error::Link`], [`Error::BackendUnsupported`] or [`Error::Killed`].
    pub async fn dispense<P: Plugin>(&self, plugin: &P) -> Result<Arc<P::Interface>> {
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => plugin.from_wasm(self.link(plugin)?),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } if connection.protocol() == Protocol::NetRpc => {
                plugin.from_netrpc(self.netrpc_conn(plugin.name()).await?)
            }
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => plugin.from_grpc(self.grpc_conn()?),
        }
    }

    /// Builds the interface of the adapter named `name` in the configured [`PluginSet`] (for
    /// an executable, the set of the negotiated version), checking that it is the requested
    /// type `I` (`dyn Kv`).
    ///
    /// Fails as [`Client::dispense`] does, and with [`Error::UnknownPlugin`] or
    /// [`Error::TypeMismatch`].
    pub async fn dispense_named<I: ?Sized + Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> Result<Arc<I>> {
        let set = self.plugin_set();
        let plugin = set.get(name).ok_or_else(|| Error::UnknownPlugin {
            name: name.to_owned(),
            available: set.names(),
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
        let interface = match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => plugin.from_wasm_erased(self.link(&**plugin)?)?,
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } if connection.protocol() == Protocol::NetRpc => {
                plugin.from_netrpc_erased(self.netrpc_conn(plugin.name()).await?)?
            }
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => plugin.from_grpc_erased(self.grpc_conn()?)?,
        };
        interface
            .downcast::<Arc<I>>()
            .map(|boxed| *boxed)
            .map_err(|_| mismatch())
    }

    fn plugin_set(&self) -> &PluginSet {
        match &self.backend {
            #[cfg(feature = "subprocess")]
            Backend::Subprocess {
                connection,
                versioned,
                ..
            } => versioned
                .get(&connection.negotiated_version())
                .unwrap_or(&self.plugins),
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => &self.plugins,
        }
    }

    /// Every exported function of the component, callable by name with dynamic values, for
    /// hosts (and tools) without an adapter. Imports the host does not provide trap if called.
    /// Components only.
    #[cfg(feature = "wasm")]
    pub async fn dispense_dynamic(&self) -> Result<crate::wasm::Dynamic> {
        let loaded = self.loaded("dynamic dispensing")?;
        if loaded.is_killed() {
            return Err(self.killed());
        }
        loaded.link_dynamic()
    }

    #[cfg(feature = "wasm")]
    #[cfg_attr(not(feature = "subprocess"), allow(unused_variables))]
    fn loaded(&self, what: &str) -> Result<&Arc<Loaded>> {
        match &self.backend {
            Backend::Wasm { loaded, .. } => Ok(loaded),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => Err(Error::BackendUnsupported {
                plugin: self.name().to_owned(),
                adapter: what.to_owned(),
                backend: "wasm",
            }),
        }
    }

    fn killed(&self) -> Error {
        Error::Killed {
            plugin: self.name().to_owned(),
        }
    }

    #[cfg(feature = "subprocess")]
    fn grpc_conn(&self) -> Result<GrpcConn> {
        match &self.backend {
            Backend::Subprocess { connection, .. } if connection.killed() => Err(self.killed()),
            Backend::Subprocess { connection, .. } => GrpcConn::new(connection.clone()),
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => Err(Error::Config {
                reason: format!("plugin {} is a component, not an executable", self.name()),
            }),
        }
    }

    /// Dispenses `name` from a netrpc plugin (`Dispenser.Dispense`, then a broker dial).
    #[cfg(feature = "subprocess")]
    async fn netrpc_conn(&self, name: &str) -> Result<NetRpcConn> {
        let connection = match &self.backend {
            Backend::Subprocess { connection, .. } if connection.killed() => {
                return Err(self.killed());
            }
            Backend::Subprocess { connection, .. } => connection,
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => {
                return Err(Error::Config {
                    reason: format!("plugin {} is a component, not an executable", self.name()),
                });
            }
        };
        let session = connection.netrpc()?;
        match session.dispense(name).await {
            Ok(client) => Ok(NetRpcConn::new(connection.clone(), client)),
            Err(error) => Err(
                match connection.netrpc_error("Dispenser.Dispense", error).await {
                    plinth_subprocess::Error::Killed { plugin } => Error::Killed { plugin },
                    other => Error::Subprocess(other),
                },
            ),
        }
    }

    #[cfg(feature = "wasm")]
    fn link<P: ErasedPlugin + ?Sized>(&self, plugin: &P) -> Result<crate::wasm::Instance> {
        let loaded = self.loaded(plugin.name())?;
        if loaded.is_killed() {
            return Err(self.killed());
        }
        let accepted = plugin
            .wasm_exports()
            .iter()
            .map(|name| name.parse::<InterfaceName>())
            .collect::<Result<Vec<_>>>()?;
        if accepted.is_empty() {
            return Err(Error::BackendUnsupported {
                plugin: self.name().to_owned(),
                adapter: plugin.name().to_owned(),
                backend: "wasm",
            });
        }
        let interface = negotiate(self.name(), loaded.exports(), &accepted)?;
        tracing::debug!(plugin = self.name(), %interface, "interface negotiated");
        loaded.link(interface, |linker| plugin.link_wasm(linker))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 of the plugin as a host would pin it: always known for a component, and for
    /// an executable when one was pinned (hashing an executable costs a read of the whole file
    /// at every start, so it is only done when asked).
    pub fn checksum(&self) -> Option<Checksum> {
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { checksum, .. } => Some(*checksum),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { checksum, .. } => *checksum,
        }
    }

    /// Where a compiled component came from: compiled now, or a cache. `None` for executables.
    #[cfg(feature = "wasm")]
    pub fn cache_outcome(&self) -> Option<CacheOutcome> {
        match &self.backend {
            Backend::Wasm { cache, .. } => Some(*cache),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => None,
        }
    }

    /// The names of everything the component exports (`plinth:kv/store@0.1.0`, ...); empty for
    /// an executable.
    pub fn exports(&self) -> &[String] {
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { loaded, .. } => loaded.exports(),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => &[],
        }
    }

    /// Every function the component imports (what it needs from the host), with its type;
    /// empty for an executable.
    #[cfg(feature = "wasm")]
    pub fn imported_functions(&self) -> Vec<crate::wasm::Function> {
        match &self.backend {
            Backend::Wasm { loaded, .. } => loaded.world().0,
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => Vec::new(),
        }
    }

    /// Every function the component exports, with its type; empty for an executable.
    #[cfg(feature = "wasm")]
    pub fn exported_functions(&self) -> Vec<crate::wasm::Function> {
        match &self.backend {
            Backend::Wasm { loaded, .. } => loaded.world().1,
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { .. } => Vec::new(),
        }
    }

    /// The connection to an executable plugin (its process, channel, broker and reattach
    /// config); `None` for a component.
    #[cfg(feature = "subprocess")]
    pub fn connection(&self) -> Option<&Connection> {
        match &self.backend {
            Backend::Subprocess { connection, .. } => Some(connection),
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => None,
        }
    }

    /// The application protocol version negotiated with an executable plugin.
    #[cfg(feature = "subprocess")]
    pub fn negotiated_version(&self) -> Option<u32> {
        self.connection().map(Connection::negotiated_version)
    }

    /// What another host needs to attach to this executable plugin (go-plugin's
    /// `ReattachConfig`); `None` for a component.
    #[cfg(feature = "subprocess")]
    pub fn reattach_config(&self) -> Option<ReattachConfig> {
        self.connection().map(Connection::reattach_config)
    }

    /// Checks the plugin is alive: an executable's health service answers (go-plugin's
    /// `Ping`), a component was not killed.
    pub async fn ping(&self) -> Result<()> {
        match &self.backend {
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } => Ok(connection.ping().await?),
            #[cfg(feature = "wasm")]
            Backend::Wasm { loaded, .. } if loaded.is_killed() => Err(self.killed()),
            #[cfg(feature = "wasm")]
            Backend::Wasm { .. } => Ok(()),
        }
    }

    /// Stops the plugin. A component drops its idle instances and every later call, through
    /// any interface dispensed from this client, fails with [`Error::Killed`]; calls already
    /// running finish. An executable is asked to shut down, given the grace period (2 s) and
    /// then killed, and always reaped; the processes it started go with it. Calling it again
    /// does nothing.
    pub async fn kill(&self) {
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { loaded, .. } => loaded.kill(),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } => connection.kill().await,
        }
    }

    /// Whether the plugin was killed, or (an executable) its process has exited.
    pub fn exited(&self) -> bool {
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm { loaded, .. } => loaded.is_killed(),
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } => connection.killed() || connection.exited(),
        }
    }
}

/// Resolves [`ClientConfig::file`] from the file's first bytes.
async fn detect(config: &ClientConfig, path: &std::path::Path) -> Result<Source> {
    use tokio::io::AsyncReadExt;
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        let read = file.read(&mut head[filled..]).await.map_err(read_error)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    #[cfg(not(all(feature = "wasm", feature = "subprocess")))]
    let disabled = |found, feature| Error::BackendDisabled {
        plugin: config.plugin_name(),
        found,
        feature,
    };
    match FileKind::detect(&head[..filled]) {
        #[cfg(feature = "subprocess")]
        FileKind::Elf | FileKind::MachO | FileKind::Pe | FileKind::Script => Ok(Source::Command {
            path: path.to_owned(),
            args: Vec::new(),
        }),
        #[cfg(not(feature = "subprocess"))]
        found @ (FileKind::Elf | FileKind::MachO | FileKind::Pe | FileKind::Script) => {
            Err(disabled(found, "subprocess"))
        }
        #[cfg(feature = "wasm")]
        FileKind::Component => Ok(Source::WasmFile(path.to_owned())),
        #[cfg(not(feature = "wasm"))]
        found @ FileKind::Component => Err(disabled(found, "wasm")),
        found => Err(Error::NotAComponent {
            plugin: config.plugin_name(),
            found,
        }),
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Client");
        debug.field("name", &self.name());
        match &self.backend {
            #[cfg(feature = "wasm")]
            Backend::Wasm {
                checksum, cache, ..
            } => {
                debug.field("checksum", checksum).field("cache", cache);
            }
            #[cfg(feature = "subprocess")]
            Backend::Subprocess { connection, .. } => {
                debug.field("connection", connection);
            }
        }
        debug
            .field("exited", &self.exited())
            .finish_non_exhaustive()
    }
}
