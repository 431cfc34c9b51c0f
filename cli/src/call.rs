//! `plinth call`: call one exported function of a component with WAVE arguments, or one unary
//! gRPC method of a go-plugin executable with a JSON argument (see `grpc_call`).

use std::path::PathBuf;

use plinth::wasm::{Access, Grants, TypeName};
use plinth::{ClientConfig, FileKind};
use wasmtime::component::{Type, Val};

use crate::failure::{self, BAD_FILE, CALL_FAILED, Failure, UNSUPPORTED, USAGE};
use crate::grpc_call::{self, Deadlines, MethodName};
use crate::launch::{self, LaunchArgs};

/// What `plinth call` takes.
#[derive(clap::Args)]
pub struct CallArgs {
    /// The component or go-plugin executable.
    file: PathBuf,
    /// A component's function: its full name (`plinth:kv/store@0.1.0#get`) or a bare name
    /// (`get`). An executable's gRPC method: `proto.KV/Get` or `/proto.KV/Get`.
    function: String,
    /// For a component, one WAVE value per parameter: `"text"`, `42`, `[1, 2]`, `some(1)`,
    /// `{a: 1}`. For an executable, the request message as one JSON object (default `{}`).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Grant a host directory: HOST:GUEST, or HOST:GUEST:ro for read-only. Repeatable.
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro]")]
    dirs: Vec<String>,
    /// Set an environment variable in the guest. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Largest memory the guest may grow to, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<usize>,
    /// Deadline of the call, in seconds: a component's run, or an executable's gRPC call up to
    /// its whole answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    launch: LaunchArgs,
}

pub async fn run(args: CallArgs) -> Result<(), Failure> {
    let bytes = failure::read(&args.file)?;
    let kind = FileKind::detect(&bytes);
    if kind.is_executable() {
        return call_executable(&args).await;
    }
    if kind != FileKind::Component {
        return Err(Failure::new(
            BAD_FILE,
            format!(
                "{} is {kind}; expected a WebAssembly component",
                args.file.display()
            ),
        ));
    }
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let mut config = ClientConfig::wasm_bytes(name, bytes)
        .grants(grants(&args)?)
        .call_timeout(launch::seconds("--timeout", args.timeout)?);
    if let Some(bytes) = args.max_memory {
        config = config.max_memory(bytes);
    }
    let client = crate::inspect::load_with(config, &args.file).await?;
    let plugin = client.dispense_dynamic().await?;
    let function = plugin.function(&args.function)?;
    refuse_without_wave_form(&plugin, function)?;
    let values = parse_args(function, &args.args)?;
    let results = plugin.call(&function.full_name(), &values).await?;
    let rendered = results
        .iter()
        .map(|v| {
            v.to_wave()
                .map_err(|e| Failure::new(CALL_FAILED, format!("cannot print a result: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "function": function.full_name(), "results": rendered })
        );
    } else {
        for line in &rendered {
            println!("{line}");
        }
    }
    match (results.as_slice(), rendered.as_slice()) {
        ([Val::Result(Err(_))], [shown]) => Err(Failure::new(
            CALL_FAILED,
            format!("{} returned an error: {shown}", function.full_name()),
        )),
        _ => Ok(()),
    }
}

/// Refuses a function whose parameters or results hold a resource (or a stream, a future or
/// an error context): such values live in one instance and have no WAVE form to type or print.
/// The failure names the function, where the value sits, and the resource.
fn refuse_without_wave_form(
    plugin: &plinth::wasm::Dynamic,
    function: &plinth::wasm::Function,
) -> Result<(), Failure> {
    let params = function
        .params
        .iter()
        .map(|(name, ty)| (format!("parameter {name}"), ty));
    let results = function
        .results
        .iter()
        .map(|ty| ("its result".to_owned(), ty));
    for (place, ty) in params.chain(results) {
        let Some(inner) = without_wave_form(ty) else {
            continue;
        };
        let what = match &inner {
            Type::Own(resource) | Type::Borrow(resource) => match plugin.resource_name(resource) {
                Some(name) => format!("the resource {name}"),
                None => "a resource".to_owned(),
            },
            other => format!("a {}", TypeName(other)),
        };
        return Err(Failure::new(
            UNSUPPORTED,
            format!(
                "{} cannot be called from the command line: {place} ({}) holds {what}, which has no WAVE form to type or print",
                function.full_name(),
                TypeName(ty),
            ),
        )
        .hint("a resource lives inside one instance; call such functions from a host through an adapter"));
    }
    Ok(())
}

/// The first type inside `ty` (or `ty` itself) that has no WAVE form.
fn without_wave_form(ty: &Type) -> Option<Type> {
    match ty {
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Some(ty.clone())
        }
        Type::List(list) => without_wave_form(&list.ty()),
        Type::FixedLengthList(list) => without_wave_form(&list.ty()),
        Type::Map(map) => without_wave_form(&map.key()).or_else(|| without_wave_form(&map.value())),
        Type::Record(record) => record
            .fields()
            .find_map(|field| without_wave_form(&field.ty)),
        Type::Tuple(tuple) => tuple.types().find_map(|ty| without_wave_form(&ty)),
        Type::Variant(variant) => variant
            .cases()
            .find_map(|case| case.ty.as_ref().and_then(without_wave_form)),
        Type::Option(option) => without_wave_form(&option.ty()),
        Type::Result(result) => [result.ok(), result.err()]
            .iter()
            .flatten()
            .find_map(without_wave_form),
        _ => None,
    }
}

fn parse_args(function: &plinth::wasm::Function, args: &[String]) -> Result<Vec<Val>, Failure> {
    if args.len() != function.params.len() {
        return Err(Failure::new(
            USAGE,
            format!(
                "{} takes {} argument(s), {} given",
                function.full_name(),
                function.params.len(),
                args.len()
            ),
        )
        .hint(format!("its signature is `{}`", function.signature())));
    }
    function
        .params
        .iter()
        .zip(args)
        .map(|((name, ty), text)| {
            Val::from_wave(ty, text).map_err(|e| {
                Failure::new(
                    USAGE,
                    format!(
                        "argument {name} expects a {}, and {text:?} is not one: {e}",
                        TypeName(ty)
                    ),
                )
                .hint("arguments are WAVE values: \"text\", 42, [1, 2], ok(7), {a: 1}")
            })
        })
        .collect()
}

fn grants(args: &CallArgs) -> Result<Grants, Failure> {
    let mut grants = Grants::none();
    for dir in &args.dirs {
        let (spec, access) = match dir.strip_suffix(":ro") {
            Some(spec) => (spec, Access::ReadOnly),
            None => (dir.as_str(), Access::ReadWrite),
        };
        let (host, guest) = spec
            .split_once(':')
            .ok_or_else(|| Failure::new(USAGE, format!("--dir {dir:?} is not HOST:GUEST[:ro]")))?;
        grants = grants.dir(host, guest, access);
    }
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::new(USAGE, format!("--env {pair:?} is not KEY=VALUE")))?;
        grants = grants.env(key, value);
    }
    Ok(grants)
}

/// Launches the executable, calls one unary gRPC method with a JSON argument, shuts it down.
async fn call_executable(args: &CallArgs) -> Result<(), Failure> {
    let method = MethodName::parse(&args.function)?;
    let argument = match args.args.as_slice() {
        [] => "{}",
        [one] => one.as_str(),
        more => {
            return Err(Failure::new(
                USAGE,
                format!(
                    "a gRPC method takes one JSON argument, {} given",
                    more.len()
                ),
            )
            .hint(r#"quote the request as one JSON object: '{"key": "a"}'"#));
        }
    };
    let deadlines = Deadlines {
        reflection: args.launch.reflection_timeout()?,
        call: launch::seconds("--timeout", args.timeout)?,
    };
    let client = launch::start(&args.file, &args.launch).await?;
    let outcome = match client.connection() {
        Some(connection) => match connection.channel() {
            Ok(channel) => grpc_call::call(channel, &method, argument, &deadlines).await,
            Err(error) => Err(Failure::new(
                UNSUPPORTED,
                format!("{error}: net/rpc methods have no schema to call them from JSON"),
            )),
        },
        None => Err(Failure::new(
            BAD_FILE,
            format!(
                "{} did not start as an executable plugin",
                args.file.display()
            ),
        )),
    };
    client.kill().await;
    let answer = outcome?;
    if args.json {
        let out = serde_json::json!({ "method": answer.path, "response": answer.response });
        println!("{out}");
    } else {
        println!("{:#}", answer.response);
    }
    Ok(())
}
