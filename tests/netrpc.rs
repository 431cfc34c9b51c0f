//! End-to-end tests of netrpc, go-plugin's original protocol, against real Go plugins built
//! with go-plugin v1.8.0 (`tests/go/cmd/netrpc-*`), and of bad input from fake peers that speak
//! yamux and gob wrongly on purpose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plinth::gob::{FromGob, GobError, Struct, ToGob, Value};
use plinth::subprocess::netrpc::{CallError, RpcClient};
use plinth::subprocess::{Error as WireError, HandshakeConfig, Protocol, ReattachConfig};
use plinth::{AutoMtls, Client, ClientConfig, Error, NetRpcConn, Plugin};
use plinth_examples::counter::CounterPlugin;
use plinth_examples::greeter::{self, GreeterPlugin};
use plinth_examples::kv::KvPlugin;
use plinth_examples::{go_plugin, handshake};
use plinth_interop::{Capture, SharedBuffer, mtls_policy};

fn netrpc(name: &str) -> ClientConfig {
    let path = go_plugin(name);
    assert!(
        path.exists(),
        "{} is missing: build the Go fixtures with `cargo xtask go`",
        path.display()
    );
    ClientConfig::command(path)
        .handshake(handshake())
        .allowed_protocols([Protocol::Grpc, Protocol::NetRpc])
}

fn basic_greeter() -> ClientConfig {
    netrpc("netrpc-greeter").handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
}

fn wire(error: Error) -> WireError {
    match error {
        Error::Subprocess(inner) => inner,
        other => panic!("expected a subprocess error, got {other:?}"),
    }
}

fn call_error(error: Error) -> CallError {
    match wire(error) {
        WireError::NetRpc { reason, .. } => reason,
        other => panic!("expected a netrpc call error, got {other:?}"),
    }
}

fn process_gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// The greeter: go-plugin's classic example

#[tokio::test(flavor = "current_thread")]
async fn the_classic_greeter_greets_with_and_without_auto_mtls() {
    let capture = Capture::default();
    let _guard = capture.install();
    for mtls in [true, false] {
        let client = Client::start(basic_greeter().auto_mtls(mtls_policy(mtls)))
            .await
            .unwrap();
        let connection = client.connection().unwrap();
        assert_eq!(connection.protocol(), Protocol::NetRpc);
        assert_eq!(connection.tls(), mtls);
        let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
        assert_eq!(greeter.greet("ignored").await.unwrap(), "Hello!");
        assert_eq!(greeter.version(), greeter::NETRPC);
        // Logs travel on stderr, beside the call's answer: give them a moment to arrive.
        for _ in 0..100 {
            let logged = capture
                .events("plinth::plugin")
                .iter()
                .filter(|e| e.field("message") == Some("message from greeter.Greet"))
                .count();
            if logged > usize::from(!mtls) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.ping().await.unwrap();
        let pid = connection.pid().unwrap();
        let started = std::time::Instant::now();
        client.kill().await;
        assert!(started.elapsed() < Duration::from_secs(2), "needed SIGKILL");
        assert_eq!(connection.exit_status().as_deref(), Some("exit status: 0"));
        assert!(process_gone(pid), "pid {pid} was not reaped");
        assert!(matches!(
            greeter.greet("x").await,
            Err(Error::Killed { .. })
        ));
    }
    // The plugin's hclog line reached the host's tracing at its level.
    let events = capture.events("plinth::plugin");
    let greeted = events
        .iter()
        .find(|e| e.field("message") == Some("message from greeter.Greet"))
        .unwrap_or_else(|| panic!("no greeter log in {events:?}"));
    assert_eq!(greeted.level, tracing::Level::DEBUG);
    assert!(
        greeted
            .field("fields")
            .unwrap_or_default()
            .contains("who=plinth")
    );
}

#[tokio::test]
async fn netrpc_is_refused_unless_allowed() {
    let config = basic_greeter().allowed_protocols([Protocol::Grpc]);
    match wire(Client::start(config).await.unwrap_err()) {
        WireError::UnsupportedProtocol { found, .. } => assert_eq!(found, Protocol::NetRpc),
        other => panic!("{other:?}"),
    }
}

/// A kv adapter with only a gRPC half.
struct GrpcOnlyKv;

impl Plugin for GrpcOnlyKv {
    type Interface = dyn plinth_examples::kv::Kv;

    fn name(&self) -> &str {
        "kv"
    }
}

#[tokio::test]
async fn an_adapter_without_a_netrpc_half_says_so() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    match client.dispense(&GrpcOnlyKv).await {
        Err(Error::BackendUnsupported { backend, .. }) => assert_eq!(backend, "netrpc"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("the adapter has no netrpc half"),
    }
    // A name the plugin does not serve is the plugin's own refusal.
    match call_error(client.dispense(&CounterPlugin).await.err().unwrap()) {
        CallError::Remote(message) => assert_eq!(message, "unknown plugin type: counter"),
        other => panic!("{other:?}"),
    }
    // The gRPC view of a netrpc plugin is refused with a typed error.
    let connection = client.connection().unwrap();
    assert!(matches!(
        connection.channel(),
        Err(WireError::WrongProtocol { .. })
    ));
    client.kill().await;
}

// ---------------------------------------------------------------------------------------------
// KV: []byte values and map[string]interface{} arguments

#[tokio::test]
async fn kv_puts_and_gets_bytes_through_the_same_adapter() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    let kv = client.dispense(&KvPlugin).await.unwrap();
    kv.put("hello", b"world").await.unwrap();
    assert_eq!(kv.get("hello").await.unwrap(), b"world");
    kv.put("empty", b"").await.unwrap();
    assert_eq!(kv.get("empty").await.unwrap(), b"");
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    kv.put("big", &big).await.unwrap();
    assert_eq!(kv.get("big").await.unwrap(), big);
    match call_error(kv.get("missing").await.unwrap_err()) {
        CallError::Remote(message) => assert_eq!(message, "no such key: missing"),
        other => panic!("{other:?}"),
    }
    // Calls by name on the raw client, and the server's own refusals.
    let session = client.connection().unwrap().netrpc().unwrap();
    let raw = session.dispense("kv").await.unwrap();
    let keys: Vec<String> = raw.call("Plugin.Keys", &()).await.unwrap();
    assert_eq!(keys, ["big", "empty", "hello"]);
    // (With a nil interface argument Go's server would wait for more input: discarding a nil
    // interface it cannot place reads past the value, as it does for a Go client.)
    match raw.call::<_, ()>("Plugin.Nope", "x").await.unwrap_err() {
        CallError::Remote(message) => {
            assert_eq!(message, "rpc: can't find method Plugin.Nope")
        }
        other => panic!("{other:?}"),
    }
    match session.dispense("nothing").await.unwrap_err() {
        CallError::Remote(message) => assert!(message.contains("unknown plugin type"), "{message}"),
        other => panic!("{other:?}"),
    }
    // An argument of the wrong Go type is the server's error, and the stream goes on.
    let error = raw
        .call::<_, Vec<u8>>("Plugin.Get", &7i64)
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Remote(_)), "{error:?}");
    assert_eq!(
        raw.call::<_, Vec<u8>>("Plugin.Get", "hello").await.unwrap(),
        b"world"
    );
    client.kill().await;
}

#[tokio::test]
async fn concurrent_calls_are_matched_to_their_replies() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    let kv = client.dispense(&KvPlugin).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let kv = kv.clone();
        tasks.spawn(async move {
            for call in 0..40 {
                let key = format!("k{task}-{call}");
                kv.put(&key, key.as_bytes()).await.unwrap();
                assert_eq!(kv.get(&key).await.unwrap(), key.as_bytes());
            }
        });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 64);
    client.kill().await;
}

#[tokio::test]
async fn stdout_and_stderr_arrive_over_their_streams() {
    let stdout = SharedBuffer::default();
    let stderr = SharedBuffer::default();
    let config = netrpc("netrpc-kv")
        .stdout(plinth::wasm::Output::writer(stdout.clone()))
        .stderr(plinth::wasm::Output::writer(stderr.clone()));
    let client = Client::start(config).await.unwrap();
    let raw = client
        .connection()
        .unwrap()
        .netrpc()
        .unwrap()
        .dispense("kv")
        .await
        .unwrap();
    let echoed: String = raw.call("Plugin.Echo", "hi").await.unwrap();
    assert_eq!(echoed, "hi");
    for _ in 0..100 {
        if stdout.text().contains("hi") && stderr.text().contains("hi") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stdout.text(), "stdout: hi\n");
    assert_eq!(stderr.text(), "stderr: hi\n");
    client.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Structs

/// The Go fixture's `Record`, mirrored by hand.
#[derive(Debug, Clone, Default, PartialEq)]
struct Record {
    name: String,
    tags: Vec<String>,
    score: f64,
    count: i64,
    active: bool,
    attrs: BTreeMap<String, String>,
    data: Vec<u8>,
    nested: (u32, String),
}

impl ToGob for Record {
    fn to_gob(&self) -> Value {
        Struct::new("Record")
            .field("Name", &self.name)
            .field("Tags", &self.tags)
            .field("Score", self.score)
            .field("Count", self.count)
            .field("Active", self.active)
            .field("Attrs", &self.attrs)
            .field("Data", &self.data)
            .field(
                "Nested",
                Struct::new("Inner")
                    .field("ID", self.nested.0)
                    .field("Note", &self.nested.1),
            )
            .into()
    }
}

impl FromGob for Record {
    fn from_gob(value: Value) -> Result<Record, GobError> {
        let mut record = Struct::from_gob(value)?;
        let mut nested: Struct = record.take("Nested")?;
        Ok(Record {
            name: record.take("Name")?,
            tags: record.take("Tags")?,
            score: record.take("Score")?,
            count: record.take("Count")?,
            active: record.take("Active")?,
            attrs: record.take("Attrs")?,
            data: record.take("Data")?,
            nested: (nested.take("ID")?, nested.take("Note")?),
        })
    }
}

impl plinth::gob::GobType for Record {
    fn gob_type() -> plinth::gob::Type {
        Record::default().to_gob().ty()
    }
}

impl plinth::gob::GobElement for Record {}

/// A typed interface over the fixture, as a host would write it.
struct Records(NetRpcConn);

impl Records {
    async fn store(&self, record: &Record) -> plinth::Result<i64> {
        self.0.call("Store", record).await
    }

    async fn find(&self, prefix: &str, limit: i64) -> plinth::Result<Vec<Record>> {
        let query = Struct::new("Query")
            .field("Prefix", prefix)
            .field("Limit", limit);
        self.0.call("Find", &query).await
    }
}

struct RecordsPlugin;

impl Plugin for RecordsPlugin {
    type Interface = Records;

    fn name(&self) -> &str {
        "records"
    }

    fn from_netrpc(&self, conn: NetRpcConn) -> plinth::Result<Arc<Records>> {
        Ok(Arc::new(Records(conn)))
    }
}

#[tokio::test]
async fn struct_arguments_and_results_cross_field_by_field() {
    let client = Client::start(netrpc("netrpc-struct")).await.unwrap();
    let records = client.dispense(&RecordsPlugin).await.unwrap();
    let full = Record {
        name: "alpha".into(),
        tags: vec!["a".into(), "b".into()],
        score: -2.5,
        count: -(1 << 40),
        active: true,
        attrs: BTreeMap::from([("k".into(), "v".into()), ("x".into(), String::new())]),
        data: vec![0, 255, 7],
        nested: (u32::MAX, "note".into()),
    };
    assert_eq!(records.store(&full).await.unwrap(), 1);
    let sparse = Record {
        name: "beta".into(),
        ..Record::default()
    };
    assert_eq!(records.store(&sparse).await.unwrap(), 2);
    let found = records.find("", 0).await.unwrap();
    let mut expected = full.clone();
    expected.nested.1 = "NOTE".into(); // the plugin upper-cases it
    assert_eq!(found, vec![expected, sparse.clone()]);
    assert_eq!(records.find("be", 1).await.unwrap(), vec![sparse]);
    assert_eq!(records.find("zzz", 0).await.unwrap(), vec![]);
    match call_error(records.store(&Record::default()).await.unwrap_err()) {
        CallError::Remote(message) => assert_eq!(message, "a record needs a name"),
        other => panic!("{other:?}"),
    }
    client.kill().await;
}

#[tokio::test]
async fn a_recursive_result_type_is_a_typed_error_and_the_stream_stays_in_step() {
    let client = Client::start(netrpc("netrpc-struct")).await.unwrap();
    let records = client.dispense(&RecordsPlugin).await.unwrap();
    match call_error(records.0.call::<_, Value>("Tree", &()).await.unwrap_err()) {
        CallError::Decode(GobError::TooDeep { .. }) => {}
        other => panic!("{other:?}"),
    }
    let named = Record {
        name: "after".into(),
        ..Record::default()
    };
    assert_eq!(records.store(&named).await.unwrap(), 1);
    client.kill().await;
}

#[tokio::test]
async fn a_failed_call_says_each_cause_once() {
    let client = Client::start(netrpc("netrpc-struct")).await.unwrap();
    let records = client.dispense(&RecordsPlugin).await.unwrap();
    // `Store` answers an int: asking for a string is a decode error with a gob error inside.
    let error = records
        .0
        .call::<_, String>(
            "Store",
            &Record {
                name: "x".into(),
                ..Record::default()
            },
        )
        .await
        .unwrap_err();
    let chain = plinth_interop::cause_chain(&error);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert!(chain[2].contains("expected a gob string"), "{chain:?}");
    plinth_interop::assert_each_cause_said_once(&error);
    client.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle and faults

#[tokio::test]
async fn a_plugin_dying_mid_call_fails_every_call_in_flight_with_its_exit() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    let kv = client.dispense(&KvPlugin).await.unwrap();
    let sleeper = {
        let kv = kv.clone();
        tokio::spawn(async move { kv.get("sleep").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match wire(kv.get("panic").await.unwrap_err()) {
        WireError::Exited { status, stderr, .. } => {
            assert_eq!(status, "exit status: 2");
            assert!(stderr.contains("asked to panic"), "{stderr}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    match wire(sleeper.await.unwrap().unwrap_err()) {
        WireError::Exited { .. } => {}
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(client.exited());
    assert!(matches!(
        wire(kv.get("x").await.unwrap_err()),
        WireError::Exited { .. }
    ));
}

#[tokio::test]
async fn a_hung_call_is_bounded_by_the_callers_timeout_while_others_go_on() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    let kv = client.dispense(&KvPlugin).await.unwrap();
    let hung = tokio::time::timeout(Duration::from_millis(200), kv.get("sleep")).await;
    assert!(hung.is_err(), "the hung call returned");
    kv.put("k", b"v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), b"v");
    // Kill does not wait for the hung call.
    let started = std::time::Instant::now();
    client.kill().await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_second_host_reattaches_to_a_running_netrpc_plugin() {
    // A reattach configuration carries no certificates: the plugin must listen in plaintext.
    let first = Client::start(netrpc("netrpc-kv").auto_mtls(AutoMtls::Off))
        .await
        .unwrap();
    let kv = first.dispense(&KvPlugin).await.unwrap();
    kv.put("shared", b"state").await.unwrap();
    let reattach = first.reattach_config().unwrap();
    assert_eq!(reattach.protocol, "netrpc");
    let second = Client::start(
        ClientConfig::reattach(reattach)
            .allowed_protocols([Protocol::NetRpc])
            .handshake(handshake()),
    )
    .await
    .unwrap();
    let again = second.dispense(&KvPlugin).await.unwrap();
    assert_eq!(again.get("shared").await.unwrap(), b"state");
    second.kill().await;
    first.kill().await;
}

#[tokio::test]
async fn dropping_the_client_ends_the_plugin() {
    let client = Client::start(netrpc("netrpc-kv")).await.unwrap();
    let pid = client.connection().unwrap().pid().unwrap();
    drop(client);
    for _ in 0..200 {
        if process_gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pid {pid} still runs after its client was dropped");
}

// ---------------------------------------------------------------------------------------------
// Bad input from fake peers

mod fake {
    //! A netrpc "plugin" in this process: a Unix socket whose first connection runs a yamux
    //! server; the control stream is handed to a script. Hosts reach it by reattaching.

    use std::future::Future;

    use futures::StreamExt;
    use plinth::gob::{Decoder, Encoder, Message, Struct, Value};
    use plinth::subprocess::{Protocol, ReattachConfig};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::UnixListener;

    pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
    impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

    pub struct Fake {
        pub reattach: ReattachConfig,
        _dir: tempfile::TempDir,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn listen() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    fn config(path: &std::path::Path) -> ReattachConfig {
        let address = plinth::subprocess::Address::Unix(path.to_owned());
        let mut config = ReattachConfig::new(&address, Protocol::NetRpc, 1, 0);
        config.test = true;
        config
    }

    /// Writes raw bytes instead of yamux, then holds the connection open.
    pub fn raw(bytes: &'static [u8]) -> Fake {
        let (dir, path, listener) = listen();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket.write_all(bytes).await;
            std::future::pending::<()>().await;
        });
        Fake {
            reattach: config(&path),
            _dir: dir,
            task,
        }
    }

    /// Serves yamux; the control stream goes to `script`.
    fn serve<F, Fut>(script: F) -> Fake
    where
        F: FnOnce(Box<dyn Stream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (dir, path, listener) = listen();
        let task = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut session =
                tokio_yamux::Session::new_server(socket, tokio_yamux::Config::default());
            let control = session.next().await.unwrap().unwrap();
            let mut held = Vec::new();
            let script = tokio::spawn(script(Box::new(control)));
            while let Some(Ok(stream)) = session.next().await {
                held.push(stream);
            }
            script.abort();
        });
        Fake {
            reattach: config(&path),
            _dir: dir,
            task,
        }
    }

    /// What a fake answers a request with: a reply value, or a good reply header followed by
    /// raw bytes (and then, for `RawThenEnd`, the end of the stream).
    pub enum Answer {
        Value(Value),
        Raw(Vec<u8>),
        RawThenEnd(Vec<u8>),
    }

    /// Serves the control stream, answering the `n`th request (from 1) with `answer(n)`.
    pub fn answering(mut answer: impl FnMut(usize) -> Answer + Send + 'static) -> Fake {
        serve(move |mut io| async move {
            let mut decoder = Decoder::new();
            let mut encoder = Encoder::new();
            let mut served = 0;
            while let Some((method, seq, _)) = request(&mut io, &mut decoder).await {
                served += 1;
                let (raw, end) = match answer(served) {
                    Answer::Value(value) => {
                        reply(&mut io, &mut encoder, &method, seq, &value).await;
                        continue;
                    }
                    Answer::Raw(raw) => (raw, false),
                    Answer::RawThenEnd(raw) => (raw, true),
                };
                let mut out = header(&mut encoder, &method, seq, "");
                out.extend_from_slice(&raw);
                io.write_all(&out).await.unwrap();
                if end {
                    io.shutdown().await.unwrap();
                    std::future::pending::<()>().await;
                }
            }
        })
    }

    /// Reads one request: `(method, seq, argument)`.
    async fn request(
        io: &mut (impl AsyncRead + Unpin),
        decoder: &mut Decoder,
    ) -> Option<(String, u64, Value)> {
        let mut values = Vec::new();
        while values.len() < 2 {
            let message = message(io).await?;
            if let Message::Value(value) = decoder.decode(&message).unwrap() {
                values.push(value);
            }
        }
        let argument = values.pop().unwrap();
        let mut header = <Struct as plinth::gob::FromGob>::from_gob(values.pop().unwrap()).unwrap();
        let method: String = header.take("ServiceMethod").unwrap();
        let seq: u64 = header.take("Seq").unwrap();
        Some((method, seq, argument))
    }

    async fn message(io: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
        let mut prefix = Vec::new();
        loop {
            prefix.push(io.read_u8().await.ok()?);
            if let Some((_, length)) = Decoder::frame(&prefix).unwrap() {
                let mut body = vec![0; length];
                io.read_exact(&mut body).await.ok()?;
                return Some(body);
            }
        }
    }

    /// The bytes of a reply header.
    fn header(encoder: &mut Encoder, method: &str, seq: u64, error: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let header: Value = Struct::new("Response")
            .field("ServiceMethod", method)
            .field("Seq", seq)
            .field("Error", error)
            .into();
        encoder.encode(&header, &mut out).unwrap();
        out
    }

    /// A whole reply.
    async fn reply(
        io: &mut (impl AsyncWrite + Unpin),
        encoder: &mut Encoder,
        method: &str,
        seq: u64,
        body: &Value,
    ) {
        let mut out = header(encoder, method, seq, "");
        encoder.encode(body, &mut out).unwrap();
        io.write_all(&out).await.unwrap();
    }
}

use fake::Answer;

/// A client reattached to `fake`, and its control stream's client.
async fn attach(fake: &fake::Fake) -> (Client, RpcClient) {
    let client = Client::start(fake_client(fake.reattach.clone()))
        .await
        .unwrap();
    let control = client
        .connection()
        .unwrap()
        .netrpc()
        .unwrap()
        .control()
        .clone();
    (client, control)
}

fn fake_client(reattach: ReattachConfig) -> ClientConfig {
    ClientConfig::reattach(reattach)
        .allowed_protocols([Protocol::NetRpc])
        .handshake(handshake())
        .start_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn a_peer_that_does_not_speak_yamux_is_a_reattach_error() {
    let fake = fake::raw(b"this is not a yamux frame at all, it is text\n");
    let started = std::time::Instant::now();
    match wire(
        Client::start(fake_client(fake.reattach.clone()))
            .await
            .unwrap_err(),
    ) {
        // The garbage ends the yamux session while it opens its streams, or just after.
        WireError::Reattach { reason, .. } => assert!(
            reason.contains("yamux") || reason.contains("does not answer"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_silent_peer_is_bounded_by_the_start_timeout() {
    let fake = fake::raw(b"");
    match wire(
        Client::start(fake_client(fake.reattach.clone()))
            .await
            .unwrap_err(),
    ) {
        WireError::Reattach { reason, .. } => assert!(reason.contains("within"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_undefined_type_fails_one_call_and_the_stream_goes_on() {
    let fake = fake::answering(|served| match served {
        // A value of type 99, which this stream never defined: `03 FF C6 00`.
        2 => Answer::Raw(vec![0x03, 0xFF, 0xC6, 0x00]),
        _ => Answer::Value(Value::Uint(7)),
    });
    let (client, control) = attach(&fake).await;
    match control
        .call::<_, u32>("Dispenser.Dispense", "kv")
        .await
        .unwrap_err()
    {
        CallError::Decode(GobError::UnknownType { id }) => assert_eq!(id, 99),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        control
            .call::<_, u32>("Dispenser.Dispense", "kv")
            .await
            .unwrap(),
        7
    );
    // A reply of the wrong type is a decode error naming both types.
    match control
        .call::<_, String>("Dispenser.Dispense", "kv")
        .await
        .unwrap_err()
    {
        CallError::Decode(error) => {
            assert_eq!(error.to_string(), "expected a gob string, found uint")
        }
        other => panic!("{other:?}"),
    }
    client.kill().await;
}

#[tokio::test]
async fn a_truncated_frame_breaks_the_stream_with_a_typed_error() {
    let fake = fake::answering(|served| match served {
        1 => Answer::Value(Value::Nil),
        // A message announcing 100 bytes with 10 sent, then the end of the stream.
        _ => Answer::RawThenEnd([&[100u8][..], &[0; 10]].concat()),
    });
    let (client, control) = attach(&fake).await;
    let (first, second) = tokio::join!(
        control.call::<_, u32>("Dispenser.Dispense", "a"),
        control.call::<_, u32>("Dispenser.Dispense", "b"),
    );
    // The reattach ping was the first request; both calls see the broken stream.
    for outcome in [first, second] {
        match outcome.unwrap_err() {
            CallError::Broken(reason) => {
                assert!(reason.contains("inside a message of 100 bytes"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(control.is_broken());
    assert!(matches!(
        control.call::<_, ()>("Control.Ping", &true).await,
        Err(CallError::Broken(_))
    ));
    client.kill().await;
}

#[tokio::test]
async fn a_malformed_type_definition_breaks_the_stream() {
    let fake = fake::answering(|served| match served {
        1 => Answer::Value(Value::Nil),
        // A definition of type 70 with a wireType field number 9.
        _ => Answer::Raw(vec![0x04, 0xFF, 0x8B, 0x0A, 0x00]),
    });
    let (client, control) = attach(&fake).await;
    match control
        .call::<_, u32>("Dispenser.Dispense", "kv")
        .await
        .unwrap_err()
    {
        CallError::Broken(reason) => assert!(reason.contains("type definition"), "{reason}"),
        other => panic!("{other:?}"),
    }
    client.kill().await;
}
