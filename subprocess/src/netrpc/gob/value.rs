//! Go values and types in Rust form, and the conversions to and from Rust types.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;

use super::GobError;

/// A gob type: Go's kinds as gob sees them (all signed integers are one kind, all unsigned
/// another, all floats a third).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// `bool`.
    Bool,
    /// Any signed integer.
    Int,
    /// Any unsigned integer.
    Uint,
    /// `float32` or `float64`.
    Float,
    /// `complex64` or `complex128`.
    Complex,
    /// `[]byte`.
    Bytes,
    /// `string`.
    String,
    /// `interface{}` (any interface type).
    Interface,
    /// A fixed-length array.
    Array {
        /// The element type.
        elem: Box<Type>,
        /// The length.
        len: usize,
    },
    /// A slice (other than `[]byte`).
    Slice(Box<Type>),
    /// A map.
    Map {
        /// The key type.
        key: Box<Type>,
        /// The value type.
        value: Box<Type>,
    },
    /// A struct with its exported fields, in order.
    Struct {
        /// The Go type's name (`Args`); informational, fields match by name.
        name: String,
        /// Field names and types.
        fields: Vec<(String, Type)>,
    },
    /// A type that encodes itself (`GobEncoder`, `BinaryMarshaler` or `TextMarshaler`).
    Opaque {
        /// The Go type's name.
        name: String,
    },
}

impl Type {
    /// The name Go's gob registry gives this type, as used for interface values
    /// (`string`, `[]uint8`, `map[string]interface {}`); a struct's own name.
    pub fn go_name(&self) -> String {
        match self {
            Type::Bool => "bool".to_owned(),
            Type::Int => "int".to_owned(),
            Type::Uint => "uint".to_owned(),
            Type::Float => "float64".to_owned(),
            Type::Complex => "complex128".to_owned(),
            Type::Bytes => "[]uint8".to_owned(),
            Type::String => "string".to_owned(),
            Type::Interface => "interface {}".to_owned(),
            Type::Array { elem, len } => format!("[{len}]{}", elem.go_name()),
            Type::Slice(elem) => format!("[]{}", elem.go_name()),
            Type::Map { key, value } => format!("map[{}]{}", key.go_name(), value.go_name()),
            Type::Struct { name, .. } | Type::Opaque { name } => name.clone(),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.go_name())
    }
}

/// A Go value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A `bool`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// A float.
    Float(f64),
    /// A complex number (real, imaginary).
    Complex(f64, f64),
    /// A `[]byte`.
    Bytes(Vec<u8>),
    /// A `string`.
    String(String),
    /// A fixed-length array.
    Array {
        /// The element type.
        elem: Type,
        /// The elements.
        items: Vec<Value>,
    },
    /// A slice.
    Slice {
        /// The element type (needed to encode an empty slice).
        elem: Type,
        /// The elements.
        items: Vec<Value>,
    },
    /// A map, in the order the entries arrived.
    Map {
        /// The key type.
        key: Type,
        /// The value type.
        value: Type,
        /// The entries.
        entries: Vec<(Value, Value)>,
    },
    /// A struct.
    Struct(Struct),
    /// A non-nil interface value: the concrete type's registered name and the value.
    Interface {
        /// The name the concrete type is registered under (`string`, `main.Args`).
        name: String,
        /// The concrete value.
        value: Box<Value>,
    },
    /// A nil interface value.
    Nil,
    /// The bytes of a value whose type encodes itself.
    Opaque {
        /// The type's name.
        name: String,
        /// What its encoder produced.
        bytes: Vec<u8>,
    },
}

impl Value {
    /// This value's gob type.
    pub fn ty(&self) -> Type {
        match self {
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Uint(_) => Type::Uint,
            Value::Float(_) => Type::Float,
            Value::Complex(..) => Type::Complex,
            Value::Bytes(_) => Type::Bytes,
            Value::String(_) => Type::String,
            Value::Array { elem, items } => Type::Array {
                elem: Box::new(elem.clone()),
                len: items.len(),
            },
            Value::Slice { elem, .. } => Type::Slice(Box::new(elem.clone())),
            Value::Map { key, value, .. } => Type::Map {
                key: Box::new(key.clone()),
                value: Box::new(value.clone()),
            },
            Value::Struct(value) => value.ty(),
            Value::Interface { .. } | Value::Nil => Type::Interface,
            Value::Opaque { name, .. } => Type::Opaque { name: name.clone() },
        }
    }

    /// The value inside an interface (itself for any other value).
    pub fn unwrap_interface(self) -> Value {
        match self {
            Value::Interface { value, .. } => value.unwrap_interface(),
            other => other,
        }
    }

    /// Wraps the value in an interface under its Go name, as `interface{}` arguments need.
    /// A value that already is an interface (or nil) is returned as it is.
    pub fn into_interface(self) -> Value {
        match self {
            Value::Interface { .. } | Value::Nil => self,
            other => Value::Interface {
                name: other.ty().go_name(),
                value: Box::new(other),
            },
        }
    }

    /// A short description of the value's type, for errors.
    fn describe(&self) -> String {
        match self {
            Value::Interface { name, .. } => format!("interface holding {name}"),
            Value::Nil => "nil interface".to_owned(),
            other => other.ty().go_name(),
        }
    }

    fn mismatch(&self, expected: impl Into<String>) -> GobError {
        GobError::Mismatch {
            expected: expected.into(),
            found: self.describe(),
        }
    }
}

/// A struct value: its type name and fields by name.
///
/// Build one to pass a struct argument (fields in the Go struct's order; names as in Go, the
/// type name is informational). A decoded struct holds only the fields the sender wrote: gob
/// omits zero values, so a missing field means zero.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Struct {
    name: String,
    fields: Vec<(String, Value)>,
}

impl Struct {
    /// An empty struct named `name`.
    pub fn new(name: impl Into<String>) -> Struct {
        Struct {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn field(mut self, name: impl Into<String>, value: impl ToGob) -> Struct {
        self.fields.push((name.into(), value.to_gob()));
        self
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fields present, in order.
    pub fn fields(&self) -> &[(String, Value)] {
        &self.fields
    }

    /// The value of field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }

    /// Removes field `name` and converts it; a missing field converts from Go's zero value
    /// (`T::default()`).
    pub fn take<T: FromGob + Default>(&mut self, name: &str) -> Result<T, GobError> {
        match self.fields.iter().position(|(field, _)| field == name) {
            Some(index) => {
                let (_, value) = self.fields.remove(index);
                T::from_gob(value).map_err(|error| match error {
                    GobError::Mismatch { expected, found } => GobError::Mismatch {
                        expected: format!("{expected} in field {}.{name}", self.name),
                        found,
                    },
                    other => other,
                })
            }
            None => Ok(T::default()),
        }
    }

    pub(crate) fn push(&mut self, name: String, value: Value) {
        self.fields.push((name, value));
    }

    fn ty(&self) -> Type {
        Type::Struct {
            name: self.name.clone(),
            fields: self
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), value.ty()))
                .collect(),
        }
    }
}

impl From<Struct> for Value {
    fn from(value: Struct) -> Value {
        Value::Struct(value)
    }
}

/// Converts a Rust value into a gob [`Value`].
///
/// `()` becomes a nil interface: the argument go-plugin methods that take nothing expect.
pub trait ToGob {
    /// The value in gob form.
    fn to_gob(&self) -> Value;
}

/// Converts a decoded gob [`Value`] into a Rust value. Interface values are unwrapped, and
/// integers convert between widths when they fit.
pub trait FromGob: Sized {
    /// The Rust value, or [`GobError::Mismatch`] naming both types.
    fn from_gob(value: Value) -> Result<Self, GobError>;
}

/// A Rust type with a fixed gob type, needed for the element type of an empty slice or map.
/// [`Value`] itself stands for `interface{}`.
pub trait GobType {
    /// The gob type.
    fn gob_type() -> Type;
}

/// A type that may be the element of a slice (every [`GobType`] but `u8`: a `Vec<u8>` is a
/// `[]byte`).
pub trait GobElement: ToGob + GobType {}

impl ToGob for Value {
    fn to_gob(&self) -> Value {
        self.clone()
    }
}

impl FromGob for Value {
    fn from_gob(value: Value) -> Result<Value, GobError> {
        Ok(value)
    }
}

impl GobType for Value {
    fn gob_type() -> Type {
        Type::Interface
    }
}

impl GobElement for Value {}

impl ToGob for Struct {
    fn to_gob(&self) -> Value {
        Value::Struct(self.clone())
    }
}

impl FromGob for Struct {
    fn from_gob(value: Value) -> Result<Struct, GobError> {
        match value.unwrap_interface() {
            Value::Struct(value) => Ok(value),
            other => Err(other.mismatch("struct")),
        }
    }
}

impl ToGob for () {
    fn to_gob(&self) -> Value {
        Value::Nil
    }
}

impl FromGob for () {
    /// Any value: the caller discards it.
    fn from_gob(_: Value) -> Result<(), GobError> {
        Ok(())
    }
}

impl<T: ToGob + ?Sized> ToGob for &T {
    fn to_gob(&self) -> Value {
        (**self).to_gob()
    }
}

impl ToGob for bool {
    fn to_gob(&self) -> Value {
        Value::Bool(*self)
    }
}

impl FromGob for bool {
    fn from_gob(value: Value) -> Result<bool, GobError> {
        match value.unwrap_interface() {
            Value::Bool(value) => Ok(value),
            other => Err(other.mismatch("bool")),
        }
    }
}

impl GobType for bool {
    fn gob_type() -> Type {
        Type::Bool
    }
}

impl GobElement for bool {}

macro_rules! integers {
    ($variant:ident, $kind:ident, $wide:ty: $($int:ty),*) => {$(
        impl ToGob for $int {
            fn to_gob(&self) -> Value {
                Value::$variant(<$wide>::from(*self))
            }
        }

        impl FromGob for $int {
            fn from_gob(value: Value) -> Result<$int, GobError> {
                let out_of_range = |value: &Value| GobError::Mismatch {
                    expected: stringify!($int).to_owned(),
                    found: format!("{value:?}, out of range"),
                };
                match value.unwrap_interface() {
                    Value::Int(int) => <$int>::try_from(int).map_err(|_| out_of_range(&Value::Int(int))),
                    Value::Uint(uint) => <$int>::try_from(uint).map_err(|_| out_of_range(&Value::Uint(uint))),
                    other => Err(other.mismatch(stringify!($int))),
                }
            }
        }

        impl GobType for $int {
            fn gob_type() -> Type {
                Type::$kind
            }
        }
    )*};
}

integers!(Int, Int, i64: i8, i16, i32, i64);
integers!(Uint, Uint, u64: u8, u16, u32, u64);

impl ToGob for isize {
    fn to_gob(&self) -> Value {
        Value::Int(*self as i64)
    }
}

impl ToGob for usize {
    fn to_gob(&self) -> Value {
        Value::Uint(*self as u64)
    }
}

impl FromGob for usize {
    fn from_gob(value: Value) -> Result<usize, GobError> {
        u64::from_gob(value).and_then(|value| {
            usize::try_from(value).map_err(|_| GobError::Mismatch {
                expected: "usize".to_owned(),
                found: format!("{value}, out of range"),
            })
        })
    }
}

impl GobType for usize {
    fn gob_type() -> Type {
        Type::Uint
    }
}

impl GobElement for i8 {}
impl GobElement for i16 {}
impl GobElement for i32 {}
impl GobElement for i64 {}
impl GobElement for u16 {}
impl GobElement for u32 {}
impl GobElement for u64 {}
impl GobElement for usize {}

impl ToGob for f64 {
    fn to_gob(&self) -> Value {
        Value::Float(*self)
    }
}

impl ToGob for f32 {
    fn to_gob(&self) -> Value {
        Value::Float(f64::from(*self))
    }
}

impl FromGob for f64 {
    fn from_gob(value: Value) -> Result<f64, GobError> {
        match value.unwrap_interface() {
            Value::Float(value) => Ok(value),
            other => Err(other.mismatch("float64")),
        }
    }
}

impl FromGob for f32 {
    fn from_gob(value: Value) -> Result<f32, GobError> {
        f64::from_gob(value).map(|value| value as f32)
    }
}

impl GobType for f64 {
    fn gob_type() -> Type {
        Type::Float
    }
}

impl GobType for f32 {
    fn gob_type() -> Type {
        Type::Float
    }
}

impl GobElement for f64 {}
impl GobElement for f32 {}

impl ToGob for str {
    fn to_gob(&self) -> Value {
        Value::String(self.to_owned())
    }
}

impl ToGob for String {
    fn to_gob(&self) -> Value {
        Value::String(self.clone())
    }
}

impl FromGob for String {
    fn from_gob(value: Value) -> Result<String, GobError> {
        match value.unwrap_interface() {
            Value::String(value) => Ok(value),
            other => Err(other.mismatch("string")),
        }
    }
}

impl GobType for String {
    fn gob_type() -> Type {
        Type::String
    }
}

impl GobElement for String {}

impl ToGob for [u8] {
    fn to_gob(&self) -> Value {
        Value::Bytes(self.to_vec())
    }
}

impl ToGob for Vec<u8> {
    fn to_gob(&self) -> Value {
        Value::Bytes(self.clone())
    }
}

impl FromGob for Vec<u8> {
    /// A `[]byte`, or a `string` taken as its bytes.
    fn from_gob(value: Value) -> Result<Vec<u8>, GobError> {
        match value.unwrap_interface() {
            Value::Bytes(value) => Ok(value),
            Value::String(value) => Ok(value.into_bytes()),
            other => Err(other.mismatch("[]uint8")),
        }
    }
}

impl GobType for Vec<u8> {
    fn gob_type() -> Type {
        Type::Bytes
    }
}

impl GobElement for Vec<u8> {}

impl<T: GobElement> ToGob for Vec<T> {
    fn to_gob(&self) -> Value {
        Value::Slice {
            elem: T::gob_type(),
            items: self.iter().map(element).collect(),
        }
    }
}

impl<T: GobElement + FromGob> FromGob for Vec<T> {
    fn from_gob(value: Value) -> Result<Vec<T>, GobError> {
        match value.unwrap_interface() {
            Value::Slice { items, .. } | Value::Array { items, .. } => {
                items.into_iter().map(T::from_gob).collect()
            }
            other => Err(other.mismatch(format!("[]{}", T::gob_type()))),
        }
    }
}

impl<T: GobElement> GobType for Vec<T> {
    fn gob_type() -> Type {
        Type::Slice(Box::new(T::gob_type()))
    }
}

impl<T: GobElement> GobElement for Vec<T> {}

impl<T: ToGob> ToGob for Option<T> {
    /// `None` is a nil interface.
    fn to_gob(&self) -> Value {
        match self {
            Some(value) => value.to_gob(),
            None => Value::Nil,
        }
    }
}

impl<T: FromGob> FromGob for Option<T> {
    /// A nil interface is `None`.
    fn from_gob(value: Value) -> Result<Option<T>, GobError> {
        match value {
            Value::Nil => Ok(None),
            other => T::from_gob(other).map(Some),
        }
    }
}

/// An element of a typed container: an `interface{}` element is wrapped with its Go name.
fn element<T: ToGob + GobType>(value: &T) -> Value {
    let value = value.to_gob();
    if T::gob_type() == Type::Interface {
        value.into_interface()
    } else {
        value
    }
}

macro_rules! maps {
    ($($map:ident: $($bound:path),*);*) => {$(
        impl<K: GobElement $(+ $bound)*, V: GobElement> ToGob for $map<K, V> {
            fn to_gob(&self) -> Value {
                Value::Map {
                    key: K::gob_type(),
                    value: V::gob_type(),
                    entries: self.iter().map(|(key, value)| (element(key), element(value))).collect(),
                }
            }
        }

        impl<K: GobElement + FromGob $(+ $bound)*, V: GobElement + FromGob> FromGob for $map<K, V> {
            fn from_gob(value: Value) -> Result<$map<K, V>, GobError> {
                match value.unwrap_interface() {
                    Value::Map { entries, .. } => entries
                        .into_iter()
                        .map(|(key, value)| Ok((K::from_gob(key)?, V::from_gob(value)?)))
                        .collect(),
                    other => Err(other.mismatch(format!(
                        "map[{}]{}",
                        K::gob_type(),
                        V::gob_type()
                    ))),
                }
            }
        }

        impl<K: GobElement $(+ $bound)*, V: GobElement> GobType for $map<K, V> {
            fn gob_type() -> Type {
                Type::Map {
                    key: Box::new(K::gob_type()),
                    value: Box::new(V::gob_type()),
                }
            }
        }

        impl<K: GobElement $(+ $bound)*, V: GobElement> GobElement for $map<K, V> {}
    )*};
}

maps!(HashMap: Eq, Hash; BTreeMap: Ord);
