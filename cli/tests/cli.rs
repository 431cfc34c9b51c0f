//! The `plinth` command, run as a user runs it, against the example guests.

use std::path::PathBuf;
use std::process::{Command, Output};

fn guest(name: &str) -> PathBuf {
    if let Err(e) = plinth_examples::build_guests() {
        panic!("the example guests are needed for this test: {e}");
    }
    plinth_examples::guest(name)
}

fn plinth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .output()
        .expect("run plinth")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn checksum_prints_the_sha256_a_host_pins() {
    let kv = guest("kv");
    let expected = plinth::Checksum::of(&std::fs::read(&kv).unwrap()).to_string();
    let out = plinth(&["checksum", path(&kv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&expected), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&plinth(&["checksum", "--json", path(&kv)]).stdout).unwrap();
    assert_eq!(json["sha256"], expected);
}

#[test]
fn inspect_shows_the_world_with_full_signatures() {
    let out = plinth(&["inspect", path(&guest("kv"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("kind:        a WebAssembly component"),
        "{text}"
    );
    assert!(text.contains("plinth:host: 0.1.0"), "{text}");
    assert!(
        text.contains("    get: func(key: string) -> result<list<u8>, string>"),
        "{text}"
    );
    assert!(
        text.contains("  plinth:host/logging@0.1.0\n    log: func(level: enum {"),
        "{text}"
    );
}

#[test]
fn inspect_json_lists_imports_and_exports() {
    let out = plinth(&["inspect", "--json", path(&guest("counter"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["full_name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names("imports").contains(&"plinth:counter/add-helper@0.1.0#sum".to_owned()));
    assert!(names("exports").contains(&"plinth:counter/counter@0.1.0#put".to_owned()));
    // The counter guest never logs, so it does not import `plinth:host` at all.
    assert!(json["plinth_host"].is_null(), "{json}");
}

#[test]
fn call_prints_results_in_wave() {
    let out = plinth(&[
        "call",
        path(&guest("greeter")),
        "plinth:greeter/greeter@0.2.0#greet",
        "\"Ada\"",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "\"Hello, Ada!\"\n");
    let out = plinth(&["call", "--json", path(&guest("kv")), "get", "\"missing\""]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["function"], "plinth:kv/store@0.1.0#get");
    assert!(
        json["results"][0].as_str().unwrap().starts_with("err("),
        "{json}"
    );
}

#[test]
fn call_passes_grants_and_limits() {
    let misbehave = guest("misbehave");
    let out = plinth(&[
        "call",
        path(&misbehave),
        "get",
        "\"env:FOO\"",
        "--env",
        "FOO=bar",
    ]);
    assert_eq!(stdout(&out), "ok([98, 97, 114])\n", "{}", stderr(&out));
    let out = plinth(&[
        "call",
        path(&misbehave),
        "get",
        "\"loop\"",
        "--timeout",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("call deadline"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: raise the deadline"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_argument_type_names_the_expected_type() {
    let out = plinth(&["call", path(&guest("kv")), "get", "42"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("argument key expects a string"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn unknown_function_lists_the_exports() {
    let out = plinth(&["call", path(&guest("kv")), "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("plinth:kv/store@0.1.0#get"), "{err}");
    assert!(err.contains("plinth:kv/store@0.1.0#put"), "{err}");
}

#[test]
fn missing_file_and_non_plugins_are_refused_with_exit_3() {
    let out = plinth(&["inspect", "/nonexistent/kv.wasm"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).starts_with("error: cannot read /nonexistent/kv.wasm"));

    let text = std::env::temp_dir().join(format!("plinth-cli-{}.txt", std::process::id()));
    std::fs::write(&text, "not a plugin").unwrap();
    let out = plinth(&["call", path(&text), "run"]);
    std::fs::remove_file(&text).ok();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("is a text file"), "{}", stderr(&out));
}

#[test]
fn executables_are_inspected_without_being_run() {
    let exe = std::env::current_exe().unwrap();
    let out = plinth(&["inspect", path(&exe)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("kind:   an ELF executable"),
        "{}",
        stdout(&out)
    );
    let out = plinth(&["call", path(&exe), "anything"]);
    assert_eq!(out.status.code(), Some(4));
}
