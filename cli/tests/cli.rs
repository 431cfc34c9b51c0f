//! The `plinth` command, run as a user runs it, against the example guests and the Go
//! fixtures in `tests/go` (built by `cargo xtask go`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn guest(name: &str) -> PathBuf {
    if let Err(e) = plinth_examples::build_guests() {
        panic!("the example guests are needed for this test: {e}");
    }
    plinth_examples::guest(name)
}

fn go_plugin(name: &str) -> String {
    let path = plinth_examples::go_plugin(name);
    assert!(
        path.exists(),
        "{} is missing: build the Go fixtures with `cargo xtask go`",
        path.display()
    );
    path.to_str().expect("utf-8 path").to_owned()
}

fn python_plugin() -> String {
    let path = plinth_examples::python_kv_plugin();
    assert!(
        path.exists(),
        "{} is missing: set up the Python plugin with `cargo xtask python`",
        path.display()
    );
    path.to_str().expect("utf-8 path").to_owned()
}

/// The handshake the Go fixtures are built with.
const COOKIE: [&str; 2] = ["--cookie", "PLINTH_PLUGIN=kv"];

fn plinth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .output()
        .expect("run plinth")
}

/// Runs plinth with `env` added, killing it and failing the test if it has not ended within
/// `bound`: a hang guard, far above how long the run should take.
fn plinth_bounded(args: &[&str], env: &[(&str, &str)], bound: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plinth");
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match ended.recv_timeout(bound) {
        Ok(output) => output.expect("wait for plinth"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("plinth {args:?} still ran after {bound:?}");
        }
    }
}

/// Whether process `pid` is gone within ten seconds (a zombie waiting to be reaped is): a
/// killed process can take a moment to die on a busy machine.
fn ends(pid: u32) -> bool {
    (0..1000).any(|_| {
        let gone = !running(pid);
        if !gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        gone
    })
}

/// Whether process `pid` runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The fake go-plugin plugin (`tests/fake-plugin.py`, executable in the repository, so no test
/// writes a file that another test's child may be executing) and a fresh directory of its own
/// for `case`, for the process id it writes.
fn fake_plugin(case: &str) -> (PathBuf, PathBuf) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake-plugin.py");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-plugin-{case}"));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    (script, dir)
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
fn call_passes_grants() {
    let out = plinth(&[
        "call",
        path(&guest("misbehave")),
        "get",
        "\"env:FOO\"",
        "--env",
        "FOO=bar",
    ]);
    assert_eq!(stdout(&out), "ok([98, 97, 114])\n", "{}", stderr(&out));
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
    assert!(
        stdout(&out).contains("--cookie KEY=VALUE"),
        "{}",
        stdout(&out)
    );
    let out = plinth(&["call", path(&exe), "proto.KV/Get"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("needs its magic cookie"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn inspect_launches_an_executable_and_lists_its_grpc_services() {
    let kv = go_plugin("kv-plugin");
    let out = plinth(&["inspect", &kv, COOKIE[0], COOKIE[1]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "  app version: 1",
        "  network:     unix",
        "  protocol:    grpc",
        "  certificate: offered (AutoMTLS)",
        "negotiated:  version 1",
        "tls:         on",
        "services (grpc.reflection.v1):",
        "  proto.KV\n",
        "  plugin.GRPCController\n",
        "  plugin.GRPCBroker\n",
        "  grpc.health.v1.Health\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    let out = plinth(&[
        "inspect",
        "--json",
        "--no-auto-mtls",
        &kv,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tls"], false, "{json}");
    assert_eq!(json["handshake"]["server_cert"], false, "{json}");
    assert_eq!(json["negotiated_version"], 1, "{json}");
    let services = json["services"].as_array().unwrap();
    assert!(services.contains(&"proto.KV".into()), "{json}");
}

#[test]
fn auto_mtls_decides_whether_a_plugin_without_it_is_loaded() {
    let python = python_plugin();
    let inspect = |flags: &[&str]| {
        let mut args = vec!["inspect", "--json"];
        args.extend_from_slice(flags);
        args.extend([python.as_str(), COOKIE[0], COOKIE[1]]);
        plinth(&args)
    };
    let warning = "warning: kv-plugin-python does not support AutoMTLS";
    // `prefer`, the default: loaded in plaintext, and the user is told.
    for flags in [&[][..], &["--auto-mtls", "prefer"]] {
        let out = inspect(flags);
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["tls"], false, "{json}");
        assert_eq!(json["transport"], "tcp, plaintext", "{json}");
        assert!(
            stderr(&out).contains(warning),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
    // `require`: refused, exit 3, with the way out.
    let out = inspect(&["--auto-mtls", "require"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: kv-plugin-python does not support AutoMTLS"),
        "{err}"
    );
    assert!(err.contains("hint: --auto-mtls prefer"), "{err}");
    // `off`, however spelled: loaded in plaintext, nothing to warn about.
    for flags in [&["--auto-mtls", "off"][..], &["--no-auto-mtls"]] {
        let out = inspect(flags);
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("warning:"), "{}", stderr(&out));
    }
    // A Go plugin meets `require`.
    let kv = go_plugin("kv-plugin");
    let out = plinth(&[
        "inspect",
        "--json",
        "--auto-mtls",
        "require",
        &kv,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tls"], true, "{json}");
    assert!(!stderr(&out).contains("warning:"), "{}", stderr(&out));
}

#[test]
fn an_unknown_auto_mtls_policy_is_a_usage_error() {
    let out = plinth(&[
        "inspect",
        "--auto-mtls",
        "on",
        &go_plugin("kv-plugin"),
        COOKIE[0],
        COOKIE[1],
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for policy in ["prefer", "require", "off"] {
        assert!(err.contains(policy), "{err}");
    }
}

#[test]
fn wrong_cookie_reports_the_plugins_message_with_exit_3() {
    let out = plinth(&[
        "inspect",
        &go_plugin("kv-plugin"),
        "--cookie",
        "PLINTH_PLUGIN=wrong",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: kv-plugin exited before the handshake"),
        "{err}"
    );
    assert!(err.contains("This binary is a plugin"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn a_program_that_is_not_a_plugin_exits_before_the_handshake() {
    let out = plinth(&["inspect", "/bin/true", COOKIE[0], COOKIE[1]]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("exited before the handshake"), "{err}");
    assert!(err.contains("without saying why"), "{err}");
}

#[test]
fn missing_executable_is_refused_with_exit_3() {
    let out = plinth(&["inspect", "/nonexistent/kv-plugin", COOKIE[0], COOKIE[1]]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).starts_with("error: cannot read /nonexistent/kv-plugin"));
}

#[test]
fn call_puts_then_gets_on_a_go_plugin() {
    let kv = go_plugin("kv-plugin");
    // "aGk=" is "hi" in base64, as protobuf JSON writes bytes.
    let out = plinth(&[
        "call",
        &kv,
        "proto.KV/Put",
        r#"{"key": "a", "value": "aGk="}"#,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "{}");

    // Every call launches a fresh plugin process, so the key put above is gone: the error is
    // the plugin's own.
    let out = plinth(&[
        "call",
        "--json",
        &kv,
        "/proto.KV/Get",
        r#"{"key": "a"}"#,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("/proto.KV/Get failed"), "{err}");
    assert!(err.contains(r#"no value stored under key "a""#), "{err}");
}

#[test]
fn call_on_a_go_plugin_prints_the_response_as_json() {
    // The fixture answers `sleep:<duration>` keys with "slept" after sleeping.
    let out = plinth(&[
        "call",
        "--json",
        &go_plugin("kv-plugin"),
        "proto.KV/Get",
        r#"{"key": "sleep:1ms"}"#,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["method"], "/proto.KV/Get");
    // "slept" in base64.
    assert_eq!(json["response"]["value"], "c2xlcHQ=", "{json}");
}

#[test]
fn grpc_argument_of_the_wrong_type_names_the_field_and_expected_type() {
    let out = plinth(&[
        "call",
        &go_plugin("kv-plugin"),
        "proto.KV/Get",
        r#"{"key": 42}"#,
        COOKIE[0],
        COOKIE[1],
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("field key expects a string, found a number"),
        "{err}"
    );
    assert!(
        err.contains("hint: the argument is a JSON object of proto.GetRequest"),
        "{err}"
    );
}

#[test]
fn unknown_grpc_method_lists_the_services_methods() {
    let out = plinth(&[
        "call",
        &go_plugin("kv-plugin"),
        "proto.KV/Delete",
        "{}",
        COOKIE[0],
        COOKIE[1],
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("proto.KV has no method Delete"), "{err}");
    assert!(err.contains("proto.KV/Get, proto.KV/Put"), "{err}");
}

/// Asserts that `out` is a timeout of `phase`: exit code 3, an error line opening with the
/// phase, and a hint naming the flag that raises the bound.
fn assert_timed_out(out: &Output, phase: &str, flag: &str, case: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(3), "{case}: {err}");
    assert!(
        err.starts_with(&format!("error: {phase} timed out after ")),
        "{case}: the error does not open with the {phase} phase: {err}"
    );
    assert!(
        err.contains(&format!("hint: raise {flag}")) || err.contains(&format!("with {flag}")),
        "{case}: no hint naming {flag}: {err}"
    );
}

#[test]
fn a_plugin_that_hangs_at_any_start_phase_times_out_with_exit_3_naming_the_phase() {
    // (how the fake plugin stalls, its handshake options, the phase named, the flag bounding it)
    let cases: [(&str, &[&str], &str, &str); 5] = [
        (
            "no-handshake",
            &["--no-auto-mtls"],
            "handshake",
            "--start-timeout",
        ),
        (
            "no-accept",
            &["--no-auto-mtls"],
            "connect",
            "--start-timeout",
        ),
        ("mute-tls", &[], "tls", "--start-timeout"),
        ("mute", &["--no-auto-mtls"], "http2", "--start-timeout"),
        (
            "no-reflection",
            &["--no-auto-mtls"],
            "reflection",
            "--reflection-timeout",
        ),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .flat_map(|case| [("inspect", case), ("call", case)])
        .map(|(command, (mode, options, phase, flag))| {
            std::thread::spawn(move || {
                let (script, dir) = fake_plugin(&format!("{mode}-{command}"));
                let pid_file = dir.join("pid");
                let mut args = vec![command, path(&script)];
                if command == "call" {
                    args.extend(["proto.KV/Get", "{}", "--timeout", "1"]);
                }
                // Short bounds, with time enough for the fake to start on a busy machine.
                args.extend(["--cookie", "K=V", "--start-timeout", "5"]);
                args.extend(["--reflection-timeout", "1"]);
                args.extend(options);
                let env = [
                    ("PLINTH_FAKE_MODE", mode),
                    ("PLINTH_FAKE_PID", path(&pid_file)),
                ];
                let out = plinth_bounded(&args, &env, Duration::from_secs(120));
                let pid = std::fs::read_to_string(&pid_file)
                    .unwrap_or_else(|e| panic!("{mode}: no process id ({e}): {}", stderr(&out)));
                let pid: u32 = pid.parse().unwrap();
                (format!("{command} {mode}"), phase, flag, out, pid)
            })
        })
        .collect();
    for run in runs {
        let (case, phase, flag, out, pid) = run.join().unwrap();
        assert_timed_out(&out, phase, flag, &case);
        assert!(ends(pid), "{case}: the plugin still runs");
    }
}

#[test]
fn a_call_that_stalls_times_out_with_exit_3_naming_the_call_phase() {
    // A Go plugin that answers reflection and then sleeps in the call: its fixture sleeps on
    // `sleep:<duration>` keys.
    let grpc = std::thread::spawn(|| {
        plinth_bounded(
            &[
                "call",
                &go_plugin("kv-plugin"),
                "proto.KV/Get",
                r#"{"key": "sleep:1h"}"#,
                "--timeout",
                "0.5",
                COOKIE[0],
                COOKIE[1],
            ],
            &[],
            Duration::from_secs(60),
        )
    });
    // A component that loops.
    let misbehave = guest("misbehave");
    let out = plinth_bounded(
        &[
            "call",
            path(&misbehave),
            "get",
            "\"loop\"",
            "--timeout",
            "0.2",
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_timed_out(&out, "call", "--timeout", "component");
    let out = grpc.join().unwrap();
    assert_timed_out(&out, "call", "--timeout", "gRPC");
    assert!(stderr(&out).contains("/proto.KV/Get"), "{}", stderr(&out));
}

#[test]
fn a_function_returning_err_exits_1_and_still_prints_the_value() {
    let kv = guest("kv");
    let out = plinth(&["call", path(&kv), "get", "\"missing\""]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "err(\"no value stored under key \\\"missing\\\"\")\n"
    );
    assert!(
        stderr(&out).starts_with("error: plinth:kv/store@0.1.0#get returned an error: err("),
        "{}",
        stderr(&out)
    );

    let out = plinth(&["call", "--json", path(&kv), "get", "\"missing\""]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["results"][0].as_str().unwrap().starts_with("err("));
    assert!(
        stderr(&out).contains("returned an error"),
        "{}",
        stderr(&out)
    );

    // An `ok` is a success, and so is a result that is no `result`.
    let out = plinth(&["call", path(&kv), "put", "\"k\"", "[1]"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    let greet = "plinth:greeter/greeter@0.2.0#greet";
    let out = plinth(&["call", path(&guest("greeter")), greet, "\"Ada\""]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn functions_taking_or_returning_resources_are_refused_with_exit_4_naming_the_resource() {
    let probe = guest("resource-probe");
    let interface = "plinth:resources-test/tally@0.1.0";
    // An own or a borrow, as a parameter or a result, alone or inside an option or a list.
    let cases: [(&str, &[&str]); 6] = [
        ("make", &["1"]),
        ("read", &["1"]),
        ("maybe", &["1"]),
        ("total", &["[]"]),
        ("[constructor]counter", &["1"]),
        ("[method]counter.bump", &["1"]),
    ];
    for (function, args) in cases {
        let mut all = vec!["call", path(&probe), function];
        all.extend(args);
        let out = plinth(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{function}: {err}");
        let opening =
            format!("error: {interface}#{function} cannot be called from the command line: ");
        assert!(err.starts_with(&opening), "{function}: {err}");
        assert!(
            err.contains(&format!("holds the resource {interface}#counter")),
            "{function}: {err}"
        );
    }
    // The component itself is fine: a function without resources is called.
    let out = plinth(&["call", path(&probe), "describe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "\"counters handed out as resources\"\n");
}

/// Asserts that the first line of `err` holds each of `causes`, in order, each once.
fn assert_causes_in_order_once(err: &str, causes: &[&str]) {
    let line = err.lines().next().unwrap_or_default();
    let mut from = 0;
    for cause in causes {
        let at = line[from..]
            .find(cause)
            .unwrap_or_else(|| panic!("{cause:?} missing, or out of order, in {line}"));
        from += at + cause.len();
        assert_eq!(line.matches(cause).count(), 1, "{cause:?} twice in {line}");
    }
}

#[test]
fn a_component_that_cannot_be_linked_reports_the_whole_cause_chain() {
    // It imports a resource of `plinth:resources-test/clock-source`, which no host provides.
    let missing_import = guest("missing-import");
    for command in [
        vec!["call", path(&missing_import), "uptime"],
        vec!["inspect", path(&missing_import)],
    ] {
        let out = plinth(&command);
        if command[0] == "inspect" {
            // Inspecting does not link: the import is listed.
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(stdout(&out).contains("plinth:resources-test/clock-source@0.1.0"));
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_causes_in_order_once(
            &stderr(&out),
            &[
                "error: cannot link plugin missing_import: ",
                "component imports instance `plinth:resources-test/clock-source@0.1.0`",
                "instance export `clock` has the wrong type: ",
                "resource implementation is missing",
            ],
        );
    }
}

#[test]
fn a_start_failure_prints_the_system_error_under_it_once() {
    // A copy of a Go plugin without execute permission: spawning it fails, and the operating
    // system's error is the cause.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("not-executable");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("kv-plugin");
    std::fs::copy(go_plugin("kv-plugin"), &copy).unwrap();
    let mut permissions = std::fs::metadata(&copy).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    std::fs::set_permissions(&copy, permissions).unwrap();
    let out = plinth(&["inspect", path(&copy), COOKIE[0], COOKIE[1]]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_causes_in_order_once(
        &stderr(&out),
        &[
            &format!("error: cannot start plugin kv-plugin ({})", copy.display()),
            ": Permission denied (os error 13)",
        ],
    );
}

#[test]
fn new_wasm_scaffolds_a_guest_that_builds_and_exports_the_world() {
    // Make sure the wasm32-wasip2 target is installed, as the guests need it too.
    guest("kv");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("scaffold-kv");
    std::fs::remove_dir_all(&dir).ok();
    let out = plinth(&[
        "new",
        "wasm",
        "scaffold-kv",
        "--wit",
        path(&root.join("wit/host")),
        "--wit",
        path(&root.join("wit/kv")),
        "--path",
        path(&dir),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(!lib.contains("todo!"), "{lib}");
    assert!(
        lib.contains("impl exports::plinth::kv::store::Guest for Component"),
        "{lib}"
    );

    // The crate builds on its own; its target directory is kept between runs.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", tmp.join("scaffold-target"))
        .status()
        .expect("run cargo");
    assert!(built.success(), "the scaffold does not build");
    let wasm = tmp.join("scaffold-target/wasm32-wasip2/release/scaffold_kv.wasm");
    let out = plinth(&["inspect", path(&wasm)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("exports:\n  plinth:kv/store@0.1.0\n"),
        "{text}"
    );
    assert!(
        text.contains("    put: func(key: string, value: list<u8>) -> result<_, string>"),
        "{text}"
    );
}

#[test]
fn new_subprocess_scaffolds_a_plugin_that_builds_tests_and_is_inspected() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("scaffold-kv-plugin");
    std::fs::remove_dir_all(&dir).ok();
    let out = plinth(&[
        "new",
        "subprocess",
        "scaffold-kv-plugin",
        "--proto",
        path(&root.join("tests/go/proto/kv.proto")),
        "--path",
        path(&dir),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let main = std::fs::read_to_string(dir.join("src/main.rs")).unwrap();
    assert!(
        main.contains("impl proto::kv_server::Kv for Plugin {}"),
        "{main}"
    );
    assert!(!main.contains("todo!"), "{main}");

    // Same dependency versions as this workspace, so most of them are already built.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = tmp.join("scaffold-target");
    for command in ["build", "test"] {
        let status = Command::new(&cargo)
            .args([command, "--quiet"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo {command} of the scaffold failed");
    }
    let binary = target.join("debug/scaffold-kv-plugin");
    let out = plinth(&[
        "inspect",
        path(&binary),
        "--cookie",
        "SCAFFOLD_KV_PLUGIN_PLUGIN=v1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("negotiated:  version 1"), "{text}");
    assert!(text.contains("certificate: offered (AutoMTLS)"), "{text}");
}

#[test]
fn new_subprocess_without_a_proto_is_a_usage_error() {
    let out = plinth(&["new", "subprocess", "kv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--proto"), "{}", stderr(&out));
}
