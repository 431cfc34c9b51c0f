//! `plinth`: look at a plugin before writing a host for it.
//!
//! - `plinth inspect FILE` — what the file is; for a component, its world with full signatures.
//! - `plinth call FILE FUNCTION ARGS...` — call an exported function with WAVE arguments.
//! - `plinth checksum FILE` — the sha256 a host should pin.
//!
//! Every command takes `--json` for scripts. Errors are one line and a hint on stderr.
//!
//! Exit codes: 0 success; 1 the plugin failed the call (its error, a trap, a limit);
//! 2 bad usage or arguments; 3 the file cannot be used as a plugin; 4 not supported by this
//! build.

mod call;
mod failure;
mod grpc_call;
mod inspect;
mod launch;
mod reflection;
mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// Inspect, check and call Plinth plugins.
#[derive(Parser)]
#[command(name = "plinth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a plugin file is: a component's imports and exports, or (given its cookie)
    /// an executable's handshake and the gRPC services it serves.
    Inspect(inspect::InspectArgs),
    /// Call an exported function of a component; arguments and results in WAVE syntax.
    Call(call::CallArgs),
    /// Start a plugin crate that implements a WIT world: `plinth new wasm NAME --wit PATH`.
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
