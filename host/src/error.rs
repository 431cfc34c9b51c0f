//! The one error type of the `plinth` crate.
//!
//! Every variant says what happened, to which plugin, and — where something was checked — what
//! was expected and what was found. Errors raised inside a guest call (traps, deadlines, memory
//! limits) are classified here too, so a host can tell a misbehaving plugin from a bad request.

use std::path::PathBuf;
use std::time::Duration;

use crate::kind::FileKind;
#[cfg(feature = "wasm")]
use crate::wasm::CacheProblem;

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while loading, dispensing or calling a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plugin file could not be read.
    #[error("cannot read plugin file {}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// The bytes given as a plugin are not a WebAssembly component.
    #[error("plugin {plugin} is {found}; expected a WebAssembly component (wasm32-wasip2)")]
    NotAComponent {
        /// The plugin's name.
        plugin: String,
        /// What the bytes look like instead.
        found: FileKind,
    },

    /// A checksum given in the configuration is not a sha256 in hex.
    #[error("invalid checksum {input:?}: {reason}; expected 64 hexadecimal digits (a sha256)")]
    InvalidChecksum {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The plugin's bytes do not hash to the pinned checksum.
    #[error("checksum mismatch for plugin {plugin}: expected sha256 {expected}, found {actual}")]
    ChecksumMismatch {
        /// The plugin's name.
        plugin: String,
        /// The pinned sha256, in hex.
        expected: String,
        /// The sha256 of the bytes that were loaded, in hex.
        actual: String,
    },

    /// The component is well-formed on the outside but could not be compiled.
    #[error("cannot compile plugin {plugin}: {reason}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// What the compiler said.
        reason: String,
    },

    /// The component uses the component model's concurrency (an async function, a stream, a
    /// future), which the engine it would run on does not support.
    #[cfg(feature = "wasm")]
    #[error(
        "plugin {plugin} uses component-model concurrency (async functions, streams or futures); {remedy}"
    )]
    NeedsConcurrency {
        /// The plugin's name.
        plugin: String,
        /// What makes it load: the feature to enable, or the engine setting.
        remedy: &'static str,
    },

    /// The component exports none of the interfaces the adapter binds, in any version.
    #[error(
        "plugin {plugin} does not export interface {expected}; it exports [{}]",
        exported.join(", ")
    )]
    InterfaceNotExported {
        /// The plugin's name.
        plugin: String,
        /// The interface the host asked for, without a version.
        expected: String,
        /// Everything the component exports.
        exported: Vec<String>,
    },

    /// The component exports the interface, but in no version the host accepts.
    #[error(
        "plugin {plugin} exports no version the host accepts: it exports [{}], the host accepts [{}]",
        exported.join(", "),
        accepted.join(", ")
    )]
    UnsupportedVersion {
        /// The plugin's name.
        plugin: String,
        /// The versions of the interface the component exports.
        exported: Vec<String>,
        /// The versions the host's adapter accepts.
        accepted: Vec<String>,
    },

    /// The component imports something the host does not provide.
    #[error("cannot link plugin {plugin}: {reason}")]
    Link {
        /// The plugin's name.
        plugin: String,
        /// What is missing or mismatched: the import, then each cause under it, outermost
        /// first.
        reason: String,
    },

    /// A new instance of the component could not be created.
    #[error("cannot instantiate plugin {plugin}: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// Why not.
        reason: String,
    },

    /// The guest trapped (a panic, an `unreachable`, a stack overflow, ...). The instance that
    /// trapped was discarded; the next call runs on a fresh one.
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap and the guest's backtrace.
        message: String,
    },

    /// The call ran past its deadline and was interrupted. The instance was discarded.
    #[error("plugin {plugin} was stopped after running past its {limit:?} call deadline")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The deadline that was configured.
        limit: Duration,
    },

    /// The guest tried to grow its memory past the configured limit. The instance was discarded.
    #[error(
        "plugin {plugin} tried to grow its memory to {requested} bytes, past its limit of {limit} bytes"
    )]
    OutOfMemory {
        /// The plugin's name.
        plugin: String,
        /// The size the guest asked for, in bytes.
        requested: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },

    /// The values the guest handed over in one call (a host import's arguments, an export's
    /// results) need more host memory than [`Limits::max_host_copy`](crate::wasm::Limits)
    /// allows. The instance was discarded.
    #[error(
        "plugin {plugin} handed over more data in one call than the host copies: the limit is {limit} bytes (Limits::max_host_copy)"
    )]
    TooMuchData {
        /// The plugin's name.
        plugin: String,
        /// The limit, in bytes.
        limit: usize,
    },

    /// A guest resource was used after the instance that holds it was discarded (a trap, a
    /// deadline, the memory limit), so the resource is gone.
    #[error(
        "plugin {plugin}: the {resource} resource is gone with the instance that held it (that instance failed and was discarded)"
    )]
    StaleResource {
        /// The plugin's name.
        plugin: String,
        /// The resource (its type, as the adapter names it).
        resource: String,
    },

    /// One call was given guest resources that live in different instances, which no single
    /// instance can serve.
    #[error("plugin {plugin}: the {resource} resource lives in another instance than this call")]
    ForeignResource {
        /// The plugin's name.
        plugin: String,
        /// The resource that does not belong.
        resource: String,
    },

    /// The guest answered normally, with an error value of its interface.
    #[error("plugin {plugin} returned an error: {message}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The guest's error, as text.
        message: String,
    },

    /// `dispense_named` was asked for a name that the plugin set does not hold.
    #[error("no plugin named {name:?} in the plugin set; it holds [{}]", available.join(", "))]
    UnknownPlugin {
        /// The name that was asked for.
        name: String,
        /// The names the set holds.
        available: Vec<String>,
    },

    /// `dispense_named` was asked for another interface type than the named adapter builds.
    #[error("plugin {name:?} dispenses {found}, not the requested {expected}")]
    TypeMismatch {
        /// The plugin's name in the set.
        name: String,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type the adapter builds.
        found: &'static str,
    },

    /// A dynamic call named a function the component does not export.
    #[error("plugin {plugin} exports no function {name:?}; it exports [{}]", available.join(", "))]
    UnknownFunction {
        /// The plugin's name.
        plugin: String,
        /// The name that was asked for.
        name: String,
        /// The full names of every exported function.
        available: Vec<String>,
    },

    /// A dynamic call named a function by a bare name that several interfaces export.
    #[error(
        "plugin {plugin} exports several functions named {name:?}: [{}]; use the full name",
        candidates.join(", ")
    )]
    AmbiguousFunction {
        /// The plugin's name.
        plugin: String,
        /// The bare name that was asked for.
        name: String,
        /// The full names that match it.
        candidates: Vec<String>,
    },

    /// A dynamic call's arguments do not fit the function's parameters.
    #[error("bad arguments for {function} of plugin {plugin}: {reason}")]
    Argument {
        /// The plugin's name.
        plugin: String,
        /// The function's full name.
        function: String,
        /// What does not fit, and what was expected.
        reason: String,
    },

    /// The plugin's client was killed; no more calls are served.
    #[error("plugin {plugin} was killed and serves no more calls")]
    Killed {
        /// The plugin's name.
        plugin: String,
    },

    /// A sandbox grant names something that cannot be granted.
    #[error("cannot grant {} to the plugin: {reason}", path.display())]
    Grant {
        /// The host path of the grant.
        path: PathBuf,
        /// Why it cannot be granted.
        reason: String,
    },

    /// The compile cache directory, a directory above it or its key file could be changed by
    /// a user the cache does not trust, so nothing in it may be run.
    #[cfg(feature = "wasm")]
    #[error("refusing the compile cache at {}: {problem}", path.display())]
    UntrustedCache {
        /// The directory or file that failed the check.
        path: PathBuf,
        /// What was found there, and what was expected.
        problem: CacheProblem,
    },

    /// The compile cache directory or its key file could not be created or read.
    #[error("cannot {action} the compile cache's {}", path.display())]
    CacheIo {
        /// The directory or file.
        path: PathBuf,
        /// What was being done: `create`, `open`, `inspect`, `read` or `write`.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// A discovery pattern is not a valid glob.
    #[error("invalid plugin discovery pattern {pattern:?}: {reason}")]
    Discover {
        /// The pattern that was given.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },

    /// The host's own configuration is inconsistent.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The adapter cannot build its interface from this kind of plugin (a wasm-only adapter
    /// given a go-plugin executable, or the reverse).
    #[error("adapter {adapter} cannot use plugin {plugin}: it has no {backend} half")]
    BackendUnsupported {
        /// The plugin's name.
        plugin: String,
        /// The adapter's name.
        adapter: String,
        /// The backend it lacks (`wasm`, `gRPC` or `netrpc`).
        backend: &'static str,
    },

    /// The plugin is a kind of file this build of `plinth` has no backend for: an executable
    /// in a build without the `subprocess` feature, or a component in one without `wasm`.
    #[error(
        "plugin {plugin} is {found}, which this build of plinth cannot load; enable plinth's `{feature}` feature"
    )]
    BackendDisabled {
        /// The plugin's name.
        plugin: String,
        /// What the plugin's file is.
        found: FileKind,
        /// The cargo feature of `plinth` that loads it.
        feature: &'static str,
    },

    /// Launching, talking to or stopping a go-plugin plugin failed.
    #[cfg(feature = "subprocess")]
    #[error(transparent)]
    Subprocess(#[from] plinth_subprocess::Error),
}

impl Error {
    /// The plugin this error is about, where there is one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Error::NotAComponent { plugin, .. }
            | Error::ChecksumMismatch { plugin, .. }
            | Error::Compile { plugin, .. }
            | Error::InterfaceNotExported { plugin, .. }
            | Error::UnsupportedVersion { plugin, .. }
            | Error::Link { plugin, .. }
            | Error::Instantiate { plugin, .. }
            | Error::Trap { plugin, .. }
            | Error::Timeout { plugin, .. }
            | Error::OutOfMemory { plugin, .. }
            | Error::TooMuchData { plugin, .. }
            | Error::StaleResource { plugin, .. }
            | Error::ForeignResource { plugin, .. }
            | Error::Plugin { plugin, .. }
            | Error::UnknownFunction { plugin, .. }
            | Error::AmbiguousFunction { plugin, .. }
            | Error::Argument { plugin, .. }
            | Error::BackendUnsupported { plugin, .. }
            | Error::BackendDisabled { plugin, .. }
            | Error::Killed { plugin } => Some(plugin),
            #[cfg(feature = "subprocess")]
            Error::Subprocess(_) => None,
            Error::UnknownPlugin { name, .. } | Error::TypeMismatch { name, .. } => Some(name),
            Error::Read { .. }
            | Error::InvalidChecksum { .. }
            | Error::Grant { .. }
            | Error::CacheIo { .. }
            | Error::Discover { .. }
            | Error::Config { .. } => None,
            #[cfg(feature = "wasm")]
            Error::NeedsConcurrency { plugin, .. } => Some(plugin),
            #[cfg(feature = "wasm")]
            Error::UntrustedCache { .. } => None,
        }
    }
}
