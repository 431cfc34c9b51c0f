//! The wasmtime engine Plinth runs every component on, and the compile step.
//!
//! One [`Engine`] is shared by all clients of a process ([`Engine::shared`]): it owns the pooling
//! allocator, the epoch ticker behind per-call deadlines, and an in-memory table of compiled
//! components keyed by sha256, in front of the optional on-disk cache (see [`super::cache`]).
//!
//! Component-model concurrency (async functions, streams, futures) is an engine setting
//! ([`EngineConfig::concurrency`]), off in the shared engine: a world without async functions
//! does not need it, and every store and call on an engine with it on pays for its bookkeeping
//! (`BENCHMARKS.md`). A component that uses it ([`uses_concurrency`]) is run on a second shared
//! engine with it on ([`Engine::shared_for`]), when `plinth` is built with its
//! `component-model-async` feature.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Error, Result};
use crate::secure::Checksum;
use crate::wasm::cache::{self, CacheLocation, CacheOutcome};
use crate::wasm::limits::CoarseClock;

/// How often the epoch advances; the granularity of call deadlines and of cooperative yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each pooled table zeroed in place, not returned to the kernel, when its instance
/// is dropped.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Engine-wide settings: they bound every plugin the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Use the pooling instance allocator (fast instantiation, memory reserved up front).
    /// Default: true.
    pub pooling: bool,
    /// With pooling: how many component instances may exist at once across all plugins.
    /// Default: 1 000.
    pub total_instances: u32,
    /// Largest linear memory any instance may have, in bytes; per-plugin limits sit below it.
    /// Default: 4 GiB.
    pub max_memory_size: usize,
    /// Support the component model's concurrency: components whose world has async functions,
    /// streams or futures. Needs `plinth`'s `component-model-async` feature. Default: false,
    /// which makes calls to the other components cheaper.
    pub concurrency: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            pooling: true,
            total_instances: 1_000,
            max_memory_size: 4 << 30,
            concurrency: false,
        }
    }
}

/// A shared, cheaply cloned handle to a configured wasmtime engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    /// Whether [`EngineConfig::concurrency`] was on.
    concurrency: bool,
    clock: CoarseClock,
    /// sha256 over wasmtime's compatibility hash: which artifacts this engine can load.
    compatibility: [u8; 32],
    compiled: Mutex<HashMap<Checksum, Component>>,
}

/// The shared engines: without and with concurrency support.
static SHARED: [Mutex<Weak<EngineInner>>; 2] = [Mutex::new(Weak::new()), Mutex::new(Weak::new())];

impl Engine {
    /// The process-wide engine with default settings, created on first use and dropped (with
    /// its ticker thread) when the last client using it is gone.
    pub fn shared() -> Result<Engine> {
        Engine::shared_for(false)
    }

    /// The process-wide engine for components that use the component model's concurrency
    /// (`concurrency` true) or not: the default settings, with [`EngineConfig::concurrency`]
    /// set to `concurrency`. A client given no engine runs on the one its component needs.
    pub fn shared_for(concurrency: bool) -> Result<Engine> {
        let mut shared = SHARED[usize::from(concurrency)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = shared.upgrade() {
            return Ok(Engine { inner });
        }
        let engine = Engine::new(&EngineConfig {
            concurrency,
            ..EngineConfig::default()
        })?;
        *shared = Arc::downgrade(&engine.inner);
        Ok(engine)
    }

    /// A new engine with its own settings, pool and ticker.
    ///
    /// Fails with [`Error::Config`] when `config` asks for [`EngineConfig::concurrency`] and
    /// `plinth` was built without its `component-model-async` feature.
    pub fn new(config: &EngineConfig) -> Result<Engine> {
        if config.concurrency && !cfg!(feature = "component-model-async") {
            return Err(Error::Config {
                reason: "EngineConfig::concurrency needs plinth's `component-model-async` feature"
                    .to_owned(),
            });
        }
        let engine =
            wasmtime::Engine::new(&Self::wasmtime_config(config)).map_err(|e| Error::Config {
                reason: format!("cannot create the wasm engine: {e}"),
            })?;
        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let inner = Arc::new(EngineInner {
            engine,
            concurrency: config.concurrency,
            clock: CoarseClock::new(),
            compatibility: hasher.0.finalize().into(),
            compiled: Mutex::new(HashMap::new()),
        });
        spawn_ticker(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    fn wasmtime_config(config: &EngineConfig) -> Config {
        let mut wasmtime = Config::new();
        wasmtime
            .epoch_interruption(true)
            .max_wasm_stack(1 << 20)
            .concurrency_support(config.concurrency);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::new();
            // A wasm32-wasip2 component instantiates a few core modules (the program and the
            // adapter shims) around one memory.
            pool.total_component_instances(config.total_instances)
                .total_core_instances(config.total_instances.saturating_mul(4))
                .total_memories(config.total_instances.saturating_mul(2))
                .total_tables(config.total_instances.saturating_mul(4))
                .total_stacks(config.total_instances)
                .max_memory_size(config.max_memory_size)
                // A freed slot's table pages are zeroed in place rather than given back with
                // madvise: the kernel answers madvise in a multi-threaded process by
                // interrupting every other CPU running it to flush its TLB, which cost more
                // than the rest of instantiation together (about 16 -> 11 us per instance in
                // the instantiate benchmark). Tables of a component are a few KiB; bigger
                // ones are still returned with madvise past this size.
                .table_keep_resident(TABLE_KEEP_RESIDENT);
            wasmtime.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        wasmtime
    }

    /// The clock call deadlines are measured on.
    pub(crate) fn clock(&self) -> &CoarseClock {
        &self.inner.clock
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// Whether this engine runs components that use the component model's concurrency.
    pub fn concurrency(&self) -> bool {
        self.inner.concurrency
    }

    /// Compiles `bytes` (whose sha256 is `checksum`), from memory, the disk cache or anew.
    ///
    /// Runs on the blocking thread pool: compiling is seconds of CPU for large components.
    pub(crate) async fn compile(
        &self,
        plugin: &str,
        bytes: Arc<[u8]>,
        checksum: Checksum,
        cache: Option<&CacheLocation>,
    ) -> Result<(Component, CacheOutcome)> {
        if let Some(component) = self.memory_hit(&checksum) {
            tracing::debug!(plugin, %checksum, "component found compiled in memory");
            return Ok((component, CacheOutcome::MemoryHit));
        }
        let engine = self.clone();
        let owned_plugin = plugin.to_owned();
        let cache = cache.cloned();
        let (component, outcome) = tokio::task::spawn_blocking(move || {
            let cache = cache.as_ref().map(cache::Cache::open).transpose()?;
            let entry = cache
                .as_ref()
                .map(|cache| cache.entry(&checksum, &engine.inner.compatibility));
            cache::load_or_compile(&engine.inner.engine, &owned_plugin, &bytes, entry.as_ref())
        })
        .await
        .map_err(|e| Error::Compile {
            plugin: plugin.to_owned(),
            reason: format!("the compile task failed: {e}"),
        })??;
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(checksum, component.clone());
        Ok((component, outcome))
    }

    fn memory_hit(&self, checksum: &Checksum) -> Option<Component> {
        let compiled = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        compiled.get(checksum).cloned()
    }
}

/// Whether the component `bytes` uses the component model's concurrency: an async lift or
/// lower, an async function type, or one of the task, stream, future, error-context or thread
/// built-ins. Such a component compiles only on an engine with [`EngineConfig::concurrency`].
///
/// Reads the component-level sections alone (core modules are skipped), so it costs little
/// beside a compile; bytes that do not parse are left for the compiler to report.
pub fn uses_concurrency(bytes: &[u8]) -> bool {
    use wasmparser::{
        CanonicalFunction, CanonicalOption, Chunk, ComponentType, ComponentTypeDeclaration,
        InstanceTypeDeclaration, Parser, Payload,
    };
    let async_options = |options: &[CanonicalOption]| {
        options.iter().any(|option| {
            matches!(
                option,
                CanonicalOption::Async | CanonicalOption::Callback(_)
            )
        })
    };
    let async_type = |ty: &ComponentType| -> bool {
        fn walk(ty: &ComponentType) -> bool {
            match ty {
                ComponentType::Func(func) => func.async_,
                ComponentType::Component(decls) => decls.iter().any(|decl| match decl {
                    ComponentTypeDeclaration::Type(ty) => walk(ty),
                    _ => false,
                }),
                ComponentType::Instance(decls) => decls.iter().any(|decl| match decl {
                    InstanceTypeDeclaration::Type(ty) => walk(ty),
                    _ => false,
                }),
                _ => false,
            }
        }
        walk(ty)
    };
    // The parsers of the enclosing components while a nested one is read.
    let mut outer = Vec::new();
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    loop {
        let (consumed, payload) = match parser.parse(rest, true) {
            Ok(Chunk::Parsed { consumed, payload }) => (consumed, payload),
            Ok(Chunk::NeedMoreData(_)) | Err(_) => return false,
        };
        rest = &rest[consumed..];
        let uses = match payload {
            Payload::ComponentCanonicalSection(reader) => {
                reader.into_iter().any(|function| match function {
                    Ok(
                        CanonicalFunction::Lift { options, .. }
                        | CanonicalFunction::Lower { options, .. },
                    ) => async_options(&options),
                    Ok(
                        CanonicalFunction::ResourceNew { .. }
                        | CanonicalFunction::ResourceDrop { .. }
                        | CanonicalFunction::ResourceRep { .. },
                    )
                    | Err(_) => false,
                    Ok(_) => true,
                })
            }
            Payload::ComponentTypeSection(reader) => reader
                .into_iter()
                .any(|ty| ty.as_ref().is_ok_and(async_type)),
            // A core module's sections say nothing about concurrency: step over its bytes.
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                let len = usize::try_from(unchecked_range.end - unchecked_range.start)
                    .unwrap_or(usize::MAX);
                match rest.get(len..) {
                    Some(after) => rest = after,
                    None => return false,
                }
                false
            }
            Payload::ComponentSection { parser: nested, .. } => {
                outer.push(std::mem::replace(&mut parser, nested));
                false
            }
            Payload::End(_) => match outer.pop() {
                Some(enclosing) => {
                    parser = enclosing;
                    false
                }
                None => return false,
            },
            _ => false,
        };
        if uses {
            return true;
        }
    }
}

/// Feeds what a `Hash` impl writes into a sha256, so the digest covers all of it (a
/// `DefaultHasher` would keep 64 bits).
struct DigestHasher(Sha256);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        digest[..8]
            .iter()
            .fold(0, |value, byte| value << 8 | u64::from(*byte))
    }
}

/// Advances the engine's clock and epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_ticker(engine: Weak<EngineInner>) {
    let spawned = std::thread::Builder::new()
        .name("plinth-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(inner) => {
                        inner.clock.tick();
                        inner.engine.increment_epoch();
                    }
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker, call deadlines will not fire: {e}");
    }
}
