//! The WebAssembly backend: plugins as sandboxed components running in-process on wasmtime.
//!
//! Loading reads the bytes, checks what they are and (when pinned) their sha256, then compiles
//! them once per engine — from memory, the disk cache or anew ([`engine`], [`cache`]). Dispensing
//! negotiates the interface version ([`interface`]), links the component against WASI (as
//! sandboxed as [`Grants`] say), `plinth:host` ([`logging`]) and the adapter's own imports, and
//! hands the adapter an [`Instance`] from which it builds a [`Pool`] of instances bounded by
//! [`Limits`]. Guest output is mirrored line by line ([`Output`]). A component with no adapter
//! can still be called by function name ([`Dynamic`]).

pub mod cache;
pub mod dynamic;
pub mod engine;
pub mod instance;
pub mod interface;
pub mod limits;
pub mod logging;
pub mod pool;
pub mod resource;
pub mod sandbox;
pub mod state;
mod symlinks;

pub use crate::output::{Output, SharedWriter};
pub use cache::{CacheOutcome, CacheProblem};
pub use dynamic::{Dynamic, Function, TypeName};
pub use engine::{Engine, EngineConfig, uses_concurrency};
pub use instance::Instance;
pub use interface::InterfaceName;
pub use limits::{DeadlineExceeded, Limits, MemoryLimitExceeded};
pub use pool::{Bindings, Pool};
pub use resource::{Resource, Resources};
pub use sandbox::{Access, DirGrant, Grants};
pub use state::HostState;

/// The wasmtime crate Plinth is built on, for `bindgen!` and `Linker` in adapters.
pub use wasmtime;

/// A boxed, sendable future, as [`Bindings::instantiate`] returns.
pub use futures::future::BoxFuture;
