//! End-to-end tests of the wasm backend against the real example guests.
//!
//! Every test loads components built from `guest-examples/` and drives them through the public
//! `plinth` API only: dispense, calls, callbacks, logging, output capture, the sandbox, limits,
//! faults, the compile cache and concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use plinth::wasm::{Access, CacheOutcome, Engine, EngineConfig, Grants, Output, uses_concurrency};
use plinth::{Checksum, Client, ClientConfig, Error, FileKind, PluginSet};
use plinth_examples::counter::{AddHelper, CounterPlugin};
use plinth_examples::greeter::{Greeter, GreeterPlugin, V1, V2};
use plinth_examples::kv::{Kv, KvPlugin};
use plinth_interop::{Capture, SharedBuffer, guest};

/// Bounds every await that could hang if a promise broke; never a timing assertion.
const HANG: Duration = Duration::from_secs(60);

async fn start(name: &str) -> Client {
    Client::start(ClientConfig::wasm(guest(name)))
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

async fn kv_of(config: ClientConfig) -> (Client, Arc<dyn Kv>) {
    let client = Client::start(config).await.expect("start");
    let kv = client.dispense(&KvPlugin).await.expect("dispense kv");
    (client, kv)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8 answer")
}

// ---------------------------------------------------------------------------------------------
// Dispense and versions

#[tokio::test]
async fn greeter_dispenses_the_highest_version_both_sides_know() {
    let client = start("greeter").await;
    let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
    assert_eq!(greeter.version(), V2);
    assert_eq!(greeter.greet("Plinth").await.unwrap(), "Hello, Plinth!");
}

#[tokio::test]
async fn older_host_gets_the_older_version_from_the_same_component() {
    let client = start("greeter").await;
    let greeter = client
        .dispense(&GreeterPlugin::accepting(&[V1]))
        .await
        .unwrap();
    assert_eq!(greeter.version(), V1);
    assert_eq!(greeter.greet("ignored").await.unwrap(), "Hello!");
}

#[tokio::test]
async fn older_plugin_is_served_with_the_version_it_exports() {
    let client = start("greeter-v1").await;
    let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
    assert_eq!(greeter.version(), V1);
    assert_eq!(
        greeter.greet("x").await.unwrap(),
        "Hello from version 0.1.0!"
    );
}

#[tokio::test]
async fn no_common_version_is_an_error_listing_both_sides() {
    let client = start("greeter-v1").await;
    let err = client
        .dispense(&GreeterPlugin::accepting(&[V2]))
        .await
        .err()
        .expect("no common version");
    let Error::UnsupportedVersion {
        exported, accepted, ..
    } = &err
    else {
        panic!("expected UnsupportedVersion, got {err}");
    };
    assert_eq!(exported, &[V1.to_string()]);
    assert_eq!(accepted, &[V2.to_string()]);
}

#[tokio::test]
async fn wrong_world_names_what_the_component_exports() {
    let client = start("greeter").await;
    let err = client
        .dispense(&KvPlugin)
        .await
        .err()
        .expect("greeter is no kv");
    let Error::InterfaceNotExported {
        expected, exported, ..
    } = &err
    else {
        panic!("expected InterfaceNotExported, got {err}");
    };
    assert_eq!(expected, "plinth:kv/store");
    assert!(exported.contains(&V2.to_string()), "{err}");
}

#[tokio::test]
async fn dispense_named_checks_the_requested_type() {
    let plugins = PluginSet::new().with(KvPlugin).with(GreeterPlugin::new());
    let client = Client::start(ClientConfig::wasm(guest("kv")).plugins(plugins))
        .await
        .unwrap();
    let kv: Arc<dyn Kv> = client.dispense_named("kv").await.unwrap();
    kv.put("k", b"v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), b"v");

    let err = client
        .dispense_named::<dyn Greeter>("kv")
        .await
        .err()
        .expect("kv is not a greeter");
    let Error::TypeMismatch {
        expected, found, ..
    } = &err
    else {
        panic!("expected TypeMismatch, got {err}");
    };
    assert!(expected.contains("Greeter"), "{err}");
    assert!(found.contains("Kv"), "{err}");

    let err = client
        .dispense_named::<dyn Kv>("nope")
        .await
        .err()
        .expect("unknown name");
    let Error::UnknownPlugin { available, .. } = &err else {
        panic!("expected UnknownPlugin, got {err}");
    };
    assert_eq!(available, &["greeter", "kv"]);
}

// ---------------------------------------------------------------------------------------------
// Calls and callbacks

#[tokio::test]
async fn kv_round_trips_values_and_reports_guest_errors() {
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("kv"))).await;
    let big = vec![7u8; 1 << 20];
    kv.put("big", &big).await.unwrap();
    kv.put("empty", b"").await.unwrap();
    assert_eq!(kv.get("big").await.unwrap(), big);
    assert_eq!(kv.get("empty").await.unwrap(), b"");
    let err = kv.get("missing").await.unwrap_err();
    let Error::Plugin { message, .. } = &err else {
        panic!("expected Plugin error, got {err}");
    };
    assert!(message.contains("\"missing\""), "{err}");
}

struct CountingAdder(AtomicUsize);

#[async_trait]
impl AddHelper for CountingAdder {
    async fn sum(&self, a: i64, b: i64) -> plinth::Result<i64> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(a + b)
    }
}

#[tokio::test]
async fn counter_adds_through_the_host_callback() {
    let client = start("counter").await;
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    let adder = Arc::new(CountingAdder(AtomicUsize::new(0)));
    for value in [5, 10, -3] {
        counter.put("n", value, adder.clone()).await.unwrap();
    }
    assert_eq!(counter.get("n").await.unwrap(), 12);
    assert_eq!(
        adder.0.load(Ordering::SeqCst),
        3,
        "every put called the host"
    );
}

struct FailingAdder;

#[async_trait]
impl AddHelper for FailingAdder {
    async fn sum(&self, _a: i64, _b: i64) -> plinth::Result<i64> {
        Err(Error::Plugin {
            plugin: "host".into(),
            message: "the host refuses to add".into(),
        })
    }
}

#[tokio::test]
async fn callback_error_reaches_the_caller_and_the_plugin_recovers() {
    let client = start("counter").await;
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    let err = counter
        .put("n", 1, Arc::new(FailingAdder))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the host refuses to add"), "{err}");
    let adder = Arc::new(CountingAdder(AtomicUsize::new(0)));
    counter.put("n", 2, adder).await.unwrap();
    assert_eq!(counter.get("n").await.unwrap(), 2);
}

/// A helper that never answers, and says when its unfinished call was dropped.
struct HangingAdder {
    dropped: Arc<tokio::sync::Notify>,
}

/// Notifies when dropped.
struct DropSignal(Arc<tokio::sync::Notify>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[async_trait]
impl AddHelper for HangingAdder {
    async fn sum(&self, _a: i64, _b: i64) -> plinth::Result<i64> {
        let _signal = DropSignal(self.dropped.clone());
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_callback_that_never_returns_is_stopped_at_the_deadline() {
    let limit = Duration::from_millis(300);
    let client = Client::start(ClientConfig::wasm(guest("counter")).call_timeout(limit))
        .await
        .unwrap();
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    for round in 0..2 {
        let dropped = Arc::new(tokio::sync::Notify::new());
        let helper = Arc::new(HangingAdder {
            dropped: dropped.clone(),
        });
        let err = tokio::time::timeout(HANG, counter.put("n", 1, helper))
            .await
            .expect("the deadline stops a call awaiting the host")
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { limit: l, .. } if l == limit),
            "round {round}: {err}"
        );
        tokio::time::timeout(HANG, dropped.notified())
            .await
            .expect("the helper's unfinished call is dropped");
    }
    // The instance that timed out was discarded; the plugin serves the next call afresh.
    let adder = Arc::new(CountingAdder(AtomicUsize::new(0)));
    counter.put("n", 2, adder).await.unwrap();
    assert_eq!(counter.get("n").await.unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// Logging and output

#[tokio::test(flavor = "current_thread")]
async fn guest_logs_become_tracing_events_with_plugin_and_fields() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    assert_eq!(text(kv.get("log").await.unwrap()), "logged");
    let events = capture.events("plinth::guest");
    let event = events
        .iter()
        .find(|e| e.field("message") == Some("something to see"))
        .unwrap_or_else(|| panic!("no guest log event in {events:?}"));
    assert_eq!(event.level, tracing::Level::WARN);
    assert_eq!(event.field("plugin"), Some("misbehave"));
    assert_eq!(event.field("fields"), Some("answer=42 who=misbehave"));
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_log_records_are_bounded() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    assert_eq!(text(kv.get("log-huge").await.unwrap()), "logged");
    let events = capture.events("plinth::guest");
    let event = events.last().expect("the record was logged");
    let message = event.field("message").unwrap_or_default();
    assert_eq!(message.len(), plinth::wasm::logging::MAX_TEXT);
    let fields = event.field("fields").unwrap_or_default();
    assert_eq!(fields.split(' ').count(), plinth::wasm::logging::MAX_FIELDS);
    assert_eq!(text(kv.get("fine").await.unwrap()), "fine");
}

#[tokio::test]
async fn guest_stdout_and_stderr_reach_the_configured_writers_line_by_line() {
    let stdout = SharedBuffer::default();
    let stderr = SharedBuffer::default();
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("misbehave"))
            .stdout(Output::writer(stdout.clone()))
            .stderr(Output::writer(stderr.clone())),
    )
    .await;
    assert_eq!(text(kv.get("print").await.unwrap()), "printed");
    assert_eq!(
        stdout.text(),
        "first line to stdout\nsecond line to stdout\n"
    );
    assert_eq!(stderr.text(), "a line to stderr\n");
}

#[tokio::test(flavor = "current_thread")]
async fn guest_output_goes_to_tracing_by_default() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    kv.get("print").await.unwrap();
    let lines: Vec<_> = capture
        .events("plinth::guest::stdout")
        .iter()
        .map(|e| e.field("message").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(lines, ["first line to stdout", "second line to stdout"]);
    let errors = capture.events("plinth::guest::stderr");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field("plugin"), Some("misbehave"));
}

/// Set in the environment of the child process `inherited_stdio_reaches_the_host_process`
/// starts: the test binary itself, running only `stdio_child`.
const STDIO_CHILD: &str = "PLINTH_TEST_STDIO_CHILD";

/// The host side of `inherited_stdio_reaches_the_host_process`, run in a child process so that
/// its real stdin and stdout can be driven and read. Does nothing in a normal test run.
#[tokio::test]
async fn stdio_child() {
    if std::env::var_os(STDIO_CHILD).is_none() {
        return;
    }
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("misbehave"))
            .grants(Grants::none().inherit_stdin())
            .stdout(Output::Inherit)
            .stderr(Output::Inherit),
    )
    .await;
    let line = text(kv.get("stdin").await.unwrap());
    println!("host read from the guest: {line}");
    kv.get("print").await.unwrap();
}

#[test]
fn inherited_stdio_reaches_the_host_process() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    guest("misbehave");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdio_child", "--nocapture", "--test-threads=1"])
        .env(STDIO_CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed by a person\n").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("host read from the guest: typed by a person"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[misbehave] first line to stdout\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[misbehave] second line to stdout\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[misbehave] a line to stderr\n"),
        "{stderr}"
    );
}

#[tokio::test]
async fn stdin_is_closed_unless_granted() {
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    assert_eq!(
        text(kv.get("stdin").await.unwrap()),
        "",
        "stdin reads as empty"
    );
}

// ---------------------------------------------------------------------------------------------
// Sandbox

#[tokio::test]
async fn granted_directory_is_used_by_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("kv-files")).grants(Grants::none().dir(
            dir.path(),
            "/data",
            Access::ReadWrite,
        )),
    )
    .await;
    kv.put("note.txt", b"kept on disk").await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("note.txt")).unwrap(),
        b"kept on disk"
    );
    std::fs::write(dir.path().join("from-host.txt"), b"hi guest").unwrap();
    assert_eq!(kv.get("from-host.txt").await.unwrap(), b"hi guest");
}

#[tokio::test]
async fn without_a_grant_the_guest_has_no_files() {
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("kv-files"))).await;
    let err = kv.put("note.txt", b"x").await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    let (_client, chaos) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    let err = chaos.get("read:/etc/passwd").await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
}

#[tokio::test]
async fn read_only_grant_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seed.txt"), b"seed").unwrap();
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("kv-files")).grants(Grants::none().dir(
            dir.path(),
            "/data",
            Access::ReadOnly,
        )),
    )
    .await;
    assert_eq!(kv.get("seed.txt").await.unwrap(), b"seed");
    let err = kv.put("new.txt", b"x").await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    assert!(!dir.path().join("new.txt").exists());
}

#[tokio::test]
async fn dot_dot_and_symlink_escapes_from_a_grant_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(root.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), granted.join("link.txt")).unwrap();
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("kv-files")).grants(Grants::none().dir(
            &granted,
            "/data",
            Access::ReadWrite,
        )),
    )
    .await;
    for key in ["../secret.txt", "link.txt"] {
        let err = kv.get(key).await.unwrap_err();
        assert!(matches!(err, Error::Plugin { .. }), "{key}: {err}");
        assert!(!err.to_string().contains("secret\""), "{key} leaked: {err}");
    }
    let err = kv.put("../escaped.txt", b"x").await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    assert!(!root.path().join("escaped.txt").exists());
}

#[tokio::test]
async fn symlinks_a_guest_makes_cannot_point_outside_the_grant() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::write(root.path().join("secret.txt"), b"secret").unwrap();
    let (_client, chaos) = kv_of(
        ClientConfig::wasm(guest("misbehave")).grants(Grants::none().dir(
            &granted,
            "/data",
            Access::ReadWrite,
        )),
    )
    .await;
    for (n, target) in [
        "../secret.txt",
        "../../secret.txt",
        "sub/../../secret.txt",
        "sub/..",
        "..",
        "/etc/passwd",
        &*root.path().join("secret.txt").to_string_lossy(),
    ]
    .iter()
    .enumerate()
    {
        let link = format!("/data/sub/link{n}");
        let err = chaos
            .get(&format!("symlink:{target}>{link}"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Plugin { .. }), "{target}: {err}");
        assert!(
            std::fs::symlink_metadata(granted.join(format!("sub/link{n}"))).is_err(),
            "a link to {target} was made"
        );
    }
    // Links that lead down from their directory are made as asked.
    for target in ["kept.txt", "deeper/kept.txt", "./kept.txt"] {
        let link = format!("/data/sub/{}", target.replace('/', "_"));
        let made = chaos.get(&format!("symlink:{target}>{link}")).await;
        assert_eq!(text(made.unwrap()), "linked", "{target}");
        let on_host = granted.join("sub").join(target.replace('/', "_"));
        assert_eq!(
            std::fs::read_link(on_host).unwrap(),
            std::path::Path::new(target)
        );
    }
}

#[tokio::test]
async fn results_up_to_the_memory_limit_cross_typed_bindings() {
    // Larger than wasmtime's default limit on what one call may copy out (128 MiB).
    let size = 150_000_000;
    let (_client, chaos) =
        kv_of(ClientConfig::wasm(guest("misbehave")).max_memory(512 << 20)).await;
    let value = chaos.get(&format!("big:{size}")).await.unwrap();
    assert_eq!(value.len(), size);
    assert!(value.iter().all(|byte| *byte == 7));

    // A limit of the host's own is what the store enforces.
    let limits = plinth::wasm::Limits {
        max_host_copy: Some(1 << 20),
        ..plinth::wasm::Limits::default()
    };
    let (_client, chaos) = kv_of(ClientConfig::wasm(guest("misbehave")).limits(limits)).await;
    assert_eq!(chaos.get("big:1000000").await.unwrap().len(), 1_000_000);
    let err = chaos.get("big:1100000").await.unwrap_err();
    assert!(
        matches!(err, Error::TooMuchData { limit, .. } if limit == 1 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn results_past_the_host_copy_limit_are_a_typed_error() {
    use wasmtime::component::Val;
    let max_memory = 16 << 20;
    let client = Client::start(ClientConfig::wasm(guest("misbehave")).max_memory(max_memory))
        .await
        .unwrap();
    let dynamic = client.dispense_dynamic().await.unwrap();
    // Each byte of a list is a `Val` of its own on the dynamic path: 4 MiB of bytes need far
    // more than four times the 16 MiB memory limit.
    let err = dynamic
        .call("get", &[Val::String(format!("big:{}", 4 << 20))])
        .await
        .unwrap_err();
    let Error::TooMuchData { limit, .. } = err else {
        panic!("expected TooMuchData, got {err}");
    };
    assert_eq!(limit, 4 * max_memory);
    // The instance was discarded; a small answer still crosses.
    let small = dynamic
        .call("get", &[Val::String("big:3".into())])
        .await
        .unwrap();
    assert_eq!(small[0].to_wave().unwrap(), "ok([7, 7, 7])");
}

#[tokio::test]
async fn environment_is_empty_unless_granted() {
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    assert!(kv.get("env:PATH").await.is_err(), "host PATH leaked");
    let (_client, kv) = kv_of(
        ClientConfig::wasm(guest("misbehave")).grants(Grants::none().env("GREETING", "hello")),
    )
    .await;
    assert_eq!(text(kv.get("env:GREETING").await.unwrap()), "hello");
    assert!(
        kv.get("env:PATH").await.is_err(),
        "only granted keys are visible"
    );
}

#[tokio::test]
async fn guest_cannot_open_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    let err = kv.get(&format!("connect:{addr}")).await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the guest reached the host's socket"
    );
}

#[tokio::test]
async fn granting_a_missing_directory_fails_at_start() {
    let err = Client::start(
        ClientConfig::wasm(guest("kv-files")).grants(Grants::none().dir(
            "/nonexistent/plinth",
            "/data",
            Access::ReadOnly,
        )),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Grant { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bad input

async fn start_bytes(bytes: &[u8]) -> Error {
    Client::start(ClientConfig::wasm_bytes("bad", bytes.to_vec()))
        .await
        .expect_err("bad input must not load")
}

#[tokio::test]
async fn files_that_are_not_components_say_what_they_are() {
    let cases: [(&[u8], FileKind); 3] = [
        (b"package plinth:kv@0.1.0;", FileKind::Text),
        (b"\0asm\x01\0\0\0", FileKind::CoreModule),
        (b"", FileKind::Empty),
    ];
    for (bytes, kind) in cases {
        let err = start_bytes(bytes).await;
        let Error::NotAComponent { found, .. } = &err else {
            panic!("expected NotAComponent, got {err}");
        };
        assert_eq!(*found, kind, "{err}");
    }
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let err = start_bytes(&exe).await;
    assert!(
        matches!(
            err,
            Error::NotAComponent {
                found: FileKind::Elf,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("an ELF executable"), "{err}");
}

#[tokio::test]
async fn truncated_component_is_a_compile_error() {
    let bytes = std::fs::read(guest("kv")).unwrap();
    let err = start_bytes(&bytes[..bytes.len() / 2]).await;
    assert!(matches!(err, Error::Compile { .. }), "{err}");
}

#[tokio::test]
async fn missing_file_is_a_read_error() {
    let err = Client::start(ClientConfig::wasm("/nonexistent/kv.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    plinth_interop::assert_each_cause_said_once(&err);
    let chain = plinth_interop::cause_chain(&err);
    assert_eq!(chain.len(), 2, "the reading error is the source: {chain:?}");
}

#[tokio::test]
async fn checksum_is_checked_before_loading() {
    let path = guest("kv");
    let good = Checksum::of(&std::fs::read(&path).unwrap());
    Client::start(ClientConfig::wasm(&path).checksum(good))
        .await
        .expect("the right checksum loads");
    let wrong = Checksum::of(b"something else");
    let err = Client::start(ClientConfig::wasm(&path).checksum(wrong))
        .await
        .unwrap_err();
    let Error::ChecksumMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected ChecksumMismatch, got {err}");
    };
    assert_eq!(expected, &wrong.to_string());
    assert_eq!(actual, &good.to_string());
}

// ---------------------------------------------------------------------------------------------
// Limits and faults: each is a typed error, the plugin recovers, other plugins keep answering

async fn assert_recovers(kv: &Arc<dyn Kv>, bystander: &Arc<dyn Kv>) {
    assert_eq!(
        text(kv.get("fine").await.unwrap()),
        "fine",
        "the next call works"
    );
    assert_eq!(
        bystander.get("k").await.unwrap(),
        b"v",
        "another plugin answers"
    );
}

async fn bystander() -> (Client, Arc<dyn Kv>) {
    let (client, kv) = kv_of(ClientConfig::wasm(guest("kv"))).await;
    kv.put("k", b"v").await.unwrap();
    (client, kv)
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_the_deadline() {
    let (_b, other) = bystander().await;
    let (_client, kv) =
        kv_of(ClientConfig::wasm(guest("misbehave")).call_timeout(Duration::from_millis(200)))
            .await;
    let err = tokio::time::timeout(HANG, kv.get("loop"))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { limit, .. } if limit == Duration::from_millis(200)),
        "{err}"
    );
    assert_recovers(&kv, &other).await;
}

#[tokio::test]
async fn memory_growth_past_the_limit_is_out_of_memory() {
    let (_b, other) = bystander().await;
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave")).max_memory(16 << 20)).await;
    let err = kv.get("alloc").await.unwrap_err();
    let Error::OutOfMemory {
        requested, limit, ..
    } = err
    else {
        panic!("expected OutOfMemory, got {err}");
    };
    assert_eq!(limit, 16 << 20);
    assert!(requested > limit);
    assert_recovers(&kv, &other).await;
}

#[tokio::test]
async fn guest_panic_is_a_trap() {
    let (_b, other) = bystander().await;
    let stderr = SharedBuffer::default();
    let (_client, kv) =
        kv_of(ClientConfig::wasm(guest("misbehave")).stderr(Output::writer(stderr.clone()))).await;
    let err = kv.get("panic").await.unwrap_err();
    let Error::Trap { message, .. } = &err else {
        panic!("expected Trap, got {err}");
    };
    assert!(message.contains("unreachable"), "{err}");
    assert!(
        stderr.text().contains("the guest was asked to panic"),
        "{}",
        stderr.text()
    );
    assert_recovers(&kv, &other).await;
}

#[tokio::test]
async fn stack_overflow_is_a_trap() {
    let (_b, other) = bystander().await;
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("misbehave"))).await;
    let err = kv.get("recurse").await.unwrap_err();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    assert_recovers(&kv, &other).await;
}

#[tokio::test]
async fn killed_client_refuses_calls_and_dispenses() {
    let (client, kv) = kv_of(ClientConfig::wasm(guest("kv"))).await;
    kv.put("k", b"v").await.unwrap();
    assert!(!client.exited());
    client.kill().await;
    assert!(client.exited());
    assert!(matches!(
        kv.get("k").await.unwrap_err(),
        Error::Killed { .. }
    ));
    assert!(matches!(
        client.dispense(&KvPlugin).await.err(),
        Some(Error::Killed { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Compile cache (the disk cache against tampering: tests/cache.rs)

fn own_engine() -> Engine {
    Engine::new(&EngineConfig {
        total_instances: 16,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn same_engine_compiles_a_component_once() {
    let engine = own_engine();
    let first = Client::start(ClientConfig::wasm(guest("greeter")).engine(engine.clone()))
        .await
        .unwrap();
    let second = Client::start(ClientConfig::wasm(guest("greeter")).engine(engine))
        .await
        .unwrap();
    assert_eq!(first.cache_outcome(), Some(CacheOutcome::Compiled));
    assert_eq!(second.cache_outcome(), Some(CacheOutcome::MemoryHit));
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_calling_one_plugin_are_all_answered() {
    let client = Client::start(ClientConfig::wasm(guest("greeter")).max_instances(8))
        .await
        .unwrap();
    let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let greeter = greeter.clone();
        tasks.spawn(async move {
            for call in 0..20 {
                let name = format!("{task}-{call}");
                assert_eq!(greeter.greet(&name).await?, format!("Hello, {name}!"));
            }
            Ok::<_, Error>(())
        });
    }
    let mut answered = 0;
    while let Some(outcome) = tokio::time::timeout(HANG, tasks.join_next())
        .await
        .expect("no hang")
    {
        outcome.expect("task").expect("calls");
        answered += 1;
    }
    assert_eq!(answered, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_instance_plugin_keeps_its_state_across_tasks() {
    // Instances do not share memory; a stateful guest is served by one instance.
    let (_client, kv) = kv_of(ClientConfig::wasm(guest("kv")).max_instances(1)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let kv = kv.clone();
        tasks.spawn(async move { kv.put(&format!("key-{task}"), &[task as u8]).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome.expect("task").expect("put");
    }
    for task in 0..64u8 {
        assert_eq!(kv.get(&format!("key-{task}")).await.unwrap(), [task]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_from_sixty_four_tasks_are_all_answered() {
    let client = start("greeter").await;
    let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let greeter = greeter.clone();
        let answered = answered.clone();
        let calls = 10_000 / 64 + usize::from(task < 10_000 % 64);
        tasks.spawn(async move {
            for call in 0..calls {
                let name = format!("{task}/{call}");
                assert_eq!(greeter.greet(&name).await?, format!("Hello, {name}!"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(outcome) = tokio::time::timeout(HANG, tasks.join_next())
        .await
        .expect("no hang")
    {
        outcome.expect("task").expect("calls");
    }
    assert_eq!(answered.load(Ordering::Relaxed), 10_000);
}

#[test]
fn clients_and_interfaces_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + ?Sized>() {}
    shared::<Client>();
    shared::<ClientConfig>();
    shared::<dyn Kv>();
    shared::<Arc<dyn Kv>>();
    shared::<Error>();
    shared::<plinth::wasm::Engine>();
}

/// A helper that only returns once `parties` calls are inside it at the same time.
struct Rendezvous(tokio::sync::Barrier);

#[async_trait]
impl AddHelper for Rendezvous {
    async fn sum(&self, a: i64, b: i64) -> plinth::Result<i64> {
        self.0.wait().await;
        Ok(a + b)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_run_in_parallel_on_separate_instances() {
    let client = start("counter").await;
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    // Two puts must both be inside the guest (and its host callback) at once for either to
    // finish: serialized calls would never meet.
    let rendezvous = Arc::new(Rendezvous(tokio::sync::Barrier::new(2)));
    let calls = [0, 1].map(|_| {
        let counter = counter.clone();
        let helper: Arc<dyn AddHelper> = rendezvous.clone();
        tokio::spawn(async move { counter.put("n", 1, helper).await })
    });
    for call in calls {
        tokio::time::timeout(HANG, call)
            .await
            .expect("calls ran in parallel")
            .unwrap()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[test]
fn discovery_finds_the_example_guests() {
    let dir = guest("kv").parent().unwrap().to_owned();
    let found = plinth::discover("*.wasm", &dir).unwrap();
    let names: Vec<_> = found
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["counter.wasm", "greeter.wasm", "kv.wasm", "misbehave.wasm"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Calls by name, without an adapter

#[tokio::test]
async fn dynamic_calls_list_and_call_exports_by_name() {
    use wasmtime::component::Val;
    let client = start("kv").await;
    let kv = client.dispense_dynamic().await.unwrap();
    let get = kv.function("get").unwrap();
    assert_eq!(get.full_name(), "plinth:kv/store@0.1.0#get");
    assert_eq!(
        get.signature(),
        "get: func(key: string) -> result<list<u8>, string>"
    );

    let value = Val::List(vec![Val::U8(1), Val::U8(2)]);
    let put = kv
        .call(
            "plinth:kv/store@0.1.0#put",
            &[Val::String("k".into()), value.clone()],
        )
        .await
        .unwrap();
    assert_eq!(put, [Val::Result(Ok(None))]);
    let got = kv.call("get", &[Val::String("k".into())]).await.unwrap();
    assert_eq!(got, [Val::Result(Ok(Some(Box::new(value))))]);
    assert_eq!(got[0].to_wave().unwrap(), "ok([1, 2])");
}

#[tokio::test]
async fn dynamic_call_errors_name_what_was_expected() {
    use wasmtime::component::Val;
    let client = start("kv").await;
    let kv = client.dispense_dynamic().await.unwrap();
    let err = kv.call("nope", &[]).await.unwrap_err();
    let Error::UnknownFunction { available, .. } = &err else {
        panic!("expected UnknownFunction, got {err}");
    };
    assert!(
        available.contains(&"plinth:kv/store@0.1.0#put".to_string()),
        "{err}"
    );
    let err = kv.call("get", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Argument { .. }), "{err}");
    assert!(err.to_string().contains("get: func(key: string)"), "{err}");
    let err = kv.call("get", &[Val::U32(7)]).await.unwrap_err();
    assert!(matches!(err, Error::Argument { .. }), "{err}");
    assert!(
        err.to_string().contains("parameter key is a string"),
        "{err}"
    );
    // The plugin still answers after refused calls.
    kv.call("get", &[Val::String("k".into())]).await.unwrap();
}

#[tokio::test]
async fn dynamic_calls_trap_on_imports_the_host_does_not_provide() {
    use wasmtime::component::Val;
    let client = start("counter").await;
    let counter = client.dispense_dynamic().await.unwrap();
    // `put` calls the host's add-helper, which a host without the adapter does not provide.
    let err = counter
        .call("put", &[Val::String("n".into()), Val::S64(1)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    let got = counter
        .call("get", &[Val::String("n".into())])
        .await
        .unwrap();
    assert_eq!(got, [Val::Result(Ok(Some(Box::new(Val::S64(0)))))]);
}

// ---------------------------------------------------------------------------------------------
// Component-model concurrency: off in the default engine, picked per component

/// Every example guest whose world has no async function.
const SYNC_GUESTS: [&str; 9] = [
    "kv",
    "kv-files",
    "greeter",
    "greeter-v1",
    "counter",
    "docs",
    "misbehave",
    "resource-probe",
    "missing-import",
];

#[test]
fn concurrency_is_detected_in_the_async_guest_alone() {
    for name in SYNC_GUESTS {
        let bytes = std::fs::read(guest(name)).unwrap();
        assert!(!uses_concurrency(&bytes), "{name} has no async function");
    }
    let bytes = std::fs::read(guest("echo-async")).unwrap();
    assert!(uses_concurrency(&bytes));
    // Cut short anywhere, the scan answers for the sections it could read (the compiler
    // reports the truncation): before any section, nothing is async.
    for cut in [0, 4, 8, 9, 12] {
        assert!(!uses_concurrency(&bytes[..cut]), "cut at {cut}");
    }
    for cut in (0..bytes.len()).step_by(61) {
        let _ = uses_concurrency(&bytes[..cut]);
    }
    assert!(!uses_concurrency(b"\0asm\x0d\0\x01\0\xff\xff\xff\xff"));
}

#[tokio::test]
async fn an_async_world_runs_on_the_concurrent_engine_and_a_sync_one_does_not() {
    use wasmtime::component::Val;

    let echo = Client::start(ClientConfig::wasm(guest("echo-async")))
        .await
        .expect("the async guest loads");
    let dynamic = echo.dispense_dynamic().await.unwrap();
    let answer = dynamic
        .call(
            "echo",
            &[Val::String("async ".into()), Val::String("echo".into())],
        )
        .await
        .unwrap();
    assert_eq!(answer, vec![Val::String("async echo".into())]);
    assert!(Engine::shared_for(true).unwrap().concurrency());
    assert!(!Engine::shared().unwrap().concurrency());

    // The same shared engine as a sync component started beside it: the pick is per component.
    let kv = Client::start(ClientConfig::wasm(guest("kv")))
        .await
        .unwrap();
    let store = kv.dispense(&KvPlugin).await.unwrap();
    store.put("k", b"v").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    echo.kill().await;
    kv.kill().await;
}

#[tokio::test]
async fn an_async_world_on_an_engine_without_concurrency_is_refused_by_name() {
    let err = Client::start(ClientConfig::wasm(guest("echo-async")).engine(own_engine()))
        .await
        .unwrap_err();
    let Error::NeedsConcurrency { plugin, remedy } = &err else {
        panic!("expected NeedsConcurrency, got {err}");
    };
    assert_eq!(plugin, "echo_async");
    assert!(remedy.contains("EngineConfig::concurrency"), "{err}");

    let concurrent = Engine::new(&EngineConfig {
        total_instances: 16,
        concurrency: true,
        ..EngineConfig::default()
    })
    .unwrap();
    // An engine with concurrency on runs both kinds.
    for name in ["echo-async", "kv"] {
        let client = Client::start(ClientConfig::wasm(guest(name)).engine(concurrent.clone()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!client.exported_functions().is_empty());
        client.kill().await;
    }
}
