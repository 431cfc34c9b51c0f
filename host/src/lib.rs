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

#![warn(missing_docs)]

mod client;
mod discover;
mod error;
mod grpc;
mod kind;
mod netrpc;
mod plugin;
mod secure;
pub mod wasm;

/// The go-plugin wire protocol underneath executable plugins: handshake, transport, broker,
/// reattach. Most hosts only need the items re-exported at the crate root.
pub use plinth_subprocess as subprocess;

pub use client::{Client, ClientConfig, cleanup_clients};
pub use discover::discover;
pub use error::{Error, Result};
pub use grpc::{GrpcConn, MAX_MESSAGE_SIZE};
pub use kind::FileKind;
pub use netrpc::NetRpcConn;
pub use plinth_subprocess::netrpc::gob;
pub use plinth_subprocess::transport::PluginChannel;
pub use plinth_subprocess::{AutoMtls, HandshakeConfig, Protocol, ReattachConfig};
pub use plugin::{Plugin, PluginSet};
pub use secure::Checksum;
