//! Benchmarks of the Extism host, the peer of Plinth's wasm benchmarks; this library is empty.
//!
//! The bench is `benches/extism.rs`; `bench-peers/README.md` says how to build the plugin it loads
//! and how to run it.
