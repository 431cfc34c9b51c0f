//! The compile cache against an attacker who can write files: entries swapped between
//! components, native code altered, directories others can write or own, and a key file that is
//! not private. Each case must end in a compile from the checked bytes or a typed refusal, never
//! in running what was found on disk.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use plinth::wasm::{CacheOutcome, CacheProblem, Engine, EngineConfig};
use plinth::{Checksum, Client, ClientConfig, Error};
use plinth_examples::greeter::GreeterPlugin;
use plinth_examples::kv::KvPlugin;
use plinth_interop::guest;

/// The key file's name in a cache directory.
const KEY_FILE: &str = "plinth-cache.key";

/// A fresh engine: its in-memory table is empty, so every load goes to the disk cache.
fn own_engine() -> Engine {
    Engine::new(&EngineConfig {
        total_instances: 16,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn start(config: ClientConfig) -> impl Future<Output = plinth::Result<Client>> {
    Client::start(config.engine(own_engine()))
}

/// Loads the greeter through the cache in `dir` and proves it is the greeter that answers.
async fn load_greeter(dir: &Path) -> CacheOutcome {
    let client = start(ClientConfig::wasm(guest("greeter")).cache_dir(dir))
        .await
        .expect("the greeter starts");
    let greeter = client.dispense(&GreeterPlugin::new()).await.unwrap();
    assert_eq!(greeter.greet("cache").await.unwrap(), "Hello, cache!");
    client.cache_outcome().unwrap()
}

/// Loads the kv plugin through the cache in `dir` and proves it is the kv plugin that answers.
async fn load_kv(dir: &Path) -> CacheOutcome {
    let client = start(ClientConfig::wasm(guest("kv")).cache_dir(dir))
        .await
        .expect("the kv plugin starts");
    let kv = client.dispense(&KvPlugin).await.unwrap();
    kv.put("k", b"v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), b"v");
    client.cache_outcome().unwrap()
}

/// The cache entry of the guest `name` in `dir`.
fn entry_of(dir: &Path, name: &str) -> PathBuf {
    let checksum = Checksum::of(&std::fs::read(guest(name)).unwrap()).to_string();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "cwasm")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&checksum)
        })
        .unwrap_or_else(|| panic!("no cache entry for {name} in {}", dir.display()))
}

/// Every file in `dir` with its contents, to show a read-only cache was not written.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

#[tokio::test]
async fn the_cache_dir_and_key_are_created_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a/b/cache");
    assert_eq!(load_kv(&dir).await, CacheOutcome::DiskMiss);
    for created in [base.path().join("a"), base.path().join("a/b"), dir.clone()] {
        assert_eq!(mode_of(&created), 0o700, "{}", created.display());
    }
    assert_eq!(mode_of(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(std::fs::metadata(dir.join(KEY_FILE)).unwrap().len(), 32);
    assert_eq!(load_kv(&dir).await, CacheOutcome::DiskHit);
}

#[tokio::test]
async fn corrupt_stale_and_foreign_format_entries_are_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
    let entry = entry_of(dir.path(), "kv");
    let good = std::fs::read(&entry).unwrap();

    let mut flipped_native = good.clone();
    let middle = flipped_native.len() / 2;
    flipped_native[middle] ^= 0x01;
    let mut flipped_mac = good.clone();
    flipped_mac[8] ^= 0x80;
    // The previous format: the artifact's unkeyed sha256, then the artifact.
    let artifact = &good[40..];
    let mut unkeyed = Checksum::of(artifact).as_bytes().to_vec();
    unkeyed.extend_from_slice(artifact);
    let bad_entries = [
        ("a flipped native byte", flipped_native),
        ("a flipped MAC byte", flipped_mac),
        ("an unkeyed digest over real native code", unkeyed),
        ("an empty file", Vec::new()),
        ("only the header", good[..40].to_vec()),
        ("a truncated artifact", good[..good.len() - 1].to_vec()),
    ];
    for (what, bytes) in bad_entries {
        std::fs::write(&entry, bytes).unwrap();
        assert_eq!(load_kv(dir.path()).await, CacheOutcome::Rebuilt, "{what}");
        assert_eq!(std::fs::read(&entry).unwrap().len(), good.len(), "{what}");
        assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskHit, "{what}");
    }
}

#[tokio::test]
async fn an_entry_copied_from_another_component_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_greeter(dir.path()).await, CacheOutcome::DiskMiss);
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
    let greeter_entry = entry_of(dir.path(), "greeter");
    let kv_entry = entry_of(dir.path(), "kv");

    // The kv plugin's native code, with its valid MAC, under the greeter's name: the greeter
    // is compiled again and answers as itself.
    std::fs::copy(&kv_entry, &greeter_entry).unwrap();
    assert_eq!(load_greeter(dir.path()).await, CacheOutcome::Rebuilt);
    assert_eq!(load_greeter(dir.path()).await, CacheOutcome::DiskHit);

    // And the other way round.
    std::fs::copy(&greeter_entry, &kv_entry).unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::Rebuilt);
}

#[tokio::test]
async fn an_entry_from_another_cache_is_not_run() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    assert_eq!(load_greeter(ours.path()).await, CacheOutcome::DiskMiss);
    assert_eq!(load_kv(theirs.path()).await, CacheOutcome::DiskMiss);

    // Native code compiled and MAC'd by another cache (another key), renamed to be ours: it
    // was not written by this cache, whatever it claims.
    std::fs::copy(
        entry_of(theirs.path(), "kv"),
        entry_of(ours.path(), "greeter"),
    )
    .unwrap();
    assert_eq!(load_greeter(ours.path()).await, CacheOutcome::Rebuilt);

    // The same component's entry, from another cache: also compiled again.
    assert_eq!(load_kv(ours.path()).await, CacheOutcome::DiskMiss);
    std::fs::copy(entry_of(theirs.path(), "kv"), entry_of(ours.path(), "kv")).unwrap();
    assert_eq!(load_kv(ours.path()).await, CacheOutcome::Rebuilt);
}

/// Asserts that starting with the cache at `dir` is refused naming `path` and `problem`.
async fn assert_refused(
    config: ClientConfig,
    path: &Path,
    problem: impl Fn(&CacheProblem) -> bool,
) {
    match start(config).await {
        Err(Error::UntrustedCache {
            path: found,
            problem: found_problem,
        }) => {
            assert_eq!(found, std::fs::canonicalize(path).unwrap());
            assert!(
                problem(&found_problem),
                "unexpected problem: {found_problem:?}"
            );
        }
        Err(other) => panic!(
            "expected UntrustedCache for {}, got {other:?}",
            path.display()
        ),
        Ok(_) => panic!("the cache at {} was used", path.display()),
    }
}

#[tokio::test]
async fn cache_dirs_others_can_write_are_refused() {
    for mode in [0o777, 0o770, 0o730, 0o720, 0o707, 0o703, 0o702, 0o1777] {
        let dir = tempfile::tempdir().unwrap();
        // Filled while it was private: the refusal must also stop reads of good entries.
        assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
        let before = snapshot(dir.path());
        set_mode(dir.path(), mode);
        assert_refused(
            ClientConfig::wasm(guest("kv")).cache_dir(dir.path()),
            dir.path(),
            |problem| matches!(problem, CacheProblem::Mode { found, .. } if *found == mode),
        )
        .await;
        assert_refused(
            ClientConfig::wasm(guest("kv")).read_only_cache_dir(dir.path()),
            dir.path(),
            |problem| matches!(problem, CacheProblem::Mode { found, .. } if *found == mode),
        )
        .await;
        assert_eq!(snapshot(dir.path()), before, "mode {mode:o}");
    }
}

#[tokio::test]
async fn a_directory_above_the_cache_that_others_can_write_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let shared = base.path().join("shared");
    let dir = shared.join("cache");
    assert_eq!(load_kv(&dir).await, CacheOutcome::DiskMiss);

    // Anyone could rename `cache` away and put their own in its place.
    set_mode(&shared, 0o777);
    assert_refused(
        ClientConfig::wasm(guest("kv")).cache_dir(&dir),
        &shared,
        |problem| matches!(problem, CacheProblem::Mode { found: 0o777, .. }),
    )
    .await;

    // A sticky directory (like /tmp) lets nobody rename what they do not own.
    set_mode(&shared, 0o1777);
    assert_eq!(load_kv(&dir).await, CacheOutcome::DiskHit);
}

#[tokio::test]
async fn a_cache_reached_through_a_symlink_is_checked_where_it_is() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    assert_eq!(load_kv(&real).await, CacheOutcome::DiskMiss);
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(load_kv(&link).await, CacheOutcome::DiskHit);
    set_mode(&real, 0o777);
    assert_refused(
        ClientConfig::wasm(guest("kv")).cache_dir(&link),
        &real,
        |problem| matches!(problem, CacheProblem::Mode { .. }),
    )
    .await;
}

#[tokio::test]
async fn a_key_file_that_is_not_private_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
    let key = dir.path().join(KEY_FILE);
    let kv = || ClientConfig::wasm(guest("kv")).cache_dir(dir.path());

    for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
        set_mode(&key, mode);
        assert_refused(
            kv(),
            &key,
            |problem| matches!(problem, CacheProblem::Mode { found, .. } if *found == mode),
        )
        .await;
    }
    set_mode(&key, 0o600);

    // A key that is a link to a file elsewhere is not this cache's key.
    let bytes = std::fs::read(&key).unwrap();
    let elsewhere = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(elsewhere.path(), &bytes).unwrap();
    std::fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &key).unwrap();
    match start(kv()).await {
        Err(Error::UntrustedCache {
            problem: CacheProblem::FileType { found, .. },
            ..
        }) => assert_eq!(found, "symbolic link"),
        other => panic!("expected a refused symlink key, got {:?}", other.err()),
    }
    std::fs::remove_file(&key).unwrap();

    // A key of the wrong length.
    std::fs::write(&key, &bytes[..16]).unwrap();
    set_mode(&key, 0o600);
    assert!(matches!(
        start(kv()).await.err(),
        Some(Error::UntrustedCache {
            problem: CacheProblem::KeyLength {
                found: 16,
                expected: 32
            },
            ..
        })
    ));

    // A directory where the key should be.
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    assert!(matches!(
        start(kv()).await.err(),
        Some(Error::UntrustedCache {
            problem: CacheProblem::FileType { .. },
            ..
        })
    ));
}

#[tokio::test]
async fn a_new_key_makes_every_old_entry_stale() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::Rebuilt);
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskHit);
}

#[tokio::test]
async fn a_cache_owned_by_another_user_is_refused_unless_read_only() {
    if !is_root() {
        eprintln!("skipped: changing a directory's owner needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_kv(dir.path()).await, CacheOutcome::DiskMiss);
    for file in std::fs::read_dir(dir.path()).unwrap() {
        std::os::unix::fs::chown(file.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let before = snapshot(dir.path());

    assert_refused(
        ClientConfig::wasm(guest("kv")).cache_dir(dir.path()),
        dir.path(),
        |problem| {
            matches!(problem, CacheProblem::Owner { found, expected }
                if *found == NOBODY && expected == &[0])
        },
    )
    .await;

    // Trusting the owner explicitly: the entry is read, nothing is written.
    let read_only = || ClientConfig::wasm(guest("kv")).read_only_cache_dir(dir.path());
    let client = start(read_only()).await.unwrap();
    assert_eq!(client.cache_outcome(), Some(CacheOutcome::DiskHit));
    let client = start(ClientConfig::wasm(guest("greeter")).read_only_cache_dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(client.cache_outcome(), Some(CacheOutcome::DiskMiss));
    assert_eq!(snapshot(dir.path()), before);

    // A bad entry in a read-only cache is compiled in memory and left alone.
    let entry = entry_of(dir.path(), "kv");
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let before = snapshot(dir.path());
    let client = start(read_only()).await.unwrap();
    assert_eq!(client.cache_outcome(), Some(CacheOutcome::Rebuilt));
    assert_eq!(snapshot(dir.path()), before);

    // A key another user can write is refused even read-only.
    set_mode(&dir.path().join(KEY_FILE), 0o622);
    assert_refused(read_only(), &dir.path().join(KEY_FILE), |problem| {
        matches!(problem, CacheProblem::Mode { found: 0o622, .. })
    })
    .await;
    set_mode(&dir.path().join(KEY_FILE), 0o644);
    assert_eq!(
        start(read_only()).await.unwrap().cache_outcome(),
        Some(CacheOutcome::Rebuilt)
    );

    // A key owned by someone other than the directory's owner.
    std::os::unix::fs::chown(dir.path().join(KEY_FILE), Some(0), Some(0)).unwrap();
    assert_refused(read_only(), &dir.path().join(KEY_FILE), |problem| {
        matches!(problem, CacheProblem::Owner { found: 0, .. })
    })
    .await;
}

#[tokio::test]
async fn a_read_only_cache_without_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    match start(ClientConfig::wasm(guest("kv")).read_only_cache_dir(dir.path())).await {
        Err(Error::UntrustedCache {
            problem: CacheProblem::NoKey,
            ..
        }) => {}
        other => panic!("expected NoKey, got {:?}", other.err()),
    }
    assert!(snapshot(dir.path()).is_empty());
}

#[tokio::test]
async fn a_cache_path_that_is_a_file_is_a_typed_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    match start(ClientConfig::wasm(guest("kv")).cache_dir(file.path())).await {
        Err(Error::CacheIo { path, .. }) => assert_eq!(path, file.path()),
        other => panic!("expected CacheIo, got {:?}", other.err()),
    }
}
