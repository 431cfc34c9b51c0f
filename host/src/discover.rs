//! Finding plugins on disk, as go-plugin's `Discover`.
//!
//! [`discover`] lists the files in a directory whose names match a glob. It only finds; whether a
//! file is a component or an executable is [`FileKind`](crate::FileKind)'s job at load time.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Returns the files in `dir` whose names match `pattern` (`*`, `?`, `[...]`), sorted.
///
/// Directories are skipped. A pattern with a path separator is refused, so discovery never
/// wanders outside `dir`.
///
/// ```no_run
/// let plugins = plinth::discover("*.wasm", "plugins")?;
/// # Ok::<(), plinth::Error>(())
/// ```
pub fn discover(pattern: &str, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let invalid = |reason: String| Error::Discover {
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.contains(['/', '\\']) {
        return Err(invalid(
            "a pattern matches file names; it must not contain a path separator".into(),
        ));
    }
    let matcher = glob::Pattern::new(pattern).map_err(|e| invalid(e.to_string()))?;
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_owned(),
            source,
        })?;
        let is_file = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink());
        let name = entry.file_name();
        if is_file && name.to_str().is_some_and(|n| matcher.matches(n)) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_matching_files_sorted_and_skips_directories() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.wasm", "a.wasm", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("c.wasm")).unwrap();
        let found = discover("*.wasm", dir.path()).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.wasm", "b.wasm"]);
    }

    #[test]
    fn refuses_patterns_that_leave_the_directory() {
        let err = discover("../*.wasm", ".").unwrap_err();
        assert!(matches!(err, Error::Discover { .. }), "{err}");
    }

    #[test]
    fn invalid_glob_is_a_typed_error() {
        let err = discover("[", ".").unwrap_err();
        assert!(matches!(err, Error::Discover { .. }), "{err}");
    }

    #[test]
    fn missing_directory_is_a_read_error() {
        let err = discover("*", "/nonexistent/plinth").unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");
    }
}
