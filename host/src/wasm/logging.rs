//! The `plinth:host/logging` import: guest log records become `tracing` events.
//!
//! Each record is emitted with target `plinth::guest`, at the guest's level, with the plugin's
//! name in the `plugin` field and the guest's key/value pairs rendered in the `fields` field
//! (`key=value`, values quoted when they need it). Hostile input is bounded: messages and values
//! are cut at [`MAX_TEXT`] bytes and at most [`MAX_FIELDS`] fields are kept.

use std::fmt;

use wasmtime::component::{HasSelf, Linker};

use crate::wasm::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/host",
        world: "plinth:host/imports",
    });
}

use bindings::plinth::host::logging::{self, Field, Level};

/// The longest message or field value kept, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
/// The most fields kept per record.
pub const MAX_FIELDS: usize = 64;

/// Adds `plinth:host/logging` to a linker.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl logging::Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<Field>) {
        let plugin = self.plugin_name();
        let message = cut(&message);
        let fields = Fields(&fields[..fields.len().min(MAX_FIELDS)]);
        match level {
            Level::Trace => {
                tracing::trace!(target: "plinth::guest", plugin, %fields, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plinth::guest", plugin, %fields, "{message}")
            }
            Level::Info => tracing::info!(target: "plinth::guest", plugin, %fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plinth::guest", plugin, %fields, "{message}"),
            Level::Error => {
                tracing::error!(target: "plinth::guest", plugin, %fields, "{message}")
            }
        }
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A guest's fields rendered as `key=value` pairs separated by spaces.
struct Fields<'a>(&'a [Field]);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let value = cut(&field.value);
            let plain = !value.is_empty()
                && !value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=');
            if plain {
                write!(f, "{}={value}", cut(&field.key))?;
            } else {
                write!(f, "{}={value:?}", cut(&field.key))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: &str, value: &str) -> Field {
        Field {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn renders_fields_quoting_only_when_needed() {
        let fields = [field("key", "a"), field("msg", "two words"), field("e", "")];
        assert_eq!(Fields(&fields).to_string(), r#"key=a msg="two words" e="""#);
    }

    #[test]
    fn cuts_overlong_text_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let kept = cut(&long);
        assert!(kept.len() <= MAX_TEXT);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}
