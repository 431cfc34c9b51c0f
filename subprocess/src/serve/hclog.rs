//! A `tracing` layer that writes hclog JSON lines, so a Go host (or a Plinth host) re-logs a
//! served plugin's events at their own level.
//!
//! Each event becomes one line `{"@level":"info","@message":"...","@module":"<target>",
//! "@timestamp":"2026-08-17T08:29:10.123456Z", <fields>}` with keys sorted, as hclog writes
//! them; the timestamp has exactly six fractional digits, which a Go host insists on. Lines go
//! to the process's original stderr (a duplicate taken before stdout and stderr are redirected
//! into the stdio stream), never to stdout. Spans are not recorded.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Writes every event as one hclog JSON line.
#[derive(Clone)]
pub struct HclogLayer {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl HclogLayer {
    /// A layer writing to `out`.
    pub fn new(out: impl Write + Send + 'static) -> HclogLayer {
        HclogLayer {
            out: Arc::new(Mutex::new(Box::new(out))),
        }
    }

    /// A layer writing to a duplicate of the current stderr, which keeps reaching the host's
    /// log parser after [`serve`](crate::serve::serve) redirects fd 2.
    pub fn stderr() -> std::io::Result<HclogLayer> {
        use std::os::fd::AsFd;
        let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
        Ok(HclogLayer::new(std::fs::File::from(fd)))
    }
}

impl std::fmt::Debug for HclogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HclogLayer").finish_non_exhaustive()
    }
}

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = entry(event, timestamp(std::time::SystemTime::now()));
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // One write per line, so concurrent writers do not interleave within a line.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// hclog's name for a level.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The JSON line (with its newline) for `event`.
fn entry(event: &Event<'_>, timestamp: String) -> String {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut map = fields.0;
    let message = match map.remove("message") {
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let metadata = event.metadata();
    map.insert(
        "@level".to_owned(),
        Value::from(level_name(metadata.level())),
    );
    map.insert("@message".to_owned(), Value::from(message));
    map.insert("@module".to_owned(), Value::from(metadata.target()));
    map.insert("@timestamp".to_owned(), Value::from(timestamp));
    let mut line = Value::Object(map).to_string();
    line.push('\n');
    line
}

struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // `@`-keys are hclog's own; a field may not overwrite them.
        let key = if name.starts_with('@') {
            format!("_{name}")
        } else {
            name.to_owned()
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// `time` in UTC as hclog's JSON layout `2006-01-02T15:04:05.000000Z07:00` prints it.
fn timestamp(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{Level as HostLevel, StderrParser};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn timestamps_have_six_fractional_digits_in_utc() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::new(1_786_955_350, 123_456_789);
        assert_eq!(timestamp(time), "2026-08-17T08:29:10.123456Z");
        assert_eq!(
            timestamp(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn events_become_hclog_lines_a_host_parses_at_their_level() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(HclogLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "kv", key = "k", n = 3, "careful");
            tracing::trace!("fine detail");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(
                r#"{"@level":"warn","@message":"careful","@module":"kv","@timestamp":""#
            ),
            "{}",
            lines[0]
        );
        let mut parser = StderrParser::new();
        let warn = parser.parse(lines[0]);
        assert_eq!(warn.level, HostLevel::Warn);
        assert_eq!(warn.message, "careful");
        assert!(
            warn.fields.contains(&("key".to_owned(), "k".to_owned())),
            "{:?}",
            warn.fields
        );
        assert!(
            warn.fields.contains(&("n".to_owned(), "3".to_owned())),
            "{:?}",
            warn.fields
        );
        assert_eq!(parser.parse(lines[1]).level, HostLevel::Trace);
    }
}
