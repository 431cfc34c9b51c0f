//! `plinth inspect`: what a plugin file is, and for a component its whole world.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use plinth::wasm::{Function, TypeName};
use plinth::{Checksum, Client, ClientConfig, FileKind};
use serde_json::json;

use crate::failure::{self, BAD_FILE, Failure};

pub async fn run(file: &Path, json: bool) -> Result<(), Failure> {
    let bytes = failure::read(file)?;
    let kind = FileKind::detect(&bytes);
    let checksum = Checksum::of(&bytes);
    let size = bytes.len();
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
