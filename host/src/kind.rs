//! Telling what a plugin file is from its first bytes.
//!
//! A host may point Plinth at a WebAssembly component or at an executable; [`FileKind::detect`]
//! tells them apart (and names everything else precisely) without trusting file names.

use std::fmt;

/// What a plugin file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A WebAssembly component (binary encoding version `0x0d`, layer 1).
    Component,
    /// A core WebAssembly module: a wasm file, but not a component.
    CoreModule,
    /// A WebAssembly binary of an encoding this build does not know.
    UnknownWasm {
        /// The encoding version in the header.
        version: u16,
        /// The layer in the header.
        layer: u16,
    },
    /// An ELF executable or library.
    Elf,
    /// A Mach-O executable or library.
    MachO,
    /// A Windows PE executable.
    Pe,
    /// A script with a `#!` interpreter line.
    Script,
    /// A file with no bytes.
    Empty,
    /// Text that is none of the above (WIT, WAT, JSON, ...).
    Text,
    /// Binary data of no known kind.
    Unknown,
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

impl FileKind {
    /// Looks at the first bytes of a file and says what it is.
    ///
    /// ```
    /// use plinth::FileKind;
    /// assert_eq!(FileKind::detect(b"\0asm\x01\0\0\0"), FileKind::CoreModule);
    /// assert_eq!(FileKind::detect(b"\0asm\x0d\0\x01\0"), FileKind::Component);
    /// assert_eq!(FileKind::detect(b"\x7fELF\x02\x01"), FileKind::Elf);
    /// ```
    pub fn detect(bytes: &[u8]) -> FileKind {
        if bytes.is_empty() {
            return FileKind::Empty;
        }
        if let Some(header) = bytes.strip_prefix(WASM_MAGIC) {
            return Self::wasm(header);
        }
        if bytes.starts_with(b"\x7fELF") {
            return FileKind::Elf;
        }
        if bytes.starts_with(b"#!") {
            return FileKind::Script;
        }
        if bytes.starts_with(b"MZ") {
            return FileKind::Pe;
        }
        if Self::is_mach_o(bytes) {
            return FileKind::MachO;
        }
        if Self::looks_like_text(bytes) {
            return FileKind::Text;
        }
        FileKind::Unknown
    }

    /// Whether a file of this kind can be started as a child process.
    pub fn is_executable(self) -> bool {
        matches!(
            self,
            FileKind::Elf | FileKind::MachO | FileKind::Pe | FileKind::Script
        )
    }

    fn wasm(header: &[u8]) -> FileKind {
        let Some((version, layer)) = header.get(..4).map(|h| {
            (
                u16::from_le_bytes([h[0], h[1]]),
                u16::from_le_bytes([h[2], h[3]]),
            )
        }) else {
            return FileKind::UnknownWasm {
                version: 0,
                layer: 0,
            };
        };
        match (version, layer) {
            (1, 0) => FileKind::CoreModule,
            (0x0d, 1) => FileKind::Component,
            (version, layer) => FileKind::UnknownWasm { version, layer },
        }
    }

    fn is_mach_o(bytes: &[u8]) -> bool {
        const MAGICS: [[u8; 4]; 5] = [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
            [0xca, 0xfe, 0xba, 0xbe],
        ];
        bytes
            .get(..4)
            .is_some_and(|head| MAGICS.iter().any(|m| m == head))
    }

    fn looks_like_text(bytes: &[u8]) -> bool {
        let head = &bytes[..bytes.len().min(512)];
        match std::str::from_utf8(head) {
            Ok(text) => !text.contains('\0'),
            // A multi-byte character cut at the end of the window is still text.
            Err(e) => e.error_len().is_none() && !head.contains(&0),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileKind::Component => f.write_str("a WebAssembly component"),
            FileKind::CoreModule => f.write_str(
                "a core WebAssembly module, not a component (build with --target wasm32-wasip2, \
                 or wrap it with `wasm-tools component new`)",
            ),
            FileKind::UnknownWasm { version, layer } => write!(
                f,
                "a WebAssembly binary of unknown encoding (version {version:#x}, layer {layer})"
            ),
            FileKind::Elf => f.write_str("an ELF executable"),
            FileKind::MachO => f.write_str("a Mach-O executable"),
            FileKind::Pe => f.write_str("a Windows PE executable"),
            FileKind::Script => f.write_str("a script"),
            FileKind::Empty => f.write_str("an empty file"),
            FileKind::Text => f.write_str("a text file"),
            FileKind::Unknown => f.write_str("binary data of no known kind"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_kind_from_its_header() {
        assert_eq!(FileKind::detect(b""), FileKind::Empty);
        assert_eq!(
            FileKind::detect(b"\0asm\x01\0\0\0rest"),
            FileKind::CoreModule
        );
        assert_eq!(
            FileKind::detect(b"\0asm\x0d\0\x01\0rest"),
            FileKind::Component
        );
        assert_eq!(
            FileKind::detect(b"\0asm\x02\0\x07\0"),
            FileKind::UnknownWasm {
                version: 2,
                layer: 7
            }
        );
        assert_eq!(
            FileKind::detect(b"\0asm\x01"),
            FileKind::UnknownWasm {
                version: 0,
                layer: 0
            }
        );
        assert_eq!(FileKind::detect(b"\x7fELF\x02\x01\x01"), FileKind::Elf);
        assert_eq!(FileKind::detect(b"#!/bin/sh\necho hi\n"), FileKind::Script);
        assert_eq!(FileKind::detect(b"MZ\x90\0"), FileKind::Pe);
        assert_eq!(
            FileKind::detect(&[0xcf, 0xfa, 0xed, 0xfe, 7]),
            FileKind::MachO
        );
        assert_eq!(FileKind::detect(b"package plinth:kv;"), FileKind::Text);
        assert_eq!(
            FileKind::detect(&[0x00, 0xff, 0x10, 0x80]),
            FileKind::Unknown
        );
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let mut bytes = vec![b'a'; 511];
        bytes.extend_from_slice("é".as_bytes());
        assert_eq!(FileKind::detect(&bytes), FileKind::Text);
    }

    #[test]
    fn executables_are_told_apart_from_components() {
        assert!(FileKind::Elf.is_executable());
        assert!(FileKind::Script.is_executable());
        assert!(!FileKind::Component.is_executable());
        assert!(!FileKind::Text.is_executable());
    }
}
