//! The AutoMTLS policy: whether a host offers go-plugin's certificate exchange to a plugin it
//! launches, and what it does when the plugin does not take it up.
//!
//! The exchange itself (the certificates and the rustls configurations that pin them) lives in
//! `transport`; the decision, made once the handshake line is read, lives in `connection`.

/// Whether a launched plugin is offered AutoMTLS, and what happens when its handshake line
/// comes back without a certificate (go-plugin's `AutoMTLS`, a bool there).
///
/// Under [`AutoMtls::Prefer`] and [`AutoMtls::Require`] the host generates a fresh certificate
/// for each launch and hands it over in `PLUGIN_CLIENT_CERT`. A plugin built with go-plugin
/// answers with its own certificate in the handshake line, and both sides then accept exactly
/// the exchanged certificates. Plugins written without go-plugin (go-plugin's own Python
/// example, most non-Go plugins) ignore the variable and print a line without one.
///
/// Whatever the policy, a certificate field that is not a certificate is a
/// [`HandshakeError::Certificate`](crate::handshake::HandshakeError::Certificate) and a TLS
/// handshake that fails is an [`Error::Connect`](crate::Error::Connect): neither is ever a
/// reason to fall back to plaintext.
///
/// # What [`AutoMtls::Prefer`] means for security
///
/// The handshake line travels over the child's stdout pipe, which only the host and the plugin
/// hold, so no third party can strip the certificate from it: a downgrade only happens because
/// the plugin itself cannot do AutoMTLS. What plaintext then exposes depends on where the
/// plugin listens:
///
/// - **A Unix socket** in the private directory the host creates for each launch (mode 0700,
///   passed in `PLUGIN_UNIX_SOCKET_DIR`, which go-plugin plugins use) can only be reached by
///   processes of the same user, and root: processes that already run with the host's rights.
///   A plugin that binds its socket elsewhere is only protected by that socket's permissions.
/// - **TCP on 127.0.0.1** is reachable by every process on the machine, of any user (and by
///   everything sharing the network namespace, such as the other containers of a pod). Any of
///   them can connect and call the plugin's services (a go-plugin plugin's controller
///   `Shutdown` too) with nothing to tell them from the host; and once the plugin exits,
///   another process can bind the port and receive what the host sends next. On a machine
///   shared with other users or untrusted processes, use [`AutoMtls::Require`], or a plugin
///   that does AutoMTLS.
///
/// A downgrade is never silent: it emits a `WARN` event with target `plinth::auto_mtls` and
/// the fields `plugin` and `address`, and [`Connection::tls`](crate::Connection::tls) is
/// `false` for the connection that results.
///
/// # Reattaching
///
/// Reattaching exchanges no certificates (a running plugin's were made with the host that
/// launched it): a reattached plugin is reached with [`Config::tls`](crate::Config::tls), or
/// else in plaintext, and [`AutoMtls::Require`] refuses to reattach without a TLS
/// configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AutoMtls {
    /// Offer a certificate; run mutual TLS when the plugin answers with one, otherwise connect
    /// in plaintext and emit a warning naming the plugin. The default.
    #[default]
    Prefer,
    /// Offer a certificate and refuse a plugin that answers without one
    /// ([`Error::AutoMtlsUnsupported`](crate::Error::AutoMtlsUnsupported); the plugin is
    /// killed and reaped). No plaintext connection is ever made.
    Require,
    /// Offer no certificate: plaintext, unless a TLS configuration is given with
    /// [`Config::tls`](crate::Config::tls). A plugin that answers with a certificate anyway is
    /// refused ([`Error::UnexpectedCertificate`](crate::Error::UnexpectedCertificate)).
    Off,
}

impl AutoMtls {
    /// Whether a certificate is offered to the plugin (every policy but [`AutoMtls::Off`]).
    pub fn offered(self) -> bool {
        self != AutoMtls::Off
    }

    /// The policy's name as the `plinth` command spells it: `prefer`, `require` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoMtls::Prefer => "prefer",
            AutoMtls::Require => "require",
            AutoMtls::Off => "off",
        }
    }
}

impl std::fmt::Display for AutoMtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
