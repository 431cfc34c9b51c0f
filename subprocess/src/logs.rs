//! A plugin's stderr, read as go-plugin reads it: each line is an hclog JSON entry or plain
//! text, re-emitted as a `tracing` event carrying the plugin's name, its level and its fields.
//!
//! JSON lines keep their level (`@level`), message (`@message`) and every other key as a
//! field; a line whose `@timestamp` is not hclog's layout, whose `@level` is unknown or whose
//! special keys are not strings is treated as text, never a panic. Text lines take their level
//! from a `[TRACE]`..`[ERROR]` prefix; after a line starting `panic: ` or `fatal error: `
//! every unprefixed line is an error (a Go panic's stack trace).
//!
//! Events go to the target `plinth::plugin` with the fields `plugin` (the name) and `fields`
//! (the entry's own key/value pairs, `key=value` separated by spaces).

use std::fmt;

/// The level of a plugin log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// hclog `trace`.
    Trace,
    /// hclog `debug`, and any line without a recognised level.
    Debug,
    /// hclog `info`.
    Info,
    /// hclog `warn`.
    Warn,
    /// hclog `error`, and the lines of a panic.
    Error,
}

impl Level {
    fn from_hclog(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(Level::Trace),
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    /// hclog's name for the level, as written in `@level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One parsed stderr line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its level.
    pub level: Level,
    /// The message (the whole line for text lines).
    pub message: String,
    /// Key/value pairs: for JSON entries every key but `@level`, `@message` and `@timestamp`
    /// (values as JSON text, strings unquoted), plus `timestamp`.
    pub fields: Vec<(String, String)>,
}

/// Parses one plugin's stderr line by line, remembering whether a panic is being printed.
#[derive(Debug, Default)]
pub struct StderrParser {
    panicking: bool,
}

impl StderrParser {
    /// A parser at the start of a stream.
    pub fn new() -> StderrParser {
        StderrParser::default()
    }

    /// Whether a `panic: ` or `fatal error: ` line has been seen.
    pub fn panicking(&self) -> bool {
        self.panicking
    }

    /// Parses one line (without its newline).
    pub fn parse(&mut self, line: &str) -> Entry {
        self.parse_line(line).0
    }

    /// Parses one line (without its newline), saying whether it was an hclog JSON entry with
    /// a level.
    pub(crate) fn parse_line(&mut self, line: &str) -> (Entry, bool) {
        match parse_json(line) {
            Some((entry, leveled)) => (entry, leveled),
            None => (self.parse_text(line), false),
        }
    }

    fn parse_text(&mut self, line: &str) -> Entry {
        const PREFIXES: [(&str, Level); 5] = [
            ("[TRACE]", Level::Trace),
            ("[DEBUG]", Level::Debug),
            ("[INFO]", Level::Info),
            ("[WARN]", Level::Warn),
            ("[ERROR]", Level::Error),
        ];
        let prefixed = PREFIXES.iter().find(|(prefix, _)| line.starts_with(prefix));
        let level = match prefixed {
            Some((_, level)) => *level,
            None => {
                if line.starts_with("panic: ") || line.starts_with("fatal error: ") {
                    self.panicking = true;
                }
                if self.panicking {
                    Level::Error
                } else {
                    Level::Debug
                }
            }
        };
        let message = match prefixed {
            Some((prefix, _)) => line[prefix.len()..].trim_start().to_owned(),
            None => line.to_owned(),
        };
        Entry {
            level,
            message,
            fields: Vec::new(),
        }
    }
}

/// An hclog JSON entry and whether it has a known level, or `None` when the line is not one a
/// Go host would accept.
fn parse_json(line: &str) -> Option<(Entry, bool)> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let serde_json::Value::Object(map) = serde_json::from_str(trimmed).ok()? else {
        return None;
    };
    let text = |key: &str| match map.get(key) {
        None => Some(None),
        Some(serde_json::Value::String(value)) => Some(Some(value.as_str())),
        Some(_) => None,
    };
    let message = text("@message")?.unwrap_or_default().to_owned();
    let level = text("@level")?;
    let timestamp = text("@timestamp")?;
    if let Some(timestamp) = timestamp
        && !is_hclog_timestamp(timestamp)
    {
        return None;
    }
    let Some(level) = level.and_then(Level::from_hclog) else {
        // Unknown or missing level: the whole line at debug, as go-plugin does.
        let entry = Entry {
            level: Level::Debug,
            message: line.to_owned(),
            fields: Vec::new(),
        };
        return Some((entry, false));
    };
    let mut fields: Vec<(String, String)> = map
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "@message" | "@level" | "@timestamp"))
        .map(|(key, value)| {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), value)
        })
        .collect();
    if let Some(timestamp) = timestamp {
        fields.push(("timestamp".to_owned(), timestamp.to_owned()));
    }
    let entry = Entry {
        level,
        message,
        fields,
    };
    Some((entry, true))
}

/// Whether `text` has hclog's layout `2006-01-02T15:04:05.000000Z07:00`: exactly six
/// fractional digits, then `Z` or `±hh:mm`.
fn is_hclog_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let at = |index: usize, byte: u8| bytes.get(index) == Some(&byte);
    let date_time = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26);
    if !date_time {
        return false;
    }
    match &bytes[26..] {
        b"Z" => true,
        [sign, ..] if (*sign == b'+' || *sign == b'-') && bytes.len() == 32 => {
            digits(27..29) && at(29, b':') && digits(30..32)
        }
        _ => false,
    }
}

/// An entry's fields as `key=value` pairs separated by spaces.
pub struct Fields<'a>(pub &'a [(String, String)]);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (key, value)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            if value.contains(' ') || value.is_empty() {
                write!(f, "{key}={value:?}")?;
            } else {
                write!(f, "{key}={value}")?;
            }
        }
        Ok(())
    }
}

/// An hclog JSON entry as error messages quote it: `[LEVEL] message key=value ...`, without its
/// timestamp and hclog's own `@` keys (`@module`, `@caller`).
pub(crate) fn quote(entry: &Entry) -> String {
    let fields: Vec<(String, String)> = entry
        .fields
        .iter()
        .filter(|(key, _)| key != "timestamp" && !key.starts_with('@'))
        .cloned()
        .collect();
    let level = entry.level.as_str().to_ascii_uppercase();
    if fields.is_empty() {
        format!("[{level}] {}", entry.message)
    } else {
        format!("[{level}] {} {}", entry.message, Fields(&fields))
    }
}

/// Emits `entry` as a `tracing` event for the plugin `plugin`.
pub fn emit(plugin: &str, entry: &Entry) {
    let fields = Fields(&entry.fields);
    let message = &entry.message;
    match entry.level {
        Level::Trace => tracing::trace!(target: "plinth::plugin", plugin, %fields, "{message}"),
        Level::Debug => tracing::debug!(target: "plinth::plugin", plugin, %fields, "{message}"),
        Level::Info => tracing::info!(target: "plinth::plugin", plugin, %fields, "{message}"),
        Level::Warn => tracing::warn!(target: "plinth::plugin", plugin, %fields, "{message}"),
        Level::Error => tracing::error!(target: "plinth::plugin", plugin, %fields, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hclog_json_keeps_level_message_and_fields() {
        let mut parser = StderrParser::new();
        let entry = parser.parse(
            r#"{"@level":"warn","@message":"disk low","@module":"kv","@timestamp":"2026-08-17T08:29:10.123456+01:00","free":12,"path":"/d"}"#,
        );
        assert_eq!(entry.level, Level::Warn);
        assert_eq!(entry.message, "disk low");
        assert_eq!(
            entry.fields,
            vec![
                ("@module".to_owned(), "kv".to_owned()),
                ("free".to_owned(), "12".to_owned()),
                ("path".to_owned(), "/d".to_owned()),
                (
                    "timestamp".to_owned(),
                    "2026-08-17T08:29:10.123456+01:00".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn odd_json_is_text_never_a_panic() {
        let mut parser = StderrParser::new();
        for line in [
            r#"{"@message": 5, "@level": "info"}"#,
            r#"{"@level": ["info"]}"#,
            r#"{"@level":"info","@message":"m","@timestamp":"2026-08-17T08:29:10.12Z"}"#,
            r#"[1,2,3]"#,
            r#"{"unterminated"#,
        ] {
            let entry = parser.parse(line);
            assert_eq!(entry.level, Level::Debug, "{line}");
            assert_eq!(entry.message, line);
        }
        let entry = parser.parse(r#"{"@level":"warning","@message":"m"}"#);
        assert_eq!(entry.level, Level::Debug);
        assert_eq!(entry.message, r#"{"@level":"warning","@message":"m"}"#);
    }

    #[test]
    fn text_lines_take_the_level_of_their_prefix() {
        let mut parser = StderrParser::new();
        assert_eq!(parser.parse("[INFO] ready").level, Level::Info);
        assert_eq!(parser.parse("[INFO] ready").message, "ready");
        assert_eq!(parser.parse("[ERROR] bad").level, Level::Error);
        assert_eq!(parser.parse("[ERR] go-plugin style").level, Level::Debug);
        assert_eq!(parser.parse("plain").level, Level::Debug);
    }

    #[test]
    fn a_panic_turns_every_later_unprefixed_line_into_an_error() {
        let mut parser = StderrParser::new();
        assert_eq!(parser.parse("goroutine 1 [running]:").level, Level::Debug);
        assert_eq!(parser.parse("panic: boom").level, Level::Error);
        assert!(parser.panicking());
        assert_eq!(parser.parse("main.main()").level, Level::Error);
        assert_eq!(parser.parse("[INFO] still prefixed").level, Level::Info);
    }

    #[test]
    fn a_json_entry_is_quoted_as_level_message_and_its_own_fields() {
        let mut parser = StderrParser::new();
        let (entry, json) = parser.parse_line(
            r#"{"@level":"error","@message":"lost the disk","@module":"kv","@caller":"kv.go:12","@timestamp":"2026-08-17T08:29:10.123456Z","path":"/d","err":"read only"}"#,
        );
        assert!(json);
        assert_eq!(
            quote(&entry),
            r#"[ERROR] lost the disk err="read only" path=/d"#
        );
        let (entry, json) = parser.parse_line(r#"{"@level":"info","@message":"ready"}"#);
        assert!(json);
        assert_eq!(quote(&entry), "[INFO] ready");
        assert!(!parser.parse_line("[INFO] text").1);
        assert!(!parser.parse_line(r#"{"@level": 3}"#).1);
        assert!(!parser.parse_line(r#"{"@level":"loud","@message":"m"}"#).1);
    }

    #[test]
    fn timestamps_must_have_six_fraction_digits() {
        assert!(is_hclog_timestamp("2026-08-17T08:29:10.123456Z"));
        assert!(is_hclog_timestamp("2026-08-17T08:29:10.123456-07:00"));
        assert!(!is_hclog_timestamp("2026-08-17T08:29:10.123Z"));
        assert!(!is_hclog_timestamp("2026-08-17T08:29:10.1234567Z"));
        assert!(!is_hclog_timestamp("2026-08-17T08:29:10.123456+0100"));
        assert!(!is_hclog_timestamp(""));
    }
}
