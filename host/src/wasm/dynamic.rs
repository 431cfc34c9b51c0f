//! Calling a component's exported functions by name, with dynamic values.
//!
//! A host that has no adapter for a component — a tool, a REPL, a generic gateway — can still
//! list what it exports and call it: [`Dynamic`] finds functions by name
//! (`plinth:kv/store@0.1.0#get`, or a plain top-level name), checks the arguments against the
//! function's type, and returns the results as [`Val`]s (which print and parse as WAVE text).
//! Imports the host does not provide are linked as traps, so such a component still loads; a
//! call that reaches one fails with [`Error::Trap`].

use std::fmt::{self, Write as _};

use futures::future::BoxFuture;
use wasmtime::Store;
use wasmtime::component::types::{ComponentExtern, ComponentFunc, ComponentItem, ResourceType};
use wasmtime::component::{InstancePre, Type, Val};

use crate::error::{Error, Result};
use crate::wasm::pool::{Bindings, Pool};
use crate::wasm::state::HostState;

/// One exported function and its type.
#[derive(Debug, Clone)]
pub struct Function {
    /// The interface that exports it (`plinth:kv/store@0.1.0`), or `None` for a function the
    /// component exports directly.
    pub interface: Option<String>,
    /// The function's own name (`get`).
    pub name: String,
    /// Parameter names and types.
    pub params: Vec<(String, Type)>,
    /// Result types.
    pub results: Vec<Type>,
}

impl Function {
    /// The full name: `interface#name`, or `name` for a top-level function.
    pub fn full_name(&self) -> String {
        match &self.interface {
            Some(interface) => format!("{interface}#{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The WIT signature, as `get: func(key: string) -> result<list<u8>, string>`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", TypeName(ty)))
            .collect();
        let mut text = format!("{}: func({})", self.name, params.join(", "));
        match self.results.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(text, " -> {}", TypeName(one));
            }
            many => {
                let names: Vec<String> = many.iter().map(|t| TypeName(t).to_string()).collect();
                let _ = write!(text, " -> ({})", names.join(", "));
            }
        }
        text
    }

    fn matches(&self, wanted: &str) -> bool {
        self.full_name() == wanted || self.name == wanted
    }
}

/// A component instance as the pool sees it when nothing is generated for it.
pub struct DynamicInstance(wasmtime::component::Instance);

impl Bindings for DynamicInstance {
    type Pre = InstancePre<HostState>;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        Ok(pre)
    }

    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> BoxFuture<'a, wasmtime::Result<Self>> {
        Box::pin(async move { pre.instantiate_async(store).await.map(DynamicInstance) })
    }
}

/// Every exported function of one component, callable by name.
pub struct Dynamic {
    pool: Pool<DynamicInstance>,
    functions: Vec<Function>,
    resources: Vec<(String, ResourceType)>,
}

impl Dynamic {
    pub(crate) fn new(
        pool: Pool<DynamicInstance>,
        functions: Vec<Function>,
        resources: Vec<(String, ResourceType)>,
    ) -> Dynamic {
        Dynamic {
            pool,
            functions,
            resources,
        }
    }

    /// The name of the resource behind an `own` or `borrow` in a function's type, as the
    /// component imports or exports it: `interface#name` (`plinth:kv/store@0.1.0#handle`), or
    /// a bare name for a resource imported or exported directly. `None` for a resource the
    /// component names nowhere.
    pub fn resource_name(&self, resource: &ResourceType) -> Option<&str> {
        self.resources
            .iter()
            .find(|(_, known)| known == resource)
            .map(|(name, _)| name.as_str())
    }

    /// The exported functions, in the component's order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The function called `name` (full name, or the bare name when only one has it).
    ///
    /// Fails with [`Error::UnknownFunction`] listing every export, or
    /// [`Error::AmbiguousFunction`] listing the candidates.
    pub fn function(&self, name: &str) -> Result<&Function> {
        let found: Vec<&Function> = self.functions.iter().filter(|f| f.matches(name)).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::UnknownFunction {
                plugin: self.pool.plugin_name().to_owned(),
                name: name.to_owned(),
                available: self.functions.iter().map(Function::full_name).collect(),
            }),
            many => Err(Error::AmbiguousFunction {
                plugin: self.pool.plugin_name().to_owned(),
                name: name.to_owned(),
                candidates: many.iter().map(|f| f.full_name()).collect(),
            }),
        }
    }

    /// Calls `name` with `args` and returns its results.
    ///
    /// The arguments are checked against the function's type first: a wrong count or type is
    /// [`Error::Argument`] naming the parameter and the expected type.
    pub async fn call(&self, name: &str, args: &[Val]) -> Result<Vec<Val>> {
        let function = self.function(name)?;
        self.check_args(function, args)?;
        let mut results = vec![Val::Bool(false); function.results.len()];
        let interface = function.interface.as_deref();
        let plugin = self.pool.plugin_name();
        self.pool
            .call(async |instance, store| {
                let func =
                    lookup(&instance.0, store, interface, &function.name).ok_or_else(|| {
                        wasmtime::Error::msg(format!(
                            "plugin {plugin} lost its export {}",
                            function.full_name()
                        ))
                    })?;
                func.call_async(&mut *store, args, &mut results).await
            })
            .await?;
        Ok(results)
    }

    fn check_args(&self, function: &Function, args: &[Val]) -> Result<()> {
        let argument_error = |reason: String| Error::Argument {
            plugin: self.pool.plugin_name().to_owned(),
            function: function.full_name(),
            reason,
        };
        if args.len() != function.params.len() {
            return Err(argument_error(format!(
                "it takes {} argument(s), {} given; expected {}",
                function.params.len(),
                args.len(),
                function.signature()
            )));
        }
        for ((name, ty), arg) in function.params.iter().zip(args) {
            if !same_kind(arg, ty) {
                return Err(argument_error(format!(
                    "parameter {name} is a {}, not {arg:?}",
                    TypeName(ty)
                )));
            }
        }
        Ok(())
    }
}

/// Whether `val` is the same kind of value as `ty` asks for (its outer shape: the parts
/// inside are checked by wasmtime when the call is made).
fn same_kind(val: &Val, ty: &Type) -> bool {
    matches!(
        (val, ty),
        (Val::Bool(_), Type::Bool)
            | (Val::S8(_), Type::S8)
            | (Val::U8(_), Type::U8)
            | (Val::S16(_), Type::S16)
            | (Val::U16(_), Type::U16)
            | (Val::S32(_), Type::S32)
            | (Val::U32(_), Type::U32)
            | (Val::S64(_), Type::S64)
            | (Val::U64(_), Type::U64)
            | (Val::Float32(_), Type::Float32)
            | (Val::Float64(_), Type::Float64)
            | (Val::Char(_), Type::Char)
            | (Val::String(_), Type::String)
            | (Val::List(_), Type::List(_))
            | (Val::FixedLengthList(_), Type::FixedLengthList(_))
            | (Val::Map(_), Type::Map(_))
            | (Val::Record(_), Type::Record(_))
            | (Val::Tuple(_), Type::Tuple(_))
            | (Val::Variant(..), Type::Variant(_))
            | (Val::Enum(_), Type::Enum(_))
            | (Val::Option(_), Type::Option(_))
            | (Val::Result(_), Type::Result(_))
            | (Val::Flags(_), Type::Flags(_))
            | (Val::Resource(_), Type::Own(_) | Type::Borrow(_))
    ) || !matches!(
        ty,
        Type::Bool
            | Type::S8
            | Type::U8
            | Type::S16
            | Type::U16
            | Type::S32
            | Type::U32
            | Type::S64
            | Type::U64
            | Type::Float32
            | Type::Float64
            | Type::Char
            | Type::String
            | Type::List(_)
            | Type::FixedLengthList(_)
            | Type::Map(_)
            | Type::Record(_)
            | Type::Tuple(_)
            | Type::Variant(_)
            | Type::Enum(_)
            | Type::Option(_)
            | Type::Result(_)
            | Type::Flags(_)
            | Type::Own(_)
            | Type::Borrow(_)
    )
}

fn lookup(
    instance: &wasmtime::component::Instance,
    store: &mut Store<HostState>,
    interface: Option<&str>,
    name: &str,
) -> Option<wasmtime::component::Func> {
    match interface {
        Some(interface) => {
            let parent = instance.get_export_index(&mut *store, None, interface)?;
            let index = instance.get_export_index(&mut *store, Some(&parent), name)?;
            instance.get_func(&mut *store, index)
        }
        None => instance.get_func(&mut *store, name),
    }
}

/// Lists the functions a component exports, directly and through its exported interfaces.
pub(crate) fn exported_functions(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<Function> {
    functions(engine, component.component_type().exports(engine))
}

/// Lists the functions a component imports, directly and through its imported interfaces.
pub(crate) fn imported_functions(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<Function> {
    functions(engine, component.component_type().imports(engine))
}

/// Lists the resources a component imports and exports, directly and in its interfaces, each
/// with its name (`interface#name`, or a bare name).
pub(crate) fn resources(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<(String, ResourceType)> {
    let ty = component.component_type();
    let mut resources = Vec::new();
    for (name, item) in ty.imports(engine).chain(ty.exports(engine)) {
        match item.ty {
            ComponentItem::Resource(resource) => resources.push((name.to_owned(), resource)),
            ComponentItem::ComponentInstance(instance) => {
                for (inner, item) in instance.exports(engine) {
                    if let ComponentItem::Resource(resource) = item.ty {
                        resources.push((format!("{name}#{inner}"), resource));
                    }
                }
            }
            _ => {}
        }
    }
    resources
}

fn functions<'a>(
    engine: &wasmtime::Engine,
    items: impl Iterator<Item = (&'a str, ComponentExtern<'a>)>,
) -> Vec<Function> {
    let mut functions = Vec::new();
    for (name, item) in items {
        match item.ty {
            ComponentItem::ComponentFunc(func) => functions.push(function(None, name, &func)),
            ComponentItem::ComponentInstance(instance) => {
                for (func_name, item) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = item.ty {
                        functions.push(function(Some(name), func_name, &func));
                    }
                }
            }
            _ => {}
        }
    }
    functions
}

fn function(interface: Option<&str>, name: &str, func: &ComponentFunc) -> Function {
    Function {
        interface: interface.map(str::to_owned),
        name: name.to_owned(),
        params: func
            .params()
            .map(|(name, ty)| (name.to_owned(), ty))
            .collect(),
        results: func.results().collect(),
    }
}

/// A component value type, written as WIT writes it.
pub struct TypeName<'a>(pub &'a Type);

impl fmt::Display for TypeName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, types: Vec<Type>| {
            let names: Vec<String> = types.iter().map(|t| TypeName(t).to_string()).collect();
            f.write_str(&names.join(", "))
        };
        match self.0 {
            Type::Bool => f.write_str("bool"),
            Type::S8 => f.write_str("s8"),
            Type::U8 => f.write_str("u8"),
            Type::S16 => f.write_str("s16"),
            Type::U16 => f.write_str("u16"),
            Type::S32 => f.write_str("s32"),
            Type::U32 => f.write_str("u32"),
            Type::S64 => f.write_str("s64"),
            Type::U64 => f.write_str("u64"),
            Type::Float32 => f.write_str("f32"),
            Type::Float64 => f.write_str("f64"),
            Type::Char => f.write_str("char"),
            Type::String => f.write_str("string"),
            Type::List(list) => write!(f, "list<{}>", TypeName(&list.ty())),
            Type::FixedLengthList(list) => {
                write!(f, "list<{}, {}>", TypeName(&list.ty()), list.len())
            }
            Type::Map(map) => write!(
                f,
                "map<{}, {}>",
                TypeName(&map.key()),
                TypeName(&map.value())
            ),
            Type::Record(record) => {
                let fields: Vec<String> = record
                    .fields()
                    .map(|field| format!("{}: {}", field.name, TypeName(&field.ty)))
                    .collect();
                write!(f, "record {{ {} }}", fields.join(", "))
            }
            Type::Tuple(tuple) => {
                f.write_str("tuple<")?;
                list(f, tuple.types().collect())?;
                f.write_str(">")
            }
            Type::Variant(variant) => {
                let cases: Vec<String> = variant
                    .cases()
                    .map(|case| match &case.ty {
                        Some(ty) => format!("{}({})", case.name, TypeName(ty)),
                        None => case.name.to_owned(),
                    })
                    .collect();
                write!(f, "variant {{ {} }}", cases.join(", "))
            }
            Type::Enum(names) => {
                let names: Vec<&str> = names.names().collect();
                write!(f, "enum {{ {} }}", names.join(", "))
            }
            Type::Flags(names) => {
                let names: Vec<&str> = names.names().collect();
                write!(f, "flags {{ {} }}", names.join(", "))
            }
            Type::Option(option) => write!(f, "option<{}>", TypeName(&option.ty())),
            Type::Result(result) => match (result.ok(), result.err()) {
                (None, None) => f.write_str("result"),
                (Some(ok), None) => write!(f, "result<{}>", TypeName(&ok)),
                (None, Some(err)) => write!(f, "result<_, {}>", TypeName(&err)),
                (Some(ok), Some(err)) => {
                    write!(f, "result<{}, {}>", TypeName(&ok), TypeName(&err))
                }
            },
            Type::Own(_) => f.write_str("own<resource>"),
            Type::Borrow(_) => f.write_str("borrow<resource>"),
            Type::Future(_) => f.write_str("future"),
            Type::Stream(_) => f.write_str("stream"),
            Type::ErrorContext => f.write_str("error-context"),
        }
    }
}
