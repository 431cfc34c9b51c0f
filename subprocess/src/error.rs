//! The one error type of `plinth-subprocess`.
//!
//! Every variant names the plugin and says what was expected and what was found; errors raised
//! after the plugin process started carry the tail of its stderr, because that is where a
//! plugin explains itself (a wrong cookie, a missing library, a panic). A tail is at most the
//! last 20 lines and 4 KiB, each line cut to 512 bytes, hclog JSON lines shown as
//! `[LEVEL] message key=value`; taken after the plugin exited, it ends with the last line the
//! plugin wrote (see `stderr.rs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::handshake::{HandshakeError, Protocol};

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while launching, connecting to or calling a go-plugin plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work as given.
    #[error("invalid plugin configuration: {reason}")]
    Config {
        /// What is wrong with it.
        reason: String,
    },

    /// The plugin executable could not be read (for its checksum) or is missing.
    #[error("cannot read plugin executable {}", path.display())]
    ReadExecutable {
        /// The executable that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// The executable does not hash to the pinned checksum; it was not started.
    #[error(
        "checksum mismatch for plugin executable {}: expected sha256 {expected}, found {actual}",
        path.display()
    )]
    ChecksumMismatch {
        /// The executable.
        path: PathBuf,
        /// The pinned sha256, in hex.
        expected: String,
        /// The sha256 of the file on disk, in hex.
        actual: String,
    },

    /// The operating system refused to start the executable.
    #[error("cannot start plugin {plugin} ({})", path.display())]
    Spawn {
        /// The plugin's name.
        plugin: String,
        /// The executable.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The plugin exited before printing its handshake line — often a wrong magic cookie
    /// (the plugin says so on stderr), a crash, or not a plugin at all.
    #[error(
        "plugin {plugin} exited before the handshake ({status}){}",
        tail(stderr)
    )]
    ExitedBeforeHandshake {
        /// The plugin's name.
        plugin: String,
        /// How it exited (`exit status: 1`, `signal: 9`).
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },

    /// The plugin printed no handshake line within the start timeout; it was killed.
    #[error(
        "plugin {plugin} printed no handshake line within {timeout:?}; it was killed{}",
        tail(stderr)
    )]
    StartTimeout {
        /// The plugin's name.
        plugin: String,
        /// The start timeout that passed.
        timeout: Duration,
        /// The last lines it wrote to stderr.
        stderr: String,
    },

    /// The plugin's handshake line is malformed or asks for something this host cannot do.
    #[error(
        "plugin {plugin} sent an unusable handshake line {line:?}: {reason}{}",
        tail(stderr)
    )]
    Handshake {
        /// The plugin's name.
        plugin: String,
        /// The line as received (cut to 512 bytes).
        line: String,
        /// What is wrong with it (in the message, so not also its source).
        reason: HandshakeError,
        /// The last lines it wrote to stderr.
        stderr: String,
    },

    /// The plugin chose an application protocol version the host did not offer.
    #[error(
        "plugin {plugin} speaks application protocol version {found}; this host supports {offered:?}"
    )]
    VersionMismatch {
        /// The plugin's name.
        plugin: String,
        /// The version in the plugin's handshake.
        found: u32,
        /// The versions the host offered.
        offered: Vec<u32>,
    },

    /// The plugin speaks an RPC protocol the host does not allow (or this build lacks).
    #[error("plugin {plugin} speaks {found}, which {why}; allowed: {allowed:?}")]
    UnsupportedProtocol {
        /// The plugin's name.
        plugin: String,
        /// The protocol in the handshake.
        found: Protocol,
        /// The protocols the host allows.
        allowed: Vec<Protocol>,
        /// Why it cannot be used.
        why: &'static str,
    },

    /// Dialing the plugin's address failed.
    #[error("cannot connect to plugin {plugin} at {address}: {reason}")]
    Connect {
        /// The plugin's name.
        plugin: String,
        /// The address dialed.
        address: String,
        /// Why it failed (including TLS handshake failures).
        reason: String,
    },

    /// Connecting to the plugin after its handshake line did not finish within the start
    /// timeout: its socket was not accepted, or the TLS or HTTP/2 handshake hung. The plugin
    /// was killed.
    #[error(
        "plugin {plugin} at {address}: {step} did not finish within the {timeout:?} start timeout"
    )]
    ConnectTimeout {
        /// The plugin's name.
        plugin: String,
        /// The address dialed.
        address: String,
        /// What the host was waiting for when the time ran out.
        step: ConnectStep,
        /// The start timeout that passed.
        timeout: Duration,
    },

    /// TLS material is unusable (a certificate that does not parse, a key rustls refuses).
    #[error("TLS setup for plugin {plugin} failed: {reason}")]
    Tls {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        reason: String,
    },

    /// AutoMTLS is required ([`AutoMtls::Require`](crate::AutoMtls::Require)) and the plugin
    /// answered the certificate it was offered with a handshake line that carries none: it was
    /// built without AutoMTLS support. It was killed and reaped; nothing was dialed.
    #[error(
        "plugin {plugin} does not support AutoMTLS: AutoMTLS is required, but its handshake line {line:?} carries no certificate"
    )]
    AutoMtlsUnsupported {
        /// The plugin's name.
        plugin: String,
        /// The handshake line as received (cut to 512 bytes).
        line: String,
    },

    /// The plugin's handshake line carries a certificate, but the host offered none
    /// ([`AutoMtls::Off`](crate::AutoMtls::Off) without a TLS configuration): the plugin serves
    /// TLS nobody can check (it may have inherited a stale `PLUGIN_CLIENT_CERT`). It was killed
    /// and reaped; nothing was dialed.
    #[error(
        "plugin {plugin} answered with a TLS certificate although none was offered (AutoMTLS is off and no TLS configuration was given): handshake line {line:?}"
    )]
    UnexpectedCertificate {
        /// The plugin's name.
        plugin: String,
        /// The handshake line as received (cut to 512 bytes).
        line: String,
    },

    /// A gRPC call to the plugin failed while the plugin kept running.
    #[error("call {method} to plugin {plugin} failed: {}: {}", status.code(), status.message())]
    Rpc {
        /// The plugin's name.
        plugin: String,
        /// The method called (`/proto.KV/Get`, or a name the adapter chose).
        method: String,
        /// The gRPC status returned.
        status: Box<tonic::Status>,
    },

    /// A `netrpc` call to the plugin failed while the plugin kept running.
    #[error("call {method} to plugin {plugin} failed")]
    NetRpc {
        /// The plugin's name.
        plugin: String,
        /// The method called (`Plugin.Greet`).
        method: String,
        /// What went wrong.
        #[source]
        reason: crate::netrpc::CallError,
    },

    /// The operation needs the other RPC protocol (the gRPC channel of a `netrpc` plugin).
    #[error("plugin {plugin} speaks {found}; {operation} needs {needed}")]
    WrongProtocol {
        /// The plugin's name.
        plugin: String,
        /// The protocol the plugin speaks.
        found: Protocol,
        /// The protocol the operation needs.
        needed: Protocol,
        /// What was asked for.
        operation: &'static str,
    },

    /// The plugin process ended while the host still used it (a crash, or killed from outside).
    #[error("plugin {plugin} exited ({status}) while in use{}", tail(stderr))]
    Exited {
        /// The plugin's name.
        plugin: String,
        /// How it exited.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },

    /// The plugin was killed by the host; nothing more can be called on it.
    #[error("plugin {plugin} was killed")]
    Killed {
        /// The plugin's name.
        plugin: String,
    },

    /// A broker connection could not be set up.
    #[error("broker of plugin {plugin}, connection {id}: {reason}")]
    Broker {
        /// The plugin's name.
        plugin: String,
        /// The broker id.
        id: u32,
        /// What went wrong.
        reason: String,
    },

    /// A reattach configuration could not be used.
    #[error("cannot reattach to plugin {plugin}: {reason}")]
    Reattach {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        reason: String,
    },

    /// A served plugin's Unix socket path is longer than the platform allows.
    #[error(
        "unix socket path {} is {length} bytes, longer than this platform's limit of {limit}; point PLUGIN_UNIX_SOCKET_DIR or TMPDIR at a shorter directory",
        path.display()
    )]
    SocketPath {
        /// The path that was to be bound.
        path: PathBuf,
        /// Its length in bytes.
        length: usize,
        /// The longest path the platform accepts.
        limit: usize,
    },

    /// A served plugin could not listen.
    #[error("cannot listen on {address}")]
    Listen {
        /// The socket path, directory or port range tried.
        address: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },

    /// The host's `PLUGIN_CLIENT_CERT` is not a usable certificate; AutoMTLS cannot start.
    #[error("PLUGIN_CLIENT_CERT does not hold a usable PEM certificate: {reason}")]
    ClientCert {
        /// What is wrong with it.
        reason: String,
    },

    /// Serving a plugin failed for another reason (a bad environment value, no services).
    #[error("cannot serve the plugin: {reason}")]
    Serve {
        /// What went wrong.
        reason: String,
    },

    /// An I/O error the host hit on its own side (binding a broker socket, a temp dir).
    #[error("{context}")]
    Io {
        /// What the host was doing.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A step of connecting to a plugin once it printed its handshake line, as
/// [`Error::ConnectTimeout`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectStep {
    /// Opening the socket to the address in the handshake line.
    Dial,
    /// The TLS handshake (AutoMTLS, or the host's own TLS configuration).
    Tls,
    /// Opening the yamux session and its streams (netrpc, or gRPC multiplexed on one
    /// connection).
    Yamux,
    /// The HTTP/2 handshake: the plugin's settings and its answer to a ping.
    Http2,
}

impl std::fmt::Display for ConnectStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectStep::Dial => "dialing its socket",
            ConnectStep::Tls => "the TLS handshake",
            ConnectStep::Yamux => "opening the yamux session",
            ConnectStep::Http2 => "the HTTP/2 handshake (its settings and an answer to a ping)",
        })
    }
}

/// Formats a stderr tail as a suffix of an error message.
fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{}", stderr.trim_end())
    }
}
