//! A kv plugin that misbehaves on request, for the host's fault tests.
//!
//! `get(key)` acts on the key:
//! - `loop`: spins forever (the host's per-call deadline must stop it);
//! - `alloc`: allocates a gigabyte (the host's memory limit must stop it);
//! - `recurse`: recurses until the stack is exhausted;
//! - `panic`: panics (a trap);
//! - `print`: writes two lines to stdout and one to stderr, then answers `printed`;
//! - `log`: logs a warning with fields, then answers `logged`;
//! - `stdin`: answers the first line read from stdin;
//! - `log-huge`: logs a 4 MiB message with 100 000 fields, then answers `logged`;
//! - `env:NAME`: answers the value of environment variable `NAME`;
//! - `read:PATH`: answers the contents of the file at `PATH`;
//! - `connect:ADDR`: tries to open a TCP connection to `ADDR`;
//! - `symlink:TARGET>LINK`: creates a symbolic link at `LINK` pointing to `TARGET`;
//! - `big:N`: answers `N` bytes;
//! - anything else: answers the key itself.
//!
//! `put` always succeeds and stores nothing.

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/kv"],
    world: "plinth:kv/plugin@0.1.0",
    generate_all,
});

use exports::plinth::kv::store::Guest;
use plinth::host::logging::{self, Field, Level};
use std::io::Write;

struct Misbehave;

unsafe extern "C" {
    /// wasi-libc's `symlink`, which resolves `link` against the preopened directories.
    #[link_name = "symlink"]
    fn libc_symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
}

/// Creates a symbolic link at `link` pointing to `target` (std's is not stable on WASI).
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    let target = std::ffi::CString::new(target)?;
    let link = std::ffi::CString::new(link)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    match unsafe { libc_symlink(target.as_ptr(), link.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[inline(never)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    recurse(depth + 1, &mut next) + u64::from(pad[0])
}

impl Guest for Misbehave {
    fn get(key: String) -> Result<Vec<u8>, String> {
        match key.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let big = std::hint::black_box(vec![1u8; 1 << 30]);
                Ok(big[big.len() - 4..].to_vec())
            }
            "recurse" => {
                let mut pad = [0u8; 256];
                Ok(recurse(0, &mut pad).to_le_bytes().to_vec())
            }
            "panic" => panic!("the guest was asked to panic"),
            "print" => {
                println!("first line to stdout");
                let mut out = std::io::stdout();
                let _ = write!(out, "second line ");
                let _ = writeln!(out, "to stdout");
                eprintln!("a line to stderr");
                Ok(b"printed".to_vec())
            }
            "log" => {
                logging::log(
                    Level::Warn,
                    "something to see",
                    &[
                        Field {
                            key: "answer".into(),
                            value: "42".into(),
                        },
                        Field {
                            key: "who".into(),
                            value: "misbehave".into(),
                        },
                    ],
                );
                Ok(b"logged".to_vec())
            }
            "log-huge" => {
                let fields: Vec<Field> = (0..100_000)
                    .map(|i| Field {
                        key: format!("k{i}"),
                        value: "v".repeat(16),
                    })
                    .collect();
                logging::log(Level::Error, &"x".repeat(4 << 20), &fields);
                Ok(b"logged".to_vec())
            }
            "stdin" => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("stdin: {e}"))?;
                Ok(line.trim_end().as_bytes().to_vec())
            }
            other => {
                if let Some(name) = other.strip_prefix("env:") {
                    return std::env::var(name)
                        .map(String::into_bytes)
                        .map_err(|e| format!("env {name}: {e}"));
                }
                if let Some(path) = other.strip_prefix("read:") {
                    return std::fs::read(path).map_err(|e| format!("read {path}: {e}"));
                }
                if let Some(spec) = other.strip_prefix("symlink:") {
                    let (target, link) = spec
                        .split_once('>')
                        .ok_or_else(|| format!("symlink:{spec} is not TARGET>LINK"))?;
                    return symlink(target, link)
                        .map(|()| b"linked".to_vec())
                        .map_err(|e| format!("symlink {link} -> {target}: {e}"));
                }
                if let Some(count) = other.strip_prefix("big:") {
                    let count: usize = count.parse().map_err(|e| format!("big:{count}: {e}"))?;
                    return Ok(vec![7u8; count]);
                }
                if let Some(addr) = other.strip_prefix("connect:") {
                    return std::net::TcpStream::connect(addr)
                        .map(|_| b"connected".to_vec())
                        .map_err(|e| format!("connect {addr}: {e}"));
                }
                Ok(other.as_bytes().to_vec())
            }
        }
    }

    fn put(_key: String, _value: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Misbehave);
