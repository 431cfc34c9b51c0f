//! Reading gob messages: type definitions into a per-stream table, values into [`Value`]s.

use std::collections::HashMap;

use super::value::{Struct, Type, Value};
use super::{GobError, MAX_DEPTH, MAX_MESSAGE, MAX_VALUES};

/// Predefined type ids.
pub(super) mod ids {
    use super::Type;

    pub const BOOL: i64 = 1;
    pub const INT: i64 = 2;
    pub const UINT: i64 = 3;
    pub const FLOAT: i64 = 4;
    pub const BYTES: i64 = 5;
    pub const STRING: i64 = 6;
    pub const COMPLEX: i64 = 7;
    pub const INTERFACE: i64 = 8;
    /// Ids below this are gob's own (basic types and the type system's types).
    pub const FIRST_USER: i64 = 64;

    /// The predefined ids of the basic types.
    pub const BASIC: [(i64, Type); 8] = [
        (BOOL, Type::Bool),
        (INT, Type::Int),
        (UINT, Type::Uint),
        (FLOAT, Type::Float),
        (BYTES, Type::Bytes),
        (STRING, Type::String),
        (COMPLEX, Type::Complex),
        (INTERFACE, Type::Interface),
    ];

    /// The predefined id of a basic type.
    pub fn of(ty: &Type) -> Option<i64> {
        BASIC
            .iter()
            .find(|(_, basic)| basic == ty)
            .map(|(id, _)| *id)
    }
}

/// A type definition as received: component types are referred to by id.
#[derive(Debug, Clone)]
enum Wire {
    Array {
        elem: i64,
        len: usize,
    },
    Slice {
        elem: i64,
    },
    Struct {
        name: String,
        fields: Vec<(String, i64)>,
    },
    Map {
        key: i64,
        elem: i64,
    },
    Opaque {
        name: String,
    },
}

/// What one gob message held.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A type definition (recorded in the decoder) for this id.
    Type(i64),
    /// A value.
    Value(Value),
}

/// Decodes the messages of one gob stream, remembering the types it defines.
#[derive(Debug, Default)]
pub struct Decoder {
    types: HashMap<i64, Wire>,
    resolved: HashMap<i64, Type>,
    /// Values the current message may still produce.
    budget: usize,
}

impl Decoder {
    /// A decoder for a new stream.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Reads a message's length prefix from the front of `data`: `Some((header_len,
    /// body_len))` once enough bytes are there.
    pub fn frame(data: &[u8]) -> Result<Option<(usize, usize)>, GobError> {
        let mut buf = Buf::new(data);
        match buf.uint("a message length") {
            Ok(length) => {
                let length = usize::try_from(length)
                    .ok()
                    .filter(|length| *length <= MAX_MESSAGE)
                    .ok_or(GobError::TooLarge {
                        length,
                        limit: MAX_MESSAGE,
                    })?;
                if length == 0 {
                    return Err(corrupt("a message", "zero-length message"));
                }
                Ok(Some((buf.pos, length)))
            }
            Err(GobError::Truncated { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Decodes one message body (without its length prefix). Any failure in a type definition
    /// is [`GobError::BadTypeDefinition`]; other errors concern one value only.
    pub fn decode(&mut self, message: &[u8]) -> Result<Message, GobError> {
        let mut buf = Buf::new(message);
        self.budget = MAX_VALUES;
        let id = buf.int("a type id")?;
        if id < 0 {
            // Whatever goes wrong in a definition is a bad definition: later values may need it.
            let bad = |reason: String| GobError::BadTypeDefinition {
                id: id.saturating_neg(),
                reason,
            };
            let id = id
                .checked_neg()
                .ok_or_else(|| bad("the id is out of range".to_owned()))?;
            self.define(&mut buf, id)?;
            if !buf.is_empty() {
                return Err(bad(format!("{} bytes left over after it", buf.remaining())));
            }
            return Ok(Message::Type(id));
        }
        let value = self.top_level(&mut buf, id, 0)?;
        Ok(Message::Value(value))
    }

    /// A value at the top of a message or inside an interface: structs as they are, other
    /// types after a zero "singleton" field delta.
    fn top_level(&mut self, buf: &mut Buf<'_>, id: i64, depth: usize) -> Result<Value, GobError> {
        if let Some(Wire::Struct { .. }) = self.types.get(&id) {
            return self.value(buf, id, depth);
        }
        if id >= ids::FIRST_USER && !self.types.contains_key(&id) {
            return Err(GobError::UnknownType { id });
        }
        let delta = buf.uint("a singleton delta")?;
        if delta != 0 {
            return Err(corrupt(
                "a value",
                format!("non-zero delta {delta} before a non-struct value"),
            ));
        }
        self.value(buf, id, depth)
    }

    fn value(&mut self, buf: &mut Buf<'_>, id: i64, depth: usize) -> Result<Value, GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::TooDeep { limit: MAX_DEPTH });
        }
        // Every value takes a byte or more on the wire but far more in memory: bound how many
        // one message may hold, so a hostile peer cannot turn bytes into gigabytes.
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or(GobError::TooManyValues { limit: MAX_VALUES })?;
        match id {
            ids::BOOL => match buf.uint("a bool")? {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                other => Err(corrupt("a bool", format!("value {other}"))),
            },
            ids::INT => Ok(Value::Int(buf.int("an int")?)),
            ids::UINT => Ok(Value::Uint(buf.uint("a uint")?)),
            ids::FLOAT => Ok(Value::Float(buf.float()?)),
            ids::COMPLEX => Ok(Value::Complex(buf.float()?, buf.float()?)),
            ids::BYTES => Ok(Value::Bytes(buf.bytes("a []byte")?.to_vec())),
            ids::STRING => Ok(Value::String(buf.string("a string")?)),
            ids::INTERFACE => self.interface(buf, depth),
            _ => {
                let wire = self
                    .types
                    .get(&id)
                    .cloned()
                    .ok_or(GobError::UnknownType { id })?;
                match wire {
                    Wire::Struct { name, fields } => {
                        let mut value = Struct::new(name.clone());
                        let mut field: i64 = -1;
                        loop {
                            let delta = buf.uint("a struct field delta")?;
                            if delta == 0 {
                                break;
                            }
                            field = i64::try_from(delta)
                                .ok()
                                .and_then(|delta| field.checked_add(delta))
                                .ok_or_else(|| corrupt(&name, "field delta overflows"))?;
                            let Some((field_name, field_id)) = usize::try_from(field)
                                .ok()
                                .and_then(|index| fields.get(index))
                            else {
                                return Err(corrupt(
                                    &name,
                                    format!(
                                        "field number {field} but the type has {} fields",
                                        fields.len()
                                    ),
                                ));
                            };
                            let field_value = self.value(buf, *field_id, depth + 1)?;
                            value.push(field_name.clone(), field_value);
                        }
                        Ok(Value::Struct(value))
                    }
                    Wire::Slice { elem } => {
                        let count = buf.count("a slice")?;
                        let elem_type = self.resolve(elem, 0)?;
                        let mut items = Vec::with_capacity(count.min(self.budget));
                        for _ in 0..count {
                            items.push(self.value(buf, elem, depth + 1)?);
                        }
                        Ok(Value::Slice {
                            elem: elem_type,
                            items,
                        })
                    }
                    Wire::Array { elem, len } => {
                        let count = buf.count("an array")?;
                        if count != len {
                            return Err(corrupt(
                                "an array",
                                format!("{count} elements for an array of length {len}"),
                            ));
                        }
                        let elem_type = self.resolve(elem, 0)?;
                        let mut items = Vec::with_capacity(count.min(self.budget));
                        for _ in 0..count {
                            items.push(self.value(buf, elem, depth + 1)?);
                        }
                        Ok(Value::Array {
                            elem: elem_type,
                            items,
                        })
                    }
                    Wire::Map { key, elem } => {
                        let count = buf.count("a map")?;
                        let key_type = self.resolve(key, 0)?;
                        let value_type = self.resolve(elem, 0)?;
                        let mut entries = Vec::with_capacity(count.min(self.budget));
                        for _ in 0..count {
                            let k = self.value(buf, key, depth + 1)?;
                            let v = self.value(buf, elem, depth + 1)?;
                            entries.push((k, v));
                        }
                        Ok(Value::Map {
                            key: key_type,
                            value: value_type,
                            entries,
                        })
                    }
                    Wire::Opaque { name } => {
                        let bytes = buf.bytes("a self-encoded value")?.to_vec();
                        Ok(Value::Opaque { name, bytes })
                    }
                }
            }
        }
    }

    fn interface(&mut self, buf: &mut Buf<'_>, depth: usize) -> Result<Value, GobError> {
        let name = buf.string("an interface's type name")?;
        if name.is_empty() {
            return Ok(Value::Nil);
        }
        let id = loop {
            let id = buf.int("an interface's type id")?;
            if id >= 0 {
                break id;
            }
            let id = id.checked_neg().ok_or(GobError::UnknownType { id })?;
            self.define(buf, id)?;
            if buf.is_empty() {
                return Err(corrupt(
                    &name,
                    "an interface value ends after a type definition",
                ));
            }
            // A definition inline in a value is followed by its own (unused) byte count.
            buf.uint("a definition's byte count")?;
        };
        let length = buf.count("an interface value")?;
        let mut inner = Buf::new(buf.take(length, "an interface value")?);
        let value = self.top_level(&mut inner, id, depth + 1)?;
        Ok(Value::Interface {
            name,
            value: Box::new(value),
        })
    }

    /// Reads a `wireType` and records it as type `id`.
    fn define(&mut self, buf: &mut Buf<'_>, id: i64) -> Result<(), GobError> {
        let bad = |reason: String| GobError::BadTypeDefinition { id, reason };
        if id < ids::FIRST_USER {
            return Err(bad("redefines one of gob's own type ids".to_owned()));
        }
        if self.types.contains_key(&id) {
            return Err(bad("the id is already defined on this stream".to_owned()));
        }
        let mut wire = None;
        read_struct(buf, "a wireType", |buf, field| {
            let parsed = match field {
                0 => array_type(buf)?,
                1 => slice_type(buf)?,
                2 => struct_type(buf)?,
                3 => map_type(buf)?,
                4..=6 => Wire::Opaque {
                    name: common_only(buf)?,
                },
                other => {
                    return Err(corrupt("a wireType", format!("unknown field {other}")));
                }
            };
            wire = Some(parsed);
            Ok(())
        })
        .map_err(|error| match error {
            GobError::BadTypeDefinition { .. } => error,
            other => bad(other.to_string()),
        })?;
        let wire = wire.ok_or_else(|| bad("it defines no kind of type".to_owned()))?;
        self.types.insert(id, wire);
        Ok(())
    }

    /// The [`Type`] of an id, built once per id; a type that contains itself is refused
    /// (it would be infinite in this form).
    fn resolve(&mut self, id: i64, depth: usize) -> Result<Type, GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::TooDeep { limit: MAX_DEPTH });
        }
        if let Some(basic) = ids::BASIC.iter().find(|(basic, _)| *basic == id) {
            return Ok(basic.1.clone());
        }
        if let Some(resolved) = self.resolved.get(&id) {
            return Ok(resolved.clone());
        }
        let wire = self
            .types
            .get(&id)
            .cloned()
            .ok_or(GobError::UnknownType { id })?;
        let resolved = match wire {
            Wire::Array { elem, len } => Type::Array {
                elem: Box::new(self.resolve(elem, depth + 1)?),
                len,
            },
            Wire::Slice { elem } => Type::Slice(Box::new(self.resolve(elem, depth + 1)?)),
            Wire::Map { key, elem } => Type::Map {
                key: Box::new(self.resolve(key, depth + 1)?),
                value: Box::new(self.resolve(elem, depth + 1)?),
            },
            Wire::Struct { name, fields } => {
                let mut resolved = Vec::with_capacity(fields.len());
                for (field, id) in fields {
                    resolved.push((field, self.resolve(id, depth + 1)?));
                }
                Type::Struct {
                    name,
                    fields: resolved,
                }
            }
            Wire::Opaque { name } => Type::Opaque { name },
        };
        self.resolved.insert(id, resolved.clone());
        Ok(resolved)
    }
}

fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> GobError {
    GobError::Corrupt {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Reads a struct encoded by field deltas, handing each present field's index to `field`.
fn read_struct(
    buf: &mut Buf<'_>,
    what: &'static str,
    mut field: impl FnMut(&mut Buf<'_>, u64) -> Result<(), GobError>,
) -> Result<(), GobError> {
    let mut index: u64 = 0;
    let mut first = true;
    loop {
        let delta = buf.uint(what)?;
        if delta == 0 {
            return Ok(());
        }
        index = if first {
            delta - 1
        } else {
            index
                .checked_add(delta)
                .ok_or_else(|| corrupt(what, "field delta overflows"))?
        };
        first = false;
        field(buf, index)?;
    }
}

/// `CommonType{Name, Id}`: returns the name.
fn common(buf: &mut Buf<'_>) -> Result<String, GobError> {
    let mut name = String::new();
    read_struct(buf, "a CommonType", |buf, field| {
        match field {
            0 => name = buf.string("a type name")?,
            1 => {
                buf.int("a type id")?;
            }
            other => return Err(corrupt("a CommonType", format!("unknown field {other}"))),
        }
        Ok(())
    })?;
    Ok(name)
}

fn common_only(buf: &mut Buf<'_>) -> Result<String, GobError> {
    let mut name = String::new();
    read_struct(buf, "a gobEncoderType", |buf, field| {
        match field {
            0 => name = common(buf)?,
            other => {
                return Err(corrupt(
                    "a gobEncoderType",
                    format!("unknown field {other}"),
                ));
            }
        }
        Ok(())
    })?;
    Ok(name)
}

fn array_type(buf: &mut Buf<'_>) -> Result<Wire, GobError> {
    let (mut elem, mut len) = (0, 0);
    read_struct(buf, "an arrayType", |buf, field| {
        match field {
            0 => {
                common(buf)?;
            }
            1 => elem = buf.int("an element type id")?,
            2 => len = buf.int("an array length")?,
            other => return Err(corrupt("an arrayType", format!("unknown field {other}"))),
        }
        Ok(())
    })?;
    let len = usize::try_from(len)
        .map_err(|_| corrupt("an arrayType", format!("negative length {len}")))?;
    Ok(Wire::Array { elem, len })
}

fn slice_type(buf: &mut Buf<'_>) -> Result<Wire, GobError> {
    let mut elem = 0;
    read_struct(buf, "a sliceType", |buf, field| {
        match field {
            0 => {
                common(buf)?;
            }
            1 => elem = buf.int("an element type id")?,
            other => return Err(corrupt("a sliceType", format!("unknown field {other}"))),
        }
        Ok(())
    })?;
    Ok(Wire::Slice { elem })
}

fn map_type(buf: &mut Buf<'_>) -> Result<Wire, GobError> {
    let (mut key, mut elem) = (0, 0);
    read_struct(buf, "a mapType", |buf, field| {
        match field {
            0 => {
                common(buf)?;
            }
            1 => key = buf.int("a key type id")?,
            2 => elem = buf.int("an element type id")?,
            other => return Err(corrupt("a mapType", format!("unknown field {other}"))),
        }
        Ok(())
    })?;
    Ok(Wire::Map { key, elem })
}

fn struct_type(buf: &mut Buf<'_>) -> Result<Wire, GobError> {
    let mut name = String::new();
    let mut fields = Vec::new();
    read_struct(buf, "a structType", |buf, field| {
        match field {
            0 => name = common(buf)?,
            1 => {
                let count = buf.count("a field list")?;
                for _ in 0..count {
                    let (mut field_name, mut id) = (String::new(), 0);
                    read_struct(buf, "a fieldType", |buf, field| {
                        match field {
                            0 => field_name = buf.string("a field name")?,
                            1 => id = buf.int("a field type id")?,
                            other => {
                                return Err(corrupt(
                                    "a fieldType",
                                    format!("unknown field {other}"),
                                ));
                            }
                        }
                        Ok(())
                    })?;
                    fields.push((field_name, id));
                }
            }
            other => return Err(corrupt("a structType", format!("unknown field {other}"))),
        }
        Ok(())
    })?;
    Ok(Wire::Struct { name, fields })
}

/// A cursor over a message's bytes.
struct Buf<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Buf<'a> {
    fn new(data: &'a [u8]) -> Buf<'a> {
        Buf { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], GobError> {
        if count > self.remaining() {
            return Err(GobError::Truncated {
                needed: count - self.remaining(),
                what,
            });
        }
        let slice = &self.data[self.pos..self.pos + count];
        self.pos += count;
        Ok(slice)
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, GobError> {
        let first = self.take(1, what)?[0];
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let count = (!first).wrapping_add(1) as usize;
        if count > 8 {
            return Err(corrupt(
                what,
                format!("an unsigned integer of {count} bytes"),
            ));
        }
        let bytes = self.take(count, what)?;
        Ok(bytes
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte)))
    }

    fn int(&mut self, what: &'static str) -> Result<i64, GobError> {
        let bits = self.uint(what)?;
        let value = (bits >> 1) as i64;
        Ok(if bits & 1 == 1 { !value } else { value })
    }

    fn float(&mut self) -> Result<f64, GobError> {
        Ok(f64::from_bits(self.uint("a float")?.swap_bytes()))
    }

    /// A length that must not exceed the bytes left (every element takes at least one).
    fn count(&mut self, what: &'static str) -> Result<usize, GobError> {
        let count = self.uint(what)?;
        match usize::try_from(count) {
            Ok(count) if count <= self.remaining() => Ok(count),
            _ => Err(GobError::Truncated {
                needed: usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(self.remaining()),
                what,
            }),
        }
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], GobError> {
        let length = self.count(what)?;
        self.take(length, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GobError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(what, "the string is not valid UTF-8"))
    }
}
