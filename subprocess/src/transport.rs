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
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
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
    let slot = Arc::new(std::sync::Mutex::new(Some(io)));
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

/// A gRPC channel to a plugin: one HTTP/2 connection, driven by its own task, that generated
/// tonic clients call directly (`KvClient::new(channel)`).
///
/// Unlike tonic's `Channel` there is no request buffer and no reconnection in between: a call
/// goes straight to the connection, and a plugin whose connection broke is gone anyway. Clones
/// share the connection; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct PluginChannel {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl std::fmt::Debug for PluginChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginChannel").finish_non_exhaustive()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for PluginChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<'static, Result<Self::Response, hyper::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // HTTP/2 needs a scheme and an authority; generated clients only set the path. A Go
        // plugin ignores the authority (a Go host sends `unused`).
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(http::uri::Authority::from_static("localhost"));
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        Box::pin(self.send.send_request(request))
    }
}

/// Opens a connection from `dialer` and runs the HTTP/2 handshake on it; an unreachable plugin
/// or a failed TLS handshake is reported here.
pub(crate) async fn channel(dialer: Dialer) -> Result<PluginChannel, String> {
    let io = dialer().await.map_err(|error| describe(&error))?;
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor)
        // Fixed windows large enough for big messages; adaptive windows would add BDP pings
        // to the round trips of small calls.
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| describe(&error))?;
    // The task ends when the connection closes, which it does once every clone of the
    // channel is dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::trace!(%error, "plugin connection ended");
        }
    });
    Ok(PluginChannel { send })
}

/// Runs hyper's connection-level tasks on tokio.
#[derive(Clone, Copy)]
struct TokioExecutor;

impl<F> hyper::rt::Executor<F> for TokioExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
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
}
