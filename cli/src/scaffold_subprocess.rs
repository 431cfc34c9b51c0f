//! `plinth new subprocess`: a Rust go-plugin plugin serving the services of a `.proto` file.
//!
//! The crate is standalone (its own `[workspace]`): `build.rs` generates the tonic code with a
//! vendored `protoc` and default method bodies (`UNIMPLEMENTED`), `src/main.rs` registers every
//! service with `plinth_subprocess::serve`, and a test serves it in-process with `serve_test`.
//! Go hosts and Plinth load the built binary with the handshake printed by the command.

use std::path::Path;

use crate::failure::{BAD_FILE, Failure, USAGE};

/// A protobuf service found in the file: its package and name.
struct Service {
    name: String,
}

/// Writes the crate into `dir`.
pub fn run(dir: &Path, name: &str, proto: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(proto)
        .map_err(|e| Failure::new(BAD_FILE, format!("cannot read {}: {e}", proto.display())))?;
    let package = package_of(&text).ok_or_else(|| {
        Failure::new(USAGE, format!("{} declares no `package`", proto.display()))
            .hint("the generated module is named after the package; add `package name;`")
    })?;
    let services = services_of(&text);
    if services.is_empty() {
        return Err(
            Failure::new(USAGE, format!("{} declares no `service`", proto.display()))
                .hint("a plugin serves at least one gRPC service"),
        );
    }
    let file_name = proto
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin.proto".to_owned());
    write(dir, name, &file_name, &text, &package, &services)?;
    let cookie_key = format!("{}_PLUGIN", name.to_uppercase().replace('-', "_"));
    println!("created {} ({name})", dir.display());
    println!("build it:  cd {} && cargo build --release", dir.display());
    println!("test it:   cargo test");
    println!(
        "load it:   handshake version 1, cookie {cookie_key}=v1; e.g.\n           plinth inspect target/release/{name} --cookie {cookie_key}=v1"
    );
    Ok(())
}

fn package_of(proto: &str) -> Option<String> {
    proto.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("package")?;
        let package = rest.trim().strip_suffix(';')?.trim();
        (!package.is_empty()).then(|| package.to_owned())
    })
}

fn services_of(proto: &str) -> Vec<Service> {
    proto
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("service ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(Service { name })
        })
        .collect()
}

/// Words of an identifier as tonic-build splits them (`KV` is one word, `AddHelper` two).
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let boundary = c.is_uppercase()
            && !current.is_empty()
            && (chars[i - 1].is_lowercase()
                || chars[i - 1].is_ascii_digit()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn snake(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

fn camel(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect()
}

fn subprocess_dependency() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../subprocess");
    match repo.canonicalize() {
        Ok(path) => format!(
            "plinth-subprocess = {{ path = {:?} }}",
            path.display().to_string()
        ),
        Err(_) => "plinth-subprocess = \"0.1\"".to_owned(),
    }
}

fn write(
    dir: &Path,
    name: &str,
    file_name: &str,
    proto: &str,
    package: &str,
    services: &[Service],
) -> Result<(), Failure> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| Failure::new(BAD_FILE, format!("cannot write {what}: {e}"))
    };
    std::fs::create_dir_all(dir.join("src")).map_err(io(dir))?;
    std::fs::create_dir_all(dir.join("proto")).map_err(io(dir))?;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
{subprocess}
prost = "0.14.6"
tokio = {{ version = "1.54.1", default-features = false, features = ["rt-multi-thread", "macros"] }}
tonic = {{ version = "0.14.9", default-features = false, features = ["transport", "codegen", "router"] }}
tonic-prost = "0.14.9"

[build-dependencies]
protoc-bin-vendored = "3.3.0"
tonic-prost-build = {{ version = "0.14.9", default-features = false, features = ["transport"] }}

# A crate of its own, not a member of any enclosing workspace.
[workspace]
"#,
        subprocess = subprocess_dependency()
    );
    let build = format!(
        r#"//! Generates the gRPC code of `proto/{file_name}` with a vendored `protoc`; methods not
//! written yet answer UNIMPLEMENTED.

fn main() -> Result<(), Box<dyn std::error::Error>> {{
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe {{ std::env::set_var("PROTOC", protoc) }};
    tonic_prost_build::configure()
        .build_client(false)
        .generate_default_stubs(true)
        .compile_protos(&["proto/{file_name}"], &["proto"])?;
    Ok(())
}}
"#
    );
    let mut impls = String::new();
    let mut routes = String::new();
    for service in services {
        let module = snake(&service.name);
        let trait_name = camel(&service.name);
        impls.push_str(&format!(
            "\n/// `{package}.{}`: write its methods here (each answers UNIMPLEMENTED until then).\n\
             #[tonic::async_trait]\nimpl proto::{module}_server::{trait_name} for Plugin {{}}\n",
            service.name
        ));
        routes.push_str(&format!(
            "        routes = routes.add_service(proto::{module}_server::{trait_name}Server::new(Plugin));\n"
        ));
    }
    let cookie_key = format!("{}_PLUGIN", name.to_uppercase().replace('-', "_"));
    let main = format!(
        r#"//! {name}: a go-plugin plugin written in Rust, serving `proto/{file_name}` over gRPC.
//!
//! Go hosts (go-plugin) and Plinth load it with application protocol version 1 and the magic
//! cookie `{cookie_key}=v1`. Run by hand, it says it is a plugin and exits.

use plinth_subprocess::HandshakeConfig;
use plinth_subprocess::serve::ServeConfig;
use tonic::service::Routes;

mod proto {{
    tonic::include_proto!("{package}");
}}

/// The plugin's state; the services below are implemented on it.
#[derive(Clone, Copy, Default)]
struct Plugin;
{impls}
/// The handshake hosts must use.
fn handshake() -> HandshakeConfig {{
    HandshakeConfig::new(1, "{cookie_key}", "v1")
}}

fn config() -> ServeConfig {{
    ServeConfig::new(handshake()).service(|_broker| {{
        let mut routes = Routes::default();
{routes}        routes
    }})
}}

#[tokio::main]
async fn main() {{
    if let Err(error) = plinth_subprocess::serve(config()).await {{
        eprintln!("{name}: {{error}}");
        std::process::exit(1);
    }}
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[tokio::test]
    async fn serves_its_services_and_answers_health_checks() {{
        let server = plinth_subprocess::serve::serve_test(config()).await.unwrap();
        server.connection().ping().await.unwrap();
        server.stop().await.unwrap();
    }}
}}
"#
    );
    let readme = format!(
        "# {name}\n\nA go-plugin plugin in Rust, serving the gRPC services of `proto/{file_name}` \
         with `plinth_subprocess::serve`.\n\n```sh\ncargo build --release\ncargo test\n\
         plinth inspect target/release/{name} --cookie {cookie_key}=v1\n```\n"
    );
    let files = [
        (dir.join("Cargo.toml"), manifest),
        (dir.join("build.rs"), build),
        (dir.join("src/main.rs"), main),
        (dir.join("proto").join(file_name), proto.to_owned()),
        (dir.join("README.md"), readme),
        (dir.join(".gitignore"), "/target\n".to_owned()),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_tonic_build() {
        assert_eq!((snake("KV"), camel("KV")), ("kv".into(), "Kv".into()));
        assert_eq!(
            (snake("AddHelper"), camel("AddHelper")),
            ("add_helper".into(), "AddHelper".into())
        );
        assert_eq!(
            (snake("GRPCBroker"), camel("GRPCBroker")),
            ("grpc_broker".into(), "GrpcBroker".into())
        );
    }

    #[test]
    fn package_and_services_are_found() {
        let proto = "syntax = \"proto3\";\npackage proto;\nservice KV {\n}\n  service Counter{}\n";
        assert_eq!(package_of(proto).as_deref(), Some("proto"));
        let names: Vec<_> = services_of(proto).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["KV", "Counter"]);
    }
}
