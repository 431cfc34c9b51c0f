//! The plugin process: spawning it with the protocol's environment, pumping its stderr into
//! logs, draining its stdout, killing it and always reaping it.
//!
//! One waiter task owns the child and is the only one to signal or wait on it, so a kill can
//! never reach a recycled pid; it ends when the child has exited and been reaped. Dropping the
//! [`Process`] kills the child (the waiter notices that its owner left). Killed, dropped or
//! exited by itself, the child's descendants are ended with it, and on Linux the child gets
//! `SIGTERM` if the host process dies without cleaning up (see [`crate::child`] for how it is
//! started and what remains possible).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::child::{self, Child, Started};
use crate::error::{Error, Result};
use crate::handshake::MAX_LINE;
use crate::stderr::Stderr;

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

/// A running (or exited) plugin process.
pub(crate) struct Process {
    pid: u32,
    kill: mpsc::UnboundedSender<()>,
    exit: watch::Receiver<Option<String>>,
    stderr: Stderr,
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
        let mut pumps = JoinSet::new();
        let stderr = Stderr::pump(spec.name.clone(), stderr, &mut pumps);
        // The waiter is not in `pumps`: it must outlive the `Process` to reap the child.
        tokio::spawn(wait_for_exit(child, kill_requests, exit_sender));
        tracing::debug!(plugin = %spec.name, pid, path = %spec.path.display(), "plugin started");
        Ok((
            Process {
                pid,
                kill,
                exit,
                stderr,
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

    /// The last stderr lines (see [`crate::stderr`]), once everything the plugin wrote before
    /// this call has been read: asked after the plugin exited, they end with its last line.
    pub(crate) async fn stderr_tail(&self) -> String {
        self.stderr.tail().await
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
