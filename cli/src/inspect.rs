//! `plinth inspect`: what a plugin file is, and for a component its whole world.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth::wasm::{Function, TypeName};
use plinth::{Checksum, Client, ClientConfig, FileKind};
use serde_json::json;

use crate::failure::{self, BAD_FILE, Failure};
use crate::launch::{self, LaunchArgs};
use crate::reflection::Reflection;

/// What `plinth inspect` takes.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The plugin file: a component, or a go-plugin executable.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    launch: LaunchArgs,
}

pub async fn run(args: InspectArgs) -> Result<(), Failure> {
    let InspectArgs { file, json, launch } = args;
    let file = file.as_path();
    let bytes = failure::read(file)?;
    let kind = FileKind::detect(&bytes);
    let checksum = Checksum::of(&bytes);
    let size = bytes.len();
    if kind.is_executable() && launch.cookie.is_some() {
        let about = About {
            file,
            kind,
            size,
            checksum,
        };
        return inspect_executable(about, &launch, json).await;
    }
    if kind != FileKind::Component {
        return describe_other(file, kind, size, checksum, json);
    }
    let client = load(file, bytes).await?;
    let imports = client.imported_functions();
    let exports = client.exported_functions();
    let host = plinth_host_version(&imports);
    if json {
        let out = json!({
            "file": file,
            "kind": "component",
            "size": size,
            "sha256": checksum.to_string(),
            "plinth_host": host,
            "imports": functions_json(&imports),
            "exports": functions_json(&exports),
        });
        println!("{out:#}");
        return Ok(());
    }
    println!("file:        {}", file.display());
    println!("kind:        {kind}");
    println!("size:        {size} bytes");
    println!("sha256:      {checksum}");
    println!(
        "plinth:host: {}",
        host.as_deref()
            .unwrap_or("not imported (the guest does not log through the host)")
    );
    print_group("imports", &imports);
    print_group("exports", &exports);
    Ok(())
}

/// Compiles the component, telling a person at a terminal that it may take a moment.
pub async fn load(file: &Path, bytes: Vec<u8>) -> Result<Client, Failure> {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    load_with(ClientConfig::wasm_bytes(name, bytes), file).await
}

/// Starts a client, showing progress on a terminal and nothing when piped.
pub async fn load_with(config: ClientConfig, file: &Path) -> Result<Client, Failure> {
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprint!("compiling {}…", file.display());
    }
    let started = Client::start(config).await;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    Ok(started?)
}

fn describe_other(
    file: &Path,
    kind: FileKind,
    size: usize,
    checksum: Checksum,
    json: bool,
) -> Result<(), Failure> {
    if json {
        let out = json!({
            "file": file,
            "kind": kind.to_string(),
            "executable": kind.is_executable(),
            "size": size,
            "sha256": checksum.to_string(),
        });
        println!("{out:#}");
    } else {
        println!("file:   {}", file.display());
        println!("kind:   {kind}");
        println!("size:   {size} bytes");
        println!("sha256: {checksum}");
        if kind.is_executable() {
            println!("note:   {}", launch::COOKIE_HINT);
            println!("        to launch it and list the gRPC services it serves");
        }
    }
    if kind.is_executable() {
        return Ok(());
    }
    Err(Failure::new(
        BAD_FILE,
        format!(
            "{} is {kind}; expected a WebAssembly component or an executable",
            file.display()
        ),
    )
    .hint("components are built with `cargo build --target wasm32-wasip2`"))
}

fn plinth_host_version(imports: &[Function]) -> Option<String> {
    imports.iter().find_map(|f| {
        let interface = f.interface.as_deref()?;
        let rest = interface.strip_prefix("plinth:host/")?;
        rest.split_once('@').map(|(_, version)| version.to_owned())
    })
}

fn by_interface(functions: &[Function]) -> BTreeMap<&str, Vec<&Function>> {
    let mut groups: BTreeMap<&str, Vec<&Function>> = BTreeMap::new();
    for function in functions {
        let key = function.interface.as_deref().unwrap_or("(world)");
        groups.entry(key).or_default().push(function);
    }
    groups
}

fn print_group(title: &str, functions: &[Function]) {
    println!("{title}:");
    if functions.is_empty() {
        println!("  (none)");
    }
    for (interface, functions) in by_interface(functions) {
        println!("  {interface}");
        for function in functions {
            println!("    {}", function.signature());
        }
    }
}

fn functions_json(functions: &[Function]) -> serde_json::Value {
    functions
        .iter()
        .map(|f| {
            json!({
                "interface": f.interface,
                "name": f.name,
                "full_name": f.full_name(),
                "signature": f.signature(),
                "params": f.params.iter()
                    .map(|(name, ty)| json!({ "name": name, "type": TypeName(ty).to_string() }))
                    .collect::<Vec<_>>(),
                "results": f.results.iter().map(|t| TypeName(t).to_string()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The facts about a file known before it runs.
struct About<'a> {
    file: &'a Path,
    kind: FileKind,
    size: usize,
    checksum: Checksum,
}

/// Launches a go-plugin executable, reports its handshake and services, and shuts it down.
async fn inspect_executable(
    about: About<'_>,
    args: &LaunchArgs,
    json: bool,
) -> Result<(), Failure> {
    let reflection_timeout = args.reflection_timeout()?;
    let client = launch::start(about.file, args).await?;
    let outcome = describe_running(&about, &client, reflection_timeout, json).await;
    client.kill().await;
    outcome
}

async fn describe_running(
    about: &About<'_>,
    client: &Client,
    reflection_timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let Some(connection) = client.connection() else {
        return Err(Failure::new(
            BAD_FILE,
            format!(
                "{} did not start as an executable plugin",
                about.file.display()
            ),
        ));
    };
    let handshake = connection.handshake();
    let (services, reflection_version) = match connection.channel() {
        Ok(channel) => {
            let mut reflection = Reflection::new(channel, reflection_timeout);
            let services = match reflection.list_services().await {
                // No answer in time: the command fails, unlike for a plugin without reflection.
                Err(failure) if failure.timed_out_in().is_some() => return Err(failure),
                listed => listed,
            };
            (services, reflection.version())
        }
        Err(_) => (
            Err(Failure::new(
                BAD_FILE,
                "a netrpc plugin cannot list its services: net/rpc has no reflection",
            )),
            None,
        ),
    };
    let network = handshake.address.network();
    let transport = match (network, connection.tls()) {
        ("unix", true) => "unix socket, TLS",
        ("unix", false) => "unix socket, plaintext",
        (_, true) => "tcp, TLS",
        (_, false) => "tcp, plaintext",
    };
    if json {
        let (services, reflection_error) = match &services {
            Ok(names) => (json!(names), None),
            Err(failure) => (json!(null), Some(failure.message().to_owned())),
        };
        let out = json!({
            "file": about.file,
            "kind": about.kind.to_string(),
            "executable": true,
            "size": about.size,
            "sha256": about.checksum.to_string(),
            "handshake": {
                "app_version": handshake.app_version,
                "network": network,
                "address": handshake.address.to_string(),
                "protocol": handshake.protocol.to_string(),
                "server_cert": handshake.server_cert.is_some(),
                "multiplex": handshake.multiplex,
            },
            "negotiated_version": connection.negotiated_version(),
            "transport": transport,
            "tls": connection.tls(),
            "reflection": reflection_version,
            "services": services,
            "reflection_error": reflection_error,
        });
        println!("{out:#}");
        return Ok(());
    }
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    println!("file:        {}", about.file.display());
    println!("kind:        {}", about.kind);
    println!("size:        {} bytes", about.size);
    println!("sha256:      {}", about.checksum);
    println!("handshake:");
    println!("  app version: {}", handshake.app_version);
    println!("  network:     {network}");
    println!("  address:     {}", handshake.address);
    println!("  protocol:    {}", handshake.protocol);
    println!(
        "  certificate: {}",
        if handshake.server_cert.is_some() {
            "offered (AutoMTLS)"
        } else {
            "none"
        }
    );
    println!("  multiplex:   {}", yes_no(handshake.multiplex));
    println!("negotiated:  version {}", connection.negotiated_version());
    println!("transport:   {transport}");
    println!(
        "tls:         {}",
        if connection.tls() { "on" } else { "off" }
    );
    match services {
        Ok(names) => {
            println!("services ({}):", reflection_version.unwrap_or("reflection"));
            for name in names {
                println!("  {name}");
            }
        }
        Err(failure) => println!("services:    unknown: {}", failure.message()),
    }
    Ok(())
}
