//! Go's `encoding/gob`, as much as `net/rpc` needs: values of Go's basic types, slices, arrays,
//! maps, structs and interfaces in both directions, and every kind of type definition on input.
//!
//! A gob stream is self-describing: each message is length-prefixed, and a value of a composite
//! type is preceded (once per stream) by a definition of that type. [`Value`] is the dynamic
//! form of a Go value; it carries enough type information to be encoded again (a slice knows its
//! element type even when empty). [`ToGob`] and [`FromGob`] convert between Rust types and
//! [`Value`]s; implement them by hand for a struct argument with [`Struct`].
//!
//! Decoding never trusts the peer: lengths are checked against the bytes present, nesting is
//! bounded, and a value of a type the stream never defined is a [`GobError`] naming the id.
//! Because every message carries its length, a value that fails to decode is skipped whole and
//! the stream stays in step.

mod decode;
mod encode;
mod value;

pub use decode::{Decoder, Message};
pub use encode::{Checkpoint, Encoder};
pub use value::{FromGob, GobElement, GobType, Struct, ToGob, Type, Value};

/// The largest gob message accepted or sent, in bytes (256 MiB).
///
/// Go accepts up to 1 GiB per message; a smaller bound keeps a hostile plugin from making the
/// host allocate without limit.
pub const MAX_MESSAGE: usize = 256 << 20;

/// The most values (elements, fields, entries, each counted) one message may decode to: 1 Mi.
///
/// A value takes a byte on the wire but tens of bytes in memory; this bound keeps a message of
/// empty structs from costing gigabytes.
pub const MAX_VALUES: usize = 1 << 20;

/// Nesting deeper than this (types inside types, values inside values) is refused.
pub(crate) const MAX_DEPTH: usize = 100;

/// What went wrong encoding or decoding gob data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GobError {
    /// The data ended inside a value or a length.
    #[error("gob data ends early: needed {needed} more bytes while reading {what}")]
    Truncated {
        /// How many bytes were missing.
        needed: usize,
        /// What was being read.
        what: &'static str,
    },

    /// A message declares a length beyond [`MAX_MESSAGE`] (or beyond what `usize` holds).
    #[error("gob message of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The declared length.
        length: u64,
        /// The limit.
        limit: usize,
    },

    /// A message holds more values than [`MAX_VALUES`].
    #[error("gob message holds more than {limit} values")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },

    /// A value refers to a type id the stream never defined.
    #[error("gob type id {id} was never defined on this stream")]
    UnknownType {
        /// The type id.
        id: i64,
    },

    /// A type definition is malformed, redefines an id, or uses a kind this decoder lacks.
    #[error("bad gob type definition for id {id}: {reason}")]
    BadTypeDefinition {
        /// The type id being defined.
        id: i64,
        /// What is wrong with it.
        reason: String,
    },

    /// The bytes do not form a valid value of the expected type.
    #[error("corrupt gob data while decoding {what}: {reason}")]
    Corrupt {
        /// The type or part being decoded.
        what: String,
        /// What was wrong.
        reason: String,
    },

    /// Values or types nest deeper than the decoder allows.
    #[error("gob data nests deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },

    /// A decoded value does not have the type the caller asked for.
    #[error("expected a gob {expected}, found {found}")]
    Mismatch {
        /// What the caller expected.
        expected: String,
        /// What arrived.
        found: String,
    },

    /// A value cannot be encoded (an interface value without a name, mixed element types).
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        /// The value or type.
        what: String,
        /// Why not.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
