//! A Rust program as a go-plugin plugin: [`serve`] does what go-plugin's `plugin.Serve` does,
//! so Go hosts (and Plinth hosts) load the program like any Go plugin.
//!
//! In order: check the magic cookie (a Go plugin's message and exit status 1 when it is
//! missing or wrong), negotiate the application protocol version from
//! `PLUGIN_PROTOCOL_VERSIONS`, install the hclog logger, set up TLS (an explicit provider, or
//! AutoMTLS when `PLUGIN_CLIENT_CERT` is set), bind the listener, print the handshake line,
//! redirect fd 1 and fd 2 into the stdio stream, and serve until the host calls
//! `GRPCController.Shutdown` or SIGTERM arrives. SIGINT is ignored, as a Go plugin ignores it.
//!
//! The multiplexed broker (`PLUGIN_MULTIPLEX_GRPC`) is not supported on this side: the
//! handshake never advertises it, so a host that insists on it reports that clearly.
//!
//! [`serve_test`] is go-plugin's test mode: it serves in-process on a temporary socket and
//! returns a connected [`Connection`], so plugin authors unit-test their
//! services without spawning anything.
//!
//! ```no_run
//! use plinth_subprocess::serve::{ServeConfig, serve_blocking};
//! use plinth_subprocess::HandshakeConfig;
//! # fn routes() -> tonic::service::Routes { tonic::service::Routes::default() }
//!
//! fn main() -> std::process::ExitCode {
//!     let config = ServeConfig::new(HandshakeConfig::new(1, "PLINTH_PLUGIN", "kv"))
//!         .service(|_broker| routes());
//!     match serve_blocking(config) {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```

pub mod hclog;
pub(crate) mod listener;
mod redirect;
mod services;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, mpsc};
use tonic::service::Routes;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::handshake::{self, Address, HandshakeConfig, HandshakeLine, Protocol, env};
use crate::proto::health::health_server::HealthServer;
use crate::proto::plugin::grpc_broker_server::GrpcBrokerServer;
use crate::proto::plugin::grpc_controller_server::GrpcControllerServer;
use crate::proto::plugin::grpc_stdio_server::GrpcStdioServer;
use crate::proto::plugin::stdio_data;
use crate::transport::Identity;
use crate::{Config, Connection, ReattachConfig};
use listener::{Listener, UnixPlace};
use services::Shutdown;

/// What a Go plugin prints when its cookie is missing or wrong.
pub const NOT_A_PLUGIN_MESSAGE: &str = "This binary is a plugin. These are not meant to be executed directly.\nPlease execute the program that consumes these plugins, which will\nload any plugins automatically\n";

/// What a Go plugin prints when its own handshake has no cookie.
pub const MISCONFIGURED_MESSAGE: &str = "Misconfigured ServeConfig given to serve this plugin: no magic cookie\nkey or value was set. Please notify the plugin author and report\nthis as a bug.\n";

/// How long in-flight calls get to finish once shutdown was asked for, before the server is
/// dropped (a Go host kills the plugin 2 s after asking).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Builds the application's services for one protocol version; it receives the plugin's end
/// of the broker, so a service can dial the host's callbacks.
pub type RoutesFactory = Arc<dyn Fn(&Broker) -> Routes + Send + Sync>;

/// How to serve a plugin; field names follow go-plugin's `ServeConfig`.
#[derive(Clone)]
pub struct ServeConfig {
    handshake: HandshakeConfig,
    versions: BTreeMap<u32, RoutesFactory>,
    tls: Option<(Arc<rustls::ServerConfig>, Option<Arc<rustls::ClientConfig>>)>,
    tcp: bool,
    logger: Option<tracing::Level>,
}

impl ServeConfig {
    /// Serves with `handshake` (its cookie is checked; its `protocol_version` is the version
    /// [`ServeConfig::service`] registers).
    pub fn new(handshake: HandshakeConfig) -> ServeConfig {
        ServeConfig {
            handshake,
            versions: BTreeMap::new(),
            tls: None,
            tcp: false,
            logger: Some(tracing::Level::TRACE),
        }
    }

    /// The services of the handshake's protocol version (go-plugin's `Plugins`).
    pub fn service(self, factory: impl Fn(&Broker) -> Routes + Send + Sync + 'static) -> Self {
        let version = self.handshake.protocol_version;
        self.versioned(version, factory)
    }

    /// The services of application protocol `version` (go-plugin's `VersionedPlugins`); the
    /// highest version the host also offers is served.
    pub fn versioned(
        mut self,
        version: u32,
        factory: impl Fn(&Broker) -> Routes + Send + Sync + 'static,
    ) -> Self {
        self.versions.insert(version, Arc::new(factory));
        self
    }

    /// Serves with this TLS configuration instead of AutoMTLS (go-plugin's `TLSProvider`);
    /// `client` is used to dial the host's broker services. Its ALPN should include `h2`.
    pub fn tls_provider(
        mut self,
        server: Arc<rustls::ServerConfig>,
        client: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        self.tls = Some((server, client));
        self
    }

    /// Listens on TCP 127.0.0.1 in the host's port range instead of a Unix socket.
    /// Default: off (Unix socket, as a Go plugin on Unix).
    pub fn tcp(mut self, on: bool) -> Self {
        self.tcp = on;
        self
    }

    /// The level of the hclog logger [`serve`] installs as the global `tracing` subscriber,
    /// or `None` to install none (the program sets up its own). Default: trace, as Go.
    /// Events of the RPC stack's own crates (h2, hyper, tonic, tower, rustls) are kept to
    /// warnings.
    pub fn logger(mut self, level: Option<tracing::Level>) -> Self {
        self.logger = level;
        self
    }

    fn check(&self) -> Result<()> {
        if self.versions.is_empty() {
            return Err(Error::Serve {
                reason: "no services were configured (ServeConfig::service or ::versioned)"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("handshake", &self.handshake)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("tls_provider", &self.tls.is_some())
            .field("tcp", &self.tcp)
            .field("logger", &self.logger)
            .finish()
    }
}

/// Serves the plugin until the host shuts it down (or SIGTERM); see the module docs.
///
/// A missing or wrong cookie, or a handshake without one, prints go-plugin's message and
/// exits the process with status 1, as a Go plugin does. Other problems before the
/// handshake ([`Error::ClientCert`], [`Error::Listen`], [`Error::SocketPath`],
/// [`Error::Serve`]) are returned, for the program to report and exit non-zero.
pub async fn serve(config: ServeConfig) -> Result<()> {
    check_cookie(&config.handshake);
    config.check()?;
    let version = negotiate(&config);
    if let Some(level) = config.logger {
        install_logger(level);
    }
    let tls = tls_from_env(&config)?;
    let place = UnixPlace::from_env()?;
    let listener = if config.tcp {
        Listener::tcp_from_env().await?
    } else {
        Listener::unix(&place)?
    };
    let address = listener.address()?;
    let shutdown = Shutdown::new();
    let (chunks_in, chunks) = mpsc::channel(1);
    let server = Server::build(&config, version, &tls, place, chunks, shutdown.clone())?;
    // Registered before the handshake line: from then on the host may signal this process.
    let signals = Signals::register();
    print_handshake(version, &address, tls.cert.as_ref())?;

    let mut tasks = tokio::task::JoinSet::new();
    let redirect = match redirect::Redirect::start() {
        Ok((redirect, readers)) => {
            tasks.spawn(services::pump(
                readers.stdout,
                stdio_data::Channel::Stdout,
                chunks_in.clone(),
            ));
            tasks.spawn(services::pump(
                readers.stderr,
                stdio_data::Channel::Stderr,
                chunks_in,
            ));
            Some(redirect)
        }
        Err(error) => {
            tracing::warn!(target: "plinth::serve", %error, "cannot redirect stdout and stderr; they are not synced to the host");
            None
        }
    };
    if let Some(signals) = signals {
        tasks.spawn(signals.handle(shutdown.clone()));
    }
    tracing::debug!(target: "plinth::serve", %address, version, "plugin serving");
    let outcome = server.run(listener, tls.server, shutdown).await;
    drop(redirect);
    tasks.abort_all();
    outcome
}

/// [`serve`] on a new multi-threaded tokio runtime, for a plain `fn main`.
pub fn serve_blocking(config: ServeConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "cannot start the tokio runtime".to_owned(),
            source,
        })?;
    let outcome = runtime.block_on(serve(config));
    // Do not wait for stray blocking work: the host expects a prompt exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    outcome
}

fn check_cookie(handshake: &HandshakeConfig) {
    let fail = |message: &str| -> ! {
        let _ = std::io::stderr().write_all(message.as_bytes());
        std::process::exit(1);
    };
    if handshake.magic_cookie_key.is_empty() || handshake.magic_cookie_value.is_empty() {
        fail(MISCONFIGURED_MESSAGE);
    }
    let value = std::env::var_os(&handshake.magic_cookie_key);
    if value.as_deref() != Some(std::ffi::OsStr::new(&handshake.magic_cookie_value)) {
        fail(NOT_A_PLUGIN_MESSAGE);
    }
}

/// The version to serve: the highest the host also offers, else our lowest (the host then
/// reports the mismatch) — after saying so on stderr, with both sides' versions.
fn negotiate(config: &ServeConfig) -> u32 {
    let offered = std::env::var(env::PROTOCOL_VERSIONS).unwrap_or_default();
    let (host, invalid) = handshake::decode_versions(&offered);
    let mut stderr = std::io::stderr();
    for piece in invalid {
        // Go's text (Go omits the newline, which glues the next line to it).
        let _ = writeln!(stderr, "server sent invalid plugin version {piece:?}");
    }
    let ours: Vec<u32> = config.versions.keys().copied().collect();
    let chosen = handshake::negotiate(&ours, &host).unwrap_or(config.handshake.protocol_version);
    if !host.contains(&chosen) {
        let _ = writeln!(
            stderr,
            "[ERROR] plugin: no application protocol version in common: this plugin serves {ours:?}, the host offered {host:?} ({}={offered:?}); answering with version {chosen}, which the host will refuse",
            env::PROTOCOL_VERSIONS
        );
    }
    chosen
}

fn install_logger(level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};
    let Ok(layer) = hclog::HclogLayer::stderr() else {
        return;
    };
    let quiet = tracing::Level::WARN.min(level);
    let filter = filter::Targets::new()
        .with_default(level)
        .with_target("h2", quiet)
        .with_target("hyper", quiet)
        .with_target("hyper_util", quiet)
        .with_target("tonic", quiet)
        .with_target("tower", quiet)
        .with_target("rustls", quiet)
        .with_target("tokio_rustls", quiet);
    // A subscriber the program installed itself wins.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// The plugin's TLS material.
#[derive(Default)]
struct Tls {
    server: Option<Arc<rustls::ServerConfig>>,
    client: Option<Arc<rustls::ClientConfig>>,
    /// Our certificate for the handshake line (AutoMTLS only).
    cert: Option<CertificateDer<'static>>,
}

fn tls_from_env(config: &ServeConfig) -> Result<Tls> {
    if let Some((server, client)) = &config.tls {
        return Ok(Tls {
            server: Some(server.clone()),
            client: client.clone(),
            cert: None,
        });
    }
    let pem = match std::env::var(env::CLIENT_CERT) {
        Ok(pem) if !pem.is_empty() => pem,
        _ => return Ok(Tls::default()),
    };
    let host =
        crate::transport::parse_pem_cert(&pem).map_err(|reason| Error::ClientCert { reason })?;
    let identity = Identity::generate().map_err(|reason| Error::Serve { reason })?;
    let server = identity
        .server_config(host.clone())
        .map_err(|reason| Error::ClientCert { reason })?;
    let client = identity
        .client_config(host)
        .map_err(|reason| Error::ClientCert { reason })?;
    Ok(Tls {
        server: Some(server),
        client: Some(client),
        cert: Some(identity.cert_der().clone()),
    })
}

fn print_handshake(
    version: u32,
    address: &Address,
    cert: Option<&CertificateDer<'static>>,
) -> Result<()> {
    let line = HandshakeLine {
        app_version: version,
        address: address.clone(),
        protocol: Protocol::Grpc,
        server_cert: cert.map(|der| der.to_vec()),
        // Not supported on this side; see the module docs.
        multiplex: false,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Io {
            context: "cannot print the handshake line".to_owned(),
            source,
        })
}

/// The plugin's handlers for SIGINT and SIGTERM.
///
/// SIGINT is ignored (a terminal's Ctrl-C reaches host and plugin alike; the host stops the
/// plugin); SIGTERM shuts down cleanly.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs both handlers now, so that no signal sent after this returns takes the default
    /// action; `None` (with a warning) when the process cannot install them.
    fn register() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Some(Signals {
                interrupt,
                terminate,
            }),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(target: "plinth::serve", %error, "cannot handle SIGINT and SIGTERM");
                None
            }
        }
    }

    async fn handle(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => {
                    tracing::trace!(target: "plinth::serve", "plugin received interrupt signal, ignoring");
                }
                _ = self.terminate.recv() => {
                    tracing::debug!(target: "plinth::serve", "plugin received SIGTERM, shutting down");
                    shutdown.trigger();
                    return;
                }
            }
        }
    }
}

/// The gRPC server with every service, ready to run.
struct Server {
    routes: Routes,
    broker: Broker,
}

impl Server {
    fn build(
        config: &ServeConfig,
        version: u32,
        tls: &Tls,
        place: UnixPlace,
        chunks: mpsc::Receiver<crate::proto::plugin::StdioData>,
        shutdown: Shutdown,
    ) -> Result<Server> {
        let factory = config
            .versions
            .get(&version)
            .or_else(|| config.versions.values().next())
            .ok_or_else(|| Error::Serve {
                reason: "no services were configured".to_owned(),
            })?;
        let (broker, outgoing) = Broker::serving(tls.client.clone(), tls.server.clone(), place);
        let routes = factory(&broker)
            .add_service(HealthServer::new(services::HealthService {
                shutdown: shutdown.clone(),
            }))
            .add_service(GrpcControllerServer::new(services::ControllerService {
                shutdown: shutdown.clone(),
            }))
            .add_service(GrpcStdioServer::new(services::StdioService {
                chunks: Arc::new(Mutex::new(chunks)),
                shutdown: shutdown.clone(),
            }))
            .add_service(GrpcBrokerServer::new(services::BrokerService {
                broker: broker.clone(),
                outgoing: Arc::new(Mutex::new(outgoing)),
                shutdown,
            }));
        Ok(Server { routes, broker })
    }

    /// Serves until `shutdown` fires, then gives in-flight calls [`SHUTDOWN_GRACE`].
    async fn run(
        self,
        listener: Listener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: Shutdown,
    ) -> Result<()> {
        let incoming = listener::incoming(listener, tls);
        let serving = tonic::transport::Server::builder()
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, shutdown.wait());
        let deadline = {
            let stop = shutdown.wait();
            async move {
                stop.await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        };
        let outcome = tokio::select! {
            served = serving => served.map_err(|error| Error::Serve {
                reason: format!("the gRPC server failed: {}", crate::transport::describe(&error)),
            }),
            () = deadline => Ok(()),
        };
        self.broker.close();
        outcome
    }
}

/// A plugin served in-process by [`serve_test`], and a host connection to it. Dropping it
/// stops the plugin.
pub struct TestServer {
    connection: Connection,
    reattach: ReattachConfig,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// The host's connection to the plugin (built with `Config::reattach` in test mode).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// What another host (say, one under test) needs to attach to the plugin.
    pub fn reattach_config(&self) -> &ReattachConfig {
        &self.reattach
    }

    /// Stops the plugin and waits for its server to end.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.trigger();
        match self.task.take() {
            Some(task) => task.await.map_err(|error| Error::Serve {
                reason: format!("the plugin's server task failed: {error}"),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("reattach", &self.reattach)
            .finish_non_exhaustive()
    }
}

/// Serves `config` in this process, go-plugin's test mode: no cookie check, no handshake
/// line, no stdio redirect, no logger, no signal handling, plaintext on a Unix socket in a
/// fresh temporary directory; the highest configured version is served. Returns once a host
/// [`Connection`] (reattached with `test` set, so it never kills anything) is connected.
pub async fn serve_test(config: ServeConfig) -> Result<TestServer> {
    config.check()?;
    let version = config
        .versions
        .keys()
        .next_back()
        .copied()
        .unwrap_or(config.handshake.protocol_version);
    let dir = tempfile::Builder::new()
        .prefix("plinth-test-")
        .tempdir()
        .map_err(|source| Error::Io {
            context: "cannot create the test plugin's socket directory".to_owned(),
            source,
        })?;
    let place = UnixPlace::in_dir(dir.path());
    let listener = Listener::unix(&place)?;
    let address = listener.address()?;
    let shutdown = Shutdown::new();
    let (_, chunks) = mpsc::channel(1);
    let server = Server::build(
        &config,
        version,
        &Tls::default(),
        place,
        chunks,
        shutdown.clone(),
    )?;
    let task = tokio::spawn(server.run(listener, None, shutdown.clone()));
    let mut reattach = ReattachConfig::new(&address, Protocol::Grpc, version, std::process::id());
    reattach.test = true;
    let connection = Connection::start(
        Config::reattach(reattach.clone())
            .name("test plugin")
            .versions([version]),
    )
    .await;
    let connection = match connection {
        Ok(connection) => connection,
        Err(error) => {
            shutdown.trigger();
            task.abort();
            return Err(error);
        }
    };
    Ok(TestServer {
        connection,
        reattach,
        shutdown,
        task: Some(task),
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::health::HealthCheckRequest;
    use crate::proto::health::health_client::HealthClient;

    fn health_routes(shutdown: &Shutdown) -> Routes {
        Routes::new(HealthServer::new(services::HealthService {
            shutdown: shutdown.clone(),
        }))
    }

    async fn check(channel: crate::transport::PluginChannel, service: &str) -> tonic::Code {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    }

    #[tokio::test]
    async fn serve_test_connects_a_host_that_pings_and_brokers_both_ways() {
        let plugin_broker = Arc::new(std::sync::OnceLock::<Broker>::new());
        let slot = plugin_broker.clone();
        let config =
            ServeConfig::new(HandshakeConfig::new(1, "K", "V")).versioned(3, move |broker| {
                let _ = slot.set(broker.clone());
                Routes::default()
            });
        let server = serve_test(config).await.unwrap();
        let host = server.connection().clone();
        assert_eq!(host.negotiated_version(), 3);
        host.ping().await.expect("plugin is serving");
        assert_eq!(check(host.channel().unwrap(), "").await, tonic::Code::Ok);
        assert_eq!(
            check(host.channel().unwrap(), "other").await,
            tonic::Code::NotFound
        );

        let plugin = plugin_broker.get().unwrap().clone();
        let shutdown = Shutdown::new();
        // The plugin offers a service; the host dials it.
        let id = plugin.next_id();
        let _offered = plugin
            .accept_and_serve(id, health_routes(&shutdown))
            .await
            .unwrap();
        let channel = host
            .broker()
            .unwrap()
            .dial(id)
            .await
            .expect("host dials the plugin's id");
        assert_eq!(check(channel, "plugin").await, tonic::Code::Ok);
        // The host offers one; the plugin dials it.
        let id = host.broker().unwrap().next_id();
        let _offered = host
            .broker()
            .unwrap()
            .accept_and_serve(id, health_routes(&shutdown))
            .await
            .unwrap();
        let channel = plugin.dial(id).await.expect("plugin dials the host's id");
        assert_eq!(check(channel, "plugin").await, tonic::Code::Ok);
        // Nobody announced 99: the dial gives up after the window with a clear error.
        let missing = plugin.dial(99).await.unwrap_err().to_string();
        assert!(missing.contains("host did not announce it"), "{missing}");

        let socket = match &server.reattach_config().address().unwrap() {
            Address::Unix(path) => path.clone(),
            other => panic!("{other:?}"),
        };
        tokio::time::timeout(Duration::from_secs(3), server.stop())
            .await
            .expect("stops promptly")
            .unwrap();
        assert!(!socket.exists(), "the socket file is removed");
    }

    #[tokio::test]
    async fn controller_shutdown_answers_then_stops_the_server() {
        let config =
            ServeConfig::new(HandshakeConfig::new(1, "K", "V")).service(|_| Routes::default());
        let mut server = serve_test(config).await.unwrap();
        let mut controller =
            crate::proto::plugin::grpc_controller_client::GrpcControllerClient::new(
                server.connection().channel().unwrap(),
            );
        controller
            .shutdown(crate::proto::plugin::Empty {})
            .await
            .expect("Shutdown is answered");
        let task = server.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the server ends within the grace period")
            .unwrap()
            .unwrap();
    }
}
