//! End-to-end tests of the subprocess backend against real go-plugin executables: the Go
//! fixtures in `tests/go` (built by `cargo xtask go` with go-plugin v1.8.0), driven through the
//! `plinth` API — the same adapters and calls a host uses for wasm components.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plinth::subprocess::{Error as WireError, HandshakeConfig, Protocol};
use plinth::{AutoMtls, Client, ClientConfig, Error, PluginSet};
use plinth_examples::counter::{AddHelper, Counter, CounterPlugin};
use plinth_examples::kv::{Kv, KvPlugin};
use plinth_examples::{go_plugin, handshake};
use plinth_interop::{
    Capture, SharedBuffer, guest, many_callers_spread_over_connections, mtls_policy,
};

fn go(name: &str) -> std::path::PathBuf {
    let path = go_plugin(name);
    assert!(
        path.exists(),
        "{} is missing: build the Go fixtures with `cargo xtask go`",
        path.display()
    );
    path
}

fn command(name: &str) -> ClientConfig {
    ClientConfig::command(go(name)).handshake(handshake())
}

async fn kv_of(config: ClientConfig) -> (Client, Arc<dyn Kv>) {
    let client = Client::start(config).await.expect("the plugin starts");
    let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
    (client, kv)
}

async fn put_get(kv: &dyn Kv) {
    kv.put("hello", b"world").await.expect("put");
    assert_eq!(kv.get("hello").await.expect("get"), b"world");
}

fn wire(error: Error) -> WireError {
    match error {
        Error::Subprocess(inner) => inner,
        other => panic!("expected a subprocess error, got {other:?}"),
    }
}

async fn start_error(config: ClientConfig) -> WireError {
    wire(Client::start(config).await.expect_err("the start fails"))
}

fn process_gone(pid: u32) -> bool {
    // A zombie still has a /proc entry; reaped processes have none.
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// Dispensing and calling

#[tokio::test]
async fn kv_from_a_go_plugin_with_auto_mtls() {
    let (client, kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Require)).await;
    put_get(&*kv).await;
    let missing = kv.get("nothing").await.unwrap_err();
    assert!(
        missing.to_string().contains("no value stored under key"),
        "{missing}"
    );
    assert_eq!(client.negotiated_version(), Some(1));
    client.ping().await.expect("ping");
    client.kill().await;
}

#[tokio::test]
async fn kv_from_a_go_plugin_in_plaintext() {
    let (client, kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Off)).await;
    put_get(&*kv).await;
    client.kill().await;
}

#[tokio::test]
async fn alpn_enforcing_grpc_go_accepts_our_tls() {
    let (client, kv) = kv_of(command("kv-plugin-alpn").auto_mtls(AutoMtls::Require)).await;
    put_get(&*kv).await;
    client.kill().await;
}

#[tokio::test]
async fn tcp_transport_with_and_without_tls() {
    for mtls in [false, true] {
        let config = ClientConfig::command(go("tcp-relay"))
            .args([go("kv-plugin")])
            .handshake(handshake())
            .auto_mtls(mtls_policy(mtls));
        let (client, kv) = kv_of(config).await;
        let address = client.connection().unwrap().address().clone();
        assert!(
            matches!(address, plinth::subprocess::Address::Tcp(_)),
            "{address:?}"
        );
        put_get(&*kv).await;
        client.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_spread_over_more_connections_to_a_go_plugin() {
    for mtls in [true, false] {
        let (client, kv) = kv_of(command("kv-plugin").auto_mtls(mtls_policy(mtls))).await;
        many_callers_spread_over_connections(&client, kv.clone()).await;
        // The plugin still serves sequential calls and shuts down as before.
        put_get(&*kv).await;
        let pid = client.reattach_config().expect("launched").pid;
        client.kill().await;
        assert!(process_gone(pid));
    }
}

#[tokio::test]
async fn one_host_program_dispenses_kv_from_wasm_and_from_go() {
    for path in [guest("kv"), go("kv-plugin")] {
        let config = ClientConfig::file(&path).handshake(handshake());
        let client = Client::start(config).await.expect("starts");
        let kv = client.dispense(&KvPlugin).await.expect("dispenses");
        put_get(&*kv).await;
        client.kill().await;
    }
}

#[tokio::test]
async fn dispense_named_uses_the_set_of_the_negotiated_version() {
    let sets = [(2, PluginSet::new()), (3, PluginSet::new().with(KvPlugin))].into();
    let client = Client::start(command("multi-version").versioned_plugins(sets))
        .await
        .unwrap();
    assert_eq!(client.negotiated_version(), Some(3));
    let kv: Arc<dyn Kv> = client.dispense_named("kv").await.unwrap();
    kv.put("k", b"v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), b"v3:v");
    client.kill().await;

    let sets = [(2, PluginSet::new().with(KvPlugin))].into();
    let client = Client::start(command("multi-version").versioned_plugins(sets))
        .await
        .unwrap();
    assert_eq!(client.negotiated_version(), Some(2));
    let kv: Arc<dyn Kv> = client.dispense_named("kv").await.unwrap();
    kv.put("k", b"v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), b"v2:v");
    client.kill().await;
}

struct Adder;

#[async_trait]
impl AddHelper for Adder {
    async fn sum(&self, a: i64, b: i64) -> plinth::Result<i64> {
        Ok(a + b)
    }
}

#[tokio::test]
async fn counter_calls_back_into_the_host_through_the_broker() {
    for (mtls, multiplex) in [(false, false), (true, false), (false, true), (true, true)] {
        let config = command("counter-plugin")
            .auto_mtls(mtls_policy(mtls))
            .multiplex(multiplex);
        let client = Client::start(config).await.unwrap();
        let counter: Arc<dyn Counter> = client.dispense(&CounterPlugin).await.unwrap();
        for value in [1, 2, 39] {
            counter
                .put("n", value, Arc::new(Adder))
                .await
                .unwrap_or_else(|e| panic!("put with mtls={mtls} multiplex={multiplex}: {e}"));
        }
        assert_eq!(counter.get("n").await.unwrap(), 42);
        client.kill().await;
    }
}

#[tokio::test]
async fn host_dials_a_service_the_plugin_offers() {
    for (mtls, multiplex) in [(false, false), (true, false), (true, true)] {
        let client = Client::start(
            command("broker-offer")
                .auto_mtls(mtls_policy(mtls))
                .multiplex(multiplex),
        )
        .await
        .unwrap();
        let connection = client.connection().unwrap();
        let channel = connection
            .broker()
            .unwrap()
            .dial(1)
            .await
            .unwrap_or_else(|e| panic!("dial with mtls={mtls} multiplex={multiplex}: {e}"));
        let mut offered = plinth_examples::proto::kv_client::KvClient::new(channel);
        offered
            .put(plinth_examples::proto::PutRequest {
                key: "k".into(),
                value: b"offered".to_vec(),
            })
            .await
            .unwrap();
        let value = offered
            .get(plinth_examples::proto::GetRequest { key: "k".into() })
            .await
            .unwrap()
            .into_inner()
            .value;
        assert_eq!(value, b"offered");
        client.kill().await;
    }
}

#[tokio::test]
async fn dialing_an_id_nobody_offers_times_out_with_a_typed_error() {
    let client = Client::start(command("kv-plugin").auto_mtls(AutoMtls::Off))
        .await
        .unwrap();
    let error = client
        .connection()
        .unwrap()
        .broker()
        .unwrap()
        .dial(77)
        .await
        .unwrap_err();
    assert!(
        matches!(error, WireError::Broker { id: 77, .. }),
        "{error:?}"
    );
    client.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Logs and output

#[tokio::test(flavor = "current_thread")]
async fn hclog_and_plain_stderr_become_tracing_events_and_stdio_is_synced() {
    let capture = Capture::default();
    let _guard = capture.install();
    let stdout = SharedBuffer::default();
    let stderr = SharedBuffer::default();
    let config = command("noisy")
        .stdout(plinth::wasm::Output::writer(stdout.clone()))
        .stderr(plinth::wasm::Output::writer(stderr.clone()));
    let (client, kv) = kv_of(config).await;
    assert_eq!(kv.get("k").await.unwrap(), b"noisy:k");
    // Output and logs travel on their own streams; give them a moment to arrive.
    let messages = [
        "debug line",
        "info line",
        "warn line",
        "error line",
        "plain text line",
    ];
    for _ in 0..100 {
        let events = capture.events("plinth::plugin");
        let logged = messages
            .iter()
            .all(|&wanted| events.iter().any(|e| e.field("message") == Some(wanted)));
        if logged && stdout.text().contains("to stdout") && stderr.text().contains("to stderr") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = capture.events("plinth::plugin");
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e.field("message") == Some(message))
            .unwrap_or_else(|| panic!("no event {message:?} in {events:?}"))
    };
    assert_eq!(find("debug line").level, tracing::Level::DEBUG);
    assert_eq!(find("info line").level, tracing::Level::INFO);
    assert_eq!(find("warn line").level, tracing::Level::WARN);
    let error = find("error line");
    assert_eq!(error.level, tracing::Level::ERROR);
    assert_eq!(error.field("plugin"), Some("noisy"));
    let fields = error.field("fields").unwrap_or_default();
    assert!(
        fields.contains("err=boom") && fields.contains("key=k"),
        "{fields}"
    );
    assert_eq!(find("plain text line").level, tracing::Level::WARN);
    assert_eq!(stdout.text(), "to stdout\n");
    assert_eq!(stderr.text(), "to stderr\n");
    client.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn kill_shuts_the_plugin_down_gracefully_and_reaps_it() {
    let (client, kv) = kv_of(command("kv-plugin")).await;
    let pid = client.connection().unwrap().pid().unwrap();
    let started = std::time::Instant::now();
    client.kill().await;
    assert!(started.elapsed() < Duration::from_secs(2), "needed SIGKILL");
    assert!(client.exited());
    assert_eq!(
        client.connection().unwrap().exit_status().as_deref(),
        Some("exit status: 0")
    );
    assert!(process_gone(pid), "pid {pid} was not reaped");
    assert!(matches!(kv.get("x").await, Err(Error::Killed { .. })));
    assert!(matches!(
        client.dispense(&KvPlugin).await,
        Err(Error::Killed { .. })
    ));
    client.kill().await; // a second kill does nothing
}

#[tokio::test]
async fn dropping_the_client_ends_the_plugin() {
    let (client, kv) = kv_of(command("kv-plugin")).await;
    let pid = client.connection().unwrap().pid().unwrap();
    drop(kv);
    drop(client);
    for _ in 0..200 {
        if process_gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pid {pid} outlived its client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_started_from_a_thread_that_ends_keeps_running() {
    // The parent-death signal follows the thread that forked the child: were the plugin
    // forked here, it would get SIGTERM as soon as this thread ends.
    let runtime = tokio::runtime::Handle::current();
    let client = std::thread::spawn(move || runtime.block_on(Client::start(command("kv-plugin"))))
        .join()
        .expect("the starting thread")
        .expect("the plugin starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
    put_get(kv.as_ref()).await;
    assert!(!client.connection().unwrap().exited());
    client.kill().await;
}

#[test]
fn starting_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let error = futures::executor::block_on(Client::start(command("kv-plugin")))
        .expect_err("no runtime to run the plugin's tasks on");
    let chain = plinth_interop::cause_chain(&error);
    assert!(
        chain.iter().any(|cause| cause.contains("no tokio runtime")),
        "{chain:?}"
    );
    plinth_interop::assert_each_cause_said_once(&error);
}

#[tokio::test]
async fn a_plugin_killed_mid_call_fails_the_call_with_its_exit() {
    struct Stall(tokio::sync::Notify);

    #[async_trait]
    impl AddHelper for Stall {
        async fn sum(&self, _: i64, _: i64) -> plinth::Result<i64> {
            self.0.notify_one();
            std::future::pending().await
        }
    }

    let client = Client::start(command("counter-plugin")).await.unwrap();
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    let stall = Arc::new(Stall(tokio::sync::Notify::new()));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let counter = counter.clone();
            let stall = stall.clone();
            tokio::spawn(async move { counter.put("n", 1, stall).await })
        })
        .collect();
    stall.0.notified().await;
    let pid = client.connection().unwrap().pid().unwrap();
    // SAFETY: kill(2) on the plugin's own pid.
    unsafe { libc_kill(pid) };
    for call in calls {
        let error = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call ends")
            .unwrap()
            .unwrap_err();
        match wire(error) {
            WireError::Exited { status, .. } => assert!(status.contains("9"), "{status}"),
            other => panic!("expected Exited, got {other:?}"),
        }
    }
    assert!(client.exited());
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

unsafe fn libc_kill(pid: u32) {
    unsafe { kill(pid as i32, 9) };
}

#[tokio::test]
async fn reattach_connects_without_spawning_and_only_kills_when_told() {
    let (owner, kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Off)).await;
    kv.put("shared", b"state").await.unwrap();
    let reattach = owner.reattach_config().unwrap();
    let json = reattach.to_json();
    assert!(json.contains(r#""Protocol":"grpc""#), "{json}");

    let config = plinth::ReattachConfig::from_json(&json).unwrap();
    let attached = Client::start(ClientConfig::reattach(config.clone()))
        .await
        .unwrap();
    let kv2 = attached.dispense(&KvPlugin).await.unwrap();
    assert_eq!(kv2.get("shared").await.unwrap(), b"state");
    drop(kv2);
    drop(attached);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        kv.get("shared").await.unwrap(),
        b"state",
        "dropping a reattached client killed the plugin"
    );

    let attached = Client::start(ClientConfig::reattach(config)).await.unwrap();
    attached.kill().await;
    let exited =
        tokio::time::timeout(Duration::from_secs(5), owner.connection().unwrap().wait()).await;
    assert!(
        exited.is_ok(),
        "kill through a reattached client did not end the plugin"
    );
    owner.kill().await;
}

#[tokio::test]
async fn reattach_to_a_dead_process_is_a_typed_error() {
    let (owner, _kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Off)).await;
    let config = owner.reattach_config().unwrap();
    owner.kill().await;
    let error = start_error(ClientConfig::reattach(config)).await;
    assert!(matches!(error, WireError::Reattach { .. }), "{error:?}");
}

#[tokio::test]
async fn cleanup_clients_kills_every_managed_plugin() {
    let (first, _a) = kv_of(command("kv-plugin").managed(true)).await;
    let (second, _b) = kv_of(command("kv-plugin").managed(true)).await;
    plinth::cleanup_clients().await;
    assert!(first.exited() && second.exited());
}

// ---------------------------------------------------------------------------------------------
// No process outlives its plugin

/// A process the test watches, named by its pid and start time so that a reused pid is not
/// mistaken for it.
#[derive(Debug)]
struct Watched {
    pid: u32,
    start: u64,
}

impl Watched {
    /// The state and start time in `/proc/<pid>/stat`.
    fn stat(pid: u32) -> Option<(char, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name in parentheses: the state is field 3, the start time field 22.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?.chars().next()?;
        Some((state, fields.nth(18)?.parse().ok()?))
    }

    fn new(pid: u32) -> Watched {
        let (_, start) = Watched::stat(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
        Watched { pid, start }
    }

    fn ended(&self) -> bool {
        match Watched::stat(self.pid) {
            Some((state, start)) => state == 'Z' || start != self.start,
            None => true,
        }
    }

    /// The process group and session (fields 5 and 6 of `/proc/<pid>/stat`).
    fn group_and_session(&self) -> (u32, u32) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let mut fields = stat.rsplit_once(')').unwrap().1.split_whitespace().skip(2);
        let group = fields.next().unwrap().parse().unwrap();
        (group, fields.next().unwrap().parse().unwrap())
    }
}

/// Waits (boundedly) for every one of `watched` to end.
async fn assert_all_end(watched: &[Watched], what: &str) {
    for _ in 0..400 {
        if watched.iter().all(Watched::ended) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let left: Vec<_> = watched.iter().filter(|w| !w.ended()).collect();
    panic!("{what}: {left:?} outlived the plugin");
}

/// The processes a `descendants` plugin started, from the pids they recorded in `file`,
/// once `count` have (bounded).
async fn recorded(file: &std::path::Path, count: usize) -> Vec<u32> {
    for _ in 0..400 {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<u32> = text.lines().filter_map(|line| line.parse().ok()).collect();
        if pids.len() >= count {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the plugin's descendants did not record {count} pids in {file:?}");
}

/// A `descendants` plugin in `mode` (`fork` or `daemon`), its kv, and the descendants still
/// running once it serves: the forked child, or the daemon (whose first stage has exited).
async fn plugin_with_descendants(
    mode: &str,
    pids: &std::path::Path,
) -> (Client, Arc<dyn Kv>, Vec<Watched>) {
    let config = command("descendants")
        .env("PLINTH_DESCENDANTS", mode)
        .env("PLINTH_DESCENDANTS_PIDS", pids.as_os_str());
    let (client, kv) = kv_of(config).await;
    put_get(kv.as_ref()).await;
    let plugin = client.connection().unwrap().pid().unwrap();
    let recorded = recorded(pids, if mode == "daemon" { 2 } else { 1 }).await;
    let running = Watched::new(*recorded.last().unwrap());
    let (group, session) = running.group_and_session();
    if mode == "daemon" {
        assert!(
            group != plugin && session != plugin && session == group,
            "the daemon leads a session of its own (group {group}, session {session})"
        );
    } else {
        assert_eq!(
            group, plugin,
            "the forked child stays in the plugin's group"
        );
    }
    (client, kv, vec![running])
}

#[tokio::test]
async fn kill_ends_what_the_plugin_forked_and_the_daemon_it_started() {
    for mode in ["fork", "daemon"] {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let (client, _kv, descendants) = plugin_with_descendants(mode, &pids).await;
        client.kill().await;
        assert_eq!(
            client.connection().unwrap().exit_status().as_deref(),
            Some("exit status: 0"),
            "{mode}: the plugin itself shut down gracefully"
        );
        assert_all_end(&descendants, &format!("{mode}, killed")).await;
    }
}

#[tokio::test]
async fn dropping_the_client_ends_what_the_plugin_forked_and_the_daemon_it_started() {
    for mode in ["fork", "daemon"] {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let (client, kv, mut watched) = plugin_with_descendants(mode, &pids).await;
        watched.push(Watched::new(client.connection().unwrap().pid().unwrap()));
        drop(kv);
        drop(client);
        assert_all_end(&watched, &format!("{mode}, dropped")).await;
    }
}

#[tokio::test]
async fn a_plugin_that_dies_fails_the_next_call_at_once_and_takes_its_descendants_along() {
    for mode in ["fork", "daemon"] {
        for killed_from_outside in [true, false] {
            let what = format!("{mode}, killed from outside {killed_from_outside}");
            let dir = tempfile::tempdir().unwrap();
            let pids = dir.path().join("pids");
            let (client, kv, descendants) = plugin_with_descendants(mode, &pids).await;
            let pid = client.connection().unwrap().pid().unwrap();
            let call = if killed_from_outside {
                // SAFETY: kill(2) on the plugin's own pid.
                unsafe { libc_kill(pid) };
                client.connection().unwrap().wait().await;
                kv.get("hello")
            } else {
                kv.get("die")
            };
            // The descendants hold the plugin's stderr open: the call must not wait for them.
            let error = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .unwrap_or_else(|_| panic!("{what}: the call hung"))
                .unwrap_err();
            let expected = if killed_from_outside {
                "signal: 9 (SIGKILL)"
            } else {
                "exit status: 5"
            };
            match wire(error) {
                WireError::Exited { status, .. } => assert_eq!(status, expected, "{what}"),
                other => panic!("{what}: expected Exited, got {other:?}"),
            }
            assert_all_end(&descendants, &what).await;
        }
    }
}

#[test]
fn what_a_host_killed_with_sigkill_left_running_is_ended_by_the_next_host() {
    use std::io::BufRead;
    /// A host process, SIGKILLed (no destructor of it runs) when dropped.
    struct Host(std::process::Child);
    impl Drop for Host {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn start_host(plugin: &str, tmp: &std::path::Path, pids: &std::path::Path) -> (Host, u32) {
        let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_dying-host"))
            .arg(go(plugin))
            .env("TMPDIR", tmp)
            .env("PLINTH_DESCENDANTS", "fork")
            .env("PLINTH_DESCENDANTS_PIDS", pids)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(host.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("host printed {line:?}"));
        (Host(host), pid)
    }
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..400 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{what}");
    }
    let temp = tempfile::tempdir().unwrap();
    let pids = temp.path().join("pids");
    let (first, plugin) = start_host("descendants", temp.path(), &pids);
    let plugin = Watched::new(plugin);
    wait_until("the forked child records its pid", || pids.exists());
    let text = std::fs::read_to_string(&pids).unwrap();
    let child = Watched::new(text.trim().parse().unwrap());
    drop(first);
    wait_until("the plugin ends on its parent-death signal", || {
        plugin.ended()
    });
    // Nothing of the dead host is left to end the child, which ignores SIGTERM.
    assert!(
        !child.ended(),
        "the child survives its host's SIGKILL, as documented"
    );
    let in_plinth_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid))
        .unwrap()
        .lines()
        .any(|line| line.starts_with("0::") && line.contains("/plinth-"));
    assert!(
        in_plinth_cgroup,
        "plugins get a cgroup of their own here (a writable cgroup v2 with cgroup.kill)"
    );
    // The next host leaves its own cgroup for the host after it, as it is killed too.
    let (_next, _) = start_host("kv-plugin", temp.path(), &pids);
    wait_until(
        "the next host's first start ends what the dead one left",
        || child.ended(),
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: a typed error, and the host keeps running

fn bad(mode: &str) -> ClientConfig {
    command("bad-plugin").env("PLINTH_BAD_MODE", mode)
}

#[tokio::test]
async fn wrong_cookie_reports_the_plugins_message() {
    let config = ClientConfig::command(go("kv-plugin")).handshake(HandshakeConfig::new(
        1,
        "PLINTH_PLUGIN",
        "not-kv",
    ));
    match start_error(config).await {
        WireError::ExitedBeforeHandshake { status, stderr, .. } => {
            assert_eq!(status, "exit status: 1");
            assert!(stderr.contains("This binary is a plugin"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_handshake_is_a_config_error() {
    let error = Client::start(ClientConfig::command(go("kv-plugin")))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
}

#[tokio::test]
async fn exit_before_handshake_carries_exit_code_and_stderr() {
    match start_error(bad("exit")).await {
        WireError::ExitedBeforeHandshake { status, stderr, .. } => {
            assert_eq!(status, "exit status: 3");
            assert!(stderr.contains("the configuration is missing"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_handshake_lines_are_typed_errors() {
    use plinth::subprocess::handshake::HandshakeError as H;
    type Check = fn(&H) -> bool;
    let cases: [(&str, Check); 5] = [
        ("garbage", |e| matches!(e, H::TooFewFields { .. })),
        ("short", |e| matches!(e, H::TooFewFields { found: 3 })),
        ("oversized", |e| matches!(e, H::TooLong)),
        ("core2", |e| matches!(e, H::CoreVersion { .. })),
        ("badcert", |e| matches!(e, H::Certificate { .. })),
    ];
    for (mode, expected) in cases {
        match start_error(bad(mode).auto_mtls(AutoMtls::Require)).await {
            WireError::Handshake { reason, .. } => assert!(expected(&reason), "{mode}: {reason:?}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn version_and_protocol_mismatches_are_typed_errors() {
    match start_error(bad("version9")).await {
        WireError::VersionMismatch { found, offered, .. } => {
            assert_eq!((found, offered), (9, vec![1]));
        }
        other => panic!("{other:?}"),
    }
    match start_error(bad("netrpc")).await {
        WireError::UnsupportedProtocol { found, .. } => assert_eq!(found, Protocol::NetRpc),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unreachable_address_is_a_connect_error() {
    let error = start_error(bad("unreachable").auto_mtls(AutoMtls::Off)).await;
    assert!(matches!(error, WireError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn silent_plugin_hits_the_start_timeout_and_is_reaped() {
    let started = std::time::Instant::now();
    let error = start_error(bad("silent").start_timeout(Duration::from_millis(500))).await;
    assert!(matches!(error, WireError::StartTimeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_socket_that_never_speaks_times_out_connecting_at_the_step_it_hung() {
    use plinth::subprocess::ConnectStep;
    let cases = [
        ("mute", plinth::AutoMtls::Off, ConnectStep::Http2),
        ("mutetls", plinth::AutoMtls::Require, ConnectStep::Tls),
    ];
    for (mode, auto_mtls, step) in cases {
        let config = bad(mode)
            .auto_mtls(auto_mtls)
            .start_timeout(Duration::from_millis(500));
        match start_error(config).await {
            WireError::ConnectTimeout { step: found, .. } => assert_eq!(found, step, "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn checksum_mismatch_refuses_to_start() {
    let wrong = plinth::Checksum::from_bytes([7; 32]);
    let error = start_error(command("kv-plugin").checksum(wrong)).await;
    assert!(
        matches!(error, WireError::ChecksumMismatch { .. }),
        "{error:?}"
    );

    let bytes = std::fs::read(go("kv-plugin")).unwrap();
    let right = plinth::Checksum::of(&bytes);
    let (client, kv) = kv_of(command("kv-plugin").checksum(right)).await;
    put_get(&*kv).await;
    assert_eq!(client.checksum(), Some(right));
    client.kill().await;
}

#[tokio::test]
async fn a_go_plugin_gets_mutual_tls_under_the_default_policy() {
    let capture = Capture::default();
    let _guard = capture.install();
    let over_tcp = ClientConfig::command(go("tcp-relay"))
        .args([go("kv-plugin")])
        .handshake(handshake());
    for config in [command("kv-plugin"), over_tcp] {
        let (client, kv) = kv_of(config).await;
        put_get(&*kv).await;
        let connection = client.connection().unwrap();
        assert!(connection.tls(), "{:?}", connection.address());
        assert!(connection.handshake().server_cert.is_some());
        client.kill().await;
    }
    assert!(capture.events("plinth::auto_mtls").is_empty());
}

#[tokio::test]
async fn a_certificate_the_host_did_not_offer_is_refused() {
    // A PLUGIN_CLIENT_CERT the plugin got anyway (the host's own stale one is stripped; one
    // set on purpose is passed on) makes a Go plugin serve TLS the host cannot check.
    let stale = plinth::subprocess::transport::Identity::generate().unwrap();
    let config = command("kv-plugin")
        .auto_mtls(AutoMtls::Off)
        .env("PLUGIN_CLIENT_CERT", stale.cert_pem());
    let error = Client::start(config).await.expect_err("refused");
    plinth_interop::assert_each_cause_said_once(&error);
    match wire(error) {
        WireError::UnexpectedCertificate { plugin, line } => {
            assert_eq!(plugin, "kv-plugin");
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.get(4), Some(&"grpc"), "{line:?}");
            assert!(
                fields.get(5).is_some_and(|cert| cert.len() > 50),
                "{line:?}"
            );
        }
        other => panic!("expected UnexpectedCertificate, got {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_that_is_not_x509_is_refused_under_every_policy() {
    use plinth::subprocess::handshake::HandshakeError as H;
    for policy in [AutoMtls::Prefer, AutoMtls::Require, AutoMtls::Off] {
        match start_error(bad("notx509").auto_mtls(policy)).await {
            WireError::Handshake {
                reason: H::Certificate { .. },
                ..
            } => {}
            other => panic!("{policy}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_tls_configuration_beside_an_offering_policy_is_a_config_error() {
    let identity = plinth::subprocess::transport::Identity::generate().unwrap();
    let tls = identity.client_config(identity.cert_der().clone()).unwrap();
    for policy in [AutoMtls::Prefer, AutoMtls::Require] {
        for config in [
            command("kv-plugin").tls(tls.clone()).auto_mtls(policy),
            command("kv-plugin").auto_mtls(policy).tls(tls.clone()),
        ] {
            let error = start_error(config).await;
            assert!(matches!(error, WireError::Config { .. }), "{error:?}");
        }
    }
}

#[tokio::test]
async fn requiring_auto_mtls_refuses_to_reattach_without_a_tls_configuration() {
    let (owner, _kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Off)).await;
    let reattach = owner.reattach_config().unwrap();
    let required = ClientConfig::reattach(reattach.clone()).auto_mtls(AutoMtls::Require);
    let error = start_error(required).await;
    assert!(matches!(error, WireError::Reattach { .. }), "{error:?}");
    // Preferring it reattaches in plaintext: there is nothing to exchange with a running plugin.
    let (attached, kv) = kv_of(ClientConfig::reattach(reattach)).await;
    put_get(&*kv).await;
    assert!(!attached.connection().unwrap().tls());
    owner.kill().await;
}

#[tokio::test]
async fn tls_with_the_wrong_peer_certificate_fails_to_connect() {
    // A plugin that runs AutoMTLS with one host certificate refuses a host presenting another.
    let (owner, _kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Require)).await;
    let stranger = plinth::subprocess::transport::Identity::generate().unwrap();
    let server_cert = stranger.cert_der().clone();
    let tls = stranger.client_config(server_cert).unwrap();
    let config = ClientConfig::reattach(owner.reattach_config().unwrap()).tls(tls);
    let error = start_error(config).await;
    assert!(matches!(error, WireError::Reattach { .. }), "{error:?}");
    owner.ping().await.expect("the plugin is unaffected");
    owner.kill().await;
}

#[tokio::test]
async fn a_wasm_only_adapter_refuses_an_executable() {
    let client = Client::start(command("kv-plugin")).await.unwrap();
    let error = client
        .dispense(&plinth_examples::greeter::GreeterPlugin::new())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(error, Error::BackendUnsupported { .. }),
        "{error:?}"
    );
    client.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_go_panic_mid_call_is_an_exit_error_and_error_level_logs() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (client, kv) = kv_of(command("noisy")).await;
    match wire(kv.get("panic").await.unwrap_err()) {
        WireError::Exited { status, stderr, .. } => {
            assert_eq!(status, "exit status: 2");
            assert!(
                stderr.contains("panic: noisy was asked to panic"),
                "{stderr}"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let events = capture.events("plinth::plugin");
    let panic_line = events
        .iter()
        .find(|e| e.field("message").is_some_and(|m| m.starts_with("panic: ")))
        .unwrap_or_else(|| panic!("no panic event in {events:?}"));
    assert_eq!(panic_line.level, tracing::Level::ERROR);
    assert!(client.exited());
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn a_hung_call_is_bounded_by_the_callers_timeout_and_the_plugin_keeps_serving() {
    struct Never;

    #[async_trait]
    impl AddHelper for Never {
        async fn sum(&self, _: i64, _: i64) -> plinth::Result<i64> {
            std::future::pending().await
        }
    }

    let client = Client::start(command("counter-plugin")).await.unwrap();
    let counter = client.dispense(&CounterPlugin).await.unwrap();
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        counter.put("n", 1, Arc::new(Never)),
    )
    .await;
    assert!(hung.is_err(), "the hung call returned");
    counter.put("n", 41, Arc::new(Adder)).await.unwrap();
    assert_eq!(counter.get("n").await.unwrap(), 41);
    client.kill().await;
}

#[tokio::test]
async fn a_plugin_exiting_after_the_handshake_fails_the_next_call_with_its_status() {
    let (client, kv) = kv_of(bad("shortlived")).await;
    client.connection().unwrap().wait().await;
    match wire(kv.get("k").await.unwrap_err()) {
        WireError::Exited { status, .. } => assert_eq!(status, "exit status: 4"),
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(client.exited());
}

/// Asserts that `stderr` is a bounded tail (20 lines, 4 KiB) ending with `last`.
fn assert_tail_ends_with(stderr: &str, last: &str, what: &str) {
    assert!(stderr.lines().count() <= 20, "{what}: {stderr}");
    assert!(stderr.len() <= 4096, "{what}: {} bytes", stderr.len());
    assert_eq!(stderr.lines().last(), Some(last), "{what}: {stderr}");
}

#[tokio::test]
async fn an_exit_error_quotes_a_bounded_tail_ending_with_the_plugins_last_line() {
    let last_text = "last words: the disk is full";
    let last_json = r#"[ERROR] last words reason="the disk is full""#;
    for (mode, last) in [("text", last_text), ("json", last_json)] {
        let (client, kv) = kv_of(command("last-words").env("PLINTH_LAST_WORDS", mode)).await;
        match wire(kv.get("die").await.unwrap_err()) {
            WireError::Exited { status, stderr, .. } => {
                assert_eq!(status, "exit status: 5", "{mode}");
                assert_tail_ends_with(&stderr, last, mode);
                if mode == "json" {
                    assert!(
                        stderr
                            .lines()
                            .all(|line| line.starts_with("[INFO] working padding=ppp")
                                || line == last),
                        "hclog JSON is quoted as level, message and fields: {stderr}"
                    );
                }
            }
            other => panic!("{mode}: expected Exited, got {other:?}"),
        }
        assert!(client.exited());
    }
    match start_error(command("last-words").env("PLINTH_LAST_WORDS", "start")).await {
        WireError::ExitedBeforeHandshake { status, stderr, .. } => {
            assert_eq!(status, "exit status: 5");
            assert_tail_ends_with(&stderr, last_text, "start");
        }
        other => panic!("expected ExitedBeforeHandshake, got {other:?}"),
    }
}

#[tokio::test]
async fn a_flooding_plugin_is_never_blocked_and_no_line_is_lost() {
    let stdout = SharedBuffer::default();
    let config = bad("flood").stdout(plinth::wasm::Output::writer(stdout.clone()));
    let (client, kv) = kv_of(config).await;
    for _ in 0..3 {
        let answer = tokio::time::timeout(Duration::from_secs(20), kv.get("k")).await;
        assert_eq!(answer.expect("the plugin was blocked").unwrap(), b"flooded");
    }
    // 3 calls x 4096 lines of 1023 bytes reach the stdout sink, whole.
    for _ in 0..200 {
        if stdout.text().len() >= 3 * 4096 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let text = stdout.text();
    assert_eq!(text.lines().count(), 3 * 4096);
    assert!(text.lines().all(|line| line.len() == 1023));
    client.kill().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn broker_dirs() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("plinth-broker-")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spawn_call_kill_cycles_leak_no_fds_processes_or_temp_files() {
    // Warm up once so lazily created process-wide state (runtime pipes) is not counted.
    let (client, kv) = kv_of(command("kv-plugin")).await;
    put_get(&*kv).await;
    client.kill().await;
    drop((client, kv));
    let (fds, dirs) = (open_fds(), broker_dirs());
    let mut pids = Vec::new();
    for _ in 0..1000 {
        let (client, kv) = kv_of(command("kv-plugin")).await;
        put_get(&*kv).await;
        pids.push(client.connection().unwrap().pid().unwrap());
        client.kill().await;
    }
    // Other tests run beside this one and hold a few fds and directories of their own for a
    // while; a leak would show as one or more per cycle, a thousand here.
    let settled = |fds_now: usize, dirs_now: usize| fds_now <= fds + 20 && dirs_now <= dirs + 3;
    for _ in 0..100 {
        if settled(open_fds(), broker_dirs()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pids.iter().all(|pid| process_gone(*pid)),
        "a plugin was not reaped"
    );
    assert!(
        settled(open_fds(), broker_dirs()),
        "fds {fds} -> {}, broker directories {dirs} -> {}",
        open_fds(),
        broker_dirs()
    );
}

// ---------------------------------------------------------------------------------------------
// Security

#[tokio::test]
async fn the_plugins_socket_lives_in_a_directory_only_this_user_can_enter() {
    use std::os::unix::fs::PermissionsExt;
    let (client, _kv) = kv_of(command("kv-plugin")).await;
    let plinth::subprocess::Address::Unix(socket) = client.connection().unwrap().address().clone()
    else {
        panic!("a Go plugin listens on a unix socket here");
    };
    let dir = socket.parent().unwrap().to_owned();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", dir.display());
    client.kill().await;
    assert!(!dir.exists(), "{} outlived the plugin", dir.display());
}

#[tokio::test]
async fn auto_mtls_refuses_a_client_without_the_exchanged_certificate() {
    let (owner, _kv) = kv_of(command("kv-plugin").auto_mtls(AutoMtls::Require)).await;
    let reattach = owner.reattach_config().unwrap();
    // No TLS at all: the plugin's TLS server refuses the plaintext HTTP/2 preface.
    let error = start_error(ClientConfig::reattach(reattach.clone())).await;
    assert!(matches!(error, WireError::Reattach { .. }), "{error:?}");
    // Another certificate: refused too (see tls_with_the_wrong_peer_certificate_fails_to_connect).
    owner.ping().await.expect("the plugin is unaffected");
    owner.kill().await;
}

fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_plugin_does_not_outlive_a_host_that_dies_without_cleaning_up() {
    use std::io::BufRead;
    // The killed host cannot remove the plugin's socket directory: it goes in one the test
    // owns, removed when the test ends.
    let temp = tempfile::tempdir().unwrap();
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_dying-host"))
        .arg(go("kv-plugin"))
        .env("TMPDIR", temp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("host printed {line:?}"));
    assert!(!gone_or_zombie(pid));
    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    for _ in 0..200 {
        if gone_or_zombie(pid) {
            let left: Vec<String> = std::fs::read_dir(temp.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                left.iter().any(|name| name.starts_with("plinth-plugin-")),
                "the plugin's socket directory is not in TMPDIR: {left:?}"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("plugin {pid} outlived its host");
}

#[tokio::test]
async fn start_failures_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-plugin");
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    for path in [missing, not_executable] {
        let error = Client::start(ClientConfig::command(&path).handshake(handshake()))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Subprocess(WireError::Spawn { .. })),
            "{error:?}"
        );
        let chain = plinth_interop::cause_chain(&error);
        assert_eq!(
            chain.len(),
            2,
            "the system's error is the source: {chain:?}"
        );
        plinth_interop::assert_each_cause_said_once(&error);
    }
    let error = Client::start(
        ClientConfig::command(go("kv-plugin"))
            .handshake(handshake())
            .checksum(plinth::Checksum::of(b"other bytes")),
    )
    .await
    .unwrap_err();
    plinth_interop::assert_each_cause_said_once(&error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_broken_while_the_plugin_lives_is_dialed_again() {
    for (mtls, multiplex) in [(false, false), (true, false), (false, true), (true, true)] {
        let case = format!("mtls={mtls} multiplex={multiplex}");
        let (client, kv) = kv_of(
            bad("bigheader")
                .auto_mtls(plinth_interop::mtls_policy(mtls))
                .multiplex(multiplex),
        )
        .await;
        assert_eq!(client.connection().unwrap().tls(), mtls, "{case}");
        kv.put("k", b"v").await.unwrap();
        // Each time: the call whose answer broke the connection fails with the connection's
        // own error, typed; the plugin still runs, and the calls after it are answered.
        for round in 0..3 {
            let error = kv.get("big-header").await.expect_err("a 1 MiB header");
            let WireError::Rpc { status, .. } = wire(error) else {
                panic!("{case} round {round}: expected the call's gRPC error");
            };
            let chain = plinth_interop::cause_chain(status.as_ref());
            assert!(
                std::iter::successors(std::error::Error::source(status.as_ref()), |e| e.source())
                    .any(|cause| cause
                        .downcast_ref::<h2::Error>()
                        .is_some_and(h2::Error::is_go_away)),
                "{case} round {round}: the cause is not the connection's GOAWAY: {chain:?}"
            );
            let mut callers = tokio::task::JoinSet::new();
            for _ in 0..32 {
                let kv = kv.clone();
                callers.spawn(async move { kv.get("k").await });
            }
            while let Some(answer) = callers.join_next().await {
                let answer = answer.unwrap();
                assert_eq!(answer.unwrap_or_else(|e| panic!("{case}: {e}")), b"v");
            }
        }
        assert!(!client.connection().unwrap().exited(), "{case}");

        // A plugin that is gone is not dialed in a loop: its calls fail with its exit.
        let pid = client.connection().unwrap().pid().unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        for _ in 0..3 {
            let error = kv.get("k").await.expect_err("the plugin is gone");
            assert!(
                matches!(wire(error), WireError::Exited { .. }),
                "{case}: a call after the plugin died"
            );
        }
        client.kill().await;
    }
}
