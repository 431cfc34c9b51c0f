//! How the command fails: one line saying what went wrong, a hint, and an exit code.

use std::path::Path;
use std::process::ExitCode;

use plinth::Error;

/// A failed command, ready to report.
pub struct Failure {
    message: String,
    hint: Option<String>,
    code: u8,
}

/// The plugin failed the call.
pub const CALL_FAILED: u8 = 1;
/// Bad usage or arguments.
pub const USAGE: u8 = 2;
/// The file cannot be used as a plugin.
pub const BAD_FILE: u8 = 3;
/// Not supported by this build.
pub const UNSUPPORTED: u8 = 4;

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            hint: None,
            code,
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

    /// What went wrong, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn io(what: &str, error: std::io::Error) -> Failure {
        Failure::new(BAD_FILE, format!("{what}: {error}"))
    }

    /// Prints the failure on stderr and returns its exit code.
    pub fn report(self) -> ExitCode {
        let first_line = self.message.lines().next().unwrap_or_default();
        eprintln!("error: {first_line}");
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(self.code)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let message = error.to_string();
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
            Error::Timeout { .. } => {
                Failure::new(CALL_FAILED, message).hint("raise the deadline with --timeout SECONDS")
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
