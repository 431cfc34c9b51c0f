//! Launching a go-plugin executable for `plinth inspect` and `plinth call`: the handshake
//! options a user passes (`--cookie`, `--version`, `--auto-mtls`), the warning when a plugin
//! is reached in plaintext after all, and the start failures turned into one line that carries
//! what the plugin said.
//!
//! What is asked of the running plugin (its services, a call) lives in `reflection` and
//! `grpc_call`; components never come here.

use std::path::Path;
use std::time::Duration;

use plinth::subprocess::{ConnectStep, Error as WireError};
use plinth::{AutoMtls, Client, ClientConfig, HandshakeConfig, Protocol};

use crate::failure::{BAD_FILE, CALL_FAILED, Failure, Phase, USAGE, chain};

/// The handshake a go-plugin executable was built with, as command-line options.
#[derive(clap::Args, Clone, Debug)]
pub struct LaunchArgs {
    /// The plugin's magic cookie (its HandshakeConfig's MagicCookieKey=MagicCookieValue);
    /// needed to launch an executable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub cookie: Option<String>,
    /// The application protocol version to offer (HandshakeConfig.ProtocolVersion).
    #[arg(long = "version", value_name = "N", default_value_t = 1)]
    pub protocol_version: u32,
    /// Mutual TLS with certificates made for this launch (go-plugin's AutoMTLS): `prefer`
    /// connects in plaintext, with a warning, to a plugin that answers without a certificate;
    /// `require` refuses such a plugin; `off` offers no certificate.
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value_t = AutoMtlsPolicy::Prefer,
        overrides_with = "no_auto_mtls"
    )]
    pub auto_mtls: AutoMtlsPolicy,
    /// Plain connection: the same as `--auto-mtls off`.
    #[arg(long, overrides_with = "auto_mtls")]
    pub no_auto_mtls: bool,
    /// How long the plugin has to print its handshake line once spawned, and then as long
    /// again to be connected to (dial, TLS, the HTTP/2 handshake up to an answer to a ping),
    /// in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub start_timeout: f64,
    /// How long the plugin's gRPC server reflection has to list its services or send a
    /// service's descriptors, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub reflection_timeout: f64,
}

/// The AutoMTLS policies, as `--auto-mtls` spells them (see [`AutoMtls`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoMtlsPolicy {
    /// Mutual TLS when the plugin answers with a certificate, else plaintext and a warning.
    Prefer,
    /// Mutual TLS or a refusal.
    Require,
    /// No certificate offered: plaintext.
    Off,
}

impl From<AutoMtlsPolicy> for AutoMtls {
    fn from(policy: AutoMtlsPolicy) -> AutoMtls {
        match policy {
            AutoMtlsPolicy::Prefer => AutoMtls::Prefer,
            AutoMtlsPolicy::Require => AutoMtls::Require,
            AutoMtlsPolicy::Off => AutoMtls::Off,
        }
    }
}

impl LaunchArgs {
    /// Parses `--cookie`; `None` when it was not given.
    pub fn handshake(&self) -> Result<Option<HandshakeConfig>, Failure> {
        let Some(cookie) = &self.cookie else {
            return Ok(None);
        };
        match cookie.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok(Some(
                HandshakeConfig::new(self.protocol_version, key, value),
            )),
            _ => Err(
                Failure::new(USAGE, format!("--cookie {cookie:?} is not KEY=VALUE"))
                    .hint("pass the plugin's magic cookie, for example --cookie PLINTH_PLUGIN=kv"),
            ),
        }
    }

    /// The AutoMTLS policy the options ask for; of `--auto-mtls` and `--no-auto-mtls`, the
    /// last one given wins.
    pub fn auto_mtls(&self) -> AutoMtls {
        if self.no_auto_mtls {
            AutoMtls::Off
        } else {
            self.auto_mtls.into()
        }
    }

    /// `--reflection-timeout` as a duration.
    pub fn reflection_timeout(&self) -> Result<Duration, Failure> {
        seconds("--reflection-timeout", self.reflection_timeout)
    }
}

/// The value of a `--...-timeout SECONDS` flag as a duration.
pub fn seconds(flag: &str, value: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Failure::new(USAGE, format!("{flag} {value} is not a number of seconds")))
}

/// The hint every "needs a cookie" failure carries.
pub const COOKIE_HINT: &str =
    "pass the plugin's handshake: --cookie KEY=VALUE [--version N], as in its HandshakeConfig";

/// Launches `file` with the handshake in `args` and connects to it.
pub async fn start(file: &Path, args: &LaunchArgs) -> Result<Client, Failure> {
    let handshake = args.handshake()?.ok_or_else(|| {
        Failure::new(
            USAGE,
            format!(
                "{} is an executable: launching it needs its magic cookie",
                file.display()
            ),
        )
        .hint(COOKIE_HINT)
    })?;
    let policy = args.auto_mtls();
    let config = ClientConfig::command(file)
        .handshake(handshake)
        .auto_mtls(policy)
        .allowed_protocols([Protocol::Grpc, Protocol::NetRpc])
        .start_timeout(seconds("--start-timeout", args.start_timeout)?);
    let client = Client::start(config).await.map_err(start_failure)?;
    if let Some(warning) = plaintext_warning(&client, policy) {
        eprintln!("warning: {warning}");
    }
    Ok(client)
}

/// What to tell the user when the certificate offered under `prefer` was not taken up and the
/// plugin is reached in plaintext (the library says it as a `tracing` event, which this
/// command does not print).
fn plaintext_warning(client: &Client, policy: AutoMtls) -> Option<String> {
    let connection = client.connection()?;
    if policy != AutoMtls::Prefer || connection.tls() {
        return None;
    }
    Some(format!(
        "{} does not support AutoMTLS (its handshake line carries no certificate): connected in plaintext; --auto-mtls require refuses such plugins",
        connection.name()
    ))
}

/// Says why an executable did not become a plugin, with the plugin's own words on the line.
fn start_failure(error: plinth::Error) -> Failure {
    let plinth::Error::Subprocess(wire) = error else {
        return Failure::from(error);
    };
    match wire {
        WireError::ExitedBeforeHandshake {
            plugin,
            status,
            stderr,
        } => {
            let said = one_line(&stderr);
            let message = if said.is_empty() {
                format!("{plugin} exited before the handshake ({status}) without saying why")
            } else {
                format!("{plugin} exited before the handshake ({status}): {said}")
            };
            Failure::new(BAD_FILE, message).hint(
                "is it a go-plugin plugin, and do --cookie and --version match its HandshakeConfig?",
            )
        }
        WireError::StartTimeout {
            plugin, timeout, ..
        } => Failure::timed_out(
            Phase::Handshake,
            timeout,
            format!("{plugin} printed no handshake line; it was killed"),
        )
        .hint("raise --start-timeout SECONDS, or check that it is a go-plugin plugin"),
        WireError::Connect { .. } => Failure::new(BAD_FILE, chain(&wire))
            .hint("check that a go-plugin server listens at the address in its handshake line"),
        WireError::ConnectTimeout {
            plugin,
            address,
            step,
            timeout,
        } => Failure::timed_out(
            connect_phase(step),
            timeout,
            format!("{plugin} at {address}: {step} did not finish; it was killed"),
        )
        .hint("raise --start-timeout SECONDS, or check that a go-plugin server listens at the address in its handshake line"),
        WireError::Handshake {
            plugin,
            line,
            reason,
            ..
        } => Failure::new(
            BAD_FILE,
            format!("{plugin} printed an unusable handshake line {line:?}: {reason}"),
        ),
        WireError::VersionMismatch { plugin, found, .. } => Failure::new(
            BAD_FILE,
            format!("{plugin} chose application protocol version {found}, which was not offered"),
        )
        .hint(format!("offer it with --version {found}")),
        WireError::Tls { plugin, reason } => {
            Failure::new(BAD_FILE, format!("TLS setup for {plugin} failed: {reason}"))
                .hint("try --auto-mtls off to connect without TLS")
        }
        WireError::AutoMtlsUnsupported { plugin, .. } => Failure::new(
            BAD_FILE,
            format!(
                "{plugin} does not support AutoMTLS: its handshake line carries no certificate, and --auto-mtls require was given"
            ),
        )
        .hint("--auto-mtls prefer (the default) or off connects to it in plaintext"),
        WireError::UnexpectedCertificate { plugin, .. } => Failure::new(
            BAD_FILE,
            format!("{plugin} answered with a TLS certificate although AutoMTLS was off"),
        )
        .hint("--auto-mtls prefer (the default) offers it a certificate of its own"),
        WireError::Spawn { .. } | WireError::ReadExecutable { .. } => {
            Failure::new(BAD_FILE, chain(&wire)).hint("check the path and its permissions")
        }
        other => Failure::new(CALL_FAILED, chain(&other)),
    }
}

/// The phase a connect step belongs to, as a timeout names it.
fn connect_phase(step: ConnectStep) -> Phase {
    match step {
        ConnectStep::Tls => Phase::Tls,
        ConnectStep::Yamux => Phase::Yamux,
        ConnectStep::Http2 => Phase::Http2,
        _ => Phase::Connect,
    }
}

/// A plugin's stderr tail on one line: its lines joined, blank ones dropped.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        launch: LaunchArgs,
    }

    fn policy(args: &[&str]) -> Result<AutoMtls, clap::Error> {
        let argv = std::iter::once("plinth").chain(args.iter().copied());
        Command::try_parse_from(argv).map(|command| command.launch.auto_mtls())
    }

    #[test]
    fn auto_mtls_names_the_policy_and_defaults_to_prefer() {
        assert_eq!(policy(&[]).unwrap(), AutoMtls::Prefer);
        for expected in [AutoMtls::Prefer, AutoMtls::Require, AutoMtls::Off] {
            let name = expected.as_str();
            assert_eq!(policy(&["--auto-mtls", name]).unwrap(), expected);
            assert_eq!(policy(&[&format!("--auto-mtls={name}")]).unwrap(), expected);
        }
    }

    #[test]
    fn no_auto_mtls_is_off_and_the_last_of_the_two_flags_wins() {
        assert_eq!(policy(&["--no-auto-mtls"]).unwrap(), AutoMtls::Off);
        assert_eq!(
            policy(&["--auto-mtls", "require", "--no-auto-mtls"]).unwrap(),
            AutoMtls::Off
        );
        assert_eq!(
            policy(&["--no-auto-mtls", "--auto-mtls", "require"]).unwrap(),
            AutoMtls::Require
        );
    }

    #[test]
    fn an_unknown_or_missing_policy_is_a_usage_error() {
        for args in [
            &["--auto-mtls", "on"][..],
            &["--auto-mtls", "true"],
            &["--auto-mtls"],
        ] {
            let error = policy(args).unwrap_err();
            assert!(
                matches!(error.kind(), ErrorKind::InvalidValue),
                "{args:?}: {:?}",
                error.kind()
            );
        }
    }
}
