//! Subprocess backend benchmarks against a Go host driving the same Go plugin in the same run.
//!
//! - `subprocess/kv_get_16/{current_thread,multi_thread}/plinth`: one `get` of a 16-byte value
//!   through a dispensed `Arc<dyn Kv>` backed by `tests/go/bin/kv-plugin` (Unix socket,
//!   plaintext — as the Go peer), on a single-threaded and on a multi-threaded tokio runtime
//!   whose `block_on` thread is not a worker (each call crosses to a worker thread and back),
//!   and from a task spawned on that runtime (how a server's handlers call).
//! - `subprocess/kv_get_16/*/plinth_mtls`: the same with AutoMTLS (the Go peer has none).
//! - `subprocess/start_to_first_answer/plinth`: `Client::start` (spawn, handshake, connect),
//!   dispense, and the first answered call; the kill afterwards is not timed.
//!
//! - Throughput (not criterion): calls per second with 64 tasks sharing one client on a
//!   multi-threaded runtime, and the CPU time the host process and the plugin process spent per
//!   call meanwhile (on two cores the host and the plugin compete, so a host that spends less
//!   leaves more to the plugin).
//! - Heavy host (not criterion): ten starts again while the host holds 512 MiB resident, since
//!   the cost of creating a process can grow with the creator's memory.
//!
//! The peer is `tests/go/bin/go-host` (`bench`, and `throughput` with 64 goroutines),
//! go-plugin v1.8.0's own client on the same binary. Since single figures on a small shared
//! machine move by tens of percent, the ratios do not come from criterion's runs: after them,
//! five rounds of our own plain measurements (20 000 sequential calls per flavour, ten
//! starts) alternate with five runs of the Go host, then five 64-caller runs of about 64 000
//! calls each alternate with five of the Go host's, and the medians are compared. They are
//! printed after criterion's and written to `criterion/plinth-subprocess.json` in the target
//! directory for `cargo xtask bench`'s table. Run with `cargo xtask bench`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use plinth::{Client, ClientConfig};
use plinth_examples::kv::{Kv, KvPlugin};
use plinth_examples::{go_plugin, handshake};
use plinth_interop::mtls_policy;
use tokio::runtime::Runtime;

fn config(auto_mtls: bool) -> ClientConfig {
    ClientConfig::command(go_plugin("kv-plugin"))
        .handshake(handshake())
        .auto_mtls(mtls_policy(auto_mtls))
}

/// Where the timed loop runs: on the thread that calls `block_on`, or in a task spawned on the
/// runtime.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    BlockOn,
    Task,
}

/// Starts the Go kv plugin and stores the 16-byte value the benchmarks get.
async fn kv_client(mtls: bool) -> (Client, Arc<dyn Kv>) {
    let client = Client::start(config(mtls)).await.expect("kv-plugin starts");
    let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
    kv.put("key16", &[7u8; 16]).await.expect("put");
    (client, kv)
}

/// Times `calls` gets of the 16-byte value after `warm_up` untimed ones, run by `caller`.
fn time_gets(
    runtime: &Runtime,
    caller: Caller,
    kv: Arc<dyn Kv>,
    warm_up: u64,
    calls: u64,
) -> Duration {
    let timed = async move {
        for _ in 0..warm_up {
            std::hint::black_box(kv.get("key16").await.expect("get"));
        }
        let began = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(kv.get("key16").await.expect("get"));
        }
        began.elapsed()
    };
    match caller {
        Caller::BlockOn => runtime.block_on(timed),
        Caller::Task => runtime
            .block_on(runtime.spawn(timed))
            .expect("the timed task"),
    }
}

/// The total time of `starts` runs from `Client::start` to the first answered call (the kill
/// afterwards is not timed).
async fn time_starts(starts: u64) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..starts {
        let began = Instant::now();
        let client = Client::start(config(false)).await.expect("starts");
        let kv = client.dispense(&KvPlugin).await.expect("dispenses");
        assert!(kv.get("missing").await.is_err());
        timed += began.elapsed();
        client.kill().await;
    }
    timed
}

fn kv_get(c: &mut Criterion, runtime: &Runtime, flavor: &'static str, caller: Caller) {
    let mut group = c.benchmark_group(format!("subprocess/kv_get_16/{flavor}"));
    for (name, mtls) in [("plinth", false), ("plinth_mtls", true)] {
        let (client, kv) = runtime.block_on(kv_client(mtls));
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| time_gets(runtime, caller, kv.clone(), 0, iterations))
        });
        runtime.block_on(client.kill());
    }
    group.finish();
}

fn start_to_first_answer(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("subprocess/start_to_first_answer");
    group.sample_size(20);
    group.bench_function("plinth", |b| {
        b.iter_custom(|iterations| runtime.block_on(time_starts(iterations)))
    });
    group.finish();
}

/// What the 64-caller measurement found, for either host.
#[derive(Clone, Copy, Debug)]
struct Throughput {
    calls_per_s: f64,
    /// CPU time of the host process per call.
    host_cpu_ns: f64,
    /// CPU time of the plugin process per call.
    plugin_cpu_ns: f64,
}

/// Calls timed in each sequential round trip measurement, as the Go host is asked for.
const CALLS: u64 = 20_000;

/// The mean round trip of `CALLS` sequential calls (after `CALLS / 10` to warm up), from the
/// `block_on` thread or from a spawned task.
fn sequential_rtt(runtime: &Runtime, caller: Caller) -> f64 {
    let (client, kv) = runtime.block_on(kv_client(false));
    let elapsed = time_gets(runtime, caller, kv, CALLS / 10, CALLS);
    runtime.block_on(client.kill());
    elapsed.as_nanos() as f64 / CALLS as f64
}

/// The mean time from `Client::start` to the first answered call, over ten starts (as the Go
/// host measures it).
fn startup(runtime: &Runtime) -> f64 {
    const STARTS: u64 = 10;
    runtime.block_on(time_starts(STARTS)).as_nanos() as f64 / STARTS as f64
}

/// Calls in each 64-caller measurement (about two seconds), as the Go host is asked for.
const THROUGHPUT_CALLS: usize = 64_000;

/// Calls per second with 64 tasks sharing one client, making about [`THROUGHPUT_CALLS`] calls
/// in all (as many per task as the Go host's goroutines make).
fn throughput(runtime: &Runtime) -> Throughput {
    runtime.block_on(async {
        let (client, kv) = kv_client(false).await;
        const CALLERS: usize = 64;
        const PER_CALLER: usize = THROUGHPUT_CALLS / CALLERS + 1;
        let plugin = client
            .reattach_config()
            .expect("a launched plugin can be reattached")
            .pid;
        let host_cpu = cpu_time(std::process::id());
        let plugin_cpu = cpu_time(plugin);
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
        let calls = (CALLERS * PER_CALLER) as f64;
        let calls_per_s = calls / began.elapsed().as_secs_f64();
        let host_cpu_ns = (cpu_time(std::process::id()) - host_cpu).as_nanos() as f64 / calls;
        let plugin_cpu_ns = (cpu_time(plugin) - plugin_cpu).as_nanos() as f64 / calls;
        client.kill().await;
        Throughput {
            calls_per_s,
            host_cpu_ns,
            plugin_cpu_ns,
        }
    })
}

/// The CPU time (user and system) process `pid` has used so far, from `/proc/PID/stat`, in
/// clock ticks of 10 ms (Linux's `USER_HZ`); zero where that cannot be read.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
    else {
        return Duration::ZERO;
    };
    // The fields after the command name, which ends with the last ')': state is the first,
    // utime the twelfth and stime the thirteenth.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The Go host's sequential figures on the same binary.
struct GoFigures {
    rtt_ns: f64,
    startup_ns: f64,
}

/// Runs `go-host MODE kv-plugin CALLS` and reads the JSON it prints.
fn go_host(mode: &str, calls: usize) -> Option<serde_json::Value> {
    let host = go_plugin("go-host");
    let output = Command::new(&host)
        .arg(mode)
        .arg(go_plugin("kv-plugin"))
        .arg(calls.to_string())
        .output()
        .map_err(|e| eprintln!("cannot run {}: {e}", host.display()))
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim())
        .map_err(|e| eprintln!("go-host {mode} printed {text:?}: {e}"))
        .ok()
}

/// The Go host's round trip and start-up on the same binary.
fn go_peer() -> Option<GoFigures> {
    let figures = go_host("bench", CALLS as usize)?;
    Some(GoFigures {
        rtt_ns: figures["rtt_ns"].as_f64()?,
        startup_ns: figures["startup_ns"].as_f64()?,
    })
}

/// The Go host's 64-goroutine figures on the same binary.
fn go_throughput() -> Option<Throughput> {
    let figures = go_host("throughput", THROUGHPUT_CALLS)?;
    Some(Throughput {
        calls_per_s: figures["calls_per_s_64"].as_f64()?,
        host_cpu_ns: figures["host_cpu_ns_64"].as_f64()?,
        plugin_cpu_ns: figures["plugin_cpu_ns_64"].as_f64()?,
    })
}

/// The median of `values` (the upper one of an even count); `None` when there are none.
/// Says why the comparison with the Go host stops here.
fn no_go_peer() {
    eprintln!("the Go peer could not be measured; build it with `cargo xtask go`");
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
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
    kv_get(&mut criterion, &runtime, "current_thread", Caller::BlockOn);
    kv_get(
        &mut criterion,
        &multi_thread,
        "multi_thread",
        Caller::BlockOn,
    );
    kv_get(
        &mut criterion,
        &multi_thread,
        "multi_thread_task",
        Caller::Task,
    );
    start_to_first_answer(&mut criterion, &runtime);
    criterion.final_summary();
    // `cargo test --benches` runs this binary only to check it works.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }

    // Ours and the Go host's, alternately, so that both see the machine in the same moods;
    // the medians are compared. Criterion's figures above are the detail.
    const ROUNDS: usize = 5;
    let mut rounds = Vec::new();
    let mut go = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(Round {
            rtt_current_thread: sequential_rtt(&runtime, Caller::BlockOn),
            rtt_task: sequential_rtt(&multi_thread, Caller::Task),
            rtt_block_on: sequential_rtt(&multi_thread, Caller::BlockOn),
            startup: startup(&runtime),
        });
        let Some(figures) = go_peer() else {
            return no_go_peer();
        };
        go.push(figures);
    }
    // Calls per second move most with the moment on a shared machine: more and longer rounds.
    const THROUGHPUT_ROUNDS: usize = 5;
    let mut ours_64 = Vec::new();
    let mut go_64 = Vec::new();
    for _ in 0..THROUGHPUT_ROUNDS {
        ours_64.push(throughput(&multi_thread));
        let Some(figures) = go_throughput() else {
            return no_go_peer();
        };
        go_64.push(figures);
    }
    // Starting a plugin must not cost more in a host with much memory resident (as `fork`
    // would: it copies the page tables).
    let heavy_startup = {
        let ballast = vec![1u8; HEAVY_HOST_BYTES];
        let startup = startup(&runtime);
        std::hint::black_box(ballast);
        startup
    };
    println!(
        "start to first answer with {} MiB resident in the host: {:.2} ms",
        HEAVY_HOST_BYTES >> 20,
        heavy_startup / 1e6
    );
    let our = |field: fn(&Round) -> f64| median(rounds.iter().map(field).collect());
    let their = |field: fn(&GoFigures) -> f64| median(go.iter().map(field).collect());
    let our_64 = |field: fn(&Throughput) -> f64| median(ours_64.iter().map(field).collect());
    let their_64 = |field: fn(&Throughput) -> f64| median(go_64.iter().map(field).collect());
    let go_rtt = their(|g| g.rtt_ns);
    let figures = [
        ("rtt, current_thread", our(|r| r.rtt_current_thread), go_rtt),
        ("rtt, multi_thread task", our(|r| r.rtt_task), go_rtt),
        (
            "rtt, multi_thread block_on",
            our(|r| r.rtt_block_on),
            go_rtt,
        ),
        ("startup", our(|r| r.startup), their(|g| g.startup_ns)),
        (
            "host cpu/call, 64 callers",
            our_64(|t| t.host_cpu_ns),
            their_64(|t| t.host_cpu_ns),
        ),
        (
            "plugin cpu/call, 64 callers",
            our_64(|t| t.plugin_cpu_ns),
            their_64(|t| t.plugin_cpu_ns),
        ),
    ];
    println!(
        "\nsubprocess figures: medians of {ROUNDS} rounds ({THROUGHPUT_ROUNDS} for 64 callers) \
         alternating with the Go host's"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "figure", "plinth", "go-host", "ratio"
    );
    for (name, ours, go) in figures {
        if let (Some(ours), Some(go)) = (ours, go) {
            println!(
                "{:<28} {:>10.1}us {:>10.1}us {:>7.2}x",
                name,
                ours / 1000.0,
                go / 1000.0,
                ours / go
            );
        }
    }
    let calls_per_s = our_64(|t| t.calls_per_s);
    let go_calls_per_s = their_64(|t| t.calls_per_s);
    if let (Some(ours), Some(go)) = (calls_per_s, go_calls_per_s) {
        println!(
            "{:<28} {:>10.0}/s {:>10.0}/s {:>7.2}x",
            "throughput, 64 callers",
            ours,
            go,
            ours / go
        );
    }
    let written = serde_json::json!({
        "rtt_current_thread_ns": our(|r| r.rtt_current_thread),
        "rtt_multi_thread_ns": our(|r| r.rtt_block_on),
        "rtt_multi_thread_task_ns": our(|r| r.rtt_task),
        "startup_ns": our(|r| r.startup),
        "startup_heavy_host_ns": heavy_startup,
        "calls_per_s_64": calls_per_s,
        "host_cpu_ns_64": our_64(|t| t.host_cpu_ns),
        "plugin_cpu_ns_64": our_64(|t| t.plugin_cpu_ns),
        "go_rtt_ns": go_rtt,
        "go_startup_ns": their(|g| g.startup_ns),
        "go_calls_per_s_64": go_calls_per_s,
        "go_host_cpu_ns_64": their_64(|t| t.host_cpu_ns),
        "go_plugin_cpu_ns_64": their_64(|t| t.plugin_cpu_ns),
    });
    let dir = plinth_interop::criterion_dir();
    let outcome = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("plinth-subprocess.json"), written.to_string()));
    if let Err(error) = outcome {
        eprintln!("cannot write the figures into {}: {error}", dir.display());
    }
}

/// What the host holds resident for the heavy-host startup figure.
const HEAVY_HOST_BYTES: usize = 512 << 20;

/// One round of our figures.
struct Round {
    rtt_current_thread: f64,
    rtt_task: f64,
    rtt_block_on: f64,
    startup: f64,
}
