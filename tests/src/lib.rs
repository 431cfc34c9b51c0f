//! Support for the end-to-end tests: guests, a `tracing` capture, shared writers.
//!
//! The tests themselves live beside this crate (`wasm.rs`) and drive the real example guests
//! from `guest-examples/` through the public `plinth` API.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The built example guest `name`, building the guests first if needed.
pub fn guest(name: &str) -> PathBuf {
    if let Err(e) = plinth_examples::build_guests() {
        panic!("the example guests are needed for this test: {e}");
    }
    plinth_examples::guest(name)
}

/// One event seen by a [`Capture`].
#[derive(Debug, Clone)]
pub struct Captured {
    /// The event's target.
    pub target: String,
    /// The event's level.
    pub level: Level,
    /// Every field, `message` included, as `(name, value)`.
    pub fields: Vec<(String, String)>,
}

impl Captured {
    /// The value of field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Records the `tracing` events of the thread it is installed on.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

thread_local! {
    /// The captures installed on this thread, the innermost last.
    static INSTALLED: RefCell<Vec<Capture>> = const { RefCell::new(Vec::new()) };
}

impl Capture {
    /// Makes this capture record the events of the current thread until the guard drops.
    ///
    /// Events reach it through one process-wide subscriber that asks, at each event, whether
    /// the thread has a capture. A subscriber per thread (`set_default`) would depend on
    /// tracing's per-callsite interest cache, which another test's thread can fill with
    /// "never" for a callsite in the moment this one is installed, so that its events are
    /// skipped.
    pub fn install(&self) -> CaptureGuard {
        static ROUTER: std::sync::Once = std::sync::Once::new();
        ROUTER.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Router))
                .expect("Capture needs the process-wide tracing subscriber for itself");
        });
        INSTALLED.with(|installed| installed.borrow_mut().push(self.clone()));
        CaptureGuard(std::marker::PhantomData)
    }

    /// The events recorded so far with the given target.
    pub fn events(&self, target: &str) -> Vec<Captured> {
        let events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| e.target == target)
            .cloned()
            .collect()
    }

    fn record(&self, event: &Event<'_>) {
        struct Fields(Vec<(String, String)>);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let mut text = String::new();
                let _ = write!(text, "{value:?}");
                self.0.push((field.name().to_owned(), text));
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.push((field.name().to_owned(), value.to_owned()));
            }
        }
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let captured = Captured {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields: fields.0,
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(captured);
    }
}

/// Ends a [`Capture::install`] when dropped, on the thread that installed it.
pub struct CaptureGuard(std::marker::PhantomData<*const ()>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        INSTALLED.with(|installed| installed.borrow_mut().pop());
    }
}

/// The process-wide subscriber's layer: hands each event to the capture installed on the
/// thread it happens on. Every callsite stays "sometimes" interesting, so the question is
/// asked per event.
struct Router;

impl<S: Subscriber> Layer<S> for Router {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, _: &Metadata<'_>, _: Context<'_, S>) -> bool {
        INSTALLED.with(|installed| !installed.borrow().is_empty())
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let capture = INSTALLED.with(|installed| installed.borrow().last().cloned());
        if let Some(capture) = capture {
            capture.record(event);
        }
    }
}

/// A writer whose bytes the test can read back.
#[derive(Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where criterion writes its estimates, so that benchmarks can leave figures of their own
/// beside them (`CARGO_TARGET_DIR/criterion`, or the workspace's `target/criterion`).
pub fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Has 64 tasks share `kv` (a gRPC plugin's) until the client's channel opens a second
/// connection, checking every answer, then runs one more round over the grown channel. On a
/// host with one CPU the channel must keep its one connection instead. Returns how many
/// connections it ended with.
pub async fn many_callers_spread_over_connections(
    client: &plinth::Client,
    kv: Arc<dyn plinth_examples::kv::Kv>,
) -> usize {
    use plinth::subprocess::transport::MAX_CONNECTIONS;
    let channel = client
        .connection()
        .expect("a subprocess plugin")
        .channel()
        .expect("a gRPC plugin");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    kv.put("shared", b"by all callers").await.expect("put");
    let wanted = cpus.clamp(1, 2);
    let mut rounds = 0;
    let mut grown_rounds = 0;
    while grown_rounds < 2 {
        assert!(
            rounds < 100,
            "the channel kept {} connection(s) under 64 callers",
            channel.connections()
        );
        rounds += 1;
        if channel.connections() >= wanted {
            grown_rounds += 1;
        }
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let kv = kv.clone();
            callers.spawn(async move {
                for _ in 0..20 {
                    assert_eq!(kv.get("shared").await.expect("get"), b"by all callers");
                }
            });
        }
        while let Some(done) = callers.join_next().await {
            done.expect("a caller");
        }
    }
    let connections = channel.connections();
    assert!(
        connections <= cpus.clamp(1, MAX_CONNECTIONS),
        "{connections}"
    );
    if cpus == 1 {
        assert_eq!(connections, 1);
    }
    connections
}

/// The messages of `error` and each of its sources, outermost first.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain
}

/// Asserts that no message in `error`'s chain repeats the message of its source, so that a
/// host printing the whole chain says each cause once.
pub fn assert_each_cause_said_once(error: &(dyn std::error::Error + 'static)) {
    let chain = cause_chain(error);
    for pair in chain.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "{:?} repeats its source {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The AutoMTLS policy for a test run with (`Require`, so that a plugin that did not take up
/// the certificate fails the test) or without (`Off`) mutual TLS.
pub fn mtls_policy(on: bool) -> plinth::AutoMtls {
    if on {
        plinth::AutoMtls::Require
    } else {
        plinth::AutoMtls::Off
    }
}
