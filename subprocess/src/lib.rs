//! go-plugin's wire protocol for Plinth.
//!
//! This crate launches unmodified go-plugin executables and talks to them exactly as a Go host
//! would: the handshake line, the magic cookie, version negotiation, AutoMTLS, the broker, the
//! controller, stdio and hclog logs, reattach and checksums. `plinth` builds its subprocess
//! backend on it; hosts normally use it through `plinth::Client`.
//!
//! It also works the other way round: [`serve()`] makes a Rust program a go-plugin plugin
//! that Go hosts load unchanged, and [`serve_test`] serves one in-process for tests.

#![warn(missing_docs)]

pub mod broker;
pub mod handshake;
pub mod logs;
pub mod netrpc;
pub mod reattach;
#[cfg(unix)]
pub mod serve;
pub mod stdio;
pub mod transport;

mod auto_mtls;
#[cfg(target_os = "linux")]
mod cgroup;
mod child;
mod connection;
mod controller;
mod error;
mod health;
mod mux;
mod process;
mod stderr;

pub use auto_mtls::AutoMtls;
pub use broker::{Broker, BrokerServer};
pub use connection::{
    Config, Connection, DEFAULT_KILL_GRACE, DEFAULT_START_TIMEOUT, cleanup_clients,
};
pub use error::{ConnectStep, Error, Result};
pub use handshake::{Address, HandshakeConfig, HandshakeLine, Protocol};
pub use reattach::ReattachConfig;
#[cfg(unix)]
pub use serve::{ServeConfig, TestServer, serve, serve_blocking, serve_test};
pub use stdio::{Sink, StdioSinks};

/// Locks `mutex`, taking the data even if a thread panicked while holding it: every value
/// guarded here stays consistent between statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Generated code for go-plugin's own services, checked in (`cargo xtask protos` regenerates it
/// from `proto/`), so that building this crate runs no protobuf compiler.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// go-plugin's `plugin` package: broker, controller and stdio.
    pub mod plugin {
        include!("proto/plugin.rs");
    }
    /// The standard gRPC health protocol.
    pub mod health {
        include!("proto/grpc.health.v1.rs");
    }
}
