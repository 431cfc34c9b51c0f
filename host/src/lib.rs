//! Plinth: a plugin host for Rust.
//!
//! A host asks for a plugin by name and gets back a typed Rust interface (`Arc<dyn Kv>`). Behind
//! it runs a WebAssembly component, in-process and sandboxed on wasmtime: no files, network or
//! environment unless granted, memory and time limits per call, and a trap never takes the host
//! down. The model is HashiCorp's go-plugin — `Client`, `ClientConfig`, `PluginSet`, `Dispense`
//! — with WIT interfaces in place of protobuf services.
//!
//! The host author writes one small adapter per interface (a [`Plugin`]); Plinth does the rest:
//! loading, checksums, version negotiation, sandboxing, limits, logging and output capture.
//!
//! ```no_run
//! use plinth::{Client, ClientConfig};
//! use plinth_examples::kv::KvPlugin;
//!
//! # async fn run() -> plinth::Result<()> {
//! let client = Client::start(ClientConfig::wasm("plugins/kv.wasm")).await?;
//! let kv = client.dispense(&KvPlugin).await?; // Arc<dyn Kv>
//! kv.put("hello", b"world").await?;
//! assert_eq!(kv.get("hello").await?, b"world");
//! client.kill().await;
//! # Ok(())
//! # }
//! ```
//!
//! The example adapters (`KvPlugin`, `GreeterPlugin`, `CounterPlugin`) live in the
//! `plinth-examples` crate of this repository; the WIT they bind lives in `wit/`. An adapter is
//! a trait, a [`Plugin`] impl naming the WIT interface versions it binds, and a struct that
//! forwards each method to a [`wasm::Pool`] of instances.

//!
//! # Features
//!
//! Both backends are on by default. A host that loads only one kind of plugin can leave the
//! other out of its build:
//!
//! - `wasm`: WebAssembly components on wasmtime ([`wasm`], [`ClientConfig::wasm`]).
//! - `subprocess`: go-plugin executables over gRPC or `net/rpc` ([`subprocess`],
//!   [`ClientConfig::command`]); a host built without `wasm` does not compile wasmtime.
//!
//! [`ClientConfig::file`] refuses a plugin of a kind the build left out with
//! [`Error::BackendDisabled`], naming the feature to enable.

#![warn(missing_docs)]

#[cfg(not(any(feature = "wasm", feature = "subprocess")))]
compile_error!(
    "plinth needs a backend: enable the `wasm` feature, the `subprocess` feature or both"
);

mod client;
mod discover;
mod error;
#[cfg(feature = "subprocess")]
mod grpc;
mod kind;
#[cfg(feature = "subprocess")]
mod netrpc;
mod output;
mod plugin;
mod secure;
#[cfg(feature = "wasm")]
pub mod wasm;

/// The go-plugin wire protocol underneath executable plugins: handshake, transport, broker,
/// reattach. Most hosts only need the items re-exported at the crate root.
#[cfg(feature = "subprocess")]
pub use plinth_subprocess as subprocess;

#[cfg(feature = "subprocess")]
pub use client::cleanup_clients;
pub use client::{Client, ClientConfig};
pub use discover::discover;
pub use error::{Error, Result};
#[cfg(feature = "subprocess")]
pub use grpc::{GrpcConn, MAX_MESSAGE_SIZE};
pub use kind::FileKind;
#[cfg(feature = "subprocess")]
pub use netrpc::NetRpcConn;
pub use output::{Output, SharedWriter};
#[cfg(feature = "subprocess")]
pub use plinth_subprocess::netrpc::gob;
#[cfg(feature = "subprocess")]
pub use plinth_subprocess::transport::PluginChannel;
#[cfg(feature = "subprocess")]
pub use plinth_subprocess::{AutoMtls, HandshakeConfig, Protocol, ReattachConfig};
pub use plugin::{Plugin, PluginSet};
pub use secure::Checksum;
