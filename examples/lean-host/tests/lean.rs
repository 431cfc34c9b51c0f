//! The subprocess-only build of `plinth` against real peers: the Go kv plugin (go-plugin
//! v1.8.0) loads and answers, and a real component is refused with the feature that loads it.
//!
//! Run on their own (`cargo test -p plinth-example-lean-host`, as `cargo xtask test` does): built
//! together with the rest of the workspace, `plinth` gets its `wasm` feature back.

use std::path::PathBuf;
use std::process::Command;

use plinth::{Client, ClientConfig, Error, FileKind};
use plinth_examples::handshake;
use plinth_examples::kv::KvPlugin;

fn repo(path: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` builds the Go fixtures and the guests",
        path.display()
    );
    path
}

fn go_kv_plugin() -> PathBuf {
    repo("tests/go/bin/kv-plugin")
}

#[tokio::test]
async fn a_go_plugin_loads_and_answers_without_the_wasm_backend() {
    let client = Client::start(ClientConfig::file(go_kv_plugin()).handshake(handshake()))
        .await
        .expect("the Go kv plugin starts");
    let kv = client.dispense(&KvPlugin).await.unwrap();
    let value: Vec<u8> = (0..=255).cycle().take(64 << 10).collect();
    kv.put("lean", &value).await.unwrap();
    assert_eq!(kv.get("lean").await.unwrap(), value);
    assert!(client.negotiated_version().is_some());
    client.kill().await;
    assert!(matches!(
        kv.get("lean").await,
        Err(Error::Killed { plugin }) if plugin == "kv-plugin"
    ));
}

#[tokio::test]
async fn a_component_is_refused_naming_the_feature_that_loads_it() {
    let component = repo("guest-examples/target/wasm32-wasip2/release/kv.wasm");
    let error = Client::start(ClientConfig::file(&component).handshake(handshake()))
        .await
        .expect_err("a subprocess-only build cannot load a component");
    match &error {
        Error::BackendDisabled {
            plugin,
            found,
            feature,
        } => {
            assert_eq!(plugin, "kv");
            assert_eq!(*found, FileKind::Component);
            assert_eq!(*feature, "wasm");
        }
        other => panic!(
            "expected BackendDisabled (is `plinth` built with `wasm`? run this test alone), got {other:?}"
        ),
    }
    assert!(
        error.to_string().contains("enable plinth's `wasm` feature"),
        "{error}"
    );
}

#[tokio::test]
async fn a_file_that_is_no_plugin_is_still_refused_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a plugin\n").unwrap();
    let error = Client::start(ClientConfig::file(&text).handshake(handshake()))
        .await
        .expect_err("a text file is no plugin");
    assert!(
        matches!(&error, Error::NotAComponent { found, .. } if *found != FileKind::Component),
        "{error:?}"
    );
}

#[test]
fn the_binary_round_trips_through_the_go_plugin_and_refuses_a_component() {
    let host = env!("CARGO_BIN_EXE_plinth-example-lean-host");
    let output = Command::new(host)
        .arg(go_kv_plugin())
        .args(["greeting", "hello from a lean host"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "greeting = hello from a lean host\n"
    );

    let output = Command::new(host)
        .arg(repo("guest-examples/target/wasm32-wasip2/release/kv.wasm"))
        .args(["k", "v"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("enable plinth's `wasm` feature"),
        "{stderr}"
    );
}
