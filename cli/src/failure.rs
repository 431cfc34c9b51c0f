//! How the command fails: one line saying what went wrong, a hint, and an exit code; and the
//! phases of a run that wait on a plugin, which a timeout names.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use plinth::Error;

/// A failed command, ready to report.
pub struct Failure {
    message: String,
    hint: Option<String>,
    code: u8,
    timed_out: Option<Phase>,
}

/// The plugin failed the call.
pub const CALL_FAILED: u8 = 1;
/// Bad usage or arguments.
pub const USAGE: u8 = 2;
/// The file cannot be used as a plugin, or a phase of the run timed out.
pub const BAD_FILE: u8 = 3;
/// Not supported by this build.
pub const UNSUPPORTED: u8 = 4;

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            hint: None,
            code,
            timed_out: None,
        }
    }

    /// `phase` did not finish within `limit`: exit code 3, and a line that opens with the
    /// phase (`http2 timed out after 5s: ...`) followed by `what` was being waited for.
    pub fn timed_out(phase: Phase, limit: Duration, what: impl fmt::Display) -> Failure {
        Failure {
            timed_out: Some(phase),
            ..Failure::new(
                BAD_FILE,
                format!("{phase} timed out after {limit:?}: {what}"),
            )
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Adds `hint` unless the failure already has one.
    pub fn or_hint(mut self, hint: impl Into<String>) -> Failure {
        if self.hint.is_none() {
            self.hint = Some(hint.into());
        }
        self
    }

    /// The phase that timed out, when a timeout is what failed.
    pub fn timed_out_in(&self) -> Option<Phase> {
        self.timed_out
    }

    /// What went wrong, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn io(what: &str, error: std::io::Error) -> Failure {
        Failure::new(BAD_FILE, format!("{what}: {error}"))
    }

    /// Prints the failure on stderr and returns its exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", first_line(&self.message));
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(self.code)
    }
}

/// A phase of a run that waits on a plugin, each bounded by a timeout (see `plinth --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// From spawning an executable until it prints its handshake line (`--start-timeout`).
    Handshake,
    /// Dialing the address in the handshake line (`--start-timeout` again, for all of
    /// connecting).
    Connect,
    /// The TLS handshake (AutoMTLS).
    Tls,
    /// Opening the yamux session of a netrpc or multiplexed plugin.
    Yamux,
    /// The HTTP/2 handshake: the plugin's settings and its answer to a ping.
    Http2,
    /// gRPC server reflection: the list of services, or a service's descriptors
    /// (`--reflection-timeout`).
    Reflection,
    /// The call itself, up to its whole answer (`--timeout`).
    Call,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Handshake => "handshake",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Yamux => "yamux",
            Phase::Http2 => "http2",
            Phase::Reflection => "reflection",
            Phase::Call => "call",
        })
    }
}

/// An error and every cause under it, outermost first, on one line joined by `: `. Each
/// error in the chain says only its own part (none repeats its `source()`), so each cause is
/// printed once. Only each message's first line counts: later lines are a plugin's stderr.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = first_line(&error.to_string()).to_owned();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        let said = first_line(&said);
        if !said.is_empty() {
            text.push_str(": ");
            text.push_str(said);
        }
        source = cause.source();
    }
    text
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let message = chain(&error);
        match &error {
            Error::Read { .. } => Failure::new(BAD_FILE, message).hint("check the path"),
            Error::NotAComponent { .. } => Failure::new(BAD_FILE, message)
                .hint("plinth loads wasm32-wasip2 components; see `plinth inspect FILE`"),
            Error::ChecksumMismatch { .. } | Error::Compile { .. } | Error::Link { .. } => {
                Failure::new(BAD_FILE, message)
            }
            Error::UnknownFunction { .. } | Error::AmbiguousFunction { .. } => {
                Failure::new(USAGE, message)
                    .hint("`plinth inspect FILE` lists every function with its signature")
            }
            Error::Argument { .. } => Failure::new(USAGE, message)
                .hint("arguments are WAVE values: \"text\", 42, [1, 2], ok(7), {a: 1}"),
            Error::Grant { .. } | Error::Config { .. } => Failure::new(USAGE, message),
            Error::Timeout { plugin, limit } => {
                Failure::timed_out(Phase::Call, *limit, format!("plugin {plugin} was stopped"))
                    .hint("raise the deadline with --timeout SECONDS")
            }
            Error::OutOfMemory { .. } => {
                Failure::new(CALL_FAILED, message).hint("raise the limit with --max-memory BYTES")
            }
            _ => Failure::new(CALL_FAILED, message),
        }
    }
}

/// Reads a plugin file whole.
pub fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::new(BAD_FILE, format!("cannot read {}: {e}", path.display()))
            .hint("check the path")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional cause, to build chains from.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn layers(messages: &[&'static str]) -> Layer {
        let (last, rest) = messages.split_last().unwrap();
        rest.iter().rev().fold(Layer(last, None), |cause, m| {
            Layer(m, Some(Box::new(cause)))
        })
    }

    #[test]
    fn every_cause_is_printed_in_order_once() {
        let error = layers(&["cannot start", "cannot read config", "permission denied"]);
        assert_eq!(
            chain(&error),
            "cannot start: cannot read config: permission denied"
        );
        // Only first lines count: a stderr tail stays off the error line.
        let error = layers(&["plugin exited\nits stderr", "signal 9\nmore"]);
        assert_eq!(chain(&error), "plugin exited: signal 9");
        assert_eq!(chain(&layers(&["alone"])), "alone");
    }
}
