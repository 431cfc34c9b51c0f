//! End-to-end tests of Rust programs served as go-plugin plugins (`plinth_subprocess::serve`):
//! the example binaries `kv-plugin` and `counter-plugin` of `plinth-example-plugins`, loaded by a real
//! Go host (go-plugin v1.8.0's client, `tests/go/cmd/go-host serve-*`), by Plinth's own host,
//! and run by hand with bad input.
//!
//! The Rust plugins are built on first use with `cargo build -p plinth-example-plugins --bins` into
//! the target directory this test binary runs from (`<target>/<profile>/deps/..`), so the
//! test always loads binaries built from the tree under test. The Go host must be built with
//! `cargo xtask go` (or `cd tests/go && go build -o bin/ ./cmd/...`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plinth::{Client, ClientConfig};
use plinth_examples::counter::{AddHelper, Counter, CounterPlugin};
use plinth_examples::kv::KvPlugin;
use plinth_examples::{go_plugin, handshake};
use plinth_interop::mtls_policy;
use plinth_subprocess::serve::{MISCONFIGURED_MESSAGE, NOT_A_PLUGIN_MESSAGE};
use serde_json::Value;

/// The Rust plugin binary `name`, built once per test run.
fn rust_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_rust_plugins).clone();
    match dir {
        Ok(dir) => dir.join(name),
        Err(message) => panic!("{message}"),
    }
}

fn build_rust_plugins() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // <target>/<profile>/deps/serve-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?
        .to_owned();
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "plinth-example-plugins", "--bins"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the Rust plugins failed: {status}"));
    }
    Ok(profile_dir)
}

fn go_host() -> PathBuf {
    go_fixture("go-host")
}

fn go_fixture(name: &str) -> PathBuf {
    let path = go_plugin(name);
    assert!(
        path.exists(),
        "{} is missing: build the Go fixtures with `cargo xtask go`",
        path.display()
    );
    path
}

/// Runs `go-host <args>` (a serve-* mode) and returns its JSON report.
fn go_host_report(args: &[&str]) -> Value {
    go_report(go_host(), args)
}

fn go_report(host: PathBuf, args: &[&str]) -> Value {
    let output = run_with_timeout(Command::new(host).args(args), Duration::from_secs(60));
    assert!(
        output.status.success(),
        "go-host {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "go-host printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn serve_kv(mtls: bool, versions: &str) -> Value {
    let plugin = rust_plugin("kv-plugin");
    go_host_report(&[
        "serve-kv",
        plugin.to_str().unwrap(),
        if mtls { "true" } else { "false" },
        versions,
    ])
}

/// The Go host's log entries whose message contains `text`.
fn logs_with<'a>(report: &'a Value, text: &str) -> Vec<&'a Value> {
    report["logs"]
        .as_array()
        .map(|logs| {
            logs.iter()
                .filter(|entry| entry["@message"].as_str().is_some_and(|m| m.contains(text)))
                .collect()
        })
        .unwrap_or_default()
}

/// Kill() asked for Shutdown, and the plugin exited on its own within the grace period.
fn assert_clean_kill(report: &Value) {
    assert_eq!(report["exited"], true, "{report}");
    assert!(report["kill_ms"].as_i64().unwrap() < 2000, "{report}");
    assert!(
        logs_with(report, "failed to exit gracefully").is_empty(),
        "the Go host had to SIGKILL the plugin: {report}"
    );
    let exit = logs_with(report, "plugin process exited");
    assert!(
        exit.iter().all(|entry| entry["@level"] == "info"),
        "the plugin did not exit with status 0: {exit:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Go hosts

#[test]
fn go_host_puts_and_gets_from_the_rust_kv_plugin_with_and_without_auto_mtls() {
    for mtls in [false, true] {
        let report = serve_kv(mtls, "1");
        assert_eq!(report.get("start_error"), None, "mtls={mtls}: {report}");
        assert_eq!(report["version"], 1);
        assert_eq!(report["value"], "world", "mtls={mtls}");
        assert_eq!(report["ping"], true);
        let missing = report["missing_error"].as_str().unwrap_or_default();
        assert!(missing.contains("no value stored under key"), "{report}");
        assert_clean_kill(&report);
    }
}

#[test]
fn go_host_negotiates_the_highest_common_version_with_the_rust_plugin() {
    let report = serve_kv(false, "1,2");
    assert_eq!(report["version"], 2);
    assert_eq!(report["value"], "v2:world");
    let report = serve_kv(true, "2,3");
    assert_eq!(report["version"], 2);
    assert_eq!(report["value"], "v2:world");
}

#[test]
fn go_host_relogs_the_rust_plugins_hclog_lines_at_their_levels() {
    let report = serve_kv(false, "1");
    for level in ["trace", "debug", "info", "warn", "error"] {
        let entries = logs_with(&report, &format!("a {level} message"));
        assert_eq!(entries.len(), 1, "{level}: {report}");
        assert_eq!(entries[0]["@level"], level, "{:?}", entries[0]);
        assert_eq!(
            entries[0]["key"],
            format!("log:{level}"),
            "fields arrive as keys"
        );
    }
}

#[test]
fn go_host_receives_the_rust_plugins_stdout_and_stderr_through_grpc_stdio() {
    let report = serve_kv(true, "1");
    assert_eq!(report["stdout"], "to stdout\n", "{report}");
    assert_eq!(report["stderr"], "to stderr\n", "{report}");
}

#[test]
fn go_host_serves_a_callback_the_rust_counter_dials_through_the_broker() {
    let plugin = rust_plugin("counter-plugin");
    for mtls in ["false", "true"] {
        let report = go_host_report(&["serve-counter", plugin.to_str().unwrap(), mtls]);
        assert_eq!(report["value"], 42, "mtls={mtls}: {report}");
        assert_clean_kill(&report);
    }
}

#[test]
fn go_host_refuses_a_version_mismatch_and_logs_both_sides() {
    let report = serve_kv(false, "7");
    let error = report["start_error"].as_str().unwrap_or_default();
    assert!(error.contains("incompatible API version"), "{report}");
    let said = logs_with(&report, "no application protocol version in common");
    assert_eq!(said.len(), 1, "{report}");
    let message = said[0]["@message"].as_str().unwrap();
    assert!(
        message.contains("[1, 2]") && message.contains("[7]"),
        "{message}"
    );
}

#[test]
fn alpn_enforcing_go_host_loads_the_rust_plugins_over_auto_mtls() {
    // go-host built on grpc-go >= 1.67, which refuses TLS without ALPN h2 in both directions:
    // the host dialing the plugin, and the plugin dialing the host's broker server.
    let host = go_fixture("go-host-alpn");
    let kv = rust_plugin("kv-plugin");
    let report = go_report(
        host.clone(),
        &["serve-kv", kv.to_str().unwrap(), "true", "1"],
    );
    assert_eq!(report["value"], "world", "{report}");
    assert_clean_kill(&report);
    let counter = rust_plugin("counter-plugin");
    let report = go_report(host, &["serve-counter", counter.to_str().unwrap(), "true"]);
    assert_eq!(report["value"], 42, "{report}");
}

// ---------------------------------------------------------------------------------------------
// Plinth's own host

struct Adder;

#[async_trait]
impl AddHelper for Adder {
    async fn sum(&self, a: i64, b: i64) -> plinth::Result<i64> {
        Ok(a + b)
    }
}

#[tokio::test]
async fn plinth_host_loads_the_rust_plugins_with_and_without_auto_mtls() {
    for mtls in [false, true] {
        let config = ClientConfig::command(rust_plugin("kv-plugin"))
            .handshake(handshake())
            .auto_mtls(mtls_policy(mtls));
        let client = Client::start(config).await.expect("kv-plugin starts");
        let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
        kv.put("hello", b"world").await.expect("put");
        assert_eq!(kv.get("hello").await.expect("get"), b"world");
        plinth_interop::many_callers_spread_over_connections(&client, kv).await;
        client.ping().await.expect("ping");
        client.kill().await;

        let config = ClientConfig::command(rust_plugin("counter-plugin"))
            .handshake(handshake())
            .auto_mtls(mtls_policy(mtls));
        let client = Client::start(config).await.expect("counter-plugin starts");
        let counter: Arc<dyn Counter> = client.dispense(&CounterPlugin).await.unwrap();
        for value in [1, 2, 39] {
            counter.put("n", value, Arc::new(Adder)).await.unwrap();
        }
        assert_eq!(counter.get("n").await.unwrap(), 42);
        let began = Instant::now();
        client.kill().await;
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear message and a non-zero exit, never a hang

fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    wait_with_timeout(child, timeout)
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collects output")
}

fn kv_plugin() -> Command {
    let mut command = Command::new(rust_plugin("kv-plugin"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PLUGIN_") {
            command.env_remove(key);
        }
    }
    command.env_remove("PLINTH_PLUGIN");
    command
}

fn run_kv(env: &[(&str, &str)]) -> Output {
    let mut command = kv_plugin();
    command.envs(env.iter().copied());
    run_with_timeout(&mut command, Duration::from_secs(10))
}

#[test]
fn missing_or_wrong_cookie_prints_go_plugins_message_and_exits_1() {
    for env in [&[][..], &[("PLINTH_PLUGIN", "KV")][..]] {
        let output = run_kv(env);
        assert_eq!(output.status.code(), Some(1), "{env:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            NOT_A_PLUGIN_MESSAGE
        );
        assert!(output.stdout.is_empty(), "no handshake line");
    }
    assert!(MISCONFIGURED_MESSAGE.starts_with("Misconfigured ServeConfig"));
}

#[test]
fn a_bad_plugin_client_cert_is_a_clear_error_and_a_nonzero_exit() {
    let output = run_kv(&[
        ("PLINTH_PLUGIN", "kv"),
        ("PLUGIN_CLIENT_CERT", "not a certificate"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PLUGIN_CLIENT_CERT does not hold a usable PEM certificate"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no handshake line");
}

#[test]
fn an_unusable_socket_dir_is_a_clear_error_and_a_nonzero_exit() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = file.path().join("sockets");
    let long = format!("/tmp/{}", "d".repeat(110));
    for (dir, expected) in [
        (not_a_dir.to_str().unwrap(), "cannot listen on"),
        (long.as_str(), "longer than this platform's limit"),
    ] {
        let output = run_kv(&[("PLINTH_PLUGIN", "kv"), ("PLUGIN_UNIX_SOCKET_DIR", dir)]);
        assert!(!output.status.success(), "{dir}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{dir}: {stderr}");
        assert!(output.stdout.is_empty(), "no handshake line");
    }
}

/// Starts the kv plugin by hand and reads its handshake line.
fn start_kv(env: &[(&str, &str)]) -> (Child, String) {
    let mut command = kv_plugin();
    command
        .env("PLINTH_PLUGIN", "kv")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[test]
fn no_common_version_still_prints_the_handshake_and_names_both_sides() {
    let (mut child, line) = start_kv(&[("PLUGIN_PROTOCOL_VERSIONS", "7,8")]);
    let _ = child.kill();
    let output = wait_with_timeout(child, Duration::from_secs(5));
    assert!(
        line.starts_with("1|1|unix|/"),
        "the lowest version is answered: {line}"
    );
    assert!(
        line.ends_with("|grpc|\n"),
        "six fields, no certificate: {line}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("this plugin serves [1, 2], the host offered [7, 8]"),
        "{stderr}"
    );
}

#[test]
fn sigint_is_ignored_and_sigterm_stops_cleanly_removing_the_socket() {
    let (mut child, line) = start_kv(&[("PLUGIN_PROTOCOL_VERSIONS", "1")]);
    let socket = PathBuf::from(line.trim_end().split('|').nth(3).unwrap());
    assert!(socket.exists(), "{line}");
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGINT must not stop the plugin"
    );
    signal("-TERM");
    let output = wait_with_timeout(child, Duration::from_secs(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket file is removed");
}

/// A 64 MiB value crosses both ways between Plinth and a Rust-served plugin (both allow
/// messages up to 2³¹−1 bytes); a Go plugin, whose gRPC server keeps grpc-go's 4 MiB receive
/// limit, refuses it with a status naming the limit and goes on serving.
#[tokio::test]
async fn a_64_mib_message_crosses_or_is_refused_with_the_plugin_still_serving() {
    let big: Vec<u8> = (0..(64usize << 20)).map(|i| (i % 253) as u8).collect();

    let rust =
        Client::start(ClientConfig::command(rust_plugin("kv-plugin")).handshake(handshake()))
            .await
            .expect("kv-plugin starts");
    let kv = rust.dispense(&KvPlugin).await.unwrap();
    kv.put("big", &big).await.expect("a 64 MiB put");
    assert!(kv.get("big").await.expect("a 64 MiB get") == big);
    rust.kill().await;

    let go = Client::start(ClientConfig::command(go_plugin("kv-plugin")).handshake(handshake()))
        .await
        .expect("the Go kv-plugin starts");
    let kv = go.dispense(&KvPlugin).await.unwrap();
    let error = kv.put("big", &big).await.unwrap_err();
    match &error {
        plinth::Error::Subprocess(plinth_subprocess::Error::Rpc { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{error}");
            assert!(status.message().contains("larger than max"), "{error}");
        }
        other => panic!("expected the plugin's refusal, got {other:?}"),
    }
    kv.put("small", b"still serving").await.unwrap();
    assert_eq!(kv.get("small").await.unwrap(), b"still serving");
    go.kill().await;
}
