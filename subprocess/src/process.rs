//! The plugin process: spawning it with the protocol's environment, pumping its stderr into
//! logs, draining its stdout, killing it and always reaping it.
//!
//! One waiter task owns the child and is the only one to signal or wait on it, so a kill can
//! never reach a recycled pid; it ends when the child has exited and been reaped. Dropping the
//! [`Process`] kills the child (the waiter notices that its owner left). On Linux the child
//! also gets `SIGTERM` if the host process dies without cleaning up (see [`crate::child`] for
//! how it is started).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::child::{self, Child, Started};
use crate::error::{Error, Result};
use crate::handshake::MAX_LINE;
use crate::logs::{self, StderrParser};

/// How many of the last stderr lines errors quote.
const TAIL_LINES: usize = 20;
/// How much of one stderr line errors quote.
const TAIL_LINE_BYTES: usize = 512;

/// How to start the process.
pub(crate) struct Spawn {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment of the child.
    pub env: Vec<(OsString, OsString)>,
    pub inherit_stdin: bool,
    /// A directory for the plugin's socket, removed with the process.
    pub socket_dir: Option<tempfile::TempDir>,
}

/// The last lines of a plugin's stderr, for error messages.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: &str) {
        let mut end = line.len().min(TAIL_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line[..end].to_owned());
    }

    /// The remembered lines, joined by newlines.
    pub(crate) fn text(&self) -> String {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running (or exited) plugin process.
pub(crate) struct Process {
    pid: u32,
    kill: mpsc::UnboundedSender<()>,
    exit: watch::Receiver<Option<String>>,
    stderr_done: watch::Receiver<bool>,
    tail: StderrTail,
    pumps: Mutex<JoinSet<()>>,
    socket_dir: Mutex<Option<tempfile::TempDir>>,
}

impl Process {
    /// Starts the process with stdout and stderr piped; returns it and its stdout.
    pub(crate) async fn spawn(spec: Spawn) -> Result<(Process, pipe::Receiver)> {
        let Started {
            child,
            stdout,
            stderr,
        } = child::spawn(child::Command {
            program: &spec.path,
            args: &spec.args,
            env: &spec.env,
            inherit_stdin: spec.inherit_stdin,
        })
        .await
        .map_err(|source| Error::Spawn {
            plugin: spec.name.to_string(),
            path: spec.path.clone(),
            source,
        })?;
        let pid = child.id();
        let (kill, kill_requests) = mpsc::unbounded_channel();
        let (exit_sender, exit) = watch::channel(None);
        let (stderr_sender, stderr_done) = watch::channel(false);
        let tail = StderrTail::default();
        let mut pumps = JoinSet::new();
        pumps.spawn(pump_stderr(
            spec.name.clone(),
            stderr,
            tail.clone(),
            stderr_sender,
        ));
        // The waiter is not in `pumps`: it must outlive the `Process` to reap the child.
        tokio::spawn(wait_for_exit(child, kill_requests, exit_sender));
        tracing::debug!(plugin = %spec.name, pid, path = %spec.path.display(), "plugin started");
        Ok((
            Process {
                pid,
                kill,
                exit,
                stderr_done,
                tail,
                pumps: Mutex::new(pumps),
                socket_dir: Mutex::new(spec.socket_dir),
            },
            stdout,
        ))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Drains the rest of stdout in the background (a Go host discards it; we trace it).
    pub(crate) fn drain_stdout(&self, name: Arc<str>, stdout: BufReader<pipe::Receiver>) {
        let mut pumps = self
            .pumps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pumps.spawn(async move {
            let mut lines = stdout;
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut lines).take(MAX_LINE as u64).read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        tracing::trace!(target: "plinth::plugin::stdout", plugin = %name, "{}", text.trim_end());
                    }
                }
            }
        });
    }

    /// Removes the plugin's socket directory (once the plugin is gone).
    pub(crate) fn remove_socket_dir(&self) {
        let dir = self
            .socket_dir
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(dir);
    }

    /// Asks the waiter to SIGKILL the child (nothing happens if it already exited).
    pub(crate) fn kill(&self) {
        let _ = self.kill.send(());
    }

    /// How the process exited, if it has.
    pub(crate) fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Waits until the process has exited (and was reaped).
    pub(crate) async fn wait(&self) -> String {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            // The waiter ended without a status: it could not wait on the child.
            Err(_) => "unknown exit status".to_owned(),
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) async fn wait_timeout(&self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }

    /// A receiver that changes when the process exits.
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<String>> {
        self.exit.clone()
    }

    /// The last stderr lines, after waiting briefly for stderr to reach its end (so the lines a
    /// dying plugin wrote are included).
    pub(crate) async fn stderr_tail(&self) -> String {
        let mut done = self.stderr_done.clone();
        let _ = tokio::time::timeout(Duration::from_millis(500), done.wait_for(|done| *done)).await;
        self.tail.text()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The waiter kills and reaps the child once it sees the channel closed.
        let _ = self.kill.send(());
    }
}

/// Owns the child: waits for it, kills it on request or when the owner is gone, reaps it and
/// publishes how it exited.
async fn wait_for_exit(
    mut child: Child,
    mut kill_requests: mpsc::UnboundedReceiver<()>,
    exit: watch::Sender<Option<String>>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            request = kill_requests.recv() => {
                let _ = child.start_kill();
                if request.is_none() {
                    break child.wait().await;
                }
            }
        }
    };
    let text = match status {
        Ok(status) => describe_status(status),
        Err(error) => format!("cannot wait for the process: {error}"),
    };
    exit.send_replace(Some(text));
}

fn describe_status(status: ExitStatus) -> String {
    status.to_string()
}

/// Reads stderr line by line (pieces of at most 64 KiB), logs each as go-plugin does and keeps
/// the tail for error messages.
async fn pump_stderr(
    name: Arc<str>,
    stderr: impl AsyncRead + Unpin,
    tail: StderrTail,
    done: watch::Sender<bool>,
) {
    let mut reader = BufReader::new(stderr);
    let mut parser = StderrParser::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let whole = line.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tail.push(text);
        if whole {
            logs::emit(&name, &parser.parse(text));
        } else {
            // A piece of an over-long line: logged verbatim at debug, not parsed.
            tracing::debug!(target: "plinth::plugin", plugin = %name, "{text}");
        }
    }
    done.send_replace(true);
}
