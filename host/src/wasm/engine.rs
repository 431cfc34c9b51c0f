//! The wasmtime engine Plinth runs every component on, and the compile step.
//!
//! One [`Engine`] is shared by all clients of a process ([`Engine::shared`]): it owns the pooling
//! allocator, the epoch ticker behind per-call deadlines, and an in-memory table of compiled
//! components keyed by sha256, in front of the optional on-disk cache (see [`super::cache`]).

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
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            pooling: true,
            total_instances: 1_000,
            max_memory_size: 4 << 30,
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
    clock: CoarseClock,
    /// sha256 over wasmtime's compatibility hash: which artifacts this engine can load.
    compatibility: [u8; 32],
    compiled: Mutex<HashMap<Checksum, Component>>,
}

static SHARED: Mutex<Weak<EngineInner>> = Mutex::new(Weak::new());

impl Engine {
    /// The process-wide engine with default settings, created on first use and dropped (with
    /// its ticker thread) when the last client using it is gone.
    pub fn shared() -> Result<Engine> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = shared.upgrade() {
            return Ok(Engine { inner });
        }
        let engine = Engine::new(&EngineConfig::default())?;
        *shared = Arc::downgrade(&engine.inner);
        Ok(engine)
    }

    /// A new engine with its own settings, pool and ticker.
    pub fn new(config: &EngineConfig) -> Result<Engine> {
        let engine =
            wasmtime::Engine::new(&Self::wasmtime_config(config)).map_err(|e| Error::Config {
                reason: format!("cannot create the wasm engine: {e}"),
            })?;
        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let inner = Arc::new(EngineInner {
            engine,
            clock: CoarseClock::new(),
            compatibility: hasher.0.finalize().into(),
            compiled: Mutex::new(HashMap::new()),
        });
        spawn_ticker(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    fn wasmtime_config(config: &EngineConfig) -> Config {
        let mut wasmtime = Config::new();
        wasmtime.epoch_interruption(true).max_wasm_stack(1 << 20);
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
