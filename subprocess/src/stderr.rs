//! A plugin's stderr pipe as the host reads it: every line is logged (see [`crate::logs`]) and
//! the last ones are kept, bounded and readable, for the errors that quote them.
//!
//! An error quoting the tail must include the last line a dying plugin wrote. Waiting for the
//! pipe's end does not do: a descendant that inherited stderr holds it open as long as it runs.
//! So [`Stderr::tail`] asks the pump to confirm that it has read everything written up to that
//! moment, and the pump confirms when, after the request, it finds the pipe empty (`FIONREAD`).
//! Asked once the plugin has exited, that means every byte the plugin wrote is in the tail —
//! with no wait for the pipe's end. The wait is bounded ([`DRAIN_BOUND`]) against a descendant
//! that never lets the pipe run empty.
//!
//! The tail holds at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes (the newlines between
//! lines counted), each line cut to [`TAIL_LINE_BYTES`]; an hclog JSON line is kept as
//! `[LEVEL] message key=value ...`, the way a person reads it. A line still being written when
//! the tail is taken is its last line.
//!
//! What the plugin writes to stderr after the handshake through go-plugin's `GRPCStdio` does not
//! come through this pipe (see [`crate::stdio`]).

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handshake::MAX_LINE;
use crate::lock;
use crate::logs::{self, StderrParser};

/// How many of the last stderr lines errors quote.
pub(crate) const TAIL_LINES: usize = 20;
/// How many bytes of stderr errors quote, at most.
pub(crate) const TAIL_BYTES: usize = 4096;
/// How much of one stderr line errors quote.
pub(crate) const TAIL_LINE_BYTES: usize = 512;
/// How long [`Stderr::tail`] waits for the pump to read what was written before it.
pub(crate) const DRAIN_BOUND: Duration = Duration::from_secs(1);
/// How much one read takes from the pipe.
const READ_CHUNK: usize = 64 << 10;

/// The host's end of a plugin's stderr: the pump reading it and the tail it keeps.
pub(crate) struct Stderr {
    lines: Arc<Mutex<Lines>>,
    /// How many drains were asked for.
    requests: watch::Sender<u64>,
    /// The latest request the pump has answered (`u64::MAX` once the pipe ended).
    drained: watch::Receiver<u64>,
}

impl Stderr {
    /// Starts reading `pipe` on `tasks`, logging each line as plugin `name`'s.
    pub(crate) fn pump(name: Arc<str>, pipe: pipe::Receiver, tasks: &mut JoinSet<()>) -> Stderr {
        let lines = Arc::new(Mutex::new(Lines::default()));
        let (requests, asked) = watch::channel(0);
        let (answers, drained) = watch::channel(0);
        let pump = Pump {
            name,
            pipe,
            lines: lines.clone(),
            asked,
            answers,
            parser: StderrParser::new(),
            line: Vec::new(),
        };
        tasks.spawn(pump.run());
        Stderr {
            lines,
            requests,
            drained,
        }
    }

    /// The last lines, joined by newlines, once everything written to the pipe before this call
    /// has been read (or [`DRAIN_BOUND`] has passed).
    pub(crate) async fn tail(&self) -> String {
        self.drain().await;
        lock(&self.lines).text()
    }

    /// Waits until the pump has read everything written before this call; whether it did
    /// within [`DRAIN_BOUND`].
    async fn drain(&self) -> bool {
        let mut wanted = 0;
        self.requests.send_modify(|asked| {
            *asked += 1;
            wanted = *asked;
        });
        let mut drained = self.drained.clone();
        let answered = drained.wait_for(|drained| *drained >= wanted);
        matches!(tokio::time::timeout(DRAIN_BOUND, answered).await, Ok(Ok(_)))
    }
}

/// The tail of stderr: whole lines as quoted, and the line being written.
#[derive(Default)]
struct Lines {
    lines: VecDeque<String>,
    /// The bytes in `lines`, each with its newline.
    bytes: usize,
    /// What was read of the line not yet ended.
    partial: String,
}

impl Lines {
    fn push(&mut self, line: &str) {
        self.partial.clear();
        let line = cut(line, TAIL_LINE_BYTES).to_owned();
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || self.bytes > TAIL_BYTES {
            if let Some(dropped) = self.lines.pop_front() {
                self.bytes -= dropped.len() + 1;
            }
        }
    }

    /// The newest lines, the partial one last, within [`TAIL_LINES`] and [`TAIL_BYTES`].
    fn text(&self) -> String {
        let newest_first = std::iter::once(self.partial.as_str())
            .filter(|partial| !partial.is_empty())
            .chain(self.lines.iter().rev().map(String::as_str));
        let mut kept = Vec::new();
        let mut bytes = 0;
        for line in newest_first.take(TAIL_LINES) {
            bytes += line.len() + 1;
            if bytes > TAIL_BYTES {
                break;
            }
            kept.push(line);
        }
        kept.reverse();
        kept.join("\n")
    }
}

/// `text` cut to at most `limit` bytes, at a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads the pipe to its end, line by line (pieces of at most [`MAX_LINE`]).
struct Pump {
    name: Arc<str>,
    pipe: pipe::Receiver,
    lines: Arc<Mutex<Lines>>,
    asked: watch::Receiver<u64>,
    answers: watch::Sender<u64>,
    parser: StderrParser,
    /// The line being read.
    line: Vec<u8>,
}

impl Pump {
    async fn run(mut self) {
        let mut buffer = vec![0; READ_CHUNK];
        let mut owner_gone = false;
        loop {
            // Read before the pipe is looked at: an empty pipe then covers the request.
            let asked = *self.asked.borrow_and_update();
            match self.pipe.try_read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => self.feed(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    // tokio may answer from readiness it has not yet seen change: only the
                    // kernel's count says the pipe is empty.
                    if unread(&self.pipe) == 0 {
                        self.answer(asked);
                    }
                    tokio::select! {
                        ready = self.pipe.readable() => {
                            if ready.is_err() {
                                break;
                            }
                        }
                        changed = self.asked.changed(), if !owner_gone => {
                            owner_gone = changed.is_err();
                        }
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // The end of the pipe ends the last line.
        if !self.line.is_empty() {
            self.end_line(true);
        }
        self.answers.send_replace(u64::MAX);
    }

    /// Everything up to now is read: the line being written joins the tail, and `asked` is
    /// answered.
    fn answer(&mut self, asked: u64) {
        let partial = String::from_utf8_lossy(&self.line);
        lock(&self.lines).partial = cut(partial.trim_end_matches('\r'), TAIL_LINE_BYTES).to_owned();
        self.answers.send_if_modified(|answered| {
            let newer = *answered < asked;
            if newer {
                *answered = asked;
            }
            newer
        });
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.line.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|byte| *byte == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&window[..end]);
                    self.end_line(true);
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.line.len() == MAX_LINE {
                        self.end_line(false);
                    }
                }
            }
        }
    }

    /// Logs the line read and adds it to the tail; a piece of an over-long line (`whole`
    /// false) is logged verbatim at debug, not parsed.
    fn end_line(&mut self, whole: bool) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        let name = &*self.name;
        if whole {
            let (entry, json) = self.parser.parse_line(text);
            logs::emit(name, &entry);
            let quoted = if json {
                logs::quote(&entry)
            } else {
                text.to_owned()
            };
            lock(&self.lines).push(&quoted);
        } else {
            tracing::debug!(target: "plinth::plugin", plugin = %name, "{text}");
            lock(&self.lines).push(text);
        }
        self.line.clear();
    }
}

/// How many bytes wait in `pipe` (0 when the kernel cannot say).
fn unread(pipe: &impl AsRawFd) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD stores the number of unread bytes in the int it is given.
    if unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut count) } == -1 {
        return 0;
    }
    usize::try_from(count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn tail_of(lines: &[&str]) -> String {
        let mut tail = Lines::default();
        for line in lines {
            tail.push(line);
        }
        tail.text()
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_line_and_byte_bounds() {
        let many: Vec<String> = (0..100).map(|n| format!("line {n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = tail_of(&many);
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.ends_with("line 99"), "{text}");
        assert!(text.starts_with("line 80\n"), "{text}");

        let long = "x".repeat(3000);
        let long: Vec<&str> = (0..30).map(|_| long.as_str()).chain(["last"]).collect();
        let text = tail_of(&long);
        assert!(text.len() <= TAIL_BYTES, "{} bytes", text.len());
        assert!(text.lines().all(|line| line.len() <= TAIL_LINE_BYTES));
        assert!(text.ends_with("\nlast"), "{text}");

        // A cut never splits a character.
        let wide = "é".repeat(TAIL_LINE_BYTES);
        let text = tail_of(&[&wide]);
        assert!(text.len() <= TAIL_LINE_BYTES && text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_line_being_written_is_the_tails_last_and_counts_in_its_bounds() {
        let mut tail = Lines::default();
        for n in 0..TAIL_LINES {
            tail.push(&format!("line {n}"));
        }
        tail.partial = "half a li".to_owned();
        let text = tail.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.ends_with("line 19\nhalf a li"), "{text}");
        tail.push("half a line");
        assert!(tail.text().ends_with("line 19\nhalf a line"));
    }

    /// A pump on a pipe of which the test holds the write end, as a plugin's descendant does.
    fn pumped() -> (Stderr, pipe::Sender, JoinSet<()>) {
        let (sender, receiver) = pipe::pipe().expect("pipe");
        let mut tasks = JoinSet::new();
        let stderr = Stderr::pump("test".into(), receiver, &mut tasks);
        (stderr, sender, tasks)
    }

    #[tokio::test]
    async fn a_tail_holds_all_that_was_written_before_it_while_the_pipe_stays_open() {
        let (stderr, mut sender, _tasks) = pumped();
        for round in 0..20 {
            let mut text = String::new();
            for n in 0..2000 {
                text.push_str(&format!("round {round} line {n}\n"));
            }
            text.push_str(&format!("round {round} ends"));
            sender.write_all(text.as_bytes()).await.expect("write");
            assert!(stderr.drain().await, "round {round}: not drained");
            let tail = lock(&stderr.lines).text();
            assert!(
                tail.ends_with(&format!("round {round} line 1999\nround {round} ends")),
                "round {round}: {tail}"
            );
            sender.write_all(b"\n").await.expect("write");
        }
    }

    #[tokio::test]
    async fn the_tail_quotes_hclog_json_as_level_and_message() {
        let (stderr, mut sender, _tasks) = pumped();
        let padding = "p".repeat(600);
        for n in 0..30 {
            let line = format!(
                "{{\"@level\":\"warn\",\"@message\":\"step {n}\",\"@timestamp\":\"2026-08-17T08:29:10.123456Z\",\"@module\":\"kv\",\"padding\":\"{padding}\"}}\n"
            );
            sender.write_all(line.as_bytes()).await.expect("write");
        }
        sender
            .write_all(b"{\"@level\":\"error\",\"@message\":\"gave up\",\"reason\":\"disk\"}\n")
            .await
            .expect("write");
        let tail = stderr.tail().await;
        assert!(tail.len() <= TAIL_BYTES, "{} bytes", tail.len());
        assert!(tail.ends_with("\n[ERROR] gave up reason=disk"), "{tail}");
        assert!(
            tail.lines().all(|line| line.starts_with('[')),
            "raw JSON in {tail}"
        );
        assert!(tail.contains("[WARN] step 29 padding=ppp"), "{tail}");
    }

    #[tokio::test]
    async fn the_end_of_the_pipe_ends_the_last_line_and_every_later_drain_at_once() {
        let (stderr, mut sender, mut tasks) = pumped();
        sender
            .write_all(b"first\n[ERROR] last")
            .await
            .expect("write");
        drop(sender);
        tasks.join_next().await.expect("the pump").expect("ends");
        assert!(stderr.drain().await);
        assert_eq!(stderr.tail().await, "first\n[ERROR] last");
    }
}
