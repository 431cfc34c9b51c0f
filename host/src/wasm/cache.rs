//! The on-disk cache of compiled components, and what it trusts.
//!
//! Loading an entry runs native code outside the sandbox (`Component::deserialize` trusts its
//! input), so an entry is only loaded when this cache wrote it for these exact component bytes:
//!
//! - The directory is created `0700`. It, and every directory above it, must be owned by this
//!   user (or root) and not writable by group or others (sticky directories such as `/tmp`
//!   excepted), so nobody else can add, swap or rename entries; a directory that fails this is
//!   refused with [`Error::UntrustedCache`].
//! - A secret key, created on first use from the OS's random source, lives in the directory as
//!   [`KEY_FILE`] (`0600`). Each entry carries an HMAC-SHA256 under that key over the
//!   component's sha256, the engine's compatibility hash and the native bytes. An entry copied
//!   from another component, or with its native code altered, fails the check and is compiled
//!   again from the pinned bytes (with a warning), never loaded.
//!
//! A read-only cache (an explicit opt-in) may belong to another user whom the host trusts, for
//! example a cache filled at image build time: it is checked the same way against its owner,
//! its key is read but never created, and nothing is written to it.
//!
//! An entry is named after the component's sha256 and the engine's compatibility hash, so a
//! different wasmtime or different engine settings never read another's artifact. Writes go to
//! a temporary file that is renamed into place, so readers never see half an entry.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::secure::Checksum;

/// The name of the secret key file inside a cache directory.
pub const KEY_FILE: &str = "plinth-cache.key";

/// Bytes in the secret key.
const KEY_LEN: usize = 32;

/// The first bytes of every entry: the format, so older entries are rebuilt, not misread.
const MAGIC: &[u8; 8] = b"plinthC1";

/// Bytes in an entry's MAC.
const MAC_LEN: usize = 32;

/// Separates the MAC's inputs from those of any other use of the key.
const MAC_CONTEXT: &[u8] = b"plinth compile cache entry v1\0";

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// Compiled now; no disk cache is configured.
    Compiled,
    /// Already compiled by this engine earlier in the process.
    MemoryHit,
    /// Read from the disk cache, its MAC verified.
    DiskHit,
    /// Not in the disk cache: compiled now and stored (unless the cache is read-only).
    DiskMiss,
    /// The disk entry was corrupt, stale or not written by this cache for this component:
    /// compiled again and (unless the cache is read-only) replaced.
    Rebuilt,
}

/// Why a cache directory, a directory above it or its key file is not trusted; carried by
/// [`Error::UntrustedCache`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheProblem {
    /// It is owned by a user the cache does not trust.
    #[error("it is owned by uid {found}; expected {}", uids(expected))]
    Owner {
        /// The owner's uid.
        found: u32,
        /// The uids that may own it.
        expected: Vec<u32>,
    },
    /// Its permission bits let someone other than its owner write it (or, for the key file,
    /// read it).
    #[error("its mode is {found:04o}; expected none of the bits {forbidden:04o}")]
    Mode {
        /// The permission bits found (`st_mode & 0o7777`).
        found: u32,
        /// The bits that must be clear.
        forbidden: u32,
    },
    /// It is not a directory (for the cache and the directories above it) or not a regular
    /// file (for the key, which may not be a symbolic link either).
    #[error("it is a {found}; expected a {expected}")]
    FileType {
        /// What was found.
        found: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The key file does not hold a key.
    #[error("it holds {found} bytes; expected a key of {expected} bytes")]
    KeyLength {
        /// The file's size.
        found: u64,
        /// The size of a key.
        expected: u64,
    },
    /// A read-only cache has no key yet: it was never filled.
    #[error("it has no key file {KEY_FILE}; a read-only cache is never given one")]
    NoKey,
}

fn uids(uids: &[u32]) -> String {
    let names: Vec<String> = uids.iter().map(|uid| format!("uid {uid}")).collect();
    names.join(" or ")
}

/// Where the disk cache is and whether this process may write it.
#[derive(Debug, Clone)]
pub(crate) struct CacheLocation {
    pub(crate) path: PathBuf,
    pub(crate) read_only: bool,
}

/// A cache directory that passed its checks, with its key.
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    read_only: bool,
}

impl Cache {
    /// Creates (unless read-only) and checks the directory, then reads or creates its key.
    pub(crate) fn open(location: &CacheLocation) -> Result<Cache> {
        let io = |path: &Path, action: &'static str| {
            let path = path.to_owned();
            move |source| Error::CacheIo {
                path,
                action,
                source,
            }
        };
        if !location.read_only {
            create_private_dir(&location.path).map_err(io(&location.path, "create"))?;
        }
        let dir = std::fs::canonicalize(&location.path).map_err(io(&location.path, "open"))?;
        let trusted = trust::check_dir(&dir, location.read_only)?;
        trust::check_ancestors(&dir, &trusted)?;
        let key = match trust::read_key(&dir.join(KEY_FILE), &trusted)? {
            Some(key) => key,
            None if location.read_only => {
                return Err(Error::UntrustedCache {
                    path: dir.join(KEY_FILE),
                    problem: CacheProblem::NoKey,
                });
            }
            None => create_key(&dir, &trusted)?,
        };
        Ok(Cache {
            dir,
            key,
            read_only: location.read_only,
        })
    }

    /// The entry for the component whose sha256 is `checksum`, compiled by an engine whose
    /// compatibility digest is `compatibility`.
    pub(crate) fn entry(&self, checksum: &Checksum, compatibility: &[u8; 32]) -> Entry<'_> {
        let short = hex::encode(&compatibility[..8]);
        Entry {
            cache: self,
            path: self.dir.join(format!("{checksum}-{short}.cwasm")),
            checksum: *checksum,
            compatibility: *compatibility,
        }
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Writes a new random key next to the entries; when another process wrote one first, reads
/// theirs.
fn create_key(dir: &Path, trusted: &trust::Trusted) -> Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| Error::CacheIo {
            path,
            action,
            source,
        }
    };
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| Error::CacheIo {
        path: path.clone(),
        action: "draw a random key for",
        source: std::io::Error::other(e),
    })?;
    // A temporary file is created 0600; linking it into place fails if a key already exists,
    // so concurrent first uses agree on one key and nobody reads a half-written one.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io("create"))?;
    file.write_all(&key)
        .and_then(|()| file.as_file().sync_all())
        .map_err(io("write"))?;
    match file.persist_noclobber(&path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            match trust::read_key(&path, trusted)? {
                Some(key) => Ok(key),
                None => Err(Error::UntrustedCache {
                    path,
                    problem: CacheProblem::NoKey,
                }),
            }
        }
        Err(e) => Err(io("write")(e.error)),
    }
}

/// One component's place in the disk cache.
pub(crate) struct Entry<'a> {
    cache: &'a Cache,
    path: PathBuf,
    checksum: Checksum,
    compatibility: [u8; 32],
}

impl Entry<'_> {
    /// The MAC that binds `artifact` to this component, this engine and this cache.
    fn mac(&self, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache.key)
            .expect("HMAC takes keys of any length");
        mac.update(MAC_CONTEXT);
        mac.update(self.checksum.as_bytes());
        mac.update(&self.compatibility);
        mac.update(&(artifact.len() as u64).to_le_bytes());
        mac.update(artifact);
        mac
    }
}

/// Loads the component from `entry` when it holds an artifact this cache wrote for these
/// bytes, otherwise compiles `bytes` and (with a writable entry) stores the result.
pub(crate) fn load_or_compile(
    engine: &wasmtime::Engine,
    plugin: &str,
    bytes: &[u8],
    entry: Option<&Entry<'_>>,
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
                "compile cache entry is not loaded ({reason}); compiling the component again"
            );
            CacheOutcome::Rebuilt
        }
    };
    let component = compile(engine, plugin, bytes)?;
    if entry.cache.read_only {
        return Ok((component, outcome));
    }
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

/// `Ok(None)` when there is no entry; `Err` with a reason when there is one this cache must
/// not load.
fn read(
    engine: &wasmtime::Engine,
    entry: &Entry<'_>,
) -> std::result::Result<Option<Component>, String> {
    let file = match std::fs::read(&entry.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let artifact = file
        .strip_prefix(MAGIC)
        .ok_or_else(|| "it is not in this version's entry format".to_owned())?;
    let (tag, artifact) = artifact
        .split_at_checked(MAC_LEN)
        .ok_or_else(|| "it is shorter than its MAC".to_owned())?;
    entry.mac(artifact).verify_slice(tag).map_err(|_| {
        "its MAC does not match: it was not written by this cache for this component".to_owned()
    })?;
    // SAFETY: `Component::deserialize` trusts its input to be an artifact wasmtime produced.
    // This one carries a MAC under this cache's secret key over these exact bytes and the
    // pinned component's sha256, and only `write` below, given `Component::serialize`'s output
    // for that component, computes such MACs; the directory and key are reachable by this user
    // alone (see the module docs). wasmtime itself checks that the artifact matches this
    // engine's version and settings.
    let component = unsafe { Component::deserialize(engine, artifact) };
    component.map(Some).map_err(|e| format!("{e:#}"))
}

fn write(entry: &Entry<'_>, artifact: &[u8]) -> std::io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(&entry.cache.dir)?;
    file.write_all(MAGIC)?;
    file.write_all(&entry.mac(artifact).finalize().into_bytes())?;
    file.write_all(artifact)?;
    file.persist(&entry.path).map_err(|e| e.error)?;
    Ok(())
}

/// The ownership and permission checks, for platforms with Unix permissions.
#[cfg(unix)]
mod trust {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::Path;

    use super::{CacheProblem, KEY_LEN};
    use crate::error::{Error, Result};

    const GROUP_OR_OTHER_WRITE: u32 = 0o022;
    const GROUP_OR_OTHER_ANY: u32 = 0o077;
    const STICKY: u32 = 0o1000;

    /// Who the cache trusts: this user, and for a read-only cache the directory's owner.
    pub(super) struct Trusted {
        owner: u32,
        read_only: bool,
    }

    fn refuse(path: &Path, problem: CacheProblem) -> Error {
        Error::UntrustedCache {
            path: path.to_owned(),
            problem,
        }
    }

    fn metadata(path: &Path, follow: bool) -> Result<std::fs::Metadata> {
        let found = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        found.map_err(|source| Error::CacheIo {
            path: path.to_owned(),
            action: "inspect",
            source,
        })
    }

    fn file_type(metadata: &std::fs::Metadata) -> &'static str {
        let kind = metadata.file_type();
        if kind.is_symlink() {
            "symbolic link"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_file() {
            "regular file"
        } else {
            "special file"
        }
    }

    fn check_mode(path: &Path, metadata: &std::fs::Metadata, forbidden: u32) -> Result<()> {
        let found = metadata.mode() & 0o7777;
        if found & forbidden != 0 {
            return Err(refuse(path, CacheProblem::Mode { found, forbidden }));
        }
        Ok(())
    }

    /// Checks the (canonical) cache directory itself.
    pub(super) fn check_dir(dir: &Path, read_only: bool) -> Result<Trusted> {
        let metadata = metadata(dir, true)?;
        if !metadata.is_dir() {
            return Err(refuse(
                dir,
                CacheProblem::FileType {
                    found: file_type(&metadata),
                    expected: "directory",
                },
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !read_only && metadata.uid() != me {
            return Err(refuse(
                dir,
                CacheProblem::Owner {
                    found: metadata.uid(),
                    expected: vec![me],
                },
            ));
        }
        check_mode(dir, &metadata, GROUP_OR_OTHER_WRITE)?;
        Ok(Trusted {
            owner: metadata.uid(),
            read_only,
        })
    }

    /// Checks every directory above the cache: whoever can write one could put another
    /// directory in the cache's place.
    pub(super) fn check_ancestors(dir: &Path, trusted: &Trusted) -> Result<()> {
        // SAFETY: as above.
        let me = unsafe { libc::geteuid() };
        let mut expected = vec![0, me, trusted.owner];
        expected.sort_unstable();
        expected.dedup();
        for ancestor in dir.ancestors().skip(1) {
            let metadata = metadata(ancestor, true)?;
            if !expected.contains(&metadata.uid()) {
                return Err(refuse(
                    ancestor,
                    CacheProblem::Owner {
                        found: metadata.uid(),
                        expected,
                    },
                ));
            }
            if metadata.mode() & STICKY == 0 {
                check_mode(ancestor, &metadata, GROUP_OR_OTHER_WRITE)?;
            }
        }
        Ok(())
    }

    /// Reads the key at `path`, `None` when there is none yet.
    pub(super) fn read_key(path: &Path, trusted: &Trusted) -> Result<Option<[u8; KEY_LEN]>> {
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                // O_NOFOLLOW refuses a symbolic link with ELOOP: say what it is.
                let metadata = metadata(path, false)?;
                if metadata.file_type().is_symlink() {
                    return Err(refuse(
                        path,
                        CacheProblem::FileType {
                            found: "symbolic link",
                            expected: "regular file",
                        },
                    ));
                }
                return Err(Error::CacheIo {
                    path: path.to_owned(),
                    action: "open",
                    source,
                });
            }
        };
        let io = |source| Error::CacheIo {
            path: path.to_owned(),
            action: "read",
            source,
        };
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(refuse(
                path,
                CacheProblem::FileType {
                    found: file_type(&metadata),
                    expected: "regular file",
                },
            ));
        }
        if metadata.uid() != trusted.owner {
            return Err(refuse(
                path,
                CacheProblem::Owner {
                    found: metadata.uid(),
                    expected: vec![trusted.owner],
                },
            ));
        }
        // Others may read a shared read-only cache's key: they cannot write the directory.
        let forbidden = if trusted.read_only {
            GROUP_OR_OTHER_WRITE
        } else {
            GROUP_OR_OTHER_ANY
        };
        check_mode(path, &metadata, forbidden)?;
        if metadata.len() != KEY_LEN as u64 {
            return Err(refuse(
                path,
                CacheProblem::KeyLength {
                    found: metadata.len(),
                    expected: KEY_LEN as u64,
                },
            ));
        }
        let mut key = [0u8; KEY_LEN];
        file.read_exact(&mut key).map_err(io)?;
        Ok(Some(key))
    }
}

/// Without Unix permissions there is no owner or mode to check: the key is still required.
#[cfg(not(unix))]
mod trust {
    use std::path::Path;

    use super::KEY_LEN;
    use crate::error::{Error, Result};

    pub(super) struct Trusted;

    pub(super) fn check_dir(_dir: &Path, _read_only: bool) -> Result<Trusted> {
        Ok(Trusted)
    }

    pub(super) fn check_ancestors(_dir: &Path, _trusted: &Trusted) -> Result<()> {
        Ok(())
    }

    pub(super) fn read_key(path: &Path, _trusted: &Trusted) -> Result<Option<[u8; KEY_LEN]>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                bytes
                    .try_into()
                    .map(Some)
                    .map_err(|bytes: Vec<u8>| Error::UntrustedCache {
                        path: path.to_owned(),
                        problem: super::CacheProblem::KeyLength {
                            found: bytes.len() as u64,
                            expected: KEY_LEN as u64,
                        },
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::CacheIo {
                path: path.to_owned(),
                action: "read",
                source,
            }),
        }
    }
}
