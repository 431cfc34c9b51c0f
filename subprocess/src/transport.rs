//! Reaching a plugin: Unix socket and TCP dialing and listening, AutoMTLS certificates and the
//! rustls configurations that pin them, and tonic channels and servers on top.
//!
//! go-plugin's AutoMTLS exchanges self-signed certificates that are also CA certificates; the
//! stock webpki verifiers refuse those (a CA used as an end entity), so both directions use
//! verifiers that accept exactly the exchanged certificate and check the handshake signature
//! with aws-lc-rs (which, unlike ring, verifies Go's P-521 signatures). ALPN is `h2` both ways
//! (grpc-go 1.67 and later refuse anything else) and the server name is `localhost`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http::Uri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handshake::Address;

/// The largest gRPC message either side accepts, as a Go host configures it (2³¹ − 1).
pub const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// A byte stream to or from a plugin: a socket, possibly under TLS, possibly a yamux stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Something that opens a new byte stream to the plugin each time it is called.
pub(crate) type Dialer = Arc<dyn Fn() -> BoxFuture<'static, io::Result<BoxIo>> + Send + Sync>;

/// The crypto provider every Plinth TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// One side's AutoMTLS identity: a fresh self-signed certificate and its key.
///
/// Shaped like go-plugin's: SAN `localhost`, CN `localhost`, CA flag set, key usages for
/// signing and key agreement, extended key usages client and server auth. The key is ECDSA
/// P-256 (Go accepts it and it signs several times faster than Go's own P-521).
#[derive(Clone)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Arc<PrivateKeyDer<'static>>,
    pem: String,
}

impl Identity {
    /// Generates a new identity.
    pub fn generate() -> Result<Identity, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])
            .map_err(|e| format!("cannot build a certificate: {e}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Plinth");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the certificate: {e}"))?;
        Ok(Identity {
            pem: cert.pem(),
            cert: cert.der().clone(),
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        })
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate, PEM (what a host puts in `PLUGIN_CLIENT_CERT`).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// A client configuration presenting this identity and accepting only `peer`.
    pub fn client_config(
        &self,
        peer: CertificateDer<'static>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = provider();
        let verifier = Arc::new(Pinned::new(peer, &provider));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| format!("rustls refused our certificate: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A server configuration presenting this identity and requiring exactly `peer` as client.
    pub fn server_config(
        &self,
        peer: CertificateDer<'static>,
    ) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = provider();
        let verifier = Arc::new(Pinned::new(peer, &provider));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| format!("rustls refused our certificate: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// Parses a PEM certificate (a host's `PLUGIN_CLIENT_CERT`) into DER.
pub fn parse_pem_cert(pem: &str) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

/// A verifier, for either side, that accepts exactly one certificate.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn new(cert: CertificateDer<'static>, provider: &CryptoProvider) -> Pinned {
        Pinned {
            cert,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.cert.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Opens a socket to `address` (TCP with `TCP_NODELAY` and keep-alive).
pub async fn connect(address: &Address) -> io::Result<BoxIo> {
    match address {
        Address::Unix(path) => {
            #[cfg(unix)]
            {
                Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "unix sockets are not available on this platform",
                ))
            }
        }
        Address::Tcp(socket) => {
            let stream = tokio::net::TcpStream::connect(socket).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
    }
}

/// Runs a TLS client handshake (server name `localhost`) over `io`.
pub async fn tls_connect(io: BoxIo, config: Arc<rustls::ClientConfig>) -> io::Result<BoxIo> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await?;
    Ok(Box::new(stream))
}

/// A dialer that connects to `address`, under TLS when `tls` is given.
pub(crate) fn dialer(address: Address, tls: Option<Arc<rustls::ClientConfig>>) -> Dialer {
    Arc::new(move || {
        let address = address.clone();
        let tls = tls.clone();
        Box::pin(async move {
            let io = connect(&address).await?;
            match tls {
                Some(config) => tls_connect(io, config).await,
                None => Ok(io),
            }
        })
    })
}

/// A dialer that hands out `io` (TLS-wrapped when `tls` is given) once; later calls fail.
/// For a brokered yamux stream, which is paired with its knock and cannot be re-dialed.
pub(crate) fn once(io: BoxIo, tls: Option<Arc<rustls::ClientConfig>>) -> Dialer {
    let slot = Arc::new(Mutex::new(Some(io)));
    Arc::new(move || {
        let io = slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let tls = tls.clone();
        Box::pin(async move {
            let io = io.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "a brokered stream cannot be re-dialed",
                )
            })?;
            match tls {
                Some(config) => tls_connect(io, config).await,
                None => Ok(io),
            }
        })
    })
}

/// A gRPC channel to a plugin: HTTP/2 connections, each driven by its own task, that generated
/// tonic clients call directly (`KvClient::new(channel)`).
///
/// Unlike tonic's `Channel` there is no request buffer in between: a call goes straight to a
/// connection. Clones share the connections; they close when the last clone and the last call
/// are dropped.
///
/// A connection can break while the plugin lives (a peer's frame our HTTP/2 client refuses
/// ends it with GOAWAY): the calls on it fail with the connection's error, the channel drops
/// it, and when it was the last one the next call dials the plugin again (the same address,
/// the same TLS configuration) and waits for that one dial, however many callers are waiting.
/// A dial that fails is not retried before a backoff (from [`REDIAL_BACKOFF`], doubling up to
/// [`MAX_REDIAL_BACKOFF`]) has passed; calls in between fail with [`ChannelError::Redial`]
/// at once, so a plugin that is gone costs no dialing loop.
///
/// Calls speak to the HTTP/2 streams themselves rather than through hyper's client: a unary
/// request leaves as one write (headers, then the message with `END_STREAM`) and its answer
/// wakes the caller directly, where hyper passes each request to its connection task through a
/// channel and each answer back through a task it spawns per request.
///
/// The channel to a plugin's listener (not to a brokered or multiplexed stream) starts with
/// one connection and opens more, up to the host's CPU count and at most [`MAX_CONNECTIONS`],
/// while every connection it has carries at least [`GROW_AT`] calls: a Go plugin reads and
/// writes each connection on one goroutine, so one connection caps how many CPUs the plugin
/// can spend on its callers. Each call goes to the connection with the fewest calls in
/// flight. A connection is used only once the plugin has answered a ping on it; a plugin that
/// refuses more connections keeps its first.
pub struct PluginChannel {
    pool: Arc<Pool>,
    /// The connection `poll_ready` chose for the next call.
    chosen: Option<Link>,
    /// The re-dial `poll_ready` waits for.
    redialing: Option<Shared<BoxFuture<'static, Result<(), ChannelError>>>>,
}

impl Clone for PluginChannel {
    fn clone(&self) -> PluginChannel {
        PluginChannel::on(self.pool.clone())
    }
}

impl std::fmt::Debug for PluginChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginChannel")
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl PluginChannel {
    /// How many HTTP/2 connections the channel has open now.
    pub fn connections(&self) -> usize {
        read(&self.pool.links).len()
    }
}

/// Why a call found no connection to send on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// `call` came without a ready `poll_ready` on a channel with no connection left.
    #[error("the channel has no connection to send on; poll_ready must answer Ready first")]
    NotReady,
    /// The channel's last connection broke and dialing the plugin again failed.
    #[error(
        "the connection to the plugin broke, and dialing it again failed: {reason}; next attempt in {retry_in:?}"
    )]
    Redial {
        /// Why the dial failed.
        reason: String,
        /// How long until a call may dial again.
        retry_in: Duration,
    },
}

/// How long after a failed re-dial the channel first waits before it dials again.
pub const REDIAL_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two re-dials.
pub const MAX_REDIAL_BACKOFF: Duration = Duration::from_secs(5);

/// The most connections a channel opens to one plugin.
pub const MAX_CONNECTIONS: usize = 4;

/// Calls in flight on every connection of a channel at which it opens another.
pub const GROW_AT: usize = 8;

/// How long opening one more connection may take (dialing, TLS, and the plugin's answer to a
/// ping): past it, a growing channel keeps the connections it has, and a re-dial fails.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections of a channel, and what it needs to open more.
struct Pool {
    /// The connections that have not broken, the oldest first. One that breaks is dropped
    /// from here.
    links: RwLock<Vec<Link>>,
    /// Dials the plugin again: to replace a broken connection, and to open more under load
    /// where `limit` allows.
    dialer: Dialer,
    /// The most connections in all; `None` for [`connection_limit`].
    limit: Option<usize>,
    /// How long opening one connection may take, for growth and for a re-dial.
    dial_timeout: Duration,
    growth: Mutex<Growth>,
    redial: Mutex<Redial>,
}

/// Whether a channel that lost its last connection is dialing the plugin again.
enum Redial {
    /// It has a connection, or has not needed a new one since the last success.
    Idle {
        /// The wait after the next failure.
        backoff: Duration,
    },
    /// A dial is under way; every caller waits for this one.
    Dialing(Shared<BoxFuture<'static, Result<(), ChannelError>>>),
    /// The last dial failed; calls fail at once until `retry_at`.
    Failed {
        reason: String,
        retry_at: tokio::time::Instant,
        backoff: Duration,
    },
}

/// Whether a channel is opening a connection.
enum Growth {
    Idle,
    /// The task opening it, ended with the channel.
    Opening(tokio::task::JoinHandle<()>),
    /// An attempt failed: the plugin keeps the connections it has.
    Refused,
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Growth::Opening(task) = &*lock(&self.growth) {
            task.abort();
        }
        // A re-dial's task holds only a weak reference to the pool; it ends on its own
        // within the dial timeout, its connection dropped unused.
    }
}

/// One HTTP/2 connection and the calls in flight on it.
#[derive(Clone)]
struct Link {
    send: h2::client::SendRequest<Bytes>,
    in_flight: Arc<AtomicUsize>,
}

impl Link {
    fn new(send: h2::client::SendRequest<Bytes>) -> Link {
        Link {
            send,
            in_flight: Arc::default(),
        }
    }

    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A call counted in flight on its connection until this is dropped (with its answer).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(link: &Link) -> InFlight {
        link.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(link.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// The connection with the fewest calls in flight, `None` when none is left; opens
    /// another when even the least busy one is busy.
    fn choose(self: &Arc<Pool>) -> Option<Link> {
        let links = read(&self.links);
        let chosen = links.iter().min_by_key(|link| link.load())?.clone();
        let grow =
            chosen.load() >= GROW_AT && links.len() < self.limit.unwrap_or_else(connection_limit);
        drop(links);
        if grow {
            self.grow();
        }
        Some(chosen)
    }

    /// Drops `link`, which broke.
    fn forget(&self, link: &Link) {
        write(&self.links).retain(|kept| !Arc::ptr_eq(&kept.in_flight, &link.in_flight));
    }

    /// Opens one more connection in the background, unless one is being opened already or
    /// the plugin refused one before.
    fn grow(self: &Arc<Pool>) {
        let dialer = self.dialer.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut growth = lock(&self.growth);
        if !matches!(*growth, Growth::Idle) {
            return;
        }
        let pool = Arc::downgrade(self);
        let timeout = self.dial_timeout;
        *growth = Growth::Opening(runtime.spawn(async move {
            let opened = tokio::time::timeout(timeout, open(dialer, true)).await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let next = match opened {
                Ok(Ok(send)) => {
                    write(&pool.links).push(Link::new(send));
                    Growth::Idle
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "the plugin refused another connection");
                    Growth::Refused
                }
                Err(_) => {
                    tracing::debug!("the plugin did not answer on another connection in time");
                    Growth::Refused
                }
            };
            *lock(&pool.growth) = next;
        }));
    }

    /// The dial that replaces the channel's last connection, which broke: the one under
    /// way, or a new one unless the last attempt failed too recently.
    fn redial(
        self: &Arc<Pool>,
    ) -> Result<Shared<BoxFuture<'static, Result<(), ChannelError>>>, ChannelError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ChannelError::Redial {
                reason: "there is no tokio runtime to dial on".to_owned(),
                retry_in: Duration::ZERO,
            });
        };
        let dialer = self.dialer.clone();
        let mut state = lock(&self.redial);
        let backoff = match &*state {
            Redial::Dialing(dial) => return Ok(dial.clone()),
            Redial::Failed {
                reason,
                retry_at,
                backoff,
            } => {
                let now = tokio::time::Instant::now();
                if now < *retry_at {
                    return Err(ChannelError::Redial {
                        reason: reason.clone(),
                        retry_in: *retry_at - now,
                    });
                }
                (*backoff * 2).min(MAX_REDIAL_BACKOFF)
            }
            Redial::Idle { backoff } => *backoff,
        };
        tracing::debug!("no connection to the plugin is left; dialing it again");
        let pool = Arc::downgrade(self);
        let timeout = self.dial_timeout;
        let task = runtime.spawn(async move {
            let opened = match tokio::time::timeout(timeout, open(dialer, true)).await {
                Ok(opened) => opened,
                Err(_) => Err(format!("the plugin did not answer within {timeout:?}")),
            };
            let Some(pool) = pool.upgrade() else {
                return Ok(());
            };
            // The new connection is in place before any waiter wakes to look for it.
            let (result, next) = match opened {
                Ok(send) => {
                    write(&pool.links).push(Link::new(send));
                    tracing::debug!("the plugin was dialed again");
                    (
                        Ok(()),
                        Redial::Idle {
                            backoff: REDIAL_BACKOFF,
                        },
                    )
                }
                Err(reason) => {
                    tracing::debug!(%reason, "dialing the plugin again failed");
                    (
                        Err(ChannelError::Redial {
                            reason: reason.clone(),
                            retry_in: backoff,
                        }),
                        Redial::Failed {
                            reason,
                            retry_at: tokio::time::Instant::now() + backoff,
                            backoff,
                        },
                    )
                }
            };
            *lock(&pool.redial) = next;
            result
        });
        let dial: BoxFuture<'static, Result<(), ChannelError>> = Box::pin(async move {
            task.await.unwrap_or_else(|error| {
                Err(ChannelError::Redial {
                    reason: format!("the dialing task ended: {error}"),
                    retry_in: Duration::ZERO,
                })
            })
        });
        let dial = dial.shared();
        *state = Redial::Dialing(dial.clone());
        Ok(dial)
    }
}

/// What a call can fail with: the connection's [`h2::Error`], or the [`tonic::Status`] the
/// request body failed with (tonic reads either back into a status).
type CallError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for PluginChannel {
    type Response = http::Response<ResponseBody>;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Self::Response, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        loop {
            if let Some(dial) = &mut self.redialing {
                let dialed = std::task::ready!(dial.poll_unpin(cx));
                self.redialing = None;
                dialed?;
            }
            let link = match &mut self.chosen {
                Some(link) => link,
                None => match self.pool.choose() {
                    Some(link) => self.chosen.insert(link),
                    None => {
                        self.redialing = Some(self.pool.redial()?);
                        continue;
                    }
                },
            };
            match link.send.poll_ready(cx) {
                Poll::Ready(Err(error)) => {
                    // A connection that broke is dropped and the call goes to another, or to
                    // a new one when it was the last.
                    tracing::debug!(%error, "a connection to the plugin broke");
                    if let Some(broken) = self.chosen.take() {
                        self.pool.forget(&broken);
                    }
                }
                ready => return ready.map_err(Into::into),
            }
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        // HTTP/2 needs a scheme and an authority; generated clients only set the path. A Go
        // plugin ignores the authority (a Go host sends `unused`).
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(http::uri::Authority::from_static("localhost"));
        if let Ok(uri) = Uri::from_parts(uri) {
            parts.uri = uri;
        }
        let empty = http_body::Body::is_end_stream(&body);
        let Some(mut link) = self.chosen.take().or_else(|| self.pool.choose()) else {
            return Box::pin(async { Err(ChannelError::NotReady.into()) });
        };
        let in_flight = InFlight::start(&link);
        let sent = link
            .send
            .send_request(http::Request::from_parts(parts, ()), empty);
        Box::pin(async move {
            let (response, stream) = sent?;
            let pump = if empty {
                None
            } else {
                send_body(body, stream).await?
            };
            let response = response.await?;
            Ok(response.map(|recv| ResponseBody {
                recv,
                data_done: false,
                done: false,
                _pump: pump,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request body still being sent by its own task, which ends with the body, with the
/// stream, or when this handle (held by the call and then by its response body) is dropped.
struct Pump(tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends what of `body` is ready now (all of a unary request, so that it leaves with its
/// headers, the last message carrying `END_STREAM`); the rest of a streaming body is sent by
/// a [`Pump`]. Fails with the body's own error, after resetting the stream.
async fn send_body(
    mut body: tonic::body::Body,
    mut stream: h2::SendStream<Bytes>,
) -> Result<Option<Pump>, CallError> {
    use http_body::Body as _;
    // A chunk is held back until the next poll says whether it is the last.
    let mut held: Option<Bytes> = None;
    let ready = std::future::poll_fn(|cx| {
        Poll::Ready(loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending => {
                    if let Some(chunk) = held.take() {
                        stream.send_data(chunk, false)?;
                    }
                    break Ok::<bool, CallError>(false);
                }
                Poll::Ready(None) => {
                    stream.send_data(held.take().unwrap_or_default(), true)?;
                    break Ok(true);
                }
                Poll::Ready(Some(Err(status))) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    break Err(Box::new(status) as CallError);
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        if let Some(previous) = held.replace(chunk) {
                            stream.send_data(previous, false)?;
                        }
                    }
                    Err(frame) => {
                        if let Some(chunk) = held.take() {
                            stream.send_data(chunk, false)?;
                        }
                        if let Ok(trailers) = frame.into_trailers() {
                            stream.send_trailers(trailers)?;
                        }
                        break Ok(true);
                    }
                },
            }
        })
    })
    .await?;
    if ready {
        return Ok(None);
    }
    Ok(Some(Pump(tokio::spawn(pump(body, stream)))))
}

/// Sends the rest of a streaming request body. A message in hand waits for the stream to
/// have send capacity before the next is pulled, so a fast producer waits for a slow plugin
/// instead of filling memory; capacity is claimed only with a message in hand (a claim
/// without one would hold connection window that other streams may need). Ends with the body,
/// or when the plugin resets the stream or the connection goes.
async fn pump(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    use http_body::Body as _;
    let mut waiting: Option<(Bytes, bool)> = None;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(reason) = stream.poll_reset(cx) {
                tracing::trace!(?reason, "the plugin reset a request stream");
                return Poll::Ready(());
            }
            if let Some((chunk, last)) = waiting.take() {
                while stream.capacity() == 0 {
                    match stream.poll_capacity(cx) {
                        Poll::Pending => {
                            waiting = Some((chunk, last));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                    }
                }
                if stream.send_data(chunk, last).is_err() || last {
                    return Poll::Ready(());
                }
                continue;
            }
            let frame = match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let _ = stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(%status, "a request stream failed; resetting it");
                    stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(chunk) if chunk.is_empty() => {
                    let last = body.is_end_stream();
                    if stream.send_data(chunk, last).is_err() || last {
                        return Poll::Ready(());
                    }
                }
                Ok(chunk) => {
                    stream.reserve_capacity(1);
                    waiting = Some((chunk, body.is_end_stream()));
                }
                Err(frame) => {
                    stream.reserve_capacity(0);
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return Poll::Ready(());
                }
            }
        }
    })
    .await
}

/// The body of a plugin's answer: its messages, then its trailers (the gRPC status).
///
/// Received data is handed back to the connection's flow control as it is read.
pub struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
    done: bool,
    /// The request body still being sent, if any; dropping the answer stops it.
    _pump: Option<Pump>,
    /// Counts the call on its connection while the answer is read.
    _in_flight: InFlight,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let body = &mut *self;
        if body.done {
            return Poll::Ready(None);
        }
        if !body.data_done {
            match std::task::ready!(body.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = body.recv.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
                }
                Some(Err(error)) => {
                    body.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => body.data_done = true,
            }
        }
        let trailers = std::task::ready!(body.recv.poll_trailers(cx));
        body.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}

/// A channel of one connection from `dialer` (a brokered connection), dialed again only to
/// replace it when it breaks. An unreachable plugin or a failed TLS handshake is reported here.
pub(crate) async fn channel(dialer: Dialer) -> Result<PluginChannel, String> {
    Ok(pooled(
        open(dialer.clone(), false).await?,
        dialer,
        Some(1),
        DIAL_TIMEOUT,
    ))
}

/// A channel on `first`, the plugin's first connection (already dialed, and under TLS where
/// TLS is used), once the plugin has answered a ping on it: the answer follows the plugin's
/// HTTP/2 settings, so a plugin whose socket accepts and never speaks HTTP/2 is found here
/// rather than at its first call. `dialer` reaches the plugin again, to replace a connection
/// that broke and, with `grow`, to open more under load (see [`PluginChannel`]). The caller
/// bounds how long this may take.
pub(crate) async fn answered_channel(
    first: BoxIo,
    dialer: Dialer,
    grow: bool,
) -> Result<PluginChannel, String> {
    let limit = if grow { None } else { Some(1) };
    let first = handshake(first, true).await?;
    Ok(pooled(first, dialer, limit, DIAL_TIMEOUT))
}

/// How many connections a growing channel may have: the host's CPU count, at most
/// [`MAX_CONNECTIONS`]. Worked out once, on the first channel that grows: asking the system
/// reads several cgroup files, too slow for every plugin's start.
fn connection_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        cpus.clamp(1, MAX_CONNECTIONS)
    })
}

/// A channel on `first` that replaces a broken connection from `dialer` and may open up to
/// `limit` connections in all (by default [`connection_limit`]), each dial within
/// `dial_timeout`.
fn pooled(
    first: h2::client::SendRequest<Bytes>,
    dialer: Dialer,
    limit: Option<usize>,
    dial_timeout: Duration,
) -> PluginChannel {
    PluginChannel::on(Arc::new(Pool {
        links: RwLock::new(vec![Link::new(first)]),
        dialer,
        limit,
        dial_timeout,
        growth: Mutex::new(Growth::Idle),
        redial: Mutex::new(Redial::Idle {
            backoff: REDIAL_BACKOFF,
        }),
    }))
}

impl PluginChannel {
    fn on(pool: Arc<Pool>) -> PluginChannel {
        PluginChannel {
            pool,
            chosen: None,
            redialing: None,
        }
    }
}

/// Dials a connection and runs the HTTP/2 handshake on it; with `answered`, also waits until
/// the plugin answers a ping on it, which shows that it serves the connection.
async fn open(dialer: Dialer, answered: bool) -> Result<h2::client::SendRequest<Bytes>, String> {
    let io = dialer().await.map_err(|error| describe(&error))?;
    handshake(io, answered).await
}

/// Runs the HTTP/2 handshake on `io` and starts the task driving the connection; with
/// `answered`, also waits until the plugin answers a ping on it.
async fn handshake(io: BoxIo, answered: bool) -> Result<h2::client::SendRequest<Bytes>, String> {
    let (send, mut connection) = h2::client::Builder::new()
        // Fixed windows large enough for big messages; adaptive windows would add BDP pings
        // to the round trips of small calls.
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|error| describe(&error))?;
    let ping = if answered {
        connection.ping_pong()
    } else {
        None
    };
    // The task ends when the connection closes, which it does once every clone of the
    // channel and every call on it is dropped (or the plugin goes).
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::trace!(%error, "plugin connection ended");
        }
    });
    if let Some(mut ping) = ping {
        ping.ping(h2::Ping::opaque())
            .await
            .map_err(|error| describe(&error))?;
    }
    Ok(send)
}

/// An error and its chain of sources, on one line.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A server-side connection for tonic's `serve_with_incoming`.
pub(crate) struct Incoming(pub(crate) BoxIo);

impl tonic::transport::server::Connected for Incoming {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Incoming {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A Unix socket listener whose accepted connections are (optionally) TLS-wrapped, as a
/// stream tonic can serve; failed TLS handshakes are logged and skipped.
#[cfg(unix)]
pub(crate) fn incoming(
    listener: tokio::net::UnixListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl futures::Stream<Item = io::Result<Incoming>> + Send + 'static {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => return Some((Err(error), (listener, acceptor))),
            };
            let io: BoxIo = match &acceptor {
                None => Box::new(stream),
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => Box::new(tls),
                    Err(error) => {
                        tracing::warn!(%error, "refused a broker connection: TLS handshake failed");
                        continue;
                    }
                },
            };
            return Some((Ok(Incoming(io)), (listener, acceptor)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_build_client_and_server_configs_that_pin_the_peer() {
        let ours = Identity::generate().unwrap();
        let theirs = Identity::generate().unwrap();
        assert!(ours.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(&parse_pem_cert(ours.cert_pem()).unwrap(), ours.cert_der());
        let client = ours.client_config(theirs.cert_der().clone()).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        ours.server_config(theirs.cert_der().clone()).unwrap();
        assert!(parse_pem_cert("not pem").is_err());
    }

    #[tokio::test]
    async fn tls_succeeds_with_the_pinned_cert_and_fails_with_another() {
        let server = Identity::generate().unwrap();
        let client = Identity::generate().unwrap();
        let stranger = Identity::generate().unwrap();
        for (presented, ok) in [(&client, true), (&stranger, false)] {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let acceptor = tokio_rustls::TlsAcceptor::from(
                server.server_config(client.cert_der().clone()).unwrap(),
            );
            let accept = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut tls = acceptor.accept(b).await?;
                tls.write_all(b"x").await?;
                tls.flush().await
            });
            let config = presented.client_config(server.cert_der().clone()).unwrap();
            let connected = async {
                use tokio::io::AsyncReadExt;
                let mut io = tls_connect(Box::new(a), config).await?;
                let mut byte = [0u8; 1];
                io.read_exact(&mut byte).await?;
                io::Result::Ok(byte)
            }
            .await;
            let accepted = accept.await.unwrap();
            assert_eq!(
                connected.is_ok() && accepted.is_ok(),
                ok,
                "{connected:?} {accepted:?}"
            );
        }
    }

    /// A request body fed by the test, frame by frame; it ends when the sender is dropped.
    struct Frames(tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, tonic::Status>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
            self.0
                .poll_recv(cx)
                .map(|frame| frame.map(|frame| frame.map(http_body::Frame::data)))
        }
    }

    /// Counts the writes that reach the socket.
    struct Counted {
        io: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf));
            self.writes.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(written)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// A channel over an in-memory pipe whose client writes are counted, and the server end.
    async fn pair() -> (
        PluginChannel,
        Arc<AtomicUsize>,
        h2::server::Connection<tokio::io::DuplexStream, Bytes>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            io: client,
            writes: writes.clone(),
        };
        let slot = Arc::new(Mutex::new(Some(Box::new(counted) as BoxIo)));
        let dialer: Dialer = Arc::new(move || {
            let io = slot.lock().unwrap().take();
            Box::pin(async move { io.ok_or_else(|| io::Error::other("dialed twice")) })
        });
        let (channel, server) = tokio::join!(channel(dialer), h2::server::handshake(server));
        (channel.unwrap(), writes, server.unwrap())
    }

    fn request(body: tonic::body::Body) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .uri("/test.Service/Method")
            .body(body)
            .unwrap()
    }

    async fn call(
        channel: &mut PluginChannel,
        body: tonic::body::Body,
    ) -> Result<http::Response<ResponseBody>, CallError> {
        use tower::{Service, ServiceExt};
        channel.ready().await?.call(request(body)).await
    }

    /// Reads a request body on the server side to its end.
    async fn read_all(body: &mut h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
        let mut all = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn a_unary_request_leaves_in_one_write_and_its_answer_ends_with_trailers() {
        let (mut channel, writes, mut server) = pair().await;
        let serve = tokio::spawn(async move {
            while let Some(accepted) = server.accept().await {
                let (request, mut respond) = accepted.unwrap();
                let mut body = request.into_body();
                let got = read_all(&mut body).await.unwrap();
                let mut stream = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                stream.send_data(Bytes::from(got), false).unwrap();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                stream.send_trailers(trailers).unwrap();
            }
        });
        for round in 0..3 {
            // The first round also carries the settings acknowledgement.
            let before = writes.load(Ordering::SeqCst);
            let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
            frames.send(Ok(Bytes::from_static(b"hello"))).unwrap();
            drop(frames);
            let response = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
                .await
                .unwrap();
            let after = writes.load(Ordering::SeqCst);
            if round > 0 {
                assert_eq!(after - before, 1, "headers and message in one write");
            }
            use http_body::Body as _;
            let mut body = std::pin::pin!(response.into_body());
            let data = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(data.into_data().unwrap(), "hello");
            let trailers = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(trailers.into_trailers().unwrap()["grpc-status"], "0");
            assert!(
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                    .await
                    .is_none()
            );
            assert!(body.is_end_stream());
        }
        drop(channel);
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_streaming_request_is_sent_as_it_comes_and_stops_when_the_answer_is_dropped() {
        let (mut channel, _, mut server) = pair().await;
        let (seen, mut seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let serve = tokio::spawn(async move {
            while let Some(accepted) = server.accept().await {
                let (request, mut respond) = accepted.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    respond
                        .send_response(http::Response::new(()), false)
                        .unwrap();
                    let mut body = request.into_body();
                    loop {
                        match body.data().await {
                            // The end of a body that ended after its last message comes
                            // as an empty frame.
                            Some(Ok(chunk)) if chunk.is_empty() => {}
                            Some(Ok(chunk)) => {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                seen.send(Ok(chunk)).unwrap();
                            }
                            Some(Err(error)) => {
                                seen.send(Err(error.reason())).unwrap();
                                return;
                            }
                            None => {
                                seen.send(Err(None)).unwrap();
                                return;
                            }
                        }
                    }
                });
            }
        });

        // Messages cross one by one while the answer is open; the end of the body ends the
        // stream.
        let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
        let response = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
            .await
            .unwrap();
        for message in ["one", "two"] {
            frames.send(Ok(Bytes::from(message))).unwrap();
            assert_eq!(seen_by_test.recv().await.unwrap().unwrap(), message);
        }
        drop(frames);
        assert_eq!(seen_by_test.recv().await.unwrap(), Err(None));
        drop(response);

        // Dropping the answer while the body is still open stops sending and resets the
        // stream.
        let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
        let response = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
            .await
            .unwrap();
        frames.send(Ok(Bytes::from_static(b"three"))).unwrap();
        assert_eq!(seen_by_test.recv().await.unwrap().unwrap(), "three");
        drop(response);
        assert_eq!(
            seen_by_test.recv().await.unwrap(),
            Err(Some(h2::Reason::CANCEL))
        );
        assert!(frames.is_closed(), "the body was dropped with the call");

        // A body that fails fails the call with its status and resets the stream.
        let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
        frames
            .send(Err(tonic::Status::invalid_argument("no such message")))
            .unwrap();
        let error = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
            .await
            .unwrap_err();
        let status = tonic::Status::from_error(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // The connection is unharmed: the next call goes through.
        let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
        frames.send(Ok(Bytes::from_static(b"four"))).unwrap();
        let response = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
            .await
            .unwrap();
        let next = loop {
            // A stream the failed call had opened may report its reset first.
            match seen_by_test.recv().await.unwrap() {
                Err(Some(h2::Reason::CANCEL)) => continue,
                other => break other,
            }
        };
        assert_eq!(next.unwrap(), "four");
        drop(response);

        drop(channel);
        serve.await.unwrap();
    }

    /// Dials the test serves: each makes an in-memory pipe, counts itself, and hands the server
    /// end to the test, or fails once `refuse_from` dials were made.
    fn test_dialer(
        refuse_from: usize,
    ) -> (
        Dialer,
        tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
        Arc<AtomicUsize>,
    ) {
        let (ends, accepted) = tokio::sync::mpsc::unbounded_channel();
        let dials = Arc::new(AtomicUsize::new(0));
        let counted = dials.clone();
        let dialer: Dialer = Arc::new(move || {
            let made = counted.fetch_add(1, Ordering::SeqCst);
            let ends = ends.clone();
            Box::pin(async move {
                if made >= refuse_from {
                    return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
                }
                let (client, server) = tokio::io::duplex(1 << 20);
                ends.send(server)
                    .map_err(|_| io::Error::other("the test is gone"))?;
                Ok(Box::new(client) as BoxIo)
            })
        });
        (dialer, accepted, dials)
    }

    /// Answers every request on `io` with its own body and a grpc-status, reporting `index` on
    /// `seen` for each.
    async fn echo_server(
        io: tokio::io::DuplexStream,
        index: usize,
        seen: tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        let mut server = h2::server::handshake(io).await.unwrap();
        while let Some(Ok((request, mut respond))) = server.accept().await {
            let _ = seen.send(index);
            let mut body = request.into_body();
            let Ok(got) = read_all(&mut body).await else {
                continue;
            };
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let _ = stream.send_data(Bytes::from(got), false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let _ = stream.send_trailers(trailers);
        }
    }

    /// A request body of one message.
    fn message(text: &'static str) -> tonic::body::Body {
        let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
        frames
            .send(Ok(Bytes::from_static(text.as_bytes())))
            .unwrap();
        tonic::body::Body::new(Frames(receiver))
    }

    /// Waits (up to ten seconds) until `done` holds.
    async fn eventually(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the condition never held");
    }

    #[tokio::test]
    async fn a_busy_channel_opens_another_connection_and_calls_go_to_the_less_busy_one() {
        let (dialer, mut accepted, dials) = test_dialer(usize::MAX);
        let (seen, mut seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let servers = tokio::spawn(async move {
            let mut servers = tokio::task::JoinSet::new();
            let mut index = 0;
            while let Some(io) = accepted.recv().await {
                servers.spawn(echo_server(io, index, seen.clone()));
                index += 1;
            }
            servers.join_all().await;
        });
        let first = open(dialer.clone(), false).await.unwrap();
        let mut channel = pooled(first, dialer, Some(2), DIAL_TIMEOUT);

        // Answers still being read keep their calls in flight. Below the threshold the
        // channel keeps one connection.
        let mut open_answers = Vec::new();
        for _ in 0..GROW_AT {
            open_answers.push(call(&mut channel, message("busy")).await.unwrap());
            assert_eq!(seen_by_test.recv().await, Some(0));
        }
        assert_eq!(channel.connections(), 1);
        assert_eq!(dials.load(Ordering::SeqCst), 1);

        // The next call finds the connection busy: it still goes there, and another one
        // opens once the server answers a ping on it.
        open_answers.push(call(&mut channel, message("busy")).await.unwrap());
        assert_eq!(seen_by_test.recv().await, Some(0));
        eventually(|| channel.connections() == 2).await;
        let answer = call(&mut channel, message("less busy")).await.unwrap();
        assert_eq!(seen_by_test.recv().await, Some(1), "the idle connection");
        drop(answer);

        // Both busy, at the limit: nothing more is dialed, and calls still go through.
        for _ in 0..2 * GROW_AT {
            open_answers.push(call(&mut channel, message("busy")).await.unwrap());
            seen_by_test.recv().await.unwrap();
        }
        assert!(read(&channel.pool.links)[0].load() >= GROW_AT);
        assert!(read(&channel.pool.links)[1].load() >= GROW_AT);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dials.load(Ordering::SeqCst), 2);
        assert_eq!(channel.connections(), 2);

        // A call ends when its answer is dropped.
        drop(open_answers);
        assert_eq!(read(&channel.pool.links)[0].load(), 0);
        assert_eq!(read(&channel.pool.links)[1].load(), 0);
        drop(channel);
        servers.await.unwrap();
    }

    #[tokio::test]
    async fn a_plugin_that_refuses_or_ignores_another_connection_keeps_its_first() {
        // Refused outright, and accepted but never served (no answer to the ping): either way
        // the channel stays on its first connection and does not try again.
        for refuse_from in [1, usize::MAX] {
            let (dialer, mut accepted, dials) = test_dialer(refuse_from);
            let (seen, mut seen_by_test) = tokio::sync::mpsc::unbounded_channel();
            let servers = tokio::spawn(async move {
                let mut ignored = Vec::new();
                let first = accepted.recv().await.unwrap();
                let serving = tokio::spawn(echo_server(first, 0, seen));
                while let Some(io) = accepted.recv().await {
                    ignored.push(io);
                }
                serving.await.unwrap();
            });
            let first = open(dialer.clone(), false).await.unwrap();
            let timeout = Duration::from_millis(100);
            let mut channel = pooled(first, dialer, Some(2), timeout);
            let mut open_answers = Vec::new();
            for _ in 0..3 * GROW_AT {
                open_answers.push(call(&mut channel, message("busy")).await.unwrap());
                assert_eq!(seen_by_test.recv().await, Some(0));
            }
            eventually(|| matches!(*lock(&channel.pool.growth), Growth::Refused)).await;
            for _ in 0..GROW_AT {
                open_answers.push(call(&mut channel, message("busy")).await.unwrap());
                assert_eq!(seen_by_test.recv().await, Some(0));
            }
            assert_eq!(channel.connections(), 1);
            assert_eq!(dials.load(Ordering::SeqCst), 2);
            drop(open_answers);
            drop(channel);
            servers.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_broken_extra_connection_is_dropped_and_calls_go_to_the_others() {
        let (dialer, mut accepted, _) = test_dialer(usize::MAX);
        let (seen, mut seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let (break_second, broken) = tokio::sync::oneshot::channel::<()>();
        let servers = tokio::spawn(async move {
            let first = accepted.recv().await.unwrap();
            let serving = tokio::spawn(echo_server(first, 0, seen.clone()));
            let second = accepted.recv().await.unwrap();
            let second = tokio::spawn(echo_server(second, 1, seen));
            let _ = broken.await;
            // Its server and its end of the pipe go: the client sees the connection close.
            second.abort();
            serving.await.unwrap();
        });
        let first = open(dialer.clone(), false).await.unwrap();
        let mut channel = pooled(first, dialer, Some(2), DIAL_TIMEOUT);
        let mut open_answers = Vec::new();
        for _ in 0..=GROW_AT {
            open_answers.push(call(&mut channel, message("busy")).await.unwrap());
            assert_eq!(seen_by_test.recv().await, Some(0));
        }
        eventually(|| channel.connections() == 2).await;
        break_second.send(()).unwrap();
        // Once the client has seen the close, no call goes there.
        let mut second = read(&channel.pool.links)[1].send.clone();
        eventually(|| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            matches!(second.poll_ready(&mut cx), Poll::Ready(Err(_)))
        })
        .await;
        for _ in 0..4 {
            let answer = call(&mut channel, message("after")).await.unwrap();
            assert_eq!(seen_by_test.recv().await, Some(0));
            drop(answer);
        }
        assert_eq!(channel.connections(), 1);
        drop(open_answers);
        drop(channel);
        servers.await.unwrap();
    }

    /// Serves `io` until `close` fires, then drops the connection (the client sees it break).
    async fn echo_until(
        io: tokio::io::DuplexStream,
        index: usize,
        seen: tokio::sync::mpsc::UnboundedSender<usize>,
        close: tokio::sync::oneshot::Receiver<()>,
    ) {
        tokio::select! {
            () = echo_server(io, index, seen) => {}
            _ = close => {}
        }
    }

    #[tokio::test]
    async fn a_broken_last_connection_is_replaced_by_one_dial_for_every_waiting_caller() {
        let (dialer, mut accepted, dials) = test_dialer(usize::MAX);
        let (seen, mut seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let (close_first, closed) = tokio::sync::oneshot::channel::<()>();
        let servers = tokio::spawn(async move {
            let first = accepted.recv().await.unwrap();
            tokio::spawn(echo_until(first, 0, seen.clone(), closed));
            let mut index = 1;
            while let Some(next) = accepted.recv().await {
                tokio::spawn(echo_server(next, index, seen.clone()));
                index += 1;
            }
        });
        let first = open(dialer.clone(), true).await.unwrap();
        let mut channel = pooled(first, dialer, Some(1), DIAL_TIMEOUT);
        drop(call(&mut channel, message("before")).await.unwrap());
        assert_eq!(seen_by_test.recv().await, Some(0));

        close_first.send(()).unwrap();
        let mut old = read(&channel.pool.links)[0].send.clone();
        eventually(|| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            matches!(old.poll_ready(&mut cx), Poll::Ready(Err(_)))
        })
        .await;
        // Many callers find the connection broken at once: one dial serves them all.
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let mut channel = channel.clone();
            calls.spawn(async move { call(&mut channel, message("after")).await.map(drop) });
        }
        while let Some(answered) = calls.join_next().await {
            answered
                .unwrap()
                .expect("a call after the re-dial is answered");
        }
        for _ in 0..32 {
            assert_eq!(seen_by_test.recv().await, Some(1));
        }
        assert_eq!(dials.load(Ordering::SeqCst), 2);
        assert_eq!(channel.connections(), 1);
        drop(channel);
        servers.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_redial_fails_calls_at_once_until_its_backoff_has_passed() {
        // The first dial works; every later one is refused, as a plugin that has gone.
        let (dialer, mut accepted, dials) = test_dialer(1);
        let (close_first, closed) = tokio::sync::oneshot::channel::<()>();
        let (seen, _seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let first = accepted.recv().await.unwrap();
            echo_until(first, 0, seen, closed).await;
        });
        let first = open(dialer.clone(), true).await.unwrap();
        let mut channel = pooled(first, dialer, Some(1), DIAL_TIMEOUT);
        close_first.send(()).unwrap();
        server.await.unwrap();

        let redial_error = |error: CallError| match error.downcast::<ChannelError>() {
            Ok(error) => *error,
            Err(other) => panic!("expected a ChannelError, got {other:?}"),
        };
        let mut backoff = REDIAL_BACKOFF;
        for attempt in 2..6 {
            // The call that dials gets the dial's failure...
            let failed = redial_error(call(&mut channel, message("x")).await.unwrap_err());
            assert!(matches!(failed, ChannelError::Redial { .. }), "{failed:?}");
            assert_eq!(dials.load(Ordering::SeqCst), attempt);
            // ...and calls within the backoff fail at once, without dialing.
            for _ in 0..10 {
                match redial_error(call(&mut channel, message("x")).await.unwrap_err()) {
                    ChannelError::Redial { retry_in, .. } => assert!(retry_in <= backoff),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(dials.load(Ordering::SeqCst), attempt);
            tokio::time::advance(backoff).await;
            backoff = (backoff * 2).min(MAX_REDIAL_BACKOFF);
        }
    }

    #[tokio::test]
    async fn a_channel_that_cannot_dial_again_says_its_connection_broke() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let dialer = once(Box::new(client), None);
        let (seen, _seen_by_test) = tokio::sync::mpsc::unbounded_channel();
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(echo_until(server, 0, seen, closed));
        let mut channel = channel(dialer).await.unwrap();
        drop(call(&mut channel, message("before")).await.unwrap());
        close.send(()).unwrap();
        server.await.unwrap();
        let error = loop {
            match call(&mut channel, message("after")).await {
                Err(error) => break error,
                Ok(_) => tokio::task::yield_now().await,
            }
        };
        // Either the call raced the close (the connection's own error) or the channel found
        // it closed and could not dial the brokered stream again.
        if let Ok(error) = error.downcast::<ChannelError>() {
            assert!(matches!(*error, ChannelError::Redial { .. }), "{error:?}");
        }
    }

    #[tokio::test]
    async fn calls_beyond_the_servers_stream_limit_wait_for_a_stream() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let slot = Arc::new(Mutex::new(Some(Box::new(client) as BoxIo)));
        let dialer: Dialer = Arc::new(move || {
            let io = slot.lock().unwrap().take();
            Box::pin(async move { io.ok_or_else(|| io::Error::other("dialed twice")) })
        });
        let server = h2::server::Builder::new()
            .max_concurrent_streams(2)
            .handshake::<_, Bytes>(server);
        let (channel, server) = tokio::join!(channel(dialer), server);
        let (channel, mut server) = (channel.unwrap(), server.unwrap());
        let serve = tokio::spawn(async move {
            let mut answered = 0;
            while let Some(Ok((request, mut respond))) = server.accept().await {
                let mut body = request.into_body();
                let got = read_all(&mut body).await.unwrap();
                let mut stream = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                stream.send_data(Bytes::from(got), true).unwrap();
                answered += 1;
            }
            answered
        });
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..20u8 {
            let mut channel = channel.clone();
            calls.spawn(async move {
                use http_body::Body as _;
                let (frames, receiver) = tokio::sync::mpsc::unbounded_channel();
                frames.send(Ok(Bytes::from(vec![n]))).unwrap();
                drop(frames);
                let response = call(&mut channel, tonic::body::Body::new(Frames(receiver)))
                    .await
                    .unwrap();
                let mut body = response.into_body();
                let mut data = Vec::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    if let Ok(chunk) = frame.unwrap().into_data() {
                        data.extend_from_slice(&chunk);
                    }
                }
                assert_eq!(data, [n]);
            });
        }
        while let Some(done) = calls.join_next().await {
            done.unwrap();
        }
        drop(channel);
        assert_eq!(serve.await.unwrap(), 20);
    }
}
