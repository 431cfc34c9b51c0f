//! The go-plugin handshake: the environment a host sets for its plugin, the one line a plugin
//! prints on stdout once it listens, and application protocol version negotiation.
//!
//! [`HandshakeLine::parse`] applies a Go host's acceptance rules (split on every `|`, at least
//! four fields, core version 1, a certificate only when longer than 50 characters, ...) and
//! returns a typed value before anything is dialed; [`HandshakeLine`]'s `Display` prints what
//! a Go plugin prints. Checking the version against the host's offer and the protocol against
//! the allowed ones needs the host's configuration and happens in [`crate::Connection`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, PathBuf};

use base64::Engine as _;

/// go-plugin's own protocol version; a handshake with any other value is refused.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// The longest handshake line a host reads (a Go host's line scanner limit).
pub const MAX_LINE: usize = 64 * 1024;

/// Longest Unix socket path the platform accepts (`sun_path` minus the terminating NUL).
pub const MAX_UNIX_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// The environment variables of the protocol.
pub mod env {
    /// Comma-separated application protocol versions the host supports.
    pub const PROTOCOL_VERSIONS: &str = "PLUGIN_PROTOCOL_VERSIONS";
    /// Lowest TCP port a plugin may listen on.
    pub const MIN_PORT: &str = "PLUGIN_MIN_PORT";
    /// Highest TCP port a plugin may listen on.
    pub const MAX_PORT: &str = "PLUGIN_MAX_PORT";
    /// The host's AutoMTLS certificate, PEM.
    pub const CLIENT_CERT: &str = "PLUGIN_CLIENT_CERT";
    /// `true` when the host wants the multiplexed broker.
    pub const MULTIPLEX_GRPC: &str = "PLUGIN_MULTIPLEX_GRPC";
    /// Directory the plugin creates its Unix socket in.
    pub const UNIX_SOCKET_DIR: &str = "PLUGIN_UNIX_SOCKET_DIR";
    /// Group (name or gid) the plugin's Unix socket is given to.
    pub const UNIX_SOCKET_GROUP: &str = "PLUGIN_UNIX_SOCKET_GROUP";
}

/// What host and plugin agree on before they start: a base protocol version and a magic
/// cookie, as go-plugin's `HandshakeConfig`.
///
/// The cookie is not a security measure; it tells a plugin run by hand that it is a plugin.
///
/// ```
/// use plinth_subprocess::HandshakeConfig;
///
/// // Go: plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "PLINTH_PLUGIN",
/// //     MagicCookieValue: "kv"}
/// let handshake = HandshakeConfig::new(1, "PLINTH_PLUGIN", "kv");
/// assert_eq!(handshake.magic_cookie_key, "PLINTH_PLUGIN");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// The application protocol version used when no versioned sets are given.
    pub protocol_version: u32,
    /// The cookie's environment variable name.
    pub magic_cookie_key: String,
    /// The cookie's value.
    pub magic_cookie_value: String,
}

impl HandshakeConfig {
    /// A handshake with application protocol `version` and the cookie `key=value`.
    pub fn new(version: u32, key: impl Into<String>, value: impl Into<String>) -> HandshakeConfig {
        HandshakeConfig {
            protocol_version: version,
            magic_cookie_key: key.into(),
            magic_cookie_value: value.into(),
        }
    }
}

/// The RPC system a plugin speaks on its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// gRPC over HTTP/2.
    Grpc,
    /// Go `net/rpc` with gob over yamux, go-plugin's oldest protocol.
    NetRpc,
}

impl Protocol {
    /// The name in a handshake line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::NetRpc => "netrpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = HandshakeError;

    fn from_str(text: &str) -> Result<Protocol, HandshakeError> {
        match text {
            "grpc" => Ok(Protocol::Grpc),
            "netrpc" | "" => Ok(Protocol::NetRpc),
            other => Err(HandshakeError::Protocol {
                found: other.to_owned(),
            }),
        }
    }
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix domain socket at this absolute path.
    Unix(PathBuf),
    /// A TCP address on the local machine.
    Tcp(SocketAddr),
}

impl Address {
    /// The network name in a handshake line: `unix` or `tcp`.
    pub fn network(&self) -> &'static str {
        match self {
            Address::Unix(_) => "unix",
            Address::Tcp(_) => "tcp",
        }
    }

    /// Parses a network and address as a handshake line (or a reattach config) carries them.
    ///
    /// A Unix path must be absolute, free of `..` and short enough for the platform; a TCP
    /// address may omit the host (`:1234` is the local machine, as in Go).
    pub fn parse(network: &str, address: &str) -> Result<Address, HandshakeError> {
        match network {
            "unix" => {
                let path = PathBuf::from(address);
                if !path.is_absolute() || address.contains('\0') {
                    return Err(HandshakeError::Address {
                        address: address.to_owned(),
                        reason: "a unix socket address must be an absolute path",
                    });
                }
                if path.components().any(|c| c == Component::ParentDir) {
                    return Err(HandshakeError::Address {
                        address: address.to_owned(),
                        reason: "a unix socket path must not contain `..`",
                    });
                }
                if address.len() > MAX_UNIX_PATH {
                    return Err(HandshakeError::Address {
                        address: address.to_owned(),
                        reason: "the unix socket path is longer than the platform allows",
                    });
                }
                Ok(Address::Unix(path))
            }
            "tcp" => {
                let normalised = match address.strip_prefix(':') {
                    Some(port) => format!("127.0.0.1:{port}"),
                    None => address.replace("localhost:", "127.0.0.1:"),
                };
                let socket: SocketAddr =
                    normalised.parse().map_err(|_| HandshakeError::Address {
                        address: address.to_owned(),
                        reason: "expected a TCP address `ip:port`",
                    })?;
                if !socket.ip().is_loopback() && socket.ip() != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
                    return Err(HandshakeError::Address {
                        address: address.to_owned(),
                        reason: "plugins must listen on the loopback interface",
                    });
                }
                Ok(Address::Tcp(socket))
            }
            other => Err(HandshakeError::Network {
                found: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp(socket) => write!(f, "{socket}"),
        }
    }
}

/// A parsed handshake line: `1|<app version>|<network>|<address>|<protocol>|<cert>[|<mux>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeLine {
    /// The application protocol version the plugin chose.
    pub app_version: u32,
    /// Where the plugin listens.
    pub address: Address,
    /// What it speaks there (`netrpc` when the field is absent, as in Go).
    pub protocol: Protocol,
    /// The plugin's AutoMTLS certificate (DER), when it sent one.
    pub server_cert: Option<Vec<u8>>,
    /// Whether the plugin supports the multiplexed broker (the optional seventh field).
    pub multiplex: bool,
}

/// What is wrong with a handshake line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Nothing was printed before stdout closed.
    #[error("the plugin closed stdout without printing a handshake line")]
    Empty,
    /// The line is longer than [`MAX_LINE`].
    #[error("the line is longer than {MAX_LINE} bytes")]
    TooLong,
    /// Fewer than four `|`-separated fields.
    #[error(
        "expected at least 4 `|`-separated fields (core version, app version, network, address), found {found}"
    )]
    TooFewFields {
        /// How many fields there were.
        found: usize,
    },
    /// The core protocol version is not 1.
    #[error(
        "core protocol version {found:?} is not {CORE_PROTOCOL_VERSION}; the plugin was built for an incompatible go-plugin"
    )]
    CoreVersion {
        /// The field as printed.
        found: String,
    },
    /// The application protocol version is not a number.
    #[error("application protocol version {found:?} is not an unsigned integer")]
    AppVersion {
        /// The field as printed.
        found: String,
    },
    /// The network is neither `unix` nor `tcp`.
    #[error("unknown network {found:?}; expected `unix` or `tcp`")]
    Network {
        /// The field as printed.
        found: String,
    },
    /// The address is unusable.
    #[error("address {address:?}: {reason}")]
    Address {
        /// The field as printed (cut to 512 bytes).
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The protocol is neither `grpc` nor `netrpc`.
    #[error("unknown protocol {found:?}; expected `grpc` or `netrpc`")]
    Protocol {
        /// The field as printed.
        found: String,
    },
    /// The certificate field is not unpadded standard base64 of an X.509 certificate (DER)
    /// that the TLS stack can parse.
    #[error("server certificate field: {reason}")]
    Certificate {
        /// What is wrong with it.
        reason: String,
    },
    /// The multiplexing field is not a boolean.
    #[error("multiplexing field {found:?} is not a boolean")]
    Multiplex {
        /// The field as printed.
        found: String,
    },
}

impl HandshakeLine {
    /// Parses a handshake line as a Go host does: surrounding white space is trimmed, fields
    /// are split on every `|`, fields past the seventh are ignored.
    pub fn parse(line: &str) -> Result<HandshakeLine, HandshakeError> {
        if line.len() > MAX_LINE {
            return Err(HandshakeError::TooLong);
        }
        let line = line.trim();
        if line.is_empty() {
            return Err(HandshakeError::Empty);
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < 4 {
            return Err(HandshakeError::TooFewFields {
                found: fields.len(),
            });
        }
        if fields[0].parse::<u32>().ok() != Some(CORE_PROTOCOL_VERSION) {
            return Err(HandshakeError::CoreVersion {
                found: cut(fields[0]),
            });
        }
        let app_version = fields[1]
            .parse::<u32>()
            .map_err(|_| HandshakeError::AppVersion {
                found: cut(fields[1]),
            })?;
        let address = Address::parse(fields[2], fields[3]).map_err(|error| match error {
            HandshakeError::Address { reason, .. } => HandshakeError::Address {
                address: cut(fields[3]),
                reason,
            },
            HandshakeError::Network { found } => HandshakeError::Network { found: cut(&found) },
            other => other,
        })?;
        let protocol = match fields.get(4) {
            Some(text) => text
                .parse()
                .map_err(|_| HandshakeError::Protocol { found: cut(text) })?,
            None => Protocol::NetRpc,
        };
        let server_cert = match fields.get(5) {
            Some(text) if text.len() > 50 => Some(decode_cert(text)?),
            _ => None,
        };
        let multiplex = match fields.get(6) {
            None | Some(&"") => false,
            Some(text) => {
                parse_go_bool(text).ok_or_else(|| HandshakeError::Multiplex { found: cut(text) })?
            }
        };
        Ok(HandshakeLine {
            app_version,
            address,
            protocol,
            server_cert,
            multiplex,
        })
    }
}

impl fmt::Display for HandshakeLine {
    /// The line a Go plugin prints (without the newline): six fields, a seventh only when
    /// multiplexing is advertised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cert = self
            .server_cert
            .as_deref()
            .map(|der| base64::engine::general_purpose::STANDARD_NO_PAD.encode(der))
            .unwrap_or_default();
        write!(
            f,
            "{CORE_PROTOCOL_VERSION}|{}|{}|{}|{}|{cert}",
            self.app_version,
            self.address.network(),
            self.address,
            self.protocol,
        )?;
        if self.multiplex {
            f.write_str("|true")?;
        }
        Ok(())
    }
}

fn decode_cert(text: &str) -> Result<Vec<u8>, HandshakeError> {
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|error| HandshakeError::Certificate {
            reason: format!("not unpadded standard base64: {error}"),
        })?;
    // A DER certificate is a SEQUENCE; anything else cannot be one.
    if der.first() != Some(&0x30) {
        return Err(HandshakeError::Certificate {
            reason: "the decoded bytes are not a DER certificate".to_owned(),
        });
    }
    // Parsed as the TLS stack will parse it when it checks the plugin's signature: a field
    // that fails here could only fail later, as a TLS handshake error far from its cause.
    let cert = rustls::pki_types::CertificateDer::from(der.as_slice());
    if let Err(error) = rustls::server::ParsedCertificate::try_from(&cert) {
        return Err(HandshakeError::Certificate {
            reason: format!("the decoded bytes are not an X.509 certificate: {error}"),
        });
    }
    Ok(der)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(512);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The value of `PLUGIN_PROTOCOL_VERSIONS` for a host offering `versions`.
pub fn encode_versions(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The versions in a host's `PLUGIN_PROTOCOL_VERSIONS`, with pieces that are not decimal
/// integers returned separately (a Go plugin skips them after a warning).
pub fn decode_versions(text: &str) -> (Vec<u32>, Vec<String>) {
    let mut versions = Vec::new();
    let mut invalid = Vec::new();
    for piece in text.split(',').filter(|piece| !piece.is_empty()) {
        match piece.parse::<u32>() {
            Ok(version) => versions.push(version),
            Err(_) => invalid.push(piece.to_owned()),
        }
    }
    (versions, invalid)
}

/// The version a plugin offering `ours` serves to a host offering `host`: the highest common
/// one, else the plugin's lowest (the host then reports the mismatch). `None` when the plugin
/// offers nothing.
pub fn negotiate(ours: &[u32], host: &[u32]) -> Option<u32> {
    let mut sorted = ours.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .rev()
        .find(|version| host.contains(version))
        .or(sorted.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real certificate, as a plugin prints it in field 6.
    fn cert_field() -> (Vec<u8>, String) {
        let identity = crate::transport::Identity::generate().unwrap();
        let der = identity.cert_der().to_vec();
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&der);
        (der, text)
    }

    #[test]
    fn parses_the_six_field_line_a_go_plugin_prints() {
        let line = HandshakeLine::parse("1|3|unix|/tmp/plugin2620294049|grpc|\n").unwrap();
        assert_eq!(line.app_version, 3);
        assert_eq!(
            line.address,
            Address::Unix(PathBuf::from("/tmp/plugin2620294049"))
        );
        assert_eq!(line.protocol, Protocol::Grpc);
        assert_eq!(line.server_cert, None);
        assert!(!line.multiplex);
        assert_eq!(line.to_string(), "1|3|unix|/tmp/plugin2620294049|grpc|");
    }

    #[test]
    fn four_fields_mean_netrpc_and_short_certs_are_ignored() {
        let line = HandshakeLine::parse("1|1|tcp|:1234").unwrap();
        assert_eq!(line.protocol, Protocol::NetRpc);
        assert_eq!(
            line.address,
            Address::Tcp("127.0.0.1:1234".parse().unwrap())
        );
        let line = HandshakeLine::parse("1|1|tcp|127.0.0.1:1234|grpc|short").unwrap();
        assert_eq!(line.server_cert, None);
    }

    #[test]
    fn multiplex_field_and_certificate_are_read() {
        let (der, cert) = cert_field();
        let line = HandshakeLine::parse(&format!("1|1|unix|/tmp/p|grpc|{cert}|true")).unwrap();
        assert_eq!(line.server_cert.as_deref(), Some(&der[..]));
        assert!(line.multiplex);
        assert_eq!(
            line.to_string(),
            format!("1|1|unix|/tmp/p|grpc|{cert}|true")
        );
    }

    #[test]
    fn malformed_lines_get_the_matching_error() {
        type Check = fn(&HandshakeError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, HandshakeError::Empty)),
            ("hello world", |e| {
                matches!(e, HandshakeError::TooFewFields { found: 1 })
            }),
            ("2|1|unix|/tmp/p|grpc|", |e| {
                matches!(e, HandshakeError::CoreVersion { .. })
            }),
            ("x|1|unix|/tmp/p|grpc|", |e| {
                matches!(e, HandshakeError::CoreVersion { .. })
            }),
            ("1|-1|unix|/tmp/p|grpc|", |e| {
                matches!(e, HandshakeError::AppVersion { .. })
            }),
            ("1|1|udp|/tmp/p|grpc|", |e| {
                matches!(e, HandshakeError::Network { .. })
            }),
            ("1|1|unix|relative/p|grpc|", |e| {
                matches!(e, HandshakeError::Address { .. })
            }),
            ("1|1|unix|/tmp/../etc/p|grpc|", |e| {
                matches!(e, HandshakeError::Address { .. })
            }),
            ("1|1|tcp|10.1.2.3:80|grpc|", |e| {
                matches!(e, HandshakeError::Address { .. })
            }),
            ("1|1|tcp|nonsense|grpc|", |e| {
                matches!(e, HandshakeError::Address { .. })
            }),
            ("1|1|unix|/tmp/p|http|", |e| {
                matches!(e, HandshakeError::Protocol { .. })
            }),
            ("1|1|unix|/tmp/p|grpc|||", |_| false),
            ("1|1|unix|/tmp/p|grpc||maybe", |e| {
                matches!(e, HandshakeError::Multiplex { .. })
            }),
        ];
        for (line, expected) in cases {
            match HandshakeLine::parse(line) {
                Ok(parsed) if line.ends_with("|||") => assert!(!parsed.multiplex),
                Ok(parsed) => panic!("{line:?} parsed as {parsed:?}"),
                Err(error) => assert!(expected(&error), "{line:?} gave {error:?}"),
            }
        }
        let long_path = format!("1|1|unix|/{}|grpc|", "a".repeat(200));
        assert!(matches!(
            HandshakeLine::parse(&long_path),
            Err(HandshakeError::Address { .. })
        ));
        assert_eq!(
            HandshakeLine::parse(&"1".repeat(MAX_LINE + 1)),
            Err(HandshakeError::TooLong)
        );
    }

    #[test]
    fn invalid_or_padded_base64_certificates_are_refused() {
        let (_, cert) = cert_field();
        let padded = format!("1|1|unix|/tmp/p|grpc|{cert}==");
        assert!(matches!(
            HandshakeLine::parse(&padded),
            Err(HandshakeError::Certificate { .. })
        ));
        let garbage = format!("1|1|unix|/tmp/p|grpc|{}", "!".repeat(60));
        assert!(matches!(
            HandshakeLine::parse(&garbage),
            Err(HandshakeError::Certificate { .. })
        ));
    }

    #[test]
    fn base64_that_is_not_an_x509_certificate_is_refused() {
        let (der, _) = cert_field();
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        // A DER SEQUENCE of filler, a certificate cut short, and one with a byte of its
        // signed part changed so that its structure breaks.
        let mut sequence = vec![0x30, 0x40];
        sequence.extend([0x02; 0x40]);
        let mut broken = der.clone();
        broken[4] ^= 0xff;
        for bytes in [sequence, der[..der.len() / 2].to_vec(), broken] {
            let line = format!("1|1|unix|/tmp/p|grpc|{}", encode(&bytes));
            assert!(
                matches!(
                    HandshakeLine::parse(&line),
                    Err(HandshakeError::Certificate { .. })
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn negotiation_prefers_the_highest_common_version_else_the_lowest() {
        assert_eq!(negotiate(&[2, 3], &[3]), Some(3));
        assert_eq!(negotiate(&[2, 3], &[2, 3]), Some(3));
        assert_eq!(negotiate(&[3, 2], &[2]), Some(2));
        assert_eq!(negotiate(&[3, 2], &[]), Some(2));
        assert_eq!(negotiate(&[3, 2], &[7]), Some(2));
        assert_eq!(negotiate(&[], &[1]), None);
    }

    #[test]
    fn versions_round_trip_and_bad_pieces_are_reported() {
        assert_eq!(encode_versions(&[1, 5]), "1,5");
        assert_eq!(
            decode_versions("1, 3,x,4"),
            (vec![1, 4], vec![" 3".to_owned(), "x".to_owned()])
        );
    }
}
