//! Wasm backend benchmarks, each beside its peer measured in the same run.
//!
//! - `kv_get/{plinth,raw}/{16,4096,1048576}`: one `get` of a value of that size through a
//!   dispensed `Arc<dyn Kv>`, and through plain `bindgen!` bindings on a bare `Store` of the
//!   same engine (Plinth's shared engine: epoch interruption, pooling, concurrency off).
//! - `kv_get/{plinth,raw}_concurrency/16`: the same calls on an engine with component-model
//!   concurrency on (`EngineConfig::concurrency`), which a world with async functions needs:
//!   what the kv world, which has none, saves by running without it.
//! - `instantiate/{plinth,raw}`: a new instance from a pre-linked component on the pooling
//!   allocator, through a plinth `Pool` and through `InstancePre::instantiate_async` on an
//!   engine with Plinth's settings; `instantiate/raw_wasmtime_defaults` is the raw one on
//!   wasmtime's default pooling settings.
//! - `load/{compile,disk_cache}`: `Client::start` compiling the component, and loading it from
//!   the disk cache instead.
//! - `greet/{plinth,raw}`: `greet("world")` on the 0.2 greeter, dispensed and raw.
//! - `kv_get/raw_sync/16`: the raw call again with synchronous bindings (no fiber per call):
//!   what async support costs. Plinth stays async, since a synchronous call would block the
//!   caller's executor thread for the guest's whole run.
//! - Paired (not criterion): after each kv.get size, greet and instantiate, the Plinth call
//!   and the raw call alternate for nine rounds of plain timed loops, and the medians are what `cargo xtask
//!   bench` compares (`criterion/plinth-wasm.json`): criterion times the two minutes apart, and
//!   on a small shared machine the raw call alone moves by a third between such moments.
//! - Not timed: the resident memory each idle pooled instance adds, and whether 1 000 instances
//!   of one component fit at once (written to `criterion/plinth-memory.json` in the target
//!   directory for `cargo xtask bench`'s table).
//!
//! Run with `cargo xtask bench` (it builds the guests first).

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use plinth::wasm::{Engine, EngineConfig, HostState, Instance, Pool};
use plinth::{Client, ClientConfig, Plugin};
use plinth_examples::greeter::{self, GreeterPlugin};
use plinth_examples::kv::KvPlugin;
use plinth_interop::guest;
use tokio::runtime::Runtime;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod raw_greeter {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/greeter-0.2"],
        world: "plinth:greeter/plugin@0.2.0",
        exports: { default: async },
    });
}

mod raw_sync {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/kv"],
        world: "plinth:kv/plugin@0.1.0",
    });
}

mod raw {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/kv"],
        world: "plinth:kv/plugin@0.1.0",
        exports: { default: async },
    });
}

plinth::wasm_bindings!(raw::Plugin, raw::PluginPre<HostState>);

/// Per-call times of the paired measurements: (figure, Plinth ns, raw ns).
static PAIRED: Mutex<Vec<Paired>> = Mutex::new(Vec::new());

/// One paired figure: the medians of both sides, and how far apart each side's rounds were.
struct Paired {
    figure: String,
    plinth_ns: f64,
    raw_ns: f64,
    /// The interquartile range of the rounds over their median, the larger of the two sides:
    /// the run's noise for this figure.
    spread: f64,
}

/// Whether this is a benchmarking run (`cargo bench`), not `cargo test --benches` checking that
/// the binary works.
fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The time `calls` runs of `call` take on `rt`, one after the other.
fn time(rt: &Runtime, calls: u64, call: &mut impl AsyncFnMut()) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..calls {
            call().await;
        }
        start.elapsed()
    })
}

/// Registers `call` as the criterion benchmark `kv_get/{name}/16`.
fn bench_16(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    call: &mut impl AsyncFnMut(),
) {
    group.bench_function(BenchmarkId::new(name, 16), |b| {
        b.iter_custom(|iters| time(rt, iters, &mut *call))
    });
}

/// In a benchmarking run, times 20 000 calls of `ours` against as many of `peer` in paired
/// rounds, recorded under `figure` as (ours, peer).
fn paired_16(
    figure: &str,
    rt: &Runtime,
    ours: &mut impl AsyncFnMut(),
    peer: &mut impl AsyncFnMut(),
) {
    if benchmarking() {
        paired(
            figure.to_owned(),
            20_000,
            |calls| time(rt, calls, &mut *ours),
            |calls| time(rt, calls, &mut *peer),
        );
    }
}

/// Times `calls` calls of `plinth` and of `raw`, alternately for nine rounds, and records the
/// median time per call of each under `figure`.
fn paired(
    figure: String,
    calls: u64,
    mut plinth: impl FnMut(u64) -> Duration,
    mut raw: impl FnMut(u64) -> Duration,
) {
    const ROUNDS: usize = 9;
    let per_call = |elapsed: Duration| elapsed.as_nanos() as f64 / calls as f64;
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut theirs = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        ours.push(per_call(plinth(calls)));
        theirs.push(per_call(raw(calls)));
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let spread =
        |rounds: &[f64]| (rounds[ROUNDS * 3 / 4] - rounds[ROUNDS / 4]) / rounds[ROUNDS / 2];
    let spread = spread(&ours).max(spread(&theirs));
    let (ours, theirs) = (ours[ROUNDS / 2], theirs[ROUNDS / 2]);
    println!(
        "paired {figure}: plinth {ours:.0} ns, raw {theirs:.0} ns, {:.2}x (rounds spread {:.0}%)",
        ours / theirs,
        spread * 100.0
    );
    PAIRED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Paired {
            figure,
            plinth_ns: ours,
            raw_ns: theirs,
            spread,
        });
}

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

impl raw_greeter::plinth::host::logging::Host for RawState {
    fn log(
        &mut self,
        _level: raw_greeter::plinth::host::logging::Level,
        _message: String,
        _fields: Vec<raw_greeter::plinth::host::logging::Field>,
    ) {
    }
}

impl raw_sync::plinth::host::logging::Host for RawState {
    fn log(
        &mut self,
        _level: raw_sync::plinth::host::logging::Level,
        _message: String,
        _fields: Vec<raw_sync::plinth::host::logging::Field>,
    ) {
    }
}

/// `kv_get/raw_sync/16`: a synchronous call through synchronous bindings.
fn kv_get_sync(c: &mut Criterion) {
    let engine = wasmtime::Engine::default();
    let component = Component::from_file(&engine, guest("kv")).expect("compile kv");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    raw_sync::plinth::host::logging::add_to_linker::<RawState, HasSelf<RawState>>(
        &mut linker,
        |s| s,
    )
    .expect("logging");
    let pre = raw_sync::PluginPre::new(linker.instantiate_pre(&component).expect("link"))
        .expect("exports");
    let mut store = Store::new(&engine, RawState::new());
    let bindings = pre.instantiate(&mut store).expect("instantiate");
    let (key, value) = ("value-16", [0x5a; 16]);
    bindings
        .plinth_kv_store()
        .call_put(&mut store, key, &value)
        .expect("raw put")
        .expect("raw put answer");
    let mut group = c.benchmark_group("kv_get");
    group.bench_with_input(BenchmarkId::new("raw_sync", 16), &key, |b, key| {
        b.iter(|| {
            let answer = bindings.plinth_kv_store().call_get(&mut store, key);
            black_box(answer.expect("call").expect("get"))
        })
    });
    group.finish();
}

/// A linker with WASI, for the raw peers.
fn wasi_linker(engine: &wasmtime::Engine) -> Linker<RawState> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    linker
}

/// A raw store on `engine`, whose epoch deadline is far enough away for any benchmark (Plinth's
/// engines interrupt guests by epoch; a raw caller sets the deadline once).
fn raw_store(engine: &wasmtime::Engine) -> Store<RawState> {
    let mut store = Store::new(engine, RawState::new());
    store.set_epoch_deadline(1 << 40);
    store
}

fn raw_pre(engine: &wasmtime::Engine) -> raw::PluginPre<RawState> {
    let component = Component::from_file(engine, guest("kv")).expect("compile kv");
    let mut linker = wasi_linker(engine);
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

    // The raw peer on the very engine the client runs on.
    let engine = Engine::shared().expect("shared engine").wasmtime().clone();
    let pre = raw_pre(&engine);
    let mut store = raw_store(&engine);
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

        let mut plinth_get = async || {
            black_box(kv.get(&key).await.expect("get"));
        };
        let mut raw_get = async || {
            let answer = bindings.plinth_kv_store().call_get(&mut store, &key).await;
            black_box(answer.expect("call").expect("get"));
        };
        group.bench_function(BenchmarkId::new("plinth", size), |b| {
            b.iter_custom(|iters| time(&rt, iters, &mut plinth_get))
        });
        group.bench_function(BenchmarkId::new("raw", size), |b| {
            b.iter_custom(|iters| time(&rt, iters, &mut raw_get))
        });
        if benchmarking() {
            // About 20 ms a loop for the small values.
            let calls = if size < 1 << 20 { 20_000 } else { 300 };
            paired(
                format!("kv_get/{size}"),
                calls,
                |calls| time(&rt, calls, &mut plinth_get),
                |calls| time(&rt, calls, &mut raw_get),
            );
        }
        if size == 16 {
            kv_get_concurrency(&mut group, &rt, &mut plinth_get, &mut raw_get);
            kv_get_store_settings(&mut group, &rt, &engine, &pre, &mut plinth_get);
            kv_get_pool(&mut group, &rt, &client, &mut plinth_get);
        }
    }
    group.finish();
}

/// `kv.get` of 16 bytes raw, on a store set up as Plinth sets up each instance's (hostcall
/// fuel for the host-copy limit, the epoch callback behind deadlines, a deadline armed per
/// call): how much of Plinth's time over the raw call is those safety settings.
fn kv_get_store_settings(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    engine: &wasmtime::Engine,
    pre: &raw::PluginPre<RawState>,
    plinth: &mut impl AsyncFnMut(),
) {
    let mut store = raw_store(engine);
    store.set_hostcall_fuel(plinth::wasm::Limits::default().host_copy_limit());
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
    let bindings = rt
        .block_on(pre.instantiate_async(&mut store))
        .expect("instantiate");
    let key = "value-16";
    rt.block_on(
        bindings
            .plinth_kv_store()
            .call_put(&mut store, key, &[0x5a; 16]),
    )
    .expect("raw put")
    .expect("raw put answer");
    let mut raw_settings = async || {
        store.set_epoch_deadline(1);
        let answer = bindings.plinth_kv_store().call_get(&mut store, key).await;
        black_box(answer.expect("call").expect("get"));
    };
    bench_16(group, rt, "raw_store_settings", &mut raw_settings);
    paired_16("store_settings", rt, plinth, &mut raw_settings);
}

/// `kv.get` of 16 bytes straight through the instance pool (`Pool::call` with the generated
/// bindings, no `dyn Kv` and its boxed future), beside the dispensed call: where Plinth's time
/// over raw goes, the pool or the adapter's `async_trait` interface.
fn kv_get_pool(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    client: &Client,
    plinth: &mut impl AsyncFnMut(),
) {
    // A pool of its own: its instance holds only what is put through it.
    let pool = rt.block_on(client.dispense(&PoolPlugin)).expect("dispense");
    let key = "value-16";
    rt.block_on(
        pool.call(async |kv, store| kv.plinth_kv_store().call_put(store, key, &[0x5a; 16]).await),
    )
    .expect("put")
    .expect("put answer");
    let mut pooled = async || {
        let answer = pool
            .call(async |kv, store| kv.plinth_kv_store().call_get(store, key).await)
            .await;
        black_box(answer.expect("call").expect("get"));
    };
    bench_16(group, rt, "pool", &mut pooled);
    paired_16("pool", rt, plinth, &mut pooled);
}

/// `kv.get` of 16 bytes on engines with component-model concurrency on, beside the same calls
/// with it off (`plinth_off`, `raw_off`): Plinth and raw.
fn kv_get_concurrency(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    plinth_off: &mut impl AsyncFnMut(),
    raw_off: &mut impl AsyncFnMut(),
) {
    let concurrent = Engine::new(&EngineConfig {
        total_instances: 16,
        concurrency: true,
        ..EngineConfig::default()
    })
    .expect("concurrent engine");
    let client = rt
        .block_on(Client::start(
            ClientConfig::wasm(guest("kv"))
                .engine(concurrent.clone())
                .max_instances(1),
        ))
        .expect("start kv");
    let kv = rt.block_on(client.dispense(&KvPlugin)).expect("dispense");
    let engine = concurrent.wasmtime().clone();
    let pre = raw_pre(&engine);
    let mut store = raw_store(&engine);
    let bindings = rt
        .block_on(pre.instantiate_async(&mut store))
        .expect("instantiate");
    let (key, value) = ("value-16", [0x5a; 16]);
    rt.block_on(kv.put(key, &value)).expect("plinth put");
    rt.block_on(bindings.plinth_kv_store().call_put(&mut store, key, &value))
        .expect("raw put")
        .expect("raw put answer");
    let mut plinth_on = async || {
        black_box(kv.get(key).await.expect("get"));
    };
    let mut raw_on = async || {
        let answer = bindings.plinth_kv_store().call_get(&mut store, key).await;
        black_box(answer.expect("call").expect("get"));
    };
    bench_16(group, rt, "plinth_concurrency", &mut plinth_on);
    bench_16(group, rt, "raw_concurrency", &mut raw_on);
    // Recorded as (on, off): the ratio is what concurrency support costs a call.
    paired_16("concurrency/plinth", rt, &mut plinth_on, plinth_off);
    paired_16("concurrency/raw", rt, &mut raw_on, raw_off);
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

    // The raw peer runs on an engine configured as Plinth's (pool settings, epoch
    // interruption), so the ratio is what Plinth adds; `raw_wasmtime_defaults` is the same raw
    // instantiation on wasmtime's default pooling settings, for reference.
    let same_settings = Engine::new(&EngineConfig::default()).expect("plinth engine");
    let same_settings = same_settings.wasmtime().clone();
    let pre = raw_pre(&same_settings);
    let mut defaults = Config::new();
    defaults.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::new(),
    ));
    let defaults = wasmtime::Engine::new(&defaults).expect("pooling engine");
    let defaults_pre = raw_pre(&defaults);

    let mut plinth_instance = async || {
        pool.warm(1).await.expect("instantiate");
        pool.shrink(0);
    };
    let mut raw_instance = async || {
        let mut store = Store::new(&same_settings, RawState::new());
        store.set_epoch_deadline(1 << 40);
        black_box(
            pre.instantiate_async(&mut store)
                .await
                .expect("instantiate"),
        );
    };
    let mut group = c.benchmark_group("instantiate");
    group.bench_function("plinth", |b| {
        b.iter_custom(|iters| time(&rt, iters, &mut plinth_instance))
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time(&rt, iters, &mut raw_instance))
    });
    group.bench_function("raw_wasmtime_defaults", |b| {
        b.iter_custom(|iters| {
            time(&rt, iters, &mut async || {
                let mut store = Store::new(&defaults, RawState::new());
                black_box(
                    defaults_pre
                        .instantiate_async(&mut store)
                        .await
                        .expect("instantiate"),
                );
            })
        })
    });
    group.finish();
    if benchmarking() {
        paired(
            "instantiate".to_owned(),
            2_000,
            |instances| time(&rt, instances, &mut plinth_instance),
            |instances| time(&rt, instances, &mut raw_instance),
        );
    }
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

fn greet(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let client = rt
        .block_on(Client::start(
            ClientConfig::wasm(guest("greeter")).max_instances(1),
        ))
        .expect("start greeter");
    let greeter = rt
        .block_on(client.dispense(&GreeterPlugin::accepting(&[greeter::V2])))
        .expect("dispense");

    let engine = Engine::shared().expect("shared engine").wasmtime().clone();
    let component = Component::from_file(&engine, guest("greeter")).expect("compile greeter");
    let mut linker = wasi_linker(&engine);
    raw_greeter::plinth::host::logging::add_to_linker::<RawState, HasSelf<RawState>>(
        &mut linker,
        |s| s,
    )
    .expect("logging");
    let pre = raw_greeter::PluginPre::new(linker.instantiate_pre(&component).expect("link"))
        .expect("exports");
    let mut store = raw_store(&engine);
    let bindings = rt
        .block_on(pre.instantiate_async(&mut store))
        .expect("instantiate");

    let mut plinth_greet = async || {
        black_box(greeter.greet("world").await.expect("greet"));
    };
    let mut raw_greet = async || {
        let answer = bindings
            .plinth_greeter_greeter()
            .call_greet(&mut store, "world")
            .await;
        black_box(answer.expect("greet"));
    };
    let mut group = c.benchmark_group("greet");
    group.bench_function("plinth", |b| {
        b.iter_custom(|iters| time(&rt, iters, &mut plinth_greet))
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| time(&rt, iters, &mut raw_greet))
    });
    group.finish();
    if benchmarking() {
        paired(
            "greet".to_owned(),
            10_000,
            |calls| time(&rt, calls, &mut plinth_greet),
            |calls| time(&rt, calls, &mut raw_greet),
        );
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The memory figures: resident bytes per idle pooled instance, and 1 000 instances alive.
fn memory() -> serde_json::Value {
    let rt = Runtime::new().expect("runtime");
    let client = rt
        .block_on(Client::start(
            ClientConfig::wasm(guest("kv")).max_instances(1000),
        ))
        .expect("start kv");
    let pool = rt.block_on(client.dispense(&PoolPlugin)).expect("dispense");
    rt.block_on(pool.warm(1)).expect("first instance");
    let before = rss();
    let began = Instant::now();
    let alive = rt.block_on(pool.warm(1000)).expect("warm");
    let elapsed = began.elapsed();
    let after = rss();
    let per_instance = after.saturating_sub(before) / (alive.max(2) as u64 - 1);
    println!(
        "memory: {alive} idle instances of kv.wasm alive at once; {:.1} KiB resident each; \
         1 000 instantiated in {:.1} ms",
        per_instance as f64 / 1024.0,
        elapsed.as_secs_f64() * 1000.0
    );
    serde_json::json!({
        "instances_alive": alive,
        "rss_per_idle_instance_bytes": per_instance,
        "instantiate_1000_ms": elapsed.as_secs_f64() * 1000.0,
    })
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    kv_get(&mut criterion);
    kv_get_sync(&mut criterion);
    greet(&mut criterion);
    instantiate(&mut criterion);
    load(&mut criterion);
    criterion.final_summary();
    // `cargo test --benches` runs this binary only to check it works: skip the memory part.
    if benchmarking() {
        let paired: serde_json::Map<String, serde_json::Value> = PAIRED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|paired| {
                let pair = serde_json::json!({
                    "plinth_ns": paired.plinth_ns,
                    "raw_ns": paired.raw_ns,
                    "spread": paired.spread,
                });
                (paired.figure.clone(), pair)
            })
            .collect();
        let dir = plinth_interop::criterion_dir();
        for (file, figures) in [
            ("plinth-memory.json", memory()),
            ("plinth-wasm.json", serde_json::Value::Object(paired)),
        ] {
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(file), figures.to_string()));
            if let Err(error) = written {
                eprintln!("cannot write {file} into {}: {error}", dir.display());
            }
        }
    }
}
