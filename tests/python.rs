//! End-to-end tests of the AutoMTLS policies against a plugin that cannot do AutoMTLS: the
//! Python kv plugin in `tests/python` (grpcio, shaped like go-plugin's own Python example: it
//! ignores `PLUGIN_CLIENT_CERT`, listens on TCP and prints a handshake line without a
//! certificate). `cargo xtask python` sets it up.

use std::path::PathBuf;
use std::sync::Arc;

use plinth::subprocess::{Address, Error as WireError};
use plinth::{AutoMtls, Client, ClientConfig, Error};
use plinth_examples::kv::{Kv, KvPlugin};
use plinth_examples::{handshake, python_kv_plugin};
use plinth_interop::{Capture, Captured};

/// The name a host gives the plugin: its launcher's file name.
const NAME: &str = "kv-plugin-python";

/// The target of the event a downgrade to plaintext emits.
const DOWNGRADE: &str = "plinth::auto_mtls";

fn python() -> ClientConfig {
    let path = python_kv_plugin();
    assert!(
        path.exists(),
        "{} is missing: set up the Python plugin with `cargo xtask python`",
        path.display()
    );
    ClientConfig::command(path).handshake(handshake())
}

async fn kv_of(config: ClientConfig) -> (Client, Arc<dyn Kv>) {
    let client = Client::start(config).await.expect("the plugin starts");
    let kv = client.dispense(&KvPlugin).await.expect("kv dispenses");
    (client, kv)
}

/// Puts and gets through the plugin, asks for a missing key and pings.
async fn serves_kv(client: &Client, kv: &dyn Kv) {
    kv.put("hello", b"world").await.expect("put");
    assert_eq!(kv.get("hello").await.expect("get"), b"world");
    let missing = kv.get("nothing").await.unwrap_err();
    assert!(
        missing.to_string().contains("no value stored under key"),
        "{missing}"
    );
    client.ping().await.expect("ping");
}

/// Asserts the plugin was reached over TCP in plaintext, as its handshake line asked.
fn plaintext_over_tcp(client: &Client) {
    let connection = client.connection().expect("an executable");
    assert!(!connection.tls(), "the plugin cannot do TLS");
    assert!(
        matches!(connection.address(), Address::Tcp(_)),
        "{:?}",
        connection.address()
    );
    assert_eq!(connection.handshake().server_cert, None);
}

/// Where the plugin writes its process id, and the id once it has.
struct PidFile(tempfile::TempDir);

impl PidFile {
    fn new() -> PidFile {
        PidFile(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> PathBuf {
        self.0.path().join("pid")
    }

    fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.path()).expect("the plugin wrote its pid");
        text.trim().parse().expect("a pid")
    }
}

fn reaped(pid: u32) -> bool {
    // A zombie still has a /proc entry; a reaped process has none.
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn the_default_policy_loads_the_python_plugin_in_plaintext_with_a_warning() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (client, kv) = kv_of(python()).await;
    serves_kv(&client, &*kv).await;
    plaintext_over_tcp(&client);

    let warnings = capture.events(DOWNGRADE);
    let [warning]: [Captured; 1] = warnings.try_into().expect("one downgrade warning");
    assert_eq!(warning.level, tracing::Level::WARN);
    assert_eq!(warning.field("plugin"), Some(NAME));
    let address = client.connection().unwrap().address().to_string();
    assert_eq!(warning.field("address"), Some(address.as_str()));

    // Killing asks its controller to shut down: a clean exit, not SIGKILL after the grace.
    client.kill().await;
    let status = client.connection().unwrap().exit_status();
    assert_eq!(status.as_deref(), Some("exit status: 0"));
}

#[tokio::test]
async fn preferring_auto_mtls_explicitly_is_the_default() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (client, kv) = kv_of(python().auto_mtls(AutoMtls::Prefer)).await;
    serves_kv(&client, &*kv).await;
    plaintext_over_tcp(&client);
    assert_eq!(capture.events(DOWNGRADE).len(), 1);
    client.kill().await;
}

#[tokio::test]
async fn requiring_auto_mtls_refuses_the_python_plugin_and_reaps_it() {
    let capture = Capture::default();
    let _guard = capture.install();
    let pid_file = PidFile::new();
    let config = python()
        .auto_mtls(AutoMtls::Require)
        .env("PLINTH_PID_FILE", pid_file.path());
    let error = Client::start(config).await.expect_err("refused");
    match &error {
        Error::Subprocess(WireError::AutoMtlsUnsupported { plugin, line }) => {
            assert_eq!(plugin, NAME);
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 5, "{line:?}");
            assert_eq!(fields[2], "tcp", "{line:?}");
        }
        other => panic!("expected AutoMtlsUnsupported, got {other:?}"),
    }
    plinth_interop::assert_each_cause_said_once(&error);
    let pid = pid_file.pid();
    assert!(reaped(pid), "plugin {pid} outlived the refused start");
    assert!(
        capture.events(DOWNGRADE).is_empty(),
        "a refusal is no downgrade"
    );
}

#[tokio::test]
async fn with_auto_mtls_off_the_python_plugin_loads_without_a_warning() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (client, kv) = kv_of(python().auto_mtls(AutoMtls::Off)).await;
    serves_kv(&client, &*kv).await;
    plaintext_over_tcp(&client);
    assert!(capture.events(DOWNGRADE).is_empty());
    client.kill().await;
}

#[tokio::test]
async fn each_launch_of_the_python_plugin_gets_its_own_port_and_store() {
    let (first, first_kv) = kv_of(python()).await;
    let (second, second_kv) = kv_of(python()).await;
    let address = |client: &Client| client.connection().unwrap().address().clone();
    assert_ne!(address(&first), address(&second));
    first_kv.put("which", b"first").await.unwrap();
    second_kv.put("which", b"second").await.unwrap();
    assert_eq!(first_kv.get("which").await.unwrap(), b"first");
    assert_eq!(second_kv.get("which").await.unwrap(), b"second");
    first.kill().await;
    second.kill().await;
}
