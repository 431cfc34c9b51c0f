//! Wasm backend benchmarks, each beside its peer measured in the same run.
//!
//! - `kv_get/{plinth,raw}/{16,4096,1048576}`: one `get` of a value of that size through a
//!   dispensed `Arc<dyn Kv>`, and through plain `bindgen!` bindings on a bare `Store`.
//! - `instantiate/{plinth,raw}`: a new instance from a pre-linked component on the pooling
//!   allocator, through a plinth `Pool` and through `InstancePre::instantiate_async`.
//! - `load/{compile,disk_cache}`: `Client::start` compiling the component, and loading it from
//!   the disk cache instead.
//!
//! Run with `cargo xtask bench` (it builds the guests first).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use plinth::wasm::{Engine, EngineConfig, HostState, Instance, Pool};
use plinth::{Client, ClientConfig, Plugin};
use plinth_examples::kv::KvPlugin;
use plinth_interop::guest;
use tokio::runtime::Runtime;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod raw {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/kv"],
        world: "plinth:kv/plugin@0.1.0",
        exports: { default: async },
    });
}

plinth::wasm_bindings!(raw::Plugin, raw::PluginPre<HostState>);

/// The bare host state of the raw peer: WASI with nothing granted, logging ignored.
struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl RawState {
    fn new() -> RawState {
        RawState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl raw::plinth::host::logging::Host for RawState {
    fn log(
        &mut self,
        _level: raw::plinth::host::logging::Level,
        _message: String,
        _fields: Vec<raw::plinth::host::logging::Field>,
    ) {
    }
}

fn raw_pre(engine: &wasmtime::Engine) -> raw::PluginPre<RawState> {
    let component = Component::from_file(engine, guest("kv")).expect("compile kv");
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    raw::plinth::host::logging::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s)
        .expect("logging");
    raw::PluginPre::new(linker.instantiate_pre(&component).expect("link")).expect("exports")
}

fn kv_get(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let client = rt
        .block_on(Client::start(
            ClientConfig::wasm(guest("kv")).max_instances(1),
        ))
        .expect("start kv");
    let kv = rt.block_on(client.dispense(&KvPlugin)).expect("dispense");

    let engine = wasmtime::Engine::default();
    let pre = raw_pre(&engine);
    let mut store = Store::new(&engine, RawState::new());
    let bindings = rt
        .block_on(pre.instantiate_async(&mut store))
        .expect("instantiate");

    let mut group = c.benchmark_group("kv_get");
    for size in [16usize, 4096, 1 << 20] {
        let key = format!("value-{size}");
        let value = vec![0x5a; size];
        rt.block_on(kv.put(&key, &value)).expect("plinth put");
        rt.block_on(
            bindings
                .plinth_kv_store()
                .call_put(&mut store, &key, &value),
        )
        .expect("raw put")
        .expect("raw put answer");

        group.bench_with_input(BenchmarkId::new("plinth", size), &key, |b, key| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(kv.get(key).await.expect("get"));
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("raw", size), &key, |b, key| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let answer = bindings.plinth_kv_store().call_get(&mut store, key).await;
                        black_box(answer.expect("call").expect("get"));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// An adapter whose interface is the instance pool itself, to instantiate through plinth.
struct PoolPlugin;

impl Plugin for PoolPlugin {
    type Interface = Pool<raw::Plugin>;

    fn name(&self) -> &str {
        "kv"
    }

    fn wasm_exports(&self) -> &[&str] {
        &["plinth:kv/store@0.1.0"]
    }

    fn from_wasm(&self, instance: Instance) -> plinth::Result<Arc<Pool<raw::Plugin>>> {
        Ok(Arc::new(instance.pool()?))
    }
}

fn instantiate(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let client = rt
        .block_on(Client::start(ClientConfig::wasm(guest("kv"))))
        .expect("start kv");
    let pool = rt.block_on(client.dispense(&PoolPlugin)).expect("dispense");

    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::new(),
    ));
    let engine = wasmtime::Engine::new(&config).expect("pooling engine");
    let pre = raw_pre(&engine);

    let mut group = c.benchmark_group("instantiate");
    group.bench_function("plinth", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    pool.warm(1).await.expect("instantiate");
                    pool.shrink(0);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut store = Store::new(&engine, RawState::new());
                    black_box(
                        pre.instantiate_async(&mut store)
                            .await
                            .expect("instantiate"),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn load(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let cache = tempfile::tempdir().expect("cache dir");
    let unpooled = EngineConfig {
        pooling: false,
        ..EngineConfig::default()
    };
    let start = |cache_dir: Option<&std::path::Path>| {
        let engine = Engine::new(&unpooled).expect("engine");
        let mut config = ClientConfig::wasm(guest("kv")).engine(engine);
        if let Some(dir) = cache_dir {
            config = config.cache_dir(dir);
        }
        rt.block_on(Client::start(config)).expect("load")
    };
    start(Some(cache.path()));

    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("compile", |b| b.iter(|| black_box(start(None))));
    group.bench_function("disk_cache", |b| {
        b.iter(|| black_box(start(Some(cache.path()))))
    });
    group.finish();
}

criterion_group!(benches, kv_get, instantiate, load);
criterion_main!(benches);
