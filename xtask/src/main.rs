//! The task runner behind the README's commands.
//!
//! `cargo xtask demo` builds the example guests and Go plugins and runs the demo; `cargo xtask test` builds
//! everything the tests need and runs every test; `cargo xtask lint` runs the formatting,
//! clippy and documentation checks CI runs; `cargo xtask bench` runs the benchmarks.
//! Each installs what it needs (the `wasm32-wasip2` target) on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <demo|test|lint|bench|guests|go>

  demo    build the example guests and Go plugins and run the demo on them
  test    build the guests and run every test of the workspace
  lint    cargo fmt --check, clippy -D warnings and cargo doc (warnings denied)
  bench   build the guests and run the criterion benchmarks
  guests  only build the example guests (wasm32-wasip2 components)
  go      only build the Go fixtures (tests/go, go-plugin v1.8.0) and check them with a Go host";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let outcome = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "lint" => lint(),
        "bench" => bench(),
        "guests" => guests(),
        "go" => go_fixtures(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), String> {
    guests()?;
    go_fixtures()?;
    cargo(&["run", "--package", "plinth-examples", "--bin", "demo"])
}

fn test() -> Result<(), String> {
    guests()?;
    go_fixtures()?;
    cargo(&["test", "--workspace"])
}

fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])?;
    run(Command::new(cargo_bin())
        .args(["fmt", "--all", "--check"])
        .current_dir(root().join("guest-examples")))?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    run(Command::new(cargo_bin())
        .args(["doc", "--no-deps", "--workspace"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root()))
}

fn bench() -> Result<(), String> {
    guests()?;
    go_fixtures()?;
    cargo(&["bench", "--workspace"])
}

/// Builds the wasm32-wasip2 example guests, installing the target first if needed.
fn guests() -> Result<(), String> {
    ensure_wasm_target()?;
    run(Command::new(cargo_bin())
        .args(["build", "--target", "wasm32-wasip2", "--release"])
        .current_dir(root().join("guest-examples"))
        .env_remove("CARGO_TARGET_DIR"))
}

/// Builds the Go fixtures into `tests/go/bin` — every program under `tests/go/cmd`, and the kv
/// plugin again with an ALPN-enforcing grpc-go as `kv-plugin-alpn` — then has go-plugin's own
/// client load them (`go-host check`), so a broken fixture is caught before any Rust test.
fn go_fixtures() -> Result<(), String> {
    let go_dir = root().join("tests/go");
    let bin = go_dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    // A trailing separator tells `go build` that the output is a directory.
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(format!("{}/", bin.display()))
        .arg("./cmd/...")
        .current_dir(&go_dir))?;
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(bin.join("kv-plugin-alpn"))
        .arg("github.com/plinth-rs/plinth/tests/go/cmd/kv-plugin")
        .current_dir(go_dir.join("alpn")))?;
    // The Go host again on that grpc-go, to load Plinth's Rust plugins (tests/serve.rs).
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(bin.join("go-host-alpn"))
        .arg("github.com/plinth-rs/plinth/tests/go/cmd/go-host")
        .current_dir(go_dir.join("alpn")))?;
    run(Command::new(bin.join("go-host")).arg("check").arg(&bin))
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup (needed for the wasm32-wasip2 target): {e}"))?;
    let listed = String::from_utf8_lossy(&installed.stdout);
    if listed
        .lines()
        .any(|target| target.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
}

fn cargo(args: &[&str]) -> Result<(), String> {
    run(Command::new(cargo_bin()).args(args).current_dir(root()))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}
