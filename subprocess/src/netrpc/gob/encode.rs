//! Writing gob messages: each composite type is defined once per stream, then values refer to
//! it by id.

use std::collections::HashMap;

use super::decode::ids;
use super::value::{Type, Value};
use super::{GobError, MAX_DEPTH, MAX_MESSAGE};

/// A point to roll an [`Encoder`]'s type table back to.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint(i64);

/// Encodes the values of one gob stream, remembering which types it has defined.
#[derive(Debug)]
pub struct Encoder {
    sent: HashMap<Type, i64>,
    next_id: i64,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            sent: HashMap::new(),
            next_id: ids::FIRST_USER,
        }
    }
}

impl Encoder {
    /// An encoder for a new stream.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Marks the types defined so far, for [`Encoder::rollback`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.next_id)
    }

    /// Forgets the types defined since `checkpoint`: for when the bytes encoded since then are
    /// not sent after all.
    pub fn rollback(&mut self, checkpoint: Checkpoint) {
        self.sent.retain(|_, id| *id < checkpoint.0);
        self.next_id = checkpoint.0;
    }

    /// Appends `value` to `out` as complete messages: the definitions of types the stream has
    /// not seen yet, then the value.
    ///
    /// On failure `out` and the type table are as they were.
    pub fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), GobError> {
        let checkpoint = self.checkpoint();
        let start = out.len();
        let result = self.encode_inner(value, out);
        if result.is_err() {
            self.rollback(checkpoint);
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), GobError> {
        let ty = value.ty();
        let mut definitions = Vec::new();
        let id = self.type_id(&ty, &mut definitions, 0)?;
        self.interface_types(value, &mut definitions, 0)?;
        for definition in definitions {
            message(&definition, out)?;
        }
        let mut body = Vec::new();
        put_int(&mut body, id);
        self.top_level(&ty, value, &mut body, 0)?;
        message(&body, out)
    }

    /// The id of `ty`, queuing definitions for it and its components when new.
    fn type_id(
        &mut self,
        ty: &Type,
        definitions: &mut Vec<Vec<u8>>,
        depth: usize,
    ) -> Result<i64, GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::TooDeep { limit: MAX_DEPTH });
        }
        if let Some(id) = ids::of(ty) {
            return Ok(id);
        }
        if let Some(id) = self.sent.get(ty) {
            return Ok(*id);
        }
        let mut wire = Vec::new();
        let common = |wire: &mut Vec<u8>, name: String, id: i64| {
            // CommonType{Name, Id}.
            put_uint(wire, 1);
            put_str(wire, &name);
            put_uint(wire, 1);
            put_int(wire, id);
            put_uint(wire, 0);
        };
        // Components first, so the id below is the highest and definitions precede use.
        let id = match ty {
            Type::Array { elem, len } => {
                let elem = self.type_id(elem, definitions, depth + 1)?;
                let id = self.allocate(ty);
                put_uint(&mut wire, 1); // ArrayT
                put_uint(&mut wire, 1);
                common(&mut wire, ty.go_name(), id);
                put_uint(&mut wire, 1);
                put_int(&mut wire, elem);
                put_uint(&mut wire, 1);
                put_int(&mut wire, *len as i64);
                put_uint(&mut wire, 0);
                id
            }
            Type::Slice(elem) => {
                let elem = self.type_id(elem, definitions, depth + 1)?;
                let id = self.allocate(ty);
                put_uint(&mut wire, 2); // SliceT
                put_uint(&mut wire, 1);
                common(&mut wire, ty.go_name(), id);
                put_uint(&mut wire, 1);
                put_int(&mut wire, elem);
                put_uint(&mut wire, 0);
                id
            }
            Type::Struct { name, fields } => {
                let mut field_ids = Vec::with_capacity(fields.len());
                for (field, field_type) in fields {
                    field_ids.push((field, self.type_id(field_type, definitions, depth + 1)?));
                }
                let id = self.allocate(ty);
                put_uint(&mut wire, 3); // StructT
                put_uint(&mut wire, 1);
                common(&mut wire, name.clone(), id);
                put_uint(&mut wire, 1);
                put_uint(&mut wire, field_ids.len() as u64);
                for (field, field_id) in field_ids {
                    put_uint(&mut wire, 1);
                    put_str(&mut wire, field);
                    put_uint(&mut wire, 1);
                    put_int(&mut wire, field_id);
                    put_uint(&mut wire, 0);
                }
                put_uint(&mut wire, 0);
                id
            }
            Type::Map { key, value } => {
                let key = self.type_id(key, definitions, depth + 1)?;
                let value = self.type_id(value, definitions, depth + 1)?;
                let id = self.allocate(ty);
                put_uint(&mut wire, 4); // MapT
                put_uint(&mut wire, 1);
                common(&mut wire, ty.go_name(), id);
                put_uint(&mut wire, 1);
                put_int(&mut wire, key);
                put_uint(&mut wire, 1);
                put_int(&mut wire, value);
                put_uint(&mut wire, 0);
                id
            }
            Type::Opaque { name } => {
                let id = self.allocate(ty);
                put_uint(&mut wire, 5); // GobEncoderT
                put_uint(&mut wire, 1);
                common(&mut wire, name.clone(), id);
                put_uint(&mut wire, 0);
                id
            }
            basic => unreachable!("basic type {basic} has a predefined id"),
        };
        put_uint(&mut wire, 0); // end of wireType
        let mut definition = Vec::with_capacity(wire.len() + 4);
        put_int(&mut definition, -id);
        definition.extend_from_slice(&wire);
        definitions.push(definition);
        Ok(id)
    }

    fn allocate(&mut self, ty: &Type) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.sent.insert(ty.clone(), id);
        id
    }

    /// Defines the concrete types of the interface values inside `value`.
    fn interface_types(
        &mut self,
        value: &Value,
        definitions: &mut Vec<Vec<u8>>,
        depth: usize,
    ) -> Result<(), GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::TooDeep { limit: MAX_DEPTH });
        }
        match value {
            Value::Interface { value, .. } => {
                self.type_id(&value.ty(), definitions, depth + 1)?;
                self.interface_types(value, definitions, depth + 1)
            }
            Value::Array { items, .. } | Value::Slice { items, .. } => items
                .iter()
                .try_for_each(|item| self.interface_types(item, definitions, depth + 1)),
            Value::Map { entries, .. } => entries.iter().try_for_each(|(key, value)| {
                self.interface_types(key, definitions, depth + 1)?;
                self.interface_types(value, definitions, depth + 1)
            }),
            Value::Struct(value) => value
                .fields()
                .iter()
                .try_for_each(|(_, value)| self.interface_types(value, definitions, depth + 1)),
            _ => Ok(()),
        }
    }

    fn top_level(
        &self,
        ty: &Type,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), GobError> {
        if !matches!(ty, Type::Struct { .. }) {
            put_uint(out, 0); // singleton field delta
        }
        self.value(ty, value, out, depth)
    }

    /// Writes `value` as a value of type `ty`.
    fn value(
        &self,
        ty: &Type,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::TooDeep { limit: MAX_DEPTH });
        }
        let mismatch = || GobError::Unencodable {
            what: format!("{value:?}"),
            reason: format!("it is not a value of type {ty}"),
        };
        match (ty, value) {
            (Type::Bool, Value::Bool(value)) => put_uint(out, u64::from(*value)),
            (Type::Int, Value::Int(value)) => put_int(out, *value),
            (Type::Uint, Value::Uint(value)) => put_uint(out, *value),
            (Type::Float, Value::Float(value)) => put_float(out, *value),
            (Type::Complex, Value::Complex(re, im)) => {
                put_float(out, *re);
                put_float(out, *im);
            }
            (Type::Bytes, Value::Bytes(bytes)) => put_bytes(out, bytes),
            (Type::String, Value::String(text)) => put_str(out, text),
            (Type::Interface, Value::Nil) => put_uint(out, 0),
            (Type::Interface, Value::Interface { name, value }) => {
                if name.is_empty() {
                    return Err(GobError::Unencodable {
                        what: format!("{value:?}"),
                        reason: "an interface value needs its type's registered name".to_owned(),
                    });
                }
                put_str(out, name);
                let concrete = value.ty();
                let id = match ids::of(&concrete) {
                    Some(id) => id,
                    None => *self.sent.get(&concrete).ok_or_else(mismatch)?,
                };
                put_int(out, id);
                let mut inner = Vec::new();
                self.top_level(&concrete, value, &mut inner, depth + 1)?;
                put_uint(out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
            (Type::Interface, other) => {
                return self.value(ty, &other.clone().into_interface(), out, depth);
            }
            (Type::Array { elem, len }, Value::Array { items, .. }) if items.len() == *len => {
                put_uint(out, items.len() as u64);
                for item in items {
                    self.value(elem, item, out, depth + 1)?;
                }
            }
            (Type::Slice(elem), Value::Slice { items, .. }) => {
                put_uint(out, items.len() as u64);
                for item in items {
                    self.value(elem, item, out, depth + 1)?;
                }
            }
            (Type::Map { key, value: elem }, Value::Map { entries, .. }) => {
                put_uint(out, entries.len() as u64);
                for (k, v) in entries {
                    self.value(key, k, out, depth + 1)?;
                    self.value(elem, v, out, depth + 1)?;
                }
            }
            (Type::Struct { fields, .. }, Value::Struct(value)) => {
                if let Some((unknown, _)) = value
                    .fields()
                    .iter()
                    .find(|(name, _)| !fields.iter().any(|(field, _)| field == name))
                {
                    return Err(GobError::Unencodable {
                        what: format!("field {unknown} of struct {}", value.name()),
                        reason: format!("type {ty} has no such field"),
                    });
                }
                let mut last: i64 = -1;
                for (index, (field, field_type)) in fields.iter().enumerate() {
                    let Some(field_value) = value.get(field) else {
                        continue;
                    };
                    if is_zero(field_value) {
                        continue;
                    }
                    put_uint(out, (index as i64 - last) as u64);
                    last = index as i64;
                    self.value(field_type, field_value, out, depth + 1)?;
                }
                put_uint(out, 0);
            }
            (Type::Opaque { .. }, Value::Opaque { bytes, .. }) => put_bytes(out, bytes),
            _ => return Err(mismatch()),
        }
        Ok(())
    }
}

/// Go's zero values, which gob leaves out of structs.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Bool(value) => !value,
        Value::Int(value) => *value == 0,
        Value::Uint(value) => *value == 0,
        Value::Float(value) => *value == 0.0,
        Value::Complex(re, im) => *re == 0.0 && *im == 0.0,
        Value::Bytes(bytes) => bytes.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Slice { items, .. } => items.is_empty(),
        Value::Map { entries, .. } => entries.is_empty(),
        Value::Array { items, .. } => items.iter().all(is_zero),
        Value::Struct(value) => value.fields().iter().all(|(_, value)| is_zero(value)),
        Value::Nil => true,
        Value::Interface { .. } | Value::Opaque { .. } => false,
    }
}

/// Appends `body` as one message: its length, then the bytes.
fn message(body: &[u8], out: &mut Vec<u8>) -> Result<(), GobError> {
    if body.len() > MAX_MESSAGE {
        return Err(GobError::TooLarge {
            length: body.len() as u64,
            limit: MAX_MESSAGE,
        });
    }
    put_uint(out, body.len() as u64);
    out.extend_from_slice(body);
    Ok(())
}

pub(super) fn put_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
        return;
    }
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    out.push((-((8 - skip) as i8)) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

pub(super) fn put_int(out: &mut Vec<u8>, value: i64) {
    let bits = if value < 0 {
        ((!value as u64) << 1) | 1
    } else {
        (value as u64) << 1
    };
    put_uint(out, bits);
}

fn put_float(out: &mut Vec<u8>, value: f64) {
    put_uint(out, value.to_bits().swap_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}
