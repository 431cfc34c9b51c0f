//! `plinth new`: start a plugin crate from a WIT world or a protobuf service.
//!
//! `new wasm` writes a standalone guest crate (its own `[workspace]`, the WIT copied beside
//! it, wit-bindgen like `guest-examples/`) whose exports compile with placeholder bodies and a
//! unit test that calls each of them. `new subprocess` writes a Rust go-plugin plugin: the
//! `.proto` copied beside it, tonic code generated at build time, every service registered with
//! `plinth_subprocess::serve` (methods answer `UNIMPLEMENTED` until written) and a test that
//! serves it in-process and checks its health.
//!
//! The Rust spelled here follows wit-bindgen's naming: `exports::ns::pkg::iface::Guest`,
//! `UpperCamelCase` types, `snake_case` functions and fields.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wit_parser::{
    Function, FunctionKind, Resolve, Type, TypeDefKind, TypeOwner, WorldItem, WorldKey,
};

use crate::failure::{BAD_FILE, Failure, UNSUPPORTED, USAGE};

/// The wit-bindgen the scaffold depends on, as the example guests do.
const WIT_BINDGEN: &str = "0.63.0";

/// What `plinth new` takes.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The kind of plugin: `wasm` (a component) or `subprocess` (a go-plugin executable).
    kind: Kind,
    /// The crate's name; also its directory unless --path is given.
    name: String,
    /// The WIT package directory (or file) with the world to implement (`new wasm`). Repeat it
    /// for the packages the world imports (`--wit wit/host --wit wit/kv`); the last one is the
    /// main.
    #[arg(long, value_name = "PATH")]
    wit: Vec<PathBuf>,
    /// The `.proto` file with the gRPC services to serve (`new subprocess`).
    #[arg(long, value_name = "FILE")]
    proto: Option<PathBuf>,
    /// The world to implement, when the main package has more than one.
    #[arg(long, value_name = "WORLD")]
    world: Option<String>,
    /// Where to write the crate. Default: ./NAME.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Kind {
    Wasm,
    Subprocess,
}

pub fn run(args: NewArgs) -> Result<(), Failure> {
    let crate_name = crate_name(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(
            Failure::new(USAGE, format!("{} exists and is not empty", dir.display()))
                .hint("choose another NAME or --path"),
        );
    }
    if let Kind::Subprocess = args.kind {
        let proto = args.proto.as_deref().ok_or_else(|| {
            Failure::new(USAGE, "`plinth new subprocess` needs --proto FILE")
                .hint("the .proto file with the services the plugin serves")
        })?;
        return crate::scaffold_subprocess::run(&dir, &crate_name, proto);
    }
    if args.wit.is_empty() {
        return Err(Failure::new(USAGE, "`plinth new wasm` needs --wit PATH")
            .hint("the WIT package with the world to implement"));
    }
    let (resolve, world) = load_world(&args.wit, args.world.as_deref())?;
    let lib = guest_source(&resolve, world, &args.wit)?;
    write_crate(&dir, &crate_name, &args.wit, &lib)?;
    println!("created {} ({crate_name})", dir.display());
    println!(
        "build it:  cd {} && cargo build --target wasm32-wasip2 --release",
        dir.display()
    );
    println!(
        "then:      plinth inspect target/wasm32-wasip2/release/{}.wasm",
        crate_name.replace('-', "_")
    );
    Ok(())
}

fn crate_name(name: &str) -> Result<String, Failure> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if valid {
        Ok(name.to_owned())
    } else {
        Err(Failure::new(USAGE, format!("{name:?} is not a crate name"))
            .hint("use letters, digits, `-` and `_`, starting with a letter"))
    }
}

fn load_world(
    paths: &[PathBuf],
    world: Option<&str>,
) -> Result<(Resolve, wit_parser::WorldId), Failure> {
    let mut resolve = Resolve::new();
    let mut main = None;
    for path in paths {
        let (package, _) = resolve.push_path(path).map_err(|e| {
            Failure::new(
                BAD_FILE,
                format!("cannot load WIT from {}: {e:#}", path.display()),
            )
            .hint("pass every package the world imports with its own --wit, imports first")
        })?;
        main = Some(package);
    }
    let main: Vec<_> = main.into_iter().collect();
    let world = resolve.select_world(&main, world).map_err(|e| {
        Failure::new(USAGE, format!("cannot choose the world: {e:#}")).hint("name it with --world")
    })?;
    Ok((resolve, world))
}

/// `src/lib.rs` of the guest.
fn guest_source(
    resolve: &Resolve,
    world: wit_parser::WorldId,
    paths: &[PathBuf],
) -> Result<String, Failure> {
    let world_name = resolve.id_of_name(
        resolve.worlds[world]
            .package
            .ok_or_else(|| Failure::new(BAD_FILE, "the world belongs to no package"))?,
        &resolve.worlds[world].name,
    );
    let wit_dirs = paths
        .iter()
        .map(|p| format!("{:?}", format!("wit/{}", copied_name(p))))
        .collect::<Vec<_>>()
        .join(", ");
    let mut impls = String::new();
    let mut calls = String::new();
    let mut world_functions = Vec::new();
    for (key, item) in &resolve.worlds[world].exports {
        match item {
            WorldItem::Function(function) => world_functions.push(function.clone()),
            WorldItem::Interface { id, .. } => {
                let module = match key {
                    WorldKey::Name(name) => format!("exports::{}", snake(name)),
                    WorldKey::Interface(_) => format!("exports::{}", interface_path(resolve, *id)?),
                };
                let functions: Vec<&Function> =
                    resolve.interfaces[*id].functions.values().collect();
                let trait_path = format!("{module}::Guest");
                write_impl(resolve, &mut impls, &mut calls, &trait_path, &functions)?;
            }
            WorldItem::Type { .. } => {}
        }
    }
    if !world_functions.is_empty() {
        let functions: Vec<&Function> = world_functions.iter().collect();
        write_impl(resolve, &mut impls, &mut calls, "Guest", &functions)?;
    }
    if impls.is_empty() {
        return Err(Failure::new(
            USAGE,
            format!("the world {world_name} exports nothing to implement"),
        )
        .hint("choose a world with exports with --world"));
    }
    Ok(format!(
        r#"//! A Plinth plugin implementing the WIT world `{world_name}`.
//!
//! Every export answers with a placeholder; replace the bodies with the plugin's behaviour.
//! Build the component with `cargo build --target wasm32-wasip2 --release`.

wit_bindgen::generate!({{
    path: [{wit_dirs}],
    world: "{world_name}",
    generate_all,
}});

/// The plugin: one type implementing every exported interface.
struct Component;
{impls}
export!(Component);

#[cfg(test)]
mod tests {{
    use super::*;

    /// The placeholder exports run to completion (imports are not called natively).
    #[test]
    fn every_export_answers() {{
{calls}    }}
}}
"#
    ))
}

fn write_impl(
    resolve: &Resolve,
    impls: &mut String,
    calls: &mut String,
    trait_path: &str,
    functions: &[&Function],
) -> Result<(), Failure> {
    let _ = writeln!(impls, "\nimpl {trait_path} for Component {{");
    for function in functions {
        if !matches!(function.kind, FunctionKind::Freestanding) {
            return Err(unsupported(&format!(
                "function {} (resources and async functions)",
                function.name
            )));
        }
        let name = snake(&function.name);
        let mut params = Vec::new();
        let mut args = Vec::new();
        for param in &function.params {
            params.push(format!(
                "{}: {}",
                snake(&param.name),
                rust_type(resolve, &param.ty)?
            ));
            args.push(placeholder(resolve, &param.ty, &function.name)?);
        }
        let (result, body) = match &function.result {
            Some(ty) => (
                format!(" -> {}", rust_type(resolve, ty)?),
                placeholder(resolve, ty, &function.name)?,
            ),
            None => (String::new(), String::new()),
        };
        let unused = function
            .params
            .iter()
            .map(|p| snake(&p.name))
            .collect::<Vec<_>>();
        let _ = writeln!(impls, "    fn {name}({}){result} {{", params.join(", "));
        match unused.as_slice() {
            [] => {}
            [one] => {
                let _ = writeln!(impls, "        let _ = {one};");
            }
            more => {
                let _ = writeln!(impls, "        let _ = ({});", more.join(", "));
            }
        }
        if !body.is_empty() {
            let _ = writeln!(impls, "        {body}");
        }
        let _ = writeln!(impls, "    }}");
        let _ = writeln!(
            calls,
            "        let _ = <Component as {trait_path}>::{name}({});",
            args.join(", ")
        );
    }
    let _ = writeln!(impls, "}}");
    Ok(())
}

fn unsupported(what: &str) -> Failure {
    Failure::new(
        UNSUPPORTED,
        format!("the scaffold does not write {what} yet"),
    )
    .hint("scaffold a world without them, then add them by hand")
}

/// `plinth::kv::store` for `plinth:kv/store@0.1.0`.
fn interface_path(resolve: &Resolve, id: wit_parser::InterfaceId) -> Result<String, Failure> {
    let interface = &resolve.interfaces[id];
    let name = interface
        .name
        .as_deref()
        .ok_or_else(|| Failure::new(BAD_FILE, "an exported interface has no name"))?;
    let package = interface
        .package
        .map(|p| &resolve.packages[p].name)
        .ok_or_else(|| Failure::new(BAD_FILE, format!("interface {name} has no package")))?;
    Ok(format!(
        "{}::{}::{}",
        snake(&package.namespace),
        snake(&package.name),
        snake(name)
    ))
}

/// The Rust path of a named type, as wit-bindgen generates it.
fn type_path(resolve: &Resolve, id: wit_parser::TypeId, name: &str) -> Result<String, Failure> {
    let typedef = &resolve.types[id];
    let prefix = match typedef.owner {
        TypeOwner::Interface(interface) => {
            let exported = resolve.worlds.iter().any(|(_, world)| {
                world
                    .exports
                    .values()
                    .any(|item| matches!(item, WorldItem::Interface { id, .. } if *id == interface))
            });
            let path = interface_path(resolve, interface)?;
            if exported {
                format!("exports::{path}::")
            } else {
                format!("{path}::")
            }
        }
        _ => String::new(),
    };
    Ok(format!("{prefix}{}", camel(name)))
}

/// The Rust type wit-bindgen uses for `ty` in an export's signature.
fn rust_type(resolve: &Resolve, ty: &Type) -> Result<String, Failure> {
    Ok(match ty {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "i8".into(),
        Type::S16 => "i16".into(),
        Type::S32 => "i32".into(),
        Type::S64 => "i64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "String".into(),
        Type::ErrorContext => return Err(unsupported("error-context values")),
        Type::Id(id) => {
            let typedef = &resolve.types[*id];
            if let Some(name) = &typedef.name {
                return type_path(resolve, *id, name);
            }
            match &typedef.kind {
                TypeDefKind::List(inner) => format!("Vec<{}>", rust_type(resolve, inner)?),
                TypeDefKind::Option(inner) => format!("Option<{}>", rust_type(resolve, inner)?),
                TypeDefKind::Result(result) => format!(
                    "Result<{}, {}>",
                    optional_type(resolve, result.ok.as_ref())?,
                    optional_type(resolve, result.err.as_ref())?
                ),
                TypeDefKind::Tuple(tuple) => {
                    let items = tuple
                        .types
                        .iter()
                        .map(|t| rust_type(resolve, t))
                        .collect::<Result<Vec<_>, _>>()?;
                    format!("({},)", items.join(", "))
                }
                TypeDefKind::Type(inner) => rust_type(resolve, inner)?,
                _ => return Err(unsupported("resources, handles, maps, futures or streams")),
            }
        }
    })
}

fn optional_type(resolve: &Resolve, ty: Option<&Type>) -> Result<String, Failure> {
    ty.map_or(Ok("()".to_owned()), |ty| rust_type(resolve, ty))
}

/// A value of `ty` that compiles: zero, empty, the first case, or an error saying what is
/// left to write when the type is a `result<_, string>`.
fn placeholder(resolve: &Resolve, ty: &Type, function: &str) -> Result<String, Failure> {
    Ok(match ty {
        Type::Bool => "false".into(),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => "0".into(),
        Type::S8 | Type::S16 | Type::S32 | Type::S64 => "0".into(),
        Type::F32 | Type::F64 => "0.0".into(),
        Type::Char => "' '".into(),
        Type::String => "String::new()".into(),
        Type::ErrorContext => return Err(unsupported("error-context values")),
        Type::Id(id) => {
            let typedef = &resolve.types[*id];
            let path = || type_path(resolve, *id, typedef.name.as_deref().unwrap_or_default());
            match &typedef.kind {
                TypeDefKind::List(_) => "Vec::new()".into(),
                TypeDefKind::Option(_) => "None".into(),
                TypeDefKind::Result(result) => match (&result.ok, &result.err) {
                    (_, Some(Type::String)) => {
                        format!("Err(\"{function} is not implemented yet\".to_string())")
                    }
                    (Some(ok), _) => format!("Ok({})", placeholder(resolve, ok, function)?),
                    (None, _) => "Ok(())".into(),
                },
                TypeDefKind::Tuple(tuple) => {
                    let items = tuple
                        .types
                        .iter()
                        .map(|t| placeholder(resolve, t, function))
                        .collect::<Result<Vec<_>, _>>()?;
                    format!("({},)", items.join(", "))
                }
                TypeDefKind::Record(record) => {
                    let fields = record
                        .fields
                        .iter()
                        .map(|f| {
                            Ok(format!(
                                "{}: {}",
                                snake(&f.name),
                                placeholder(resolve, &f.ty, function)?
                            ))
                        })
                        .collect::<Result<Vec<_>, Failure>>()?;
                    format!("{} {{ {} }}", path()?, fields.join(", "))
                }
                TypeDefKind::Enum(cases) => match cases.cases.first() {
                    Some(case) => format!("{}::{}", path()?, camel(&case.name)),
                    None => return Err(unsupported("empty enums")),
                },
                TypeDefKind::Variant(variant) => match variant.cases.first() {
                    Some(case) => match &case.ty {
                        Some(ty) => format!(
                            "{}::{}({})",
                            path()?,
                            camel(&case.name),
                            placeholder(resolve, ty, function)?
                        ),
                        None => format!("{}::{}", path()?, camel(&case.name)),
                    },
                    None => return Err(unsupported("empty variants")),
                },
                TypeDefKind::Flags(_) => format!("{}::empty()", path()?),
                TypeDefKind::Type(inner) => placeholder(resolve, inner, function)?,
                _ => return Err(unsupported("resources, handles, maps, futures or streams")),
            }
        }
    })
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "typeof", "unsized", "virtual", "yield", "try",
];

fn snake(name: &str) -> String {
    let name = name.replace('-', "_");
    if KEYWORDS.contains(&name.as_str()) {
        format!("{name}_")
    } else {
        name
    }
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The directory name a `--wit` path is copied to under `wit/`.
fn copied_name(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "world".to_owned())
}

fn write_crate(dir: &Path, name: &str, wit: &[PathBuf], lib: &str) -> Result<(), Failure> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| Failure::new(BAD_FILE, format!("cannot write {what}: {e}"))
    };
    std::fs::create_dir_all(dir.join("src")).map_err(io(dir))?;
    for path in wit {
        let target = dir.join("wit").join(copied_name(path));
        copy_wit(path, &target)?;
    }
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = {{ version = "{WIT_BINDGEN}", default-features = false, features = ["macros", "realloc"] }}

[profile.release]
opt-level = "s"
strip = true

# A crate of its own, not a member of any enclosing workspace.
[workspace]
"#
    );
    let readme = format!(
        "# {name}\n\nA Plinth plugin: a WebAssembly component built from the WIT in `wit/`.\n\n\
         ```sh\nrustup target add wasm32-wasip2   # once\n\
         cargo build --target wasm32-wasip2 --release\n\
         plinth inspect target/wasm32-wasip2/release/{}.wasm\n\
         cargo test                          # the unit tests run natively\n```\n",
        name.replace('-', "_")
    );
    let files = [
        (dir.join("Cargo.toml"), manifest),
        (dir.join("README.md"), readme),
        (dir.join("src/lib.rs"), lib.to_owned()),
        (dir.join(".gitignore"), "/target\n".to_owned()),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

/// Copies a WIT package (a directory, with any `deps/`, or one file).
fn copy_wit(from: &Path, to: &Path) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            BAD_FILE,
            format!("cannot copy {} to {}: {e}", from.display(), to.display()),
        )
    };
    std::fs::create_dir_all(to).map_err(fail)?;
    if from.is_file() {
        let name = from.file_name().unwrap_or_default();
        std::fs::copy(from, to.join(name)).map_err(fail)?;
        return Ok(());
    }
    for entry in std::fs::read_dir(from).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let path = entry.path();
        if path.is_dir() {
            copy_wit(&path, &to.join(entry.file_name()))?;
        } else if path.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&path, to.join(entry.file_name())).map_err(fail)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_wit_bindgen() {
        assert_eq!(camel("http-request"), "HttpRequest");
        assert_eq!(snake("max-size"), "max_size");
        assert_eq!(snake("type"), "type_");
    }
}
