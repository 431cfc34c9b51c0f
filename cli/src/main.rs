//! `plinth`: look at a plugin before writing a host for it.
//!
//! - `plinth inspect FILE` — what the file is; for a component, its world with full signatures;
//!   for a go-plugin executable given `--cookie KEY=VALUE`, its handshake and gRPC services.
//! - `plinth call FILE FUNCTION ARGS...` — call a component's function with WAVE arguments, or
//!   an executable's unary gRPC method with a JSON argument.
//! - `plinth new wasm NAME --wit PATH` — start a guest crate implementing a WIT world.
//! - `plinth checksum FILE` — the sha256 a host should pin.
//!
//! `inspect`, `call` and `checksum` take `--json` for scripts. Errors are one line (the error
//! and its causes) and a hint on stderr; the exit codes are in [`EXIT_CODES`]. Every wait on a
//! plugin has a timeout, and a timeout is exit code 3 naming the phase that ran past it.

mod call;
mod failure;
mod grpc_call;
mod inspect;
mod launch;
mod reflection;
mod scaffold;
mod scaffold_subprocess;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// The exit codes, as `plinth --help` prints them.
const EXIT_CODES: &str = "\
Timeouts: every wait on a plugin is bounded, and running past a bound is exit
code 3 with an error line opening with the phase (`http2 timed out after 5s: ...`):
  handshake   spawning an executable until its handshake line: --start-timeout (30 s)
  connect, tls, yamux, http2
              connecting: dialing, the TLS handshake, the yamux session, the HTTP/2
              handshake up to an answer to a ping: --start-timeout again, for all of them
  reflection  gRPC server reflection, listing services or sending descriptors:
              --reflection-timeout (10 s)
  call        the call, a component's or an executable's, up to its whole answer:
              --timeout (30 s)

Exit codes:
  0  success
  1  the plugin failed the call (an err(...) result, a gRPC status, a trap, a
     memory limit)
  2  bad usage or arguments (unknown function or method, wrong argument type)
  3  the file cannot be used as a plugin (missing, not a plugin, cannot be linked,
     wrong cookie, exited before the handshake, unreachable), or a phase timed out
  4  not supported by this build (a function taking or returning a resource,
     calling a netrpc plugin)";

/// Inspect, call and scaffold Plinth plugins.
#[derive(Parser)]
#[command(name = "plinth", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a plugin file is: a component's imports and exports, or (given its cookie)
    /// an executable's handshake and the gRPC services it serves.
    Inspect(inspect::InspectArgs),
    /// Call a component's function (WAVE arguments) or an executable's unary gRPC method
    /// (a JSON argument).
    Call(call::CallArgs),
    /// Start a plugin crate: a component implementing a WIT world (`plinth new wasm NAME --wit
    /// PATH`) or a go-plugin executable serving a protobuf service (`plinth new subprocess NAME
    /// --proto FILE`).
    New(scaffold::NewArgs),
    /// Print the sha256 a host pins the plugin with.
    Checksum {
        /// The plugin file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return Failure::io("cannot start the async runtime", e).report(),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Inspect(args) => inspect::run(args).await,
            Command::Call(args) => call::run(args).await,
            Command::New(args) => scaffold::run(args),
            Command::Checksum { file, json } => checksum(&file, json),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn checksum(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    let bytes = failure::read(file)?;
    let checksum = plinth::Checksum::of(&bytes);
    if json {
        let out = serde_json::json!({ "file": file, "sha256": checksum.to_string() });
        println!("{out}");
    } else {
        println!("{checksum}  {}", file.display());
    }
    Ok(())
}
