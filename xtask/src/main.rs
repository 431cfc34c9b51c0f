//! The task runner behind the README's commands.
//!
//! `cargo xtask demo` builds the example guests and Go plugins and runs the demo; `cargo xtask test` builds
//! everything the tests need and runs every test; `cargo xtask lint` runs the formatting,
//! clippy and documentation checks CI runs; `cargo xtask bench` runs the benchmarks;
//! `cargo xtask fuzz [SECONDS]` runs every fuzz target for a bounded time.
//! Each installs what it needs (the `wasm32-wasip2` target) on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <demo|test|lint|bench|guests|go|fuzz [SECONDS]>

  demo    build the example guests and Go plugins and run the demo on them
  test    build the guests and run every test of the workspace
  lint    cargo fmt --check, clippy -D warnings and cargo doc (warnings denied)
  bench   build the guests and run the criterion benchmarks
  guests  only build the example guests (wasm32-wasip2 components)
  go      only build the Go fixtures (tests/go, go-plugin v1.8.0) and check them with a Go host
  fuzz    run each cargo-fuzz target (fuzz/) for SECONDS (default 20), nightly toolchain";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let outcome = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "lint" => lint(),
        "bench" => bench(),
        "guests" => guests(),
        "go" => go_fixtures(),
        "fuzz" => match std::env::args().nth(2).map(|s| s.parse::<u64>()) {
            None => fuzz(20),
            Some(Ok(seconds)) if seconds > 0 => fuzz(seconds),
            Some(_) => Err("SECONDS must be a positive whole number".to_owned()),
        },
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

/// The fuzz targets under `fuzz/fuzz_targets`.
const FUZZ_TARGETS: [&str; 4] = ["handshake", "hclog", "gob", "component"];

/// The cargo-fuzz release the fuzz targets are run with.
const CARGO_FUZZ: &str = "0.13.1";

/// Runs every fuzz target for `seconds`, seeded with the example guests and known-good inputs.
/// Installs the nightly toolchain and cargo-fuzz when missing. A crash fails the task and
/// leaves its input in `fuzz/artifacts/<target>/`.
fn fuzz(seconds: u64) -> Result<(), String> {
    guests()?;
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(CARGO_FUZZ));
    if !installed {
        run(Command::new(cargo_bin()).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ,
        ]))?;
    }
    let fuzz_dir = root().join("fuzz");
    seed_corpora(&fuzz_dir)?;
    for target in FUZZ_TARGETS {
        let mut command = Command::new("rustup");
        command
            .args([
                "run",
                "nightly",
                "cargo",
                "fuzz",
                "run",
                "--sanitizer",
                "none",
            ])
            .arg(target)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=4096")
            .current_dir(&fuzz_dir);
        // Nightly builds go beside the workspace's when it builds outside the clone.
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => command.env("CARGO_TARGET_DIR", PathBuf::from(dir).join("fuzz")),
            None => command.env_remove("CARGO_TARGET_DIR"),
        };
        run(&mut command)?;
    }
    Ok(())
}

/// Puts known-good inputs in each target's corpus so fuzzing starts from real shapes.
fn seed_corpora(fuzz_dir: &Path) -> Result<(), String> {
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<(), String> {
        let dir = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("cannot write a seed into {}: {e}", dir.display()))
    };
    write("handshake", "grpc", b"1|1|unix|/tmp/plugin123|grpc|\n")?;
    write(
        "handshake",
        "tcp",
        b"1|3|tcp|127.0.0.1:1234|grpc|MIIBkTCB+wIJ\n",
    )?;
    write("handshake", "netrpc", b"1|1|unix|/tmp/plugin9|netrpc\n")?;
    write("handshake", "mux", b"1|2|unix|/tmp/p|grpc||true\n")?;
    write(
        "hclog",
        "json",
        br#"{"@level":"info","@message":"put","@timestamp":"2026-01-01T00:00:00.000000Z","key":"a","n":3}"#,
    )?;
    write("hclog", "text", b"2026-01-01T00:00:00.000Z [WARN]  plugin: careful: key=a\npanic: boom\ngoroutine 1 [running]:\n")?;
    // gob: a nil interface and `true`, each one message.
    write("gob", "nil", &[0x03, 0x10, 0x00, 0x00])?;
    write("gob", "bool", &[0x03, 0x02, 0x00, 0x01])?;
    let guests = root().join("guest-examples/target/wasm32-wasip2/release");
    for name in ["kv", "greeter"] {
        let path = guests.join(format!("{name}.wasm"));
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        write("component", name, &bytes)?;
    }
    Ok(())
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
