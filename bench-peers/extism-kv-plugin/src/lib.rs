//! The Extism peer of Plinth's kv and greeter plugins, for Plinth's benchmarks.
//!
//! Built with the Extism PDK for `wasm32-unknown-unknown`, it keeps a key-value map in its own
//! linear memory so that `bench-peers/extism-host` can time Extism's host calling it beside
//! Plinth's wasm backend. Exports:
//!
//! - `put`: input is a 4-byte little-endian key length, the key, then the value; empty output.
//! - `get`: input is the key; output is the stored value, or an error if there is none.
//! - `greet`: input is a UTF-8 name; output is `Hello, <name>!`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use extism_pdk::{Error, FnResult, plugin_fn};

/// The values stored by `put`, by key; it lives as long as the plugin's instance.
static STORE: Mutex<BTreeMap<Vec<u8>, Vec<u8>>> = Mutex::new(BTreeMap::new());

/// Stores the value under the key, both packed in `input` as described in the crate docs.
#[plugin_fn]
pub fn put(input: Vec<u8>) -> FnResult<()> {
    let (len, rest) = input
        .split_first_chunk::<4>()
        .ok_or_else(|| Error::msg("put: input shorter than its 4-byte key length"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(Error::msg("put: key length exceeds the input").into());
    }
    let (key, value) = rest.split_at(len);
    STORE.lock().unwrap().insert(key.to_vec(), value.to_vec());
    Ok(())
}

/// Returns the value stored under the key `input`.
#[plugin_fn]
pub fn get(input: Vec<u8>) -> FnResult<Vec<u8>> {
    let store = STORE.lock().unwrap();
    let value = store
        .get(&input)
        .ok_or_else(|| Error::msg("get: no such key"))?;
    Ok(value.clone())
}

/// Returns `Hello, <name>!`.
#[plugin_fn]
pub fn greet(name: String) -> FnResult<String> {
    Ok(format!("Hello, {name}!"))
}
