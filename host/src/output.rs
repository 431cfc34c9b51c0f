//! Capturing a plugin's stdout and stderr line by line and mirroring them to the host.
//!
//! go-plugin syncs a plugin's output to the host; here each complete line a guest or an
//! executable writes goes to an [`Output`]: a `tracing` event, the host's own stdout/stderr with
//! a `[plugin]` prefix, a writer the caller provides, or nowhere. A partial line is emitted when
//! the instance (or the process's stream) ends.

use std::io::Write;
#[cfg(feature = "wasm")]
use std::pin::Pin;
use std::sync::{Arc, Mutex};
#[cfg(feature = "wasm")]
use std::task::{Context, Poll};

#[cfg(feature = "wasm")]
use tokio::io::AsyncWrite;
#[cfg(feature = "wasm")]
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept whole; a longer one is emitted in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// Where a plugin's stdout or stderr lines go.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Output {
    /// Each line becomes a `tracing` event (target `plinth::guest::stdout` at INFO, or
    /// `plinth::guest::stderr` at WARN) carrying the plugin's name. The default.
    #[default]
    Tracing,
    /// Each line is written to the host's own stdout or stderr, prefixed with `[plugin] `.
    Inherit,
    /// Each line, with its newline and without a prefix, is written to this writer.
    Writer(SharedWriter),
    /// Lines are dropped.
    Discard,
}

impl Output {
    /// Lines go to `writer`, which is shared by every instance of the plugin.
    pub fn writer(writer: impl Write + Send + 'static) -> Output {
        Output::Writer(SharedWriter(Arc::new(Mutex::new(writer))))
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Output::Tracing => "Tracing",
            Output::Inherit => "Inherit",
            Output::Writer(_) => "Writer",
            Output::Discard => "Discard",
        })
    }
}

/// A writer shared by every instance of a plugin.
#[derive(Clone)]
pub struct SharedWriter(Arc<Mutex<dyn Write + Send>>);

/// A sink for an executable plugin's synced output: chunks joined into lines, each emitted
/// to `output` as a guest's would be.
#[cfg(feature = "subprocess")]
pub(crate) fn chunk_sink(
    plugin: Arc<str>,
    stream: Stream,
    output: Output,
) -> plinth_subprocess::Sink {
    let writer = Mutex::new(LineWriter {
        plugin,
        stream,
        output,
        partial: Vec::new(),
    });
    Arc::new(move |chunk: &[u8]| {
        writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(chunk);
    })
}

/// Which of the plugin's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One guest stream, as WASI sees it.
#[cfg(feature = "wasm")]
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    stream: Stream,
    output: Output,
}

#[cfg(feature = "wasm")]
impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, stream: Stream, output: Output) -> GuestOutput {
        GuestOutput {
            plugin,
            stream,
            output,
        }
    }
}

#[cfg(feature = "wasm")]
impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

#[cfg(feature = "wasm")]
impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            plugin: self.plugin.clone(),
            stream: self.stream,
            output: self.output.clone(),
            partial: Vec::new(),
        })
    }
}

/// Splits what the plugin writes into lines and emits each one.
struct LineWriter {
    plugin: Arc<str>,
    stream: Stream,
    output: Output,
    partial: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            self.flush_line();
            bytes = &bytes[end + 1..];
        }
        for piece in bytes.chunks(MAX_LINE) {
            self.partial.extend_from_slice(piece);
            if self.partial.len() >= MAX_LINE {
                self.flush_line();
            }
        }
    }

    fn flush_line(&mut self) {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        emit(&self.plugin, self.stream, &self.output, &line);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.flush_line();
        }
    }
}

#[cfg(feature = "wasm")]
impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn emit(plugin: &str, stream: Stream, output: &Output, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    match output {
        Output::Tracing => match stream {
            Stream::Stdout => {
                tracing::info!(target: "plinth::guest::stdout", plugin, "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "plinth::guest::stderr", plugin, "{text}")
            }
        },
        // Output is best effort: a host whose own stdout is closed must not fail the guest.
        Output::Inherit => {
            let _ = match stream {
                Stream::Stdout => writeln!(std::io::stdout().lock(), "[{plugin}] {text}"),
                Stream::Stderr => writeln!(std::io::stderr().lock(), "[{plugin}] {text}"),
            };
        }
        Output::Writer(SharedWriter(writer)) => {
            let mut writer = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = writer
                .write_all(line)
                .and_then(|()| writer.write_all(b"\n"));
        }
        Output::Discard => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn writer(sink: &Collect) -> LineWriter {
        LineWriter {
            plugin: "p".into(),
            stream: Stream::Stdout,
            output: Output::writer(sink.clone()),
            partial: Vec::new(),
        }
    }

    #[test]
    fn joins_pieces_into_lines_and_flushes_the_tail_on_drop() {
        let sink = Collect::default();
        let mut w = writer(&sink);
        w.push(b"hel");
        w.push(b"lo\r\nwor");
        w.push(b"ld\nlast");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\n");
        drop(w);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\nlast\n");
    }

    #[test]
    fn overlong_lines_are_cut_not_buffered_forever() {
        let sink = Collect::default();
        let mut w = writer(&sink);
        w.push(&vec![b'x'; MAX_LINE * 2 + 10]);
        assert_eq!(sink.0.lock().unwrap().len(), 2 * (MAX_LINE + 1));
        assert_eq!(w.partial.len(), 10);
    }
}
