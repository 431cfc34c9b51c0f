//! A kv plugin that keeps each value in a file under the granted directory `/data`.
//!
//! It only works when the host grants a directory at `/data`; without the grant every call
//! fails with the guest's own error, which is how the sandbox is shown to hold.

use std::path::{Component, Path, PathBuf};

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/kv"],
    world: "plinth:kv/plugin@0.1.0",
    generate_all,
});

use exports::plinth::kv::store::Guest;

const ROOT: &str = "/data";

/// Maps a key to a path under the root. Keys are taken as relative paths so that the host's
/// sandbox, not this guest, decides what an escaping key such as `../x` may reach.
fn path_of(key: &str) -> Result<PathBuf, String> {
    let relative = Path::new(key);
    if relative
        .components()
        .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
    {
        return Err(format!("key {key:?} must be a relative path"));
    }
    Ok(Path::new(ROOT).join(relative))
}

struct KvFiles;

impl Guest for KvFiles {
    fn get(key: String) -> Result<Vec<u8>, String> {
        let path = path_of(&key)?;
        std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    }

    fn put(key: String, value: Vec<u8>) -> Result<(), String> {
        let path = path_of(&key)?;
        std::fs::write(&path, value).map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

export!(KvFiles);
