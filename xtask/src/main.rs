//! The task runner behind the README's commands.
//!
//! `cargo xtask demo` builds the example guests and Go plugins and runs the demo; `cargo xtask test` builds
//! everything the tests need (guests, Go fixtures, the Python kv plugin) and runs every test; `cargo xtask lint` runs the formatting,
//! clippy and documentation checks CI runs, and checks the generated gRPC code is fresh;
//! `cargo xtask protos` regenerates it; `cargo xtask bench` runs the benchmarks;
//! `cargo xtask fuzz [SECONDS]` runs every fuzz target for a bounded time.
//! Each installs what it needs (the `wasm32-wasip2` target, the Python plugin's packages from
//! PyPI) on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str =
    "usage: cargo xtask <demo|test|lint|bench|bench-table|guests|go|python|protos|fuzz [SECONDS]>

  demo    build the example guests and Go plugins and run the demo on them
  test    build the guests and run every test of the workspace
  lint    cargo fmt --check, clippy -D warnings, cargo doc (warnings denied), and a check that
          the checked-in gRPC code is what the .proto files generate
  bench   run every benchmark and its peers; print the ratio table, write BENCHMARKS.md
  bench-table  only write the table again from the last run's estimates
  guests  only build the example guests (wasm32-wasip2 components)
  go      only build the Go fixtures (tests/go, go-plugin v1.8.0) and check them with a Go host
  python  only set up the Python kv plugin (tests/python: a venv with its pinned packages from
          PyPI, stubs generated from kv.proto, the launcher a host runs)
  protos  regenerate the checked-in gRPC code from the workspace's .proto files (vendored protoc)
  fuzz    run each cargo-fuzz target (fuzz/) for SECONDS (default 20)";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let outcome = match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "lint" => lint(),
        "bench" => bench(),
        "bench-table" => write_bench_table(),
        "guests" => guests(),
        "go" => go_fixtures(),
        "python" => python_plugin(),
        "protos" => cargo(&["run", "--quiet", "--package", "plinth-protogen"]),
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
    python_plugin()?;
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "plinth-example-lean-host",
    ])?;
    // On its own, so that `plinth` is built without `wasm` as such a host builds it.
    cargo(&["test", "--package", "plinth-example-lean-host"])
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
        .current_dir(root()))?;
    lean_builds()?;
    cargo(&[
        "run",
        "--quiet",
        "--package",
        "plinth-protogen",
        "--",
        "--check",
    ])
}

/// The crates a host that loads only go-plugin executables must not build.
const WASM_CRATES: [&str; 3] = ["wasmtime", "wasmtime-wasi", "cranelift-codegen"];

/// The code generators no downstream build runs: the gRPC code is checked in.
const CODEGEN_CRATES: [&str; 3] = ["protoc-bin-vendored", "prost-build", "tonic-prost-build"];

/// Checks `plinth` and the example adapters with each backend alone (clippy, warnings denied),
/// and the subprocess-only host on its own, and that the lean
/// dependency trees stay lean: a subprocess-only host (`plinth-example-lean-host`) compiles no
/// wasmtime, and a Rust plugin binary (`plinth-example-plugins`) neither wasmtime nor protoc.
fn lean_builds() -> Result<(), String> {
    for package in ["plinth", "plinth-examples"] {
        for feature in ["wasm", "subprocess"] {
            cargo(&[
                "clippy",
                "--package",
                package,
                "--lib",
                "--no-default-features",
                "--features",
                feature,
                "--",
                "-D",
                "warnings",
            ])?;
        }
    }
    cargo(&[
        "clippy",
        "--package",
        "plinth-example-lean-host",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let forbidden_in = |args: &[&str], forbidden: &[&str]| -> Result<(), String> {
        let output = Command::new(cargo_bin())
            .args(["tree", "--edges", "normal,build", "--prefix", "none"])
            .args(args)
            .current_dir(root())
            .output()
            .map_err(|e| format!("cannot run cargo tree: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo tree {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        let found: Vec<&str> = tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| forbidden.contains(name))
            .collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cargo tree {} pulls in {}; expected none of [{}]",
                args.join(" "),
                found.join(", "),
                forbidden.join(", ")
            ))
        }
    };
    let subprocess_only = [
        "--package",
        "plinth",
        "--no-default-features",
        "--features",
        "subprocess",
    ];
    forbidden_in(&subprocess_only, &WASM_CRATES)?;
    forbidden_in(&subprocess_only, &CODEGEN_CRATES)?;
    let lean_host = ["--package", "plinth-example-lean-host"];
    forbidden_in(&lean_host, &WASM_CRATES)?;
    let plugins = ["--package", "plinth-example-plugins"];
    forbidden_in(&plugins, &WASM_CRATES)?;
    forbidden_in(&plugins, &CODEGEN_CRATES)
}

/// Runs every benchmark and its peers, then prints one table of ratios and writes it to
/// `BENCHMARKS.md`.
fn bench() -> Result<(), String> {
    guests()?;
    go_fixtures()?;
    cargo(&["bench", "--workspace"])?;
    extism_peer()?;
    write_bench_table()
}

/// Measures the Go host on both kv plugins, then writes the table from the estimates the last
/// `cargo xtask bench` left (after re-running single benchmarks by hand, say).
fn write_bench_table() -> Result<(), String> {
    let served = served_plugin_rtt()?;
    let table = bench_table(&target_dir().join("criterion"), &served);
    println!("\n{table}");
    let path = root().join("BENCHMARKS.md");
    std::fs::write(&path, table).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the Extism peer's plugin and runs its bench (`bench-peers/`, its own workspace and
/// target directory, since it pins another wasmtime).
fn extism_peer() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|target| target.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let peers = root().join("bench-peers");
    run(Command::new(cargo_bin())
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(peers.join("extism-kv-plugin")))?;
    run(Command::new(cargo_bin())
        .args(["bench", "--bench", "extism"])
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(peers.join("extism-host")))
}

/// The round trip of go-plugin's Go host to the Rust-served kv plugin and to the Go one.
struct ServedRtt {
    rust_rtt_ns: f64,
    go_rtt_ns: f64,
}

fn served_plugin_rtt() -> Result<ServedRtt, String> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "plinth-example-plugins",
        "--bin",
        "kv-plugin",
    ])?;
    let go_host = root().join("tests/go/bin/go-host");
    let measure = |plugin: &Path| -> Result<f64, String> {
        let output = Command::new(&go_host)
            .arg("bench")
            .arg(plugin)
            .arg("20000")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", go_host.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let figures: serde_json::Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("go-host bench printed {text:?}: {e}"))?;
        figures["rtt_ns"]
            .as_f64()
            .ok_or_else(|| format!("go-host bench printed no rtt_ns: {text}"))
    };
    // Alternately, so that both meet the machine in the same moods; medians compared.
    const ROUNDS: usize = 5;
    let rust_plugin = target_dir().join("release/kv-plugin");
    let go_plugin = root().join("tests/go/bin/kv-plugin");
    let (mut rust, mut go) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        rust.push(measure(&rust_plugin)?);
        go.push(measure(&go_plugin)?);
    }
    Ok(ServedRtt {
        rust_rtt_ns: median(rust),
        go_rtt_ns: median(go),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Criterion's estimate of a benchmark's time per iteration, in nanoseconds: the slope of its
/// linear fit when it made one (the figure it prints), else the mean.
fn estimate(criterion: &Path, id: &str) -> Option<f64> {
    let path = criterion.join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())
}

fn figures(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// How a figure is judged.
enum Goal {
    /// ours / peer at most this.
    AtMost(f64),
    /// ours / peer at least this (rates, or how many times faster).
    AtLeast(f64),
    /// No goal: a figure to choose a default with.
    Report,
}

fn duration(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A table row: the figure, ours, the peer's, the peer's name and the goal.
type Row = (String, Option<f64>, Option<f64>, &'static str, Goal);

/// The ratio table, as Markdown.
fn bench_table(criterion: &Path, served: &ServedRtt) -> String {
    let extism = root().join("bench-peers/target/criterion");
    let subprocess = figures(&criterion.join("plinth-subprocess.json"));
    let memory = figures(&criterion.join("plinth-memory.json"));
    let ours = |id: &str| estimate(criterion, id);
    // The Plinth and raw wasm calls timed alternately (benches/wasm.rs); criterion's figures
    // when that file is missing.
    let paired = figures(&criterion.join("plinth-wasm.json"));
    let pair = |figure: &str, plinth_id: &str, raw_id: &str| match (
        paired[figure]["plinth_ns"].as_f64(),
        paired[figure]["raw_ns"].as_f64(),
    ) {
        (Some(plinth), Some(raw)) => (Some(plinth), Some(raw)),
        _ => (ours(plinth_id), ours(raw_id)),
    };
    // (figure, ours, peer, peer's name, goal), times in ns unless the goal says rates.
    let mut rows: Vec<Row> = Vec::new();
    for (size, label) in [(16, "16 B"), (4096, "4 KiB"), (1_048_576, "1 MiB")] {
        let (plinth, raw) = pair(
            &format!("kv_get/{size}"),
            &format!("kv_get/plinth/{size}"),
            &format!("kv_get/raw/{size}"),
        );
        rows.push((
            format!("wasm kv.get {label}"),
            plinth,
            raw,
            "raw bindgen!, same engine",
            // The small call is where Plinth's own path shows; larger values are copying.
            Goal::AtMost(if size == 16 { 1.2 } else { 1.5 }),
        ));
    }
    let (plinth, raw) = pair("greet", "greet/plinth", "greet/raw");
    rows.push((
        "wasm greet()".to_owned(),
        plinth,
        raw,
        "raw bindgen!, same engine",
        Goal::AtMost(1.5),
    ));
    let (plinth, raw) = pair("pool", "kv_get/plinth/16", "kv_get/pool/16");
    rows.push((
        "wasm kv.get 16 B, dispensed `dyn Kv` vs the pool directly".to_owned(),
        plinth,
        raw,
        "Pool::call, generated bindings",
        Goal::Report,
    ));
    let (plinth, raw) = pair(
        "store_settings",
        "kv_get/plinth/16",
        "kv_get/raw_store_settings/16",
    );
    rows.push((
        "wasm kv.get 16 B".to_owned(),
        plinth,
        raw,
        "raw, Plinth's store settings",
        Goal::Report,
    ));
    for (side, peer) in [
        ("plinth", "Plinth, concurrency off"),
        ("raw", "raw, concurrency off"),
    ] {
        let (on, off) = pair(
            &format!("concurrency/{side}"),
            &format!("kv_get/{side}_concurrency/16"),
            &format!("kv_get/{side}/16"),
        );
        rows.push((
            format!("wasm kv.get 16 B ({side}), concurrency on vs off"),
            on,
            off,
            peer,
            Goal::Report,
        ));
    }
    rows.push((
        "wasm kv.get 16 B, raw: async vs sync bindings".to_owned(),
        ours("kv_get/raw/16"),
        ours("kv_get/raw_sync/16"),
        "raw sync bindgen!",
        Goal::Report,
    ));
    for (size, label) in [(16, "16 B"), (4096, "4 KiB"), (1_048_576, "1 MiB")] {
        rows.push((
            format!("wasm kv.get {label}"),
            ours(&format!("kv_get/plinth/{size}")),
            estimate(&extism, &format!("kv_get/extism/{size}")),
            "Extism 1.41",
            Goal::AtMost(0.2),
        ));
    }
    rows.push((
        "wasm greet()".to_owned(),
        ours("greet/plinth"),
        estimate(&extism, "greet/extism"),
        "Extism 1.41",
        Goal::AtMost(0.2),
    ));
    let (plinth, raw) = pair("instantiate", "instantiate/plinth", "instantiate/raw");
    rows.push((
        "instantiate (pooling)".to_owned(),
        plinth,
        raw,
        "raw InstancePre",
        Goal::AtMost(1.2),
    ));
    rows.push((
        "instantiate, raw: Plinth's pool settings vs wasmtime's defaults".to_owned(),
        ours("instantiate/raw"),
        ours("instantiate/raw_wasmtime_defaults"),
        "wasmtime default pool",
        Goal::Report,
    ));
    rows.push((
        "load: compile vs disk cache".to_owned(),
        ours("load/disk_cache"),
        ours("load/compile"),
        "compiling load",
        Goal::AtMost(0.05),
    ));
    let number = |key: &str| subprocess[key].as_f64();
    rows.push((
        "subprocess kv.get RTT (current_thread)".to_owned(),
        number("rtt_current_thread_ns"),
        number("go_rtt_ns"),
        "go-plugin host",
        Goal::AtMost(0.8),
    ));
    rows.push((
        "subprocess kv.get RTT (multi_thread, caller in a task)".to_owned(),
        number("rtt_multi_thread_task_ns"),
        number("go_rtt_ns"),
        "go-plugin host",
        Goal::AtMost(0.8),
    ));
    rows.push((
        "subprocess kv.get RTT (multi_thread, caller in block_on)".to_owned(),
        number("rtt_multi_thread_ns"),
        number("go_rtt_ns"),
        "go-plugin host",
        Goal::Report,
    ));
    rows.push((
        "subprocess spawn to first answer".to_owned(),
        number("startup_ns"),
        number("go_startup_ns"),
        "go-plugin host",
        Goal::AtMost(1.0),
    ));
    rows.push((
        "subprocess spawn to first answer, 512 MiB resident in the host".to_owned(),
        number("startup_heavy_host_ns"),
        number("startup_ns"),
        "same, light host",
        Goal::Report,
    ));
    rows.push((
        "subprocess calls/s, 64 callers".to_owned(),
        number("calls_per_s_64"),
        number("go_calls_per_s_64"),
        "go-plugin host",
        Goal::AtLeast(1.2),
    ));
    rows.push((
        "subprocess host CPU per call, 64 callers".to_owned(),
        number("host_cpu_ns_64"),
        number("go_host_cpu_ns_64"),
        "go-plugin host",
        Goal::Report,
    ));
    rows.push((
        "subprocess plugin CPU per call, 64 callers".to_owned(),
        number("plugin_cpu_ns_64"),
        number("go_plugin_cpu_ns_64"),
        "same plugin under go-plugin host",
        Goal::Report,
    ));
    rows.push((
        "Rust-served plugin RTT, Go host".to_owned(),
        Some(served.rust_rtt_ns),
        Some(served.go_rtt_ns),
        "Go plugin, same host",
        Goal::AtMost(1.0),
    ));

    let mut table = String::from(
        "# Benchmarks\n\nWritten by `cargo xtask bench`: every figure beside its peer, measured in the \
         same run on the same machine; a ratio below 1 means Plinth is faster (for calls per \
         second, above 1). On a shared 2-core machine single figures move by 10-30% from run \
         to run. The wasm times are criterion's estimates (the slope of its fit, as it prints \
         them), except against raw wasmtime (`bindgen!` calls, `InstancePre`): Plinth's call and \
         the raw one alternate for nine rounds of plain timed loops and the medians are \
         compared. The subprocess \
         figures are medians of plain measurements alternating with the Go host's, so that \
         both meet the machine in the same moods: five rounds of 20 000 sequential calls and \
         ten starts, then five 64-caller runs of about 64 000 calls, and five rounds of the Go \
         host calling the Rust-served and the Go kv plugin; CPU per call is each process's \
         user and system time (`/proc`, 10 ms ticks) over a 64-caller run, divided by the \
         calls.\n\n\
         | figure | Plinth | peer | peer | ratio | goal | met |\n|---|---|---|---|---|---|---|\n",
    );
    for (figure, ours, peer, name, goal) in rows {
        let rate = matches!(goal, Goal::AtLeast(_));
        let show = |value: Option<f64>| match value {
            Some(value) if rate => format!("{value:.0}/s"),
            Some(value) => duration(value),
            None => "not measured".to_owned(),
        };
        let (ratio, met) = match (ours, peer) {
            (Some(ours), Some(peer)) if peer > 0.0 => {
                let ratio = ours / peer;
                let met = match goal {
                    Goal::AtMost(limit) => Some(ratio <= limit),
                    Goal::AtLeast(limit) => Some(ratio >= limit),
                    Goal::Report => None,
                };
                let met = match met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                (format!("{ratio:.2}x"), met)
            }
            _ => ("-".to_owned(), "-"),
        };
        let goal = match goal {
            Goal::AtMost(limit) => format!("<= {limit}x"),
            Goal::AtLeast(limit) => format!(">= {limit}x"),
            Goal::Report => "(measured)".to_owned(),
        };
        table.push_str(&format!(
            "| {figure} | {} | {} | {name} | {ratio} | {goal} | {met} |\n",
            show(ours),
            show(peer)
        ));
    }
    table.push_str(
        "\nThe subprocess RTT from a task spawned on a multi-threaded runtime is how a server's \
         handlers call; from `block_on` (a thread that is not one of the runtime's workers) each \
         call also crosses to a worker and back, two thread wake-ups that a virtual machine with \
         idle cores makes expensive (tens of microseconds each), so that row is reported rather \
         than held to the goal.\n",
    );
    let absolute = |value: Option<f64>| value.map_or("not measured".to_owned(), duration);
    let get = pair("kv_get/16", "kv_get/plinth/16", "kv_get/raw/16").0;
    table.push_str(&format!(
        "\nAbsolute, Plinth: kv.get of 16 B through `dispense`, median {} (goal <= 250 ns); \
         instantiation from the pool {} (goal <= 5 us).\n",
        absolute(get),
        absolute(pair("instantiate", "instantiate/plinth", "instantiate/raw").0)
    ));
    let spreads: Vec<f64> = paired
        .as_object()
        .map(|figures| {
            figures
                .values()
                .filter_map(|figure| figure["spread"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    if let (Some(low), Some(high)) = (
        spreads.iter().copied().reduce(f64::min),
        spreads.iter().copied().reduce(f64::max),
    ) {
        table.push_str(&format!(
            "Noise: the paired rounds of one figure spread (interquartile range over median, the \
             wider side) from {:.0}% to {:.0}% in this run; a change between runs smaller than \
             that is not read as a change.\n",
            low * 100.0,
            high * 100.0
        ));
    }
    match (
        memory["rss_per_idle_instance_bytes"].as_f64(),
        memory["instances_alive"].as_u64(),
        memory["instantiate_1000_ms"].as_f64(),
    ) {
        (Some(bytes), Some(alive), Some(ms)) => table.push_str(&format!(
            "Memory: each idle pooled instance of kv.wasm adds {:.1} KiB resident, guest memory \
             included (goal <= 1 MiB above guest memory); {alive} instances of one component \
             alive at once, created in {ms:.1} ms.\n",
            bytes / 1024.0
        )),
        _ => table.push_str("Memory: not measured.\n"),
    }
    table
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

/// Sets up the Python kv plugin in `tests/python/.build`: a virtual environment with the pinned
/// packages of `requirements.txt` (installed again when that file changes, or when the
/// environment no longer runs), the grpcio stubs of `kv.proto` and go-plugin's controller
/// generated with grpcio-tools, and `kv-plugin-python`, the launcher a host runs. Then runs the
/// launcher without its cookie, which must exit 1 as a plugin does: the stubs and packages load.
fn python_plugin() -> Result<(), String> {
    let dir = root().join("tests/python");
    let build = dir.join(".build");
    let venv = build.join("venv");
    let python = venv.join("bin/python");
    let runs = Command::new(&python)
        .args(["-c", "pass"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        match std::fs::remove_dir_all(&venv) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", venv.display())),
        }
        let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(Command::new(interpreter).args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = dir.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let stamp = venv.join("plinth-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "--requirement",
            ])
            .arg(&requirements))?;
        std::fs::write(&stamp, &wanted)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    let stubs = build.join("stubs");
    match std::fs::remove_dir_all(&stubs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", stubs.display())),
    }
    std::fs::create_dir_all(&stubs)
        .map_err(|e| format!("cannot create {}: {e}", stubs.display()))?;
    let out = stubs.display();
    run(Command::new(&python)
        .args([
            "-m",
            "grpc_tools.protoc",
            "-I",
            "tests/go/proto",
            "-I",
            "subprocess/proto",
        ])
        .arg(format!("--python_out={out}"))
        .arg(format!("--grpc_python_out={out}"))
        .args(["kv.proto", "grpc_controller.proto"])
        .current_dir(root()))?;
    let launcher = build.join("kv-plugin-python");
    let quote = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
    let script = format!(
        "#!/bin/sh\n# Written by `cargo xtask python`: runs tests/python/kv_plugin.py in its virtual environment.\nPYTHONPATH={} exec {} {} \"$@\"\n",
        quote(&stubs),
        quote(&python),
        quote(&dir.join("kv_plugin.py")),
    );
    std::fs::write(&launcher, script)
        .map_err(|e| format!("cannot write {}: {e}", launcher.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", launcher.display()))?;
    let check = Command::new(&launcher)
        .env_remove("PLINTH_PLUGIN")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", launcher.display()))?;
    let said = String::from_utf8_lossy(&check.stderr);
    if check.status.code() != Some(1) || !said.contains("This binary is a plugin") {
        return Err(format!(
            "{} without its cookie should exit 1 as a plugin does; it exited with {} and said: {said}",
            launcher.display(),
            check.status
        ));
    }
    Ok(())
}

/// The fuzz targets under `fuzz/fuzz_targets`.
const FUZZ_TARGETS: [&str; 4] = ["handshake", "hclog", "gob", "component"];

/// The cargo-fuzz release the fuzz targets are run with.
const CARGO_FUZZ: &str = "0.13.1";

/// Runs every fuzz target for `seconds`, seeded with the example guests and known-good inputs.
/// Installs cargo-fuzz when missing. The targets build with the workspace's pinned stable
/// toolchain: libFuzzer's coverage instrumentation (`--sanitizer none`) needs no nightly
/// features. A crash fails the task and leaves its input in `fuzz/artifacts/<target>/`.
fn fuzz(seconds: u64) -> Result<(), String> {
    guests()?;
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
        let mut command = Command::new(cargo_bin());
        command
            .args(["fuzz", "run", "--sanitizer", "none"])
            .arg(target)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=4096")
            .current_dir(&fuzz_dir);
        // Fuzz builds go beside the workspace's when it builds outside the clone.
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

/// The workspace's root: the parent of xtask's manifest directory.
///
/// `cargo run` says where the manifest is at run time: two clones sharing one target directory
/// share the one `target/debug/xtask` binary too, which would otherwise act on the clone that
/// built it last.
fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}
