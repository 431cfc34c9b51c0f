//! Host-side adapters for the example interfaces in `wit/`: what a host author writes.
//!
//! Each module defines the Rust interface the host calls (a trait), and the [`plinth::Plugin`]
//! adapter that builds it from a component and, for [`kv`] and [`counter`], from a go-plugin
//! executable: [`greeter`] (two interface versions), [`kv`] (values and errors across the
//! boundary), [`counter`] (a host callback the plugin calls during a call, as go-plugin's
//! bidirectional example, through the broker for executables) and [`docs`] (records, variants,
//! options, a guest resource held through the pool, and a host import). The `demo` binary uses
//! them on the bundled guests in `guest-examples/` and the Go plugins in `tests/go`.
//!
//! The crate has `plinth`'s two features, both on by default: built with `subprocess` alone,
//! the adapters have their gRPC and netrpc halves only and nothing here compiles wasmtime
//! (`examples/lean-host`); with `wasm` alone, their component halves only.

pub mod counter;
#[cfg(feature = "wasm")]
pub mod docs;
pub mod greeter;
pub mod kv;

#[cfg(feature = "subprocess")]
pub use plinth_example_plugins::{handshake, proto};

/// The directory the Go fixtures are built into by `cargo xtask go`.
pub fn go_bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/go/bin")
}

/// The path of the built Go fixture `name` (`"kv-plugin"`, `"counter-plugin"`, ...).
pub fn go_plugin(name: &str) -> PathBuf {
    go_bin_dir().join(name)
}

/// The launcher of the Python kv plugin in `tests/python` (grpcio, no AutoMTLS, the same
/// handshake as the Go plugins), written by `cargo xtask python`.
pub fn python_kv_plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/.build/kv-plugin-python")
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory the example guests are built into by `cargo xtask guests`.
pub fn guests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/target/wasm32-wasip2/release")
}

/// The path of the built example guest `name` (`"kv"`, `"greeter"`, `"kv-files"`, ...).
pub fn guest(name: &str) -> PathBuf {
    guests_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds the example guests (`cargo build --target wasm32-wasip2 --release` in
/// `guest-examples/`), adding the `wasm32-wasip2` target with rustup first if it is missing.
///
/// Runs once per process; later calls return the first outcome. It blocks: call it before
/// starting a runtime, or from `spawn_blocking`.
pub fn build_guests() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(build_guests_now).clone()
}

fn build_guests_now() -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    ensure_wasm_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
        .current_dir(&workspace)
        // The guests have their own workspace and target directory.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cannot run cargo to build the guests: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the guests in {} failed: {status}",
            workspace.display()
        ));
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else {
        // No rustup: the toolchain was installed another way and must bring the target itself.
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`rustup target add wasm32-wasip2` failed: {status}"
        ));
    }
    Ok(())
}
