//! One go-plugin plugin as the host sees it: [`Config`] says how to launch (or reattach to) it,
//! [`Connection`] is the running plugin — process, gRPC channel and broker (or netrpc session),
//! stdio — until killed.
//!
//! Starting follows a Go host step by step: check the executable's checksum, build the
//! environment (host environment without stale `PLUGIN_*` variables, then the cookie, port
//! range, versions, AutoMTLS certificate and multiplex flag), spawn, read the first stdout line
//! within the start timeout, validate it, dial, and open the broker and stdio streams at once.
//! Killing asks the controller to shut down, waits the grace period (2 s), then SIGKILLs; the
//! child is always reaped, and what it started is ended with it (see `child.rs`).

use crate::lock;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::transport::PluginChannel;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auto_mtls::AutoMtls;
use crate::broker::Broker;
use crate::error::{ConnectStep, Error, Result};
use crate::handshake::{self, Address, HandshakeConfig, HandshakeError, HandshakeLine, Protocol};
use crate::mux::Mux;
use crate::netrpc::{self, CallError};
use crate::process::{Process, Spawn};
use crate::reattach::{self, ReattachConfig};
use crate::stdio::StdioSinks;
use crate::transport::{self, Identity};
use crate::{controller, health, stdio};

/// The default start timeout (go-plugin's).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// The default grace period between asking a plugin to stop and killing it (go-plugin's).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
enum Source {
    Command { path: PathBuf, args: Vec<OsString> },
    Reattach(ReattachConfig),
}

/// How to launch or reattach to a go-plugin plugin; field names follow go-plugin's
/// `ClientConfig`.
#[derive(Clone, Debug)]
pub struct Config {
    source: Source,
    name: Option<String>,
    handshake: HandshakeConfig,
    versions: Vec<u32>,
    allowed_protocols: Vec<Protocol>,
    auto_mtls: Option<AutoMtls>,
    tls: Option<Arc<rustls::ClientConfig>>,
    multiplex: bool,
    start_timeout: Duration,
    kill_grace: Duration,
    ports: (u16, u16),
    checksum: Option<[u8; 32]>,
    inherit_stdin: bool,
    skip_host_env: bool,
    env: Vec<(OsString, OsString)>,
    stdio: StdioSinks,
    managed: bool,
}

impl Config {
    /// Launches the executable at `path`.
    pub fn command(path: impl Into<PathBuf>) -> Config {
        Config::from_source(Source::Command {
            path: path.into(),
            args: Vec::new(),
        })
    }

    /// Connects to an already running plugin.
    pub fn reattach(config: ReattachConfig) -> Config {
        Config::from_source(Source::Reattach(config))
    }

    fn from_source(source: Source) -> Config {
        Config {
            source,
            name: None,
            handshake: HandshakeConfig::new(1, "", ""),
            versions: Vec::new(),
            allowed_protocols: vec![Protocol::Grpc],
            auto_mtls: None,
            tls: None,
            multiplex: false,
            start_timeout: DEFAULT_START_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            ports: (10000, 25000),
            checksum: None,
            inherit_stdin: false,
            skip_host_env: false,
            env: Vec::new(),
            stdio: StdioSinks::default(),
            managed: false,
        }
    }

    /// Arguments for the executable.
    pub fn args<I: Into<OsString>>(mut self, args: impl IntoIterator<Item = I>) -> Config {
        if let Source::Command { args: list, .. } = &mut self.source {
            list.extend(args.into_iter().map(Into::into));
        }
        self
    }

    /// The plugin's name in logs and errors. Default: the executable's file name.
    pub fn name(mut self, name: impl Into<String>) -> Config {
        self.name = Some(name.into());
        self
    }

    /// The handshake (cookie and base protocol version). Required for launching.
    pub fn handshake(mut self, handshake: HandshakeConfig) -> Config {
        self.handshake = handshake;
        self
    }

    /// The application protocol versions the host supports (go-plugin's `VersionedPlugins`
    /// keys). Default: the handshake's `protocol_version` alone.
    pub fn versions(mut self, versions: impl IntoIterator<Item = u32>) -> Config {
        self.versions = versions.into_iter().collect();
        self
    }

    /// The RPC protocols the host accepts (go-plugin's `AllowedProtocols`). Default: gRPC only
    /// (a Go host defaults to netrpc only); add [`Protocol::NetRpc`] to load legacy plugins.
    pub fn allowed_protocols(mut self, protocols: impl IntoIterator<Item = Protocol>) -> Config {
        self.allowed_protocols = protocols.into_iter().collect();
        self
    }

    /// Whether fresh certificates are offered to a launched plugin for mutual TLS, and what
    /// happens when it answers without one (go-plugin's `AutoMTLS`; see [`AutoMtls`] for what
    /// each policy means for security). Default: [`AutoMtls::Prefer`] (go-plugin's default is
    /// off), or [`AutoMtls::Off`] when [`Config::tls`] is given.
    ///
    /// Launching with [`Config::tls`] and a policy that offers a certificate is an
    /// [`Error::Config`]: the two exclude each other. When reattaching, [`AutoMtls::Require`]
    /// means that the plugin must be reached over the [`Config::tls`] configuration.
    pub fn auto_mtls(mut self, policy: AutoMtls) -> Config {
        self.auto_mtls = Some(policy);
        self
    }

    /// Dials with this TLS configuration (go-plugin's `TLSConfig`), for plugins whose TLS is
    /// set up out of band, instead of AutoMTLS. Its ALPN should include `h2`.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Config {
        self.tls = Some(config);
        self
    }

    /// Asks for the multiplexed broker (go-plugin's `GRPCBrokerMultiplex`); a plugin that
    /// does not support it is refused. Default: off.
    pub fn multiplex(mut self, on: bool) -> Config {
        self.multiplex = on;
        self
    }

    /// How long the plugin has to print its handshake line, and then again how long connecting
    /// to it may take (dialing, TLS, and the HTTP/2 handshake up to its answer to a ping).
    /// Default: 1 minute.
    pub fn start_timeout(mut self, timeout: Duration) -> Config {
        self.start_timeout = timeout;
        self
    }

    /// How long a killed plugin has to exit after the shutdown request before it gets
    /// SIGKILL. Default: 2 seconds.
    pub fn kill_grace(mut self, grace: Duration) -> Config {
        self.kill_grace = grace;
        self
    }

    /// The TCP port range the plugin may listen in. Default: 10000..=25000.
    pub fn ports(mut self, min: u16, max: u16) -> Config {
        self.ports = (min, max);
        self
    }

    /// Refuses to start an executable whose sha256 is not `sha256` (go-plugin's
    /// `SecureConfig`).
    pub fn checksum(mut self, sha256: [u8; 32]) -> Config {
        self.checksum = Some(sha256);
        self
    }

    /// Gives the plugin the host's stdin (so a plugin can use the terminal). Default: off (the
    /// plugin's stdin is empty).
    pub fn inherit_stdin(mut self, on: bool) -> Config {
        self.inherit_stdin = on;
        self
    }

    /// Starts the plugin without the host's environment (go-plugin's `SkipHostEnv`).
    pub fn skip_host_env(mut self, on: bool) -> Config {
        self.skip_host_env = on;
        self
    }

    /// Sets an environment variable for the plugin.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Config {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the plugin's synced stdout and stderr go (go-plugin's `SyncStdout`/`SyncStderr`).
    pub fn stdio(mut self, sinks: StdioSinks) -> Config {
        self.stdio = sinks;
        self
    }

    /// Registers the plugin for [`cleanup_clients`] (go-plugin's `Managed`).
    pub fn managed(mut self, on: bool) -> Config {
        self.managed = on;
        self
    }

    /// The AutoMTLS policy in force: the one set, else the default for the TLS settings.
    fn auto_mtls_policy(&self) -> AutoMtls {
        match (self.auto_mtls, &self.tls) {
            (Some(policy), _) => policy,
            (None, Some(_)) => AutoMtls::Off,
            (None, None) => AutoMtls::Prefer,
        }
    }

    fn offered_versions(&self) -> Vec<u32> {
        if self.versions.is_empty() {
            vec![self.handshake.protocol_version]
        } else {
            self.versions.clone()
        }
    }

    fn plugin_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.source {
            Source::Command { path, .. } => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            Source::Reattach(config) => format!("pid {}", config.pid),
        }
    }
}

/// A running go-plugin plugin: its process (when launched) and its gRPC channel and broker, or
/// for a `netrpc` plugin its yamux session.
///
/// Clones share the plugin. It is killed by [`Connection::kill`], or when the last clone is
/// dropped (a launched plugin; a reattached one is left running).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    wire: Wire,
    version: u32,
    protocol: Protocol,
    address: Address,
    handshake: HandshakeLine,
    tls: bool,
    owner: Owner,
    exit: watch::Receiver<Option<String>>,
    killed: AtomicBool,
    kill_grace: Duration,
    tasks: Mutex<JoinSet<()>>,
}

/// The RPC connection, by protocol.
#[derive(Clone)]
enum Wire {
    Grpc {
        channel: PluginChannel,
        broker: Broker,
    },
    NetRpc(Arc<netrpc::Session>),
}

impl Wire {
    /// Asks the plugin to exit: the gRPC controller's `Shutdown`, or netrpc's `Control.Quit`.
    async fn shutdown(&self, grace: Duration) {
        match self {
            Wire::Grpc { channel, .. } => {
                controller::shutdown(channel.clone(), grace).await;
            }
            Wire::NetRpc(session) => session.quit(grace).await,
        }
    }
}

enum Owner {
    /// We launched it.
    Launched(Process),
    /// Someone else did; `test` plugins are never killed.
    Reattached { pid: u32, test: bool },
}

impl Connection {
    /// Launches (or reattaches to) the plugin and connects to it.
    ///
    /// Fails with [`Error::ChecksumMismatch`], [`Error::Spawn`],
    /// [`Error::ExitedBeforeHandshake`], [`Error::StartTimeout`], [`Error::Handshake`],
    /// [`Error::VersionMismatch`], [`Error::UnsupportedProtocol`],
    /// [`Error::AutoMtlsUnsupported`], [`Error::UnexpectedCertificate`], [`Error::Tls`],
    /// [`Error::Connect`], [`Error::ConnectTimeout`] or [`Error::Reattach`]; a launched process
    /// is killed and reaped on every failure.
    pub async fn start(config: Config) -> Result<Connection> {
        let connection = match config.source.clone() {
            Source::Command { path, args } => launch(&config, path, args).await?,
            Source::Reattach(reattach) => attach(&config, reattach).await?,
        };
        if config.managed {
            registry().push(Arc::downgrade(&connection.inner));
        }
        Ok(connection)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The gRPC channel to the plugin's services. Build clients with
    /// [`MAX_MESSAGE_SIZE`](crate::transport::MAX_MESSAGE_SIZE) as their limits to match Go.
    ///
    /// Fails with [`Error::WrongProtocol`] for a `netrpc` plugin.
    pub fn channel(&self) -> Result<PluginChannel> {
        match &self.inner.wire {
            Wire::Grpc { channel, .. } => Ok(channel.clone()),
            Wire::NetRpc(_) => Err(self.wrong_protocol("a gRPC channel", Protocol::Grpc)),
        }
    }

    /// The broker, for connections beyond the main one. Fails with [`Error::WrongProtocol`]
    /// for a `netrpc` plugin (whose broker is [`netrpc::Session::dial`]).
    pub fn broker(&self) -> Result<&Broker> {
        match &self.inner.wire {
            Wire::Grpc { broker, .. } => Ok(broker),
            Wire::NetRpc(_) => Err(self.wrong_protocol("the gRPC broker", Protocol::Grpc)),
        }
    }

    /// The `netrpc` session. Fails with [`Error::WrongProtocol`] for a gRPC plugin.
    pub fn netrpc(&self) -> Result<&netrpc::Session> {
        match &self.inner.wire {
            Wire::NetRpc(session) => Ok(session),
            Wire::Grpc { .. } => Err(self.wrong_protocol("a netrpc session", Protocol::NetRpc)),
        }
    }

    fn wrong_protocol(&self, operation: &'static str, needed: Protocol) -> Error {
        Error::WrongProtocol {
            plugin: self.name().to_owned(),
            found: self.inner.protocol,
            needed,
            operation,
        }
    }

    /// The application protocol version both sides agreed on.
    pub fn negotiated_version(&self) -> u32 {
        self.inner.version
    }

    /// The RPC protocol the plugin speaks.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Where the plugin listens.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The handshake line as the plugin printed it, parsed (for a reattached plugin, what the
    /// reattach configuration said: no certificate, no multiplexing).
    pub fn handshake(&self) -> &HandshakeLine {
        &self.inner.handshake
    }

    /// Whether the connection to the plugin runs over TLS (AutoMTLS or an explicit
    /// configuration). Under [`AutoMtls::Prefer`], `false` means the plugin did not take up
    /// the certificate it was offered and the connection is plaintext.
    pub fn tls(&self) -> bool {
        self.inner.tls
    }

    /// The plugin's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        match &self.inner.owner {
            Owner::Launched(process) => Some(process.pid()),
            Owner::Reattached { pid, .. } => Some(*pid),
        }
    }

    /// What another host needs to attach to this plugin.
    pub fn reattach_config(&self) -> ReattachConfig {
        ReattachConfig::new(
            &self.inner.address,
            self.inner.protocol,
            self.inner.version,
            self.pid().unwrap_or_default(),
        )
    }

    /// Checks that the plugin answers: its gRPC health service, or netrpc's `Control.Ping`
    /// (go-plugin's `Ping`).
    pub async fn ping(&self) -> Result<()> {
        let channel = match &self.inner.wire {
            Wire::Grpc { channel, .. } => channel.clone(),
            Wire::NetRpc(session) => {
                return match session.ping().await {
                    Ok(()) => Ok(()),
                    Err(error) => Err(self.netrpc_error("Control.Ping", error).await),
                };
            }
        };
        match health::check(channel).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Rpc {
                plugin: self.name().to_owned(),
                method: "/grpc.health.v1.Health/Check".to_owned(),
                status: Box::new(tonic::Status::unavailable("the plugin is not serving")),
            }),
            Err(status) => Err(self.rpc_error("/grpc.health.v1.Health/Check", status).await),
        }
    }

    /// Turns a failed call's status into an error: [`Error::Killed`] after a kill,
    /// [`Error::Exited`] when the process died (checked for a short moment, since the
    /// broken connection is usually seen before the exit), else [`Error::Rpc`].
    pub async fn rpc_error(&self, method: &str, status: tonic::Status) -> Error {
        if self.inner.killed.load(Ordering::Acquire) {
            return Error::Killed {
                plugin: self.name().to_owned(),
            };
        }
        // A status the plugin sent carries no source; one made from a broken connection does,
        // or says the connection was not ready.
        let transport_failure = status.code() == tonic::Code::Unavailable
            || std::error::Error::source(&status).is_some()
            || status.message().starts_with("Service was not ready");
        let already_exited = self.inner.exit.borrow().is_some();
        if (transport_failure || already_exited)
            && let Some(exited) = self.exit_error().await
        {
            return exited;
        }
        Error::Rpc {
            plugin: self.name().to_owned(),
            method: method.to_owned(),
            status: Box::new(status),
        }
    }

    /// Turns a failed netrpc call into an error: [`Error::Killed`] after a kill,
    /// [`Error::Exited`] when the stream broke because the process died, else
    /// [`Error::NetRpc`].
    pub async fn netrpc_error(&self, method: &str, error: CallError) -> Error {
        if self.inner.killed.load(Ordering::Acquire) {
            return Error::Killed {
                plugin: self.name().to_owned(),
            };
        }
        if matches!(error, CallError::Broken(_))
            && let Some(exited) = self.exit_error().await
        {
            return exited;
        }
        Error::NetRpc {
            plugin: self.name().to_owned(),
            method: method.to_owned(),
            reason: error,
        }
    }

    /// [`Error::Exited`] if the process exits within a short moment: a broken connection is
    /// usually seen before the exit.
    async fn exit_error(&self) -> Option<Error> {
        let mut exit = self.inner.exit.clone();
        let status =
            tokio::time::timeout(Duration::from_millis(500), exit.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|status| status.ok().and_then(|status| status.clone()))?;
        Some(Error::Exited {
            plugin: self.name().to_owned(),
            status,
            stderr: self.stderr_tail().await,
        })
    }

    async fn stderr_tail(&self) -> String {
        match &self.inner.owner {
            Owner::Launched(process) => process.stderr_tail().await,
            Owner::Reattached { .. } => String::new(),
        }
    }

    /// How the plugin exited, once it has (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub fn exit_status(&self) -> Option<String> {
        self.inner.exit.borrow().clone()
    }

    /// Whether the plugin process has exited (or, after [`Connection::kill`], was let go).
    pub fn exited(&self) -> bool {
        self.inner.exit.borrow().is_some()
    }

    /// Waits until the plugin exits and returns how.
    pub async fn wait(&self) -> String {
        let mut exit = self.inner.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "unknown".to_owned(),
        }
    }

    /// Whether [`Connection::kill`] was called.
    pub fn killed(&self) -> bool {
        self.inner.killed.load(Ordering::Acquire)
    }

    /// Stops the plugin as go-plugin's `Kill` does: close the broker, ask the controller to
    /// shut down, wait the grace period for the process to exit, then SIGKILL it. Either way
    /// the processes it started (its process group, and its cgroup where the host may have
    /// one) are SIGKILLed before it is reaped. A plugin reattached in test mode is only
    /// disconnected, and a reattached one is not this host's child: only its own pid is
    /// signalled. Calling it again does nothing.
    pub async fn kill(&self) {
        self.inner.kill().await;
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.inner.name)
            .field("address", &self.inner.address)
            .field("protocol", &self.inner.protocol)
            .field("version", &self.inner.version)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Inner {
    async fn kill(&self) {
        if self.killed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Wire::Grpc { broker, .. } = &self.wire {
            broker.close();
        }
        match &self.owner {
            Owner::Reattached { test: true, .. } => {}
            Owner::Launched(process) => {
                if process.exit_status().is_none() {
                    self.wire.shutdown(self.kill_grace).await;
                    if process.wait_timeout(self.kill_grace).await.is_none() {
                        tracing::warn!(plugin = %self.name, "plugin failed to exit gracefully");
                        process.kill();
                        process.wait().await;
                    }
                }
                process.remove_socket_dir();
                tracing::debug!(plugin = %self.name, status = ?process.exit_status(), "plugin exited");
            }
            Owner::Reattached { pid, test: false } => {
                self.wire.shutdown(self.kill_grace).await;
                let mut exit = self.exit.clone();
                let exited =
                    tokio::time::timeout(self.kill_grace, exit.wait_for(Option::is_some)).await;
                if exited.is_err() {
                    reattach::kill_process(*pid);
                }
            }
        }
        if let Wire::NetRpc(session) = &self.wire {
            session.close().await;
        }
        lock(&self.tasks).abort_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.tasks).abort_all();
        if self.killed.load(Ordering::Acquire) {
            return;
        }
        // A launched process is killed and reaped by its waiter when `Process` drops. When a
        // runtime is at hand, the process moves into a task that first asks for a clean
        // shutdown and waits the grace period, so the plugin can tidy up.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let placeholder = Owner::Reattached { pid: 0, test: true };
        if let Owner::Launched(process) = std::mem::replace(&mut self.owner, placeholder) {
            if process.exit_status().is_some() {
                return;
            }
            let wire = self.wire.clone();
            let grace = self.kill_grace;
            runtime.spawn(async move {
                wire.shutdown(grace).await;
                process.wait_timeout(grace).await;
                // Dropping `process` kills it if it is still running.
            });
        }
    }
}

async fn launch(config: &Config, path: PathBuf, args: Vec<OsString>) -> Result<Connection> {
    let name: Arc<str> = config.plugin_name().into();
    validate(config)?;
    if let Some(expected) = config.checksum {
        verify_checksum(&path, expected).await?;
    }
    let identity = if config.auto_mtls_policy().offered() {
        Some(Identity::generate().map_err(|reason| Error::Tls {
            plugin: name.to_string(),
            reason,
        })?)
    } else {
        None
    };
    let offered = config.offered_versions();
    let mut env = environment(config, std::env::vars_os(), &offered, identity.as_ref());
    // Go plugins put their socket in PLUGIN_UNIX_SOCKET_DIR when it is set: a directory only
    // this user can enter keeps other local users away from the socket, and goes with the
    // process.
    let socket_dir = tempfile::Builder::new()
        .prefix("plinth-plugin-")
        .permissions(private_dir())
        .tempdir()
        .map_err(|source| Error::Io {
            context: "cannot create the plugin's socket directory".to_owned(),
            source,
        })?;
    env.push((
        handshake::env::UNIX_SOCKET_DIR.into(),
        socket_dir.path().into(),
    ));
    let (process, stdout) = Process::spawn(Spawn {
        name: name.clone(),
        path,
        args,
        env,
        inherit_stdin: config.inherit_stdin,
        socket_dir: Some(socket_dir),
    })
    .await?;
    let mut stdout = BufReader::new(stdout);
    let line = read_handshake(&name, &process, &mut stdout, config.start_timeout).await?;
    process.drain_stdout(name.clone(), stdout);
    let handshake_error = |reason: HandshakeError, stderr: String| Error::Handshake {
        plugin: name.to_string(),
        line: cut(&line),
        reason,
        stderr,
    };
    let parsed = match HandshakeLine::parse(&line) {
        Ok(parsed) => parsed,
        Err(reason) => return Err(handshake_error(reason, process.stderr_tail().await)),
    };
    tracing::debug!(plugin = %name, handshake = %line.trim_end(), "plugin handshake");
    check_negotiation(config, &name, &parsed, &offered)?;
    if config.multiplex && !parsed.multiplex {
        return Err(handshake_error(
            HandshakeError::Multiplex {
                found: "(missing): the host asked for the multiplexed broker and the plugin does not support it".to_owned(),
            },
            String::new(),
        ));
    }
    let (tls_client, tls_server) = match tls_for(config, &name, identity.as_ref(), &parsed, &line) {
        Ok(pair) => pair,
        Err(error) => {
            // Refused before anything is dialed: the plugin is gone when the error is returned.
            process.kill();
            process.wait().await;
            return Err(error);
        }
    };
    let exit = process.exit_watch();
    let owner = Owner::Launched(process);
    connect(config, name, parsed, tls_client, tls_server, owner, exit).await
}

async fn attach(config: &Config, reattach: ReattachConfig) -> Result<Connection> {
    let name: Arc<str> = config.plugin_name().into();
    let reattach_error = |reason: String| Error::Reattach {
        plugin: name.to_string(),
        reason,
    };
    let address = reattach.address()?;
    let protocol = reattach.protocol()?;
    if config.multiplex {
        return Err(reattach_error(
            "the multiplexed broker cannot be used with reattach".to_owned(),
        ));
    }
    if config.checksum.is_some() {
        return Err(reattach_error(
            "a checksum cannot be checked on a reattached plugin".to_owned(),
        ));
    }
    if config.auto_mtls_policy() == AutoMtls::Require && config.tls.is_none() {
        return Err(reattach_error(
            "AutoMTLS is required, but a reattached plugin's certificates were exchanged with the host that launched it: give its TLS configuration with Config::tls".to_owned(),
        ));
    }
    if reattach.pid != 0 && !reattach::process_alive(reattach.pid) {
        return Err(reattach_error(format!(
            "process {} not found",
            reattach.pid
        )));
    }
    let parsed = HandshakeLine {
        app_version: reattach.protocol_version,
        address,
        protocol,
        server_cert: None,
        multiplex: false,
    };
    check_negotiation(config, &name, &parsed, &[parsed.app_version])?;
    let (exit_sender, exit) = watch::channel(None);
    let owner = Owner::Reattached {
        pid: reattach.pid,
        test: reattach.test,
    };
    let connection = connect(config, name, parsed, config.tls.clone(), None, owner, exit)
        .await
        .map_err(|error| match error {
            Error::Connect { plugin, reason, .. } => Error::Reattach {
                plugin,
                reason: format!("the plugin is not reachable: {reason}"),
            },
            other => other,
        })?;
    // HTTP/2 connects lazily; one call proves the plugin is there and speaks our TLS (or none).
    match &connection.inner.wire {
        Wire::NetRpc(session) => {
            let answer = tokio::time::timeout(config.start_timeout, session.ping()).await;
            let reason = match answer {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("the plugin does not answer: {error}")),
                Err(_) => Some(format!(
                    "the plugin did not answer Control.Ping within {:?}",
                    config.start_timeout
                )),
            };
            if let Some(reason) = reason {
                return Err(Error::Reattach {
                    plugin: connection.name().to_owned(),
                    reason,
                });
            }
        }
        Wire::Grpc { channel, .. } => check_reattached(&connection, channel.clone()).await?,
    }
    if reattach.pid != 0 {
        let pid = reattach.pid;
        lock(&connection.inner.tasks).spawn(async move {
            // Not our child: poll for its exit, as go-plugin does.
            while reattach::process_alive(pid) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            exit_sender.send_replace(Some("exited (not a child of this host)".to_owned()));
        });
    }
    Ok(connection)
}

async fn check_reattached(connection: &Connection, channel: PluginChannel) -> Result<()> {
    if let Err(status) = health::check(channel).await
        && status.code() != tonic::Code::Unimplemented
    {
        return Err(Error::Reattach {
            plugin: connection.name().to_owned(),
            reason: format!(
                "the plugin does not answer: {}",
                transport::describe(&status)
            ),
        });
    }
    Ok(())
}

/// Permissions for a directory only this user may enter.
#[cfg(unix)]
pub(crate) fn private_dir() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o700)
}

fn validate(config: &Config) -> Result<()> {
    let reason = if config.handshake.magic_cookie_key.is_empty()
        || config.handshake.magic_cookie_value.is_empty()
    {
        Some("the handshake needs a magic cookie key and value".to_owned())
    } else if config.handshake.magic_cookie_key.contains(['=', '\0']) {
        Some("the magic cookie key must not contain `=` or NUL".to_owned())
    } else if config.ports.0 > config.ports.1 {
        Some(format!(
            "the port range {}..={} is empty",
            config.ports.0, config.ports.1
        ))
    } else if config.allowed_protocols.is_empty() {
        Some("no protocol is allowed".to_owned())
    } else if config.auto_mtls_policy().offered() && config.tls.is_some() {
        Some("AutoMTLS and an explicit TLS configuration exclude each other".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::Config { reason }),
        None => Ok(()),
    }
}

async fn verify_checksum(path: &std::path::Path, expected: [u8; 32]) -> Result<()> {
    let owned = path.to_owned();
    let actual = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hasher.finalize().into())
    })
    .await
    .map_err(|error| Error::Io {
        context: "the checksum task failed".to_owned(),
        source: std::io::Error::other(error),
    })?
    .map_err(|source| Error::ReadExecutable {
        path: path.to_owned(),
        source,
    })?;
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            path: path.to_owned(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// The child's whole environment, in go-plugin's order (later entries win).
fn environment(
    config: &Config,
    host: impl Iterator<Item = (OsString, OsString)>,
    offered: &[u32],
    identity: Option<&Identity>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if !config.skip_host_env {
        // Stale protocol variables (this host may itself run as a plugin) would make the
        // child turn on TLS or multiplexing nobody asked for.
        env.extend(host.filter(|(key, _)| !key.to_string_lossy().starts_with("PLUGIN_")));
    }
    env.extend(config.env.iter().cloned());
    let mut set = |key: &str, value: String| env.push((key.into(), value.into()));
    set(
        &config.handshake.magic_cookie_key,
        config.handshake.magic_cookie_value.clone(),
    );
    set(handshake::env::MIN_PORT, config.ports.0.to_string());
    set(handshake::env::MAX_PORT, config.ports.1.to_string());
    set(
        handshake::env::PROTOCOL_VERSIONS,
        handshake::encode_versions(offered),
    );
    if config.multiplex {
        set(handshake::env::MULTIPLEX_GRPC, "true".to_owned());
    }
    if let Some(identity) = identity {
        set(handshake::env::CLIENT_CERT, identity.cert_pem().to_owned());
    }
    env
}

/// Reads the first stdout line, racing the start timeout and the process's exit.
async fn read_handshake(
    name: &str,
    process: &Process,
    stdout: &mut BufReader<tokio::net::unix::pipe::Receiver>,
    timeout: Duration,
) -> Result<String> {
    let mut line = Vec::new();
    let mut limited = (&mut *stdout).take(handshake::MAX_LINE as u64 + 1);
    let outcome = tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)).await;
    match outcome {
        Err(_) => {
            process.kill();
            process.wait().await;
            Err(Error::StartTimeout {
                plugin: name.to_owned(),
                timeout,
                stderr: process.stderr_tail().await,
            })
        }
        Ok(Ok(0)) | Ok(Err(_)) => {
            // stdout closed: the process is exiting (or closed stdout on purpose).
            match process.wait_timeout(Duration::from_secs(1)).await {
                Some(status) => Err(Error::ExitedBeforeHandshake {
                    plugin: name.to_owned(),
                    status,
                    stderr: process.stderr_tail().await,
                }),
                None => Err(Error::Handshake {
                    plugin: name.to_owned(),
                    line: String::new(),
                    reason: HandshakeError::Empty,
                    stderr: process.stderr_tail().await,
                }),
            }
        }
        Ok(Ok(_)) => {
            if line.len() > handshake::MAX_LINE {
                return Err(Error::Handshake {
                    plugin: name.to_owned(),
                    line: cut(&String::from_utf8_lossy(&line)),
                    reason: HandshakeError::TooLong,
                    stderr: process.stderr_tail().await,
                });
            }
            Ok(String::from_utf8_lossy(&line).into_owned())
        }
    }
}

fn check_negotiation(
    config: &Config,
    name: &str,
    parsed: &HandshakeLine,
    offered: &[u32],
) -> Result<()> {
    if !offered.contains(&parsed.app_version) {
        return Err(Error::VersionMismatch {
            plugin: name.to_owned(),
            found: parsed.app_version,
            offered: offered.to_vec(),
        });
    }
    if !config.allowed_protocols.contains(&parsed.protocol) {
        return Err(Error::UnsupportedProtocol {
            plugin: name.to_owned(),
            found: parsed.protocol,
            allowed: config.allowed_protocols.clone(),
            why: "the host does not allow",
        });
    }
    Ok(())
}

type TlsPair = (
    Option<Arc<rustls::ClientConfig>>,
    Option<Arc<rustls::ServerConfig>>,
);

/// The TLS configurations to dial (and serve broker callbacks) with, by the AutoMTLS policy
/// and what the handshake line carried.
fn tls_for(
    config: &Config,
    name: &str,
    identity: Option<&Identity>,
    parsed: &HandshakeLine,
    line: &str,
) -> Result<TlsPair> {
    let tls_error = |reason: String| Error::Tls {
        plugin: name.to_owned(),
        reason,
    };
    match (identity, &parsed.server_cert) {
        (Some(identity), Some(der)) => {
            let peer = CertificateDer::from(der.clone());
            let client = identity.client_config(peer.clone()).map_err(tls_error)?;
            let server = identity.server_config(peer).map_err(tls_error)?;
            Ok((Some(client), Some(server)))
        }
        (Some(_), None) if config.auto_mtls_policy() == AutoMtls::Require => {
            Err(Error::AutoMtlsUnsupported {
                plugin: name.to_owned(),
                line: cut(line.trim_end()),
            })
        }
        (Some(_), None) => {
            tracing::warn!(
                target: "plinth::auto_mtls",
                plugin = %name,
                address = %parsed.address,
                "plugin {name} does not support AutoMTLS (its handshake line carries no certificate); connecting in plaintext"
            );
            Ok((None, None))
        }
        (None, Some(_)) if config.tls.is_none() => Err(Error::UnexpectedCertificate {
            plugin: name.to_owned(),
            line: cut(line.trim_end()),
        }),
        (None, _) => Ok((config.tls.clone(), None)),
    }
}

async fn connect(
    config: &Config,
    name: Arc<str>,
    parsed: HandshakeLine,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    tls_server: Option<Arc<rustls::ServerConfig>>,
    owner: Owner,
    exit: watch::Receiver<Option<String>>,
) -> Result<Connection> {
    let mut tasks = JoinSet::new();
    let dialing = Dialing {
        plugin: &name,
        address: &parsed.address,
        timeout: config.start_timeout,
        deadline: tokio::time::Instant::now() + config.start_timeout,
    };
    let tls = tls_client.is_some();
    let io = dialing
        .step(ConnectStep::Dial, transport::connect(&parsed.address))
        .await?;
    let wire = if parsed.protocol == Protocol::NetRpc {
        let io = match tls_client {
            Some(tls_config) => {
                dialing
                    .step(ConnectStep::Tls, transport::tls_connect(io, tls_config))
                    .await?
            }
            None => io,
        };
        let session = netrpc::Session::start(name.clone(), io, config.stdio.clone());
        let session = dialing.step(ConnectStep::Yamux, session).await?;
        Wire::NetRpc(Arc::new(session))
    } else {
        // Under load a channel opens more connections to the plugin's listener; a
        // multiplexed session's streams stay on the one the handshake gave, so it grows no
        // further, but a broken connection is replaced by a new stream on either.
        let (first, dialer, mux) = if parsed.multiplex && config.multiplex {
            let (mux, drive) = Mux::start(io);
            tasks.spawn(drive);
            let first = dialing.step(ConnectStep::Yamux, mux.open()).await?;
            let dialer = mux.dialer(tls_client.clone());
            (first, dialer, Some(mux))
        } else {
            let dialer = transport::dialer(parsed.address.clone(), tls_client.clone());
            (io, dialer, None)
        };
        let grow = mux.is_none();
        let first = match &tls_client {
            Some(tls_config) => {
                let handshake = transport::tls_connect(first, tls_config.clone());
                dialing.step(ConnectStep::Tls, handshake).await?
            }
            None => first,
        };
        let channel = dialing
            .step(
                ConnectStep::Http2,
                transport::answered_channel(first, dialer, grow),
            )
            .await?;
        let (broker, run_broker) =
            Broker::start(name.clone(), channel.clone(), tls_client, tls_server, mux)?;
        tasks.spawn(run_broker);
        tasks.spawn(stdio::run(
            name.clone(),
            channel.clone(),
            config.stdio.clone(),
        ));
        Wire::Grpc { channel, broker }
    };
    Ok(Connection {
        inner: Arc::new(Inner {
            name,
            wire,
            version: parsed.app_version,
            protocol: parsed.protocol,
            address: parsed.address.clone(),
            handshake: parsed,
            tls,
            owner,
            exit,
            killed: AtomicBool::new(false),
            kill_grace: config.kill_grace,
            tasks: Mutex::new(tasks),
        }),
    })
}

/// The plugin being connected to, and the deadline its start timeout sets for every step.
struct Dialing<'a> {
    plugin: &'a str,
    address: &'a Address,
    timeout: Duration,
    deadline: tokio::time::Instant,
}

impl Dialing<'_> {
    /// Runs one step of connecting: its failure is [`Error::Connect`], and the deadline passing
    /// while it runs is [`Error::ConnectTimeout`] naming it.
    async fn step<T, E: std::fmt::Display>(
        &self,
        step: ConnectStep,
        work: impl Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        match tokio::time::timeout_at(self.deadline, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::Connect {
                plugin: self.plugin.to_owned(),
                address: self.address.to_string(),
                reason: error.to_string(),
            }),
            Err(_) => Err(Error::ConnectTimeout {
                plugin: self.plugin.to_owned(),
                address: self.address.to_string(),
                step,
                timeout: self.timeout,
            }),
        }
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(512);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Weak<Inner>>> {
    static MANAGED: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
    lock(&MANAGED)
}

/// Kills every plugin started with [`Config::managed`], all at once, and waits for them
/// (go-plugin's `CleanupClients`). Call it once before the host exits.
pub async fn cleanup_clients() {
    let managed: Vec<Arc<Inner>> = registry()
        .drain(..)
        .filter_map(|weak| weak.upgrade())
        .collect();
    futures::future::join_all(managed.iter().map(|inner| inner.kill())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn environment_strips_stale_plugin_variables_and_sets_the_protocol_ones() {
        let config = Config::command("/bin/plugin")
            .handshake(HandshakeConfig::new(1, "COOKIE", "yes"))
            .multiplex(true)
            .env("EXTRA", "1");
        let host = [
            ("PATH", "/usr/bin"),
            ("PLUGIN_CLIENT_CERT", "stale"),
            ("PLUGIN_MULTIPLEX_GRPC", "true"),
            ("COOKIE", "no"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = environment(&config, host.into_iter(), &[2, 3], None);
        assert_eq!(lookup(&env, "PATH"), Some("/usr/bin"));
        assert_eq!(lookup(&env, "PLUGIN_CLIENT_CERT"), None);
        assert_eq!(lookup(&env, "COOKIE"), Some("yes"));
        assert_eq!(lookup(&env, "EXTRA"), Some("1"));
        assert_eq!(lookup(&env, "PLUGIN_PROTOCOL_VERSIONS"), Some("2,3"));
        assert_eq!(lookup(&env, "PLUGIN_MIN_PORT"), Some("10000"));
        assert_eq!(lookup(&env, "PLUGIN_MAX_PORT"), Some("25000"));
        assert_eq!(lookup(&env, "PLUGIN_MULTIPLEX_GRPC"), Some("true"));

        let identity = Identity::generate().unwrap();
        let config = config.multiplex(false).skip_host_env(true);
        let host = [(OsString::from("PATH"), OsString::from("/usr/bin"))];
        let env = environment(&config, host.into_iter(), &[1], Some(&identity));
        assert_eq!(lookup(&env, "PATH"), None);
        assert_eq!(lookup(&env, "PLUGIN_MULTIPLEX_GRPC"), None);
        assert_eq!(
            lookup(&env, "PLUGIN_CLIENT_CERT"),
            Some(identity.cert_pem())
        );
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let base = Config::command("/bin/plugin");
        assert!(validate(&base).is_err(), "no cookie");
        let ok = base.handshake(HandshakeConfig::new(1, "K", "V"));
        assert!(validate(&ok).is_ok());
        assert!(validate(&ok.clone().ports(9, 8)).is_err());
        assert!(validate(&ok.clone().allowed_protocols([])).is_err());
        let tls = Identity::generate()
            .unwrap()
            .client_config(Identity::generate().unwrap().cert_der().clone())
            .unwrap();
        // An explicit TLS configuration makes the default policy Off; a policy that offers a
        // certificate beside it is a contradiction, in either order.
        assert!(validate(&ok.clone().tls(tls.clone())).is_ok());
        for policy in [AutoMtls::Prefer, AutoMtls::Require] {
            assert!(validate(&ok.clone().tls(tls.clone()).auto_mtls(policy)).is_err());
            assert!(validate(&ok.clone().auto_mtls(policy).tls(tls.clone())).is_err());
        }
        assert!(validate(&ok.tls(tls).auto_mtls(AutoMtls::Off)).is_ok());
    }

    #[test]
    fn the_policy_in_force_defaults_by_the_tls_settings() {
        let tls = Identity::generate()
            .unwrap()
            .client_config(Identity::generate().unwrap().cert_der().clone())
            .unwrap();
        let base = Config::command("/bin/plugin");
        assert_eq!(base.auto_mtls_policy(), AutoMtls::Prefer);
        assert_eq!(
            base.clone().tls(tls.clone()).auto_mtls_policy(),
            AutoMtls::Off
        );
        for policy in [AutoMtls::Prefer, AutoMtls::Require, AutoMtls::Off] {
            assert_eq!(base.clone().auto_mtls(policy).auto_mtls_policy(), policy);
            let both = base.clone().tls(tls.clone()).auto_mtls(policy);
            assert_eq!(both.auto_mtls_policy(), policy);
        }
    }

    fn line(server_cert: Option<Vec<u8>>) -> HandshakeLine {
        HandshakeLine {
            app_version: 1,
            address: Address::Tcp("127.0.0.1:1234".parse().unwrap()),
            protocol: Protocol::Grpc,
            server_cert,
            multiplex: false,
        }
    }

    #[test]
    fn the_auto_mtls_policy_decides_what_a_line_without_a_certificate_gets() {
        let host = Identity::generate().unwrap();
        let plugin = Identity::generate().unwrap();
        let with_cert = line(Some(plugin.cert_der().to_vec()));
        let without = line(None);
        let text = "1|1|tcp|127.0.0.1:1234|grpc\n";
        let config = |policy| {
            Config::command("/bin/plugin")
                .handshake(HandshakeConfig::new(1, "K", "V"))
                .auto_mtls(policy)
        };
        for policy in [AutoMtls::Prefer, AutoMtls::Require] {
            // A plugin that answers with a certificate gets mutual TLS, both ways.
            let (client, server) =
                tls_for(&config(policy), "p", Some(&host), &with_cert, text).unwrap();
            assert!(client.is_some() && server.is_some(), "{policy}");
        }
        // One that answers without: plaintext under Prefer, refused under Require.
        let (client, server) =
            tls_for(&config(AutoMtls::Prefer), "p", Some(&host), &without, text).unwrap();
        assert!(client.is_none() && server.is_none());
        match tls_for(&config(AutoMtls::Require), "p", Some(&host), &without, text) {
            Err(Error::AutoMtlsUnsupported { plugin, line }) => {
                assert_eq!((plugin.as_str(), line.as_str()), ("p", text.trim_end()));
            }
            other => panic!("expected AutoMtlsUnsupported, got {:?}", other.map(|_| ())),
        }
        // Off offers nothing: plaintext, and a certificate nobody asked for is refused.
        let (client, _) = tls_for(&config(AutoMtls::Off), "p", None, &without, text).unwrap();
        assert!(client.is_none());
        let cert_text = "1|1|tcp|127.0.0.1:1234|grpc|MIIB...\n";
        match tls_for(&config(AutoMtls::Off), "p", None, &with_cert, cert_text) {
            Err(Error::UnexpectedCertificate { plugin, line }) => {
                assert_eq!(
                    (plugin.as_str(), line.as_str()),
                    ("p", cert_text.trim_end())
                );
            }
            other => panic!(
                "expected UnexpectedCertificate, got {:?}",
                other.map(|_| ())
            ),
        }
        // With a TLS configuration of the host's own, that configuration is dialed with.
        let tls = host.client_config(plugin.cert_der().clone()).unwrap();
        let explicit = config(AutoMtls::Off).tls(tls.clone());
        let (client, server) = tls_for(&explicit, "p", None, &with_cert, cert_text).unwrap();
        assert!(client.is_some_and(|client| Arc::ptr_eq(&client, &tls)) && server.is_none());
    }
}
