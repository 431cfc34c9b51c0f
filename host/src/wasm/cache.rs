//! The on-disk cache of compiled components.
//!
//! An entry is named after the component's sha256 and the engine's compatibility hash, so a
//! different wasmtime or different engine settings never read another's artifact. The file holds
//! the sha256 of the artifact followed by the artifact; an entry whose digest does not match, or
//! that wasmtime refuses, is reported as corrupt and rebuilt. Writes go to a temporary file that
//! is renamed into place, so readers never see half an entry.

use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::secure::Checksum;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// Compiled now; no disk cache is configured.
    Compiled,
    /// Already compiled by this engine earlier in the process.
    MemoryHit,
    /// Read from the disk cache.
    DiskHit,
    /// Not in the disk cache: compiled now and stored.
    DiskMiss,
    /// The disk entry was corrupt or stale: compiled again and replaced.
    Rebuilt,
}

/// One component's place in the disk cache.
pub(crate) struct Entry {
    path: PathBuf,
}

impl Entry {
    pub(crate) fn new(dir: &Path, checksum: &Checksum, compatibility: &str) -> Entry {
        Entry {
            path: dir.join(format!("{checksum}-{compatibility}.cwasm")),
        }
    }
}

/// Loads the component from `entry` when it holds a good artifact, otherwise compiles `bytes`
/// and (with an entry) stores the result.
pub(crate) fn load_or_compile(
    engine: &wasmtime::Engine,
    plugin: &str,
    bytes: &[u8],
    entry: Option<&Entry>,
) -> Result<(Component, CacheOutcome)> {
    let Some(entry) = entry else {
        return Ok((compile(engine, plugin, bytes)?, CacheOutcome::Compiled));
    };
    let outcome = match read(engine, entry) {
        Ok(Some(component)) => {
            tracing::debug!(plugin, path = %entry.path.display(), "compile cache hit");
            return Ok((component, CacheOutcome::DiskHit));
        }
        Ok(None) => CacheOutcome::DiskMiss,
        Err(reason) => {
            tracing::warn!(
                plugin,
                path = %entry.path.display(),
                "compile cache entry is unusable ({reason}); rebuilding it"
            );
            CacheOutcome::Rebuilt
        }
    };
    let component = compile(engine, plugin, bytes)?;
    match component.serialize() {
        Ok(artifact) => {
            if let Err(e) = write(entry, &artifact) {
                tracing::warn!(
                    plugin,
                    path = %entry.path.display(),
                    "cannot write the compile cache entry: {e}"
                );
            }
        }
        Err(e) => tracing::warn!(plugin, "cannot serialize the compiled component: {e}"),
    }
    Ok((component, outcome))
}

fn compile(engine: &wasmtime::Engine, plugin: &str, bytes: &[u8]) -> Result<Component> {
    Component::from_binary(engine, bytes).map_err(|e| Error::Compile {
        plugin: plugin.to_owned(),
        reason: format!("{e:#}"),
    })
}

/// `Ok(None)` when there is no entry; `Err` with a reason when there is a bad one.
fn read(
    engine: &wasmtime::Engine,
    entry: &Entry,
) -> std::result::Result<Option<Component>, String> {
    let file = match std::fs::read(&entry.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let (digest, artifact) = file
        .split_at_checked(32)
        .ok_or_else(|| "it is shorter than its digest".to_owned())?;
    if Checksum::of(artifact).as_bytes()[..] != digest[..] {
        return Err("its digest does not match its contents".to_owned());
    }
    // SAFETY: `Component::deserialize` trusts its input to be an artifact wasmtime produced.
    // This one was written by `write` below from `Component::serialize`, and its sha256 was just
    // checked, so it is byte for byte what wasmtime produced; wasmtime itself checks that the
    // artifact matches this engine's version and settings.
    let component = unsafe { Component::deserialize(engine, artifact) };
    component.map(Some).map_err(|e| format!("{e:#}"))
}

fn write(entry: &Entry, artifact: &[u8]) -> std::io::Result<()> {
    let dir = entry
        .path
        .parent()
        .ok_or_else(|| std::io::Error::other("the cache entry has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(Checksum::of(artifact).as_bytes())?;
    file.write_all(artifact)?;
    file.persist(&entry.path).map_err(|e| e.error)?;
    Ok(())
}
