//! Subprocess backend benchmarks against a Go host driving the same Go plugin in the same run.
//!
//! - `subprocess/kv_get_16/{current_thread,multi_thread}/plinth`: one `get` of a 16-byte value
//!   through a dispensed `Arc<dyn Kv>` backed by `tests/go/bin/kv-plugin` (Unix socket,
//!   plaintext — as the Go peer), on a single-threaded and on a multi-threaded tokio runtime
//!   (where each call crosses threads to reach the connection task).
//! - `subprocess/kv_get_16/*/plinth_mtls`: the same with AutoMTLS (the Go peer has none).
//! - `subprocess/start_to_first_answer/plinth`: `Client::start` (spawn, handshake, connect),
//!   dispense, and the first answered call; the kill afterwards is not timed.
//!
//! - Throughput (not criterion): calls per second with 64 tasks sharing one client on a
//!   multi-threaded runtime.
//!
//! The peer is `tests/go/bin/go-host bench`, go-plugin v1.8.0's own client on the same binary
//! (64 goroutines for throughput); its figures and the ratios are printed after criterion's and
//! written to `criterion/plinth-subprocess.json` in the target directory for `cargo xtask
//! bench`'s table. Run with `cargo xtask bench`.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use plinth::{Client, ClientConfig};
use plinth_examples::kv::KvPlugin;
use plinth_examples::{go_plugin, handshake};
use tokio::runtime::Runtime;

/// Total time and iterations of each measured figure, for the ratio table.
static TOTALS: Mutex<Vec<(&'static str, Duration, u64)>> = Mutex::new(Vec::new());

fn record(name: &'static str, elapsed: Duration, iterations: u64) {
    let mut totals = TOTALS.lock().unwrap();
    match totals.iter_mut().find(|(n, ..)| *n == name) {
        Some((_, total, count)) => {
            *total += elapsed;
            *count += iterations;
        }
        None => totals.push((name, elapsed, iterations)),
    }
}

fn mean_ns(name: &str) -> Option<f64> {
    let totals = TOTALS.lock().unwrap();
    totals
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, total, count)| total.as_nanos() as f64 / (*count).max(1) as f64)
}

fn config(auto_mtls: bool) -> ClientConfig {
    ClientConfig::command(go_plugin("kv-plugin"))
        .handshake(handshake())
        .auto_mtls(auto_mtls)
}

fn kv_get(c: &mut Criterion, runtime: &Runtime, flavor: &'static str) {
    let mut group = c.benchmark_group(format!("subprocess/kv_get_16/{flavor}"));
    for (name, mtls) in [("plinth", false), ("plinth_mtls", true)] {
        let (client, kv) = runtime.block_on(async {
            let client = Client::start(config(mtls)).await.expect("kv-plugin starts");
            let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
            kv.put("key16", &[7u8; 16]).await.expect("put");
            (client, kv)
        });
        let figure: &'static str = match (flavor, mtls) {
            ("current_thread", false) => "rtt, current_thread runtime",
            ("current_thread", true) => "rtt mtls, current_thread",
            (_, false) => "rtt, multi_thread runtime",
            (_, true) => "rtt mtls, multi_thread",
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let began = Instant::now();
                    for _ in 0..iterations {
                        std::hint::black_box(kv.get("key16").await.expect("get"));
                    }
                    let elapsed = began.elapsed();
                    record(figure, elapsed, iterations);
                    elapsed
                })
            })
        });
        runtime.block_on(client.kill());
    }
    group.finish();
}

fn start_to_first_answer(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("subprocess/start_to_first_answer");
    group.sample_size(20);
    group.bench_function("plinth", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let began = Instant::now();
                    let client = Client::start(config(false)).await.expect("starts");
                    let kv = client.dispense(&KvPlugin).await.expect("dispenses");
                    assert!(kv.get("missing").await.is_err());
                    timed += began.elapsed();
                    client.kill().await;
                }
                record("startup", timed, iterations);
                timed
            })
        })
    });
    group.finish();
}

/// Calls per second with 64 tasks sharing one client.
fn throughput(runtime: &Runtime) -> f64 {
    runtime.block_on(async {
        let client = Client::start(config(false))
            .await
            .expect("kv-plugin starts");
        let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
        kv.put("key16", &[7u8; 16]).await.expect("put");
        const CALLERS: usize = 64;
        const PER_CALLER: usize = 400;
        let began = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let kv = kv.clone();
            tasks.spawn(async move {
                for _ in 0..PER_CALLER {
                    std::hint::black_box(kv.get("key16").await.expect("get"));
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a caller");
        }
        let rate = (CALLERS * PER_CALLER) as f64 / began.elapsed().as_secs_f64();
        client.kill().await;
        rate
    })
}

/// The Go host's figures on the same binary: (rtt ns, startup ns, calls per second with 64
/// callers).
fn go_peer() -> Option<(f64, f64, f64)> {
    let host = go_plugin("go-host");
    let output = Command::new(&host)
        .args(["bench"])
        .arg(go_plugin("kv-plugin"))
        .arg("20000")
        .output()
        .map_err(|e| eprintln!("cannot run {}: {e}", host.display()))
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| eprintln!("go-host printed {text:?}: {e}"))
        .ok()?;
    Some((
        figures["rtt_ns"].as_f64()?,
        figures["startup_ns"].as_f64()?,
        figures["calls_per_s_64"].as_f64()?,
    ))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut criterion = Criterion::default().configure_from_args();
    kv_get(&mut criterion, &runtime, "current_thread");
    kv_get(&mut criterion, &multi_thread, "multi_thread");
    start_to_first_answer(&mut criterion, &runtime);
    criterion.final_summary();
    // `cargo test --benches` runs this binary only to check it works.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let calls_per_s = throughput(&multi_thread);

    let Some((go_rtt, go_startup, go_calls_per_s)) = go_peer() else {
        eprintln!("the Go peer could not be measured; build it with `cargo xtask go`");
        return;
    };
    println!("\nsubprocess figures, same run (goal: rtt <= 0.8x, startup <= 1.0x of the Go host)");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "figure", "plinth", "go-host", "ratio"
    );
    let figures = [
        ("rtt, current_thread runtime", go_rtt),
        ("rtt mtls, current_thread", go_rtt),
        ("rtt, multi_thread runtime", go_rtt),
        ("rtt mtls, multi_thread", go_rtt),
        ("startup", go_startup),
    ];
    for (name, go) in figures {
        if let Some(ours) = mean_ns(name) {
            println!(
                "{:<28} {:>10.1}us {:>10.1}us {:>7.2}x",
                name,
                ours / 1000.0,
                go / 1000.0,
                ours / go
            );
        }
    }
    println!(
        "{:<28} {:>10.0}/s {:>10.0}/s {:>7.2}x",
        "throughput, 64 callers",
        calls_per_s,
        go_calls_per_s,
        calls_per_s / go_calls_per_s
    );
    let written = serde_json::json!({
        "rtt_current_thread_ns": mean_ns("rtt, current_thread runtime"),
        "rtt_multi_thread_ns": mean_ns("rtt, multi_thread runtime"),
        "rtt_mtls_current_thread_ns": mean_ns("rtt mtls, current_thread"),
        "startup_ns": mean_ns("startup"),
        "calls_per_s_64": calls_per_s,
        "go_rtt_ns": go_rtt,
        "go_startup_ns": go_startup,
        "go_calls_per_s_64": go_calls_per_s,
    });
    let dir = plinth_interop::criterion_dir();
    let outcome = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("plinth-subprocess.json"), written.to_string()));
    if let Err(error) = outcome {
        eprintln!("cannot write the figures into {}: {error}", dir.display());
    }
}
