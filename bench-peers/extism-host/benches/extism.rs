//! The Extism peer of Plinth's wasm benchmarks: Extism's host calling the Extism plugin of
//! `bench-peers/extism-kv-plugin`, in the benchmark groups Plinth's wasm benchmarks use.
//!
//! - `kv_get/extism/{16,4096,1048576}`: one `get` of a value of that size, copied out of the
//!   plugin's memory into an owned `Vec<u8>`.
//! - `greet/extism`: one `greet("world")`, returned as an owned `String`.
//!
//! The plugin must be built first (see `bench-peers/README.md`); its path can be overridden with
//! the `EXTISM_KV_PLUGIN` environment variable.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use extism::{Manifest, Plugin, Wasm};

/// Where the plugin's release build lands in the target directory shared by both peer crates.
const PLUGIN_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-unknown-unknown/release/extism_kv_plugin.wasm"
);

/// Loads the plugin once, without WASI (it imports nothing but Extism's kernel).
fn plugin() -> Plugin {
    let path = std::env::var_os("EXTISM_KV_PLUGIN")
        .map_or_else(|| PathBuf::from(PLUGIN_WASM), PathBuf::from);
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): build the plugin first with `cargo build --release --target \
             wasm32-unknown-unknown` in bench-peers/extism-kv-plugin",
            path.display()
        )
    });
    Plugin::new(Manifest::new([Wasm::data(wasm)]), [], false).expect("load the Extism plugin")
}

/// The `put` input: the key's length as 4 little-endian bytes, the key, then the value.
fn put_input(key: &[u8], value: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).expect("key length fits in u32");
    [&len.to_le_bytes()[..], key, value].concat()
}

/// `kv_get/extism/<size>`: a value of each size stored once under `k`, then read back.
fn kv_get(c: &mut Criterion, plugin: &mut Plugin) {
    let mut group = c.benchmark_group("kv_get");
    for size in [16usize, 4096, 1 << 20] {
        let value = vec![0x5a; size];
        plugin
            .call::<&[u8], ()>("put", &put_input(b"k", &value))
            .expect("put");
        assert_eq!(
            plugin.call::<&[u8], Vec<u8>>("get", b"k").expect("get"),
            value
        );

        group.bench_function(BenchmarkId::new("extism", size), |b| {
            b.iter(|| black_box(plugin.call::<&[u8], Vec<u8>>("get", b"k").expect("get")))
        });
    }
    group.finish();
}

/// `greet/extism`: one `greet("world")`.
fn greet(c: &mut Criterion, plugin: &mut Plugin) {
    assert_eq!(
        plugin
            .call::<&str, String>("greet", "world")
            .expect("greet"),
        "Hello, world!"
    );
    let mut group = c.benchmark_group("greet");
    group.bench_function("extism", |b| {
        b.iter(|| {
            black_box(
                plugin
                    .call::<&str, String>("greet", black_box("world"))
                    .expect("greet"),
            )
        })
    });
    group.finish();
}

/// Runs every benchmark against one plugin instance.
fn benches(c: &mut Criterion) {
    let mut plugin = plugin();
    kv_get(c, &mut plugin);
    greet(c, &mut plugin);
}

criterion_group!(extism_benches, benches);
criterion_main!(extism_benches);
