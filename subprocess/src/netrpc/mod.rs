//! go-plugin's original protocol, `netrpc`: a yamux session over the plugin's socket with Go
//! `net/rpc` (gob-encoded) on its streams.
//!
//! The host is the yamux client and opens three streams in order: control (the plugin's
//! `Control` and `Dispenser` services), then the plugin's stdout and stderr, which carry its
//! raw output. Dispensing a plugin asks `Dispenser.Dispense` for a broker id, then dials that id
//! on a new stream (the MuxBroker: the stream opens with the id as a little-endian `u32`, and
//! the plugin acknowledges with the same four bytes). The dispensed object answers on that
//! stream as the `net/rpc` service `Plugin`.
//!
//! Values cross as gob ([`gob`]); a Go interface is mirrored in Rust by calling its methods by
//! name with [`RpcClient::call`].

pub mod gob;
mod rpc;

use crate::lock;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_yamux::{Config, Control, Session as Yamux};

pub use rpc::{CallError, RpcClient};

use crate::stdio::{Sink, StdioSinks};
use crate::transport::BoxIo;

/// How long a broker dial waits for the plugin's acknowledgement (go-plugin's accept timeout).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A netrpc session with a plugin. Dropping it closes the session and ends its tasks.
pub struct Session {
    control: Control,
    rpc: RpcClient,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl Session {
    /// Starts the yamux session over `io` and opens the control, stdout and stderr streams.
    pub(crate) async fn start(
        plugin: Arc<str>,
        io: BoxIo,
        sinks: StdioSinks,
    ) -> std::io::Result<Session> {
        let mut yamux = Yamux::new_client(io, Config::default());
        let mut control = yamux.control();
        let mut tasks = JoinSet::new();
        let name = plugin.clone();
        tasks.spawn(async move {
            // Drives the session. The plugin opens streams only to dial a broker id the host
            // would serve; this host serves none, so they are closed (the plugin's dial fails
            // with a bad acknowledgement instead of waiting).
            while let Some(stream) = yamux.next().await {
                match stream {
                    Ok(stream) => {
                        tracing::warn!(plugin = %name, "the plugin dialed the host's broker; this host serves nothing there");
                        drop(stream);
                    }
                    Err(error) => {
                        tracing::debug!(plugin = %name, %error, "netrpc session ended");
                        break;
                    }
                }
            }
        });
        let opened = async {
            let rpc = open(&mut control).await?;
            let stdout = open(&mut control).await?;
            let stderr = open(&mut control).await?;
            std::io::Result::Ok((rpc, stdout, stderr))
        }
        .await;
        let (rpc, stdout, stderr) = match opened {
            Ok(streams) => streams,
            Err(error) => {
                tasks.abort_all();
                return Err(error);
            }
        };
        tasks.spawn(copy_output(plugin.clone(), stdout, sinks.stdout, "stdout"));
        tasks.spawn(copy_output(plugin, stderr, sinks.stderr, "stderr"));
        Ok(Session {
            control,
            rpc: RpcClient::new(rpc),
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// The control stream's client (`Control.Ping`, `Control.Quit`, `Dispenser.Dispense`).
    pub fn control(&self) -> &RpcClient {
        &self.rpc
    }

    /// Checks that the plugin answers (`Control.Ping`).
    pub async fn ping(&self) -> Result<(), CallError> {
        self.rpc.call("Control.Ping", &true).await
    }

    /// Asks the plugin to exit (`Control.Quit`), waiting at most `timeout` for its answer.
    pub(crate) async fn quit(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.rpc.call::<_, ()>("Control.Quit", &true)).await;
    }

    /// Dispenses the plugin registered as `name` and connects to it: calls on the returned
    /// client go to its `Plugin.<Method>`s.
    pub async fn dispense(&self, name: &str) -> Result<RpcClient, CallError> {
        let id: u32 = self.rpc.call("Dispenser.Dispense", name).await?;
        self.dial(id)
            .await
            .map_err(|error| CallError::Broken(format!("dialing broker id {id}: {error}")))
    }

    /// Dials broker id `id` and starts a `net/rpc` client on the stream.
    pub async fn dial(&self, id: u32) -> std::io::Result<RpcClient> {
        let mut control = self.control.clone();
        let mut stream = open(&mut control).await?;
        stream.write_all(&id.to_le_bytes()).await?;
        stream.flush().await?;
        let mut ack = [0u8; 4];
        tokio::time::timeout(ACK_TIMEOUT, stream.read_exact(&mut ack))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the plugin did not acknowledge within {ACK_TIMEOUT:?}"),
                )
            })??;
        let acked = u32::from_le_bytes(ack);
        if acked != id {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad acknowledgement: expected id {id}, got {acked}"),
            ));
        }
        Ok(RpcClient::new(stream))
    }

    /// Closes the session.
    pub(crate) async fn close(&self) {
        let mut control = self.control.clone();
        control.close().await;
        lock(&self.tasks).abort_all();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lock(&self.tasks).abort_all();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

async fn open(control: &mut Control) -> std::io::Result<BoxIo> {
    let stream = control.open_stream().await.map_err(|error| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("cannot open a yamux stream: {error}"),
        )
    })?;
    Ok(Box::new(stream))
}

/// Copies one of the plugin's output streams into its sink until the stream ends. The stream
/// is drained whether or not a sink is set: a Go plugin blocks when nobody reads it.
async fn copy_output(plugin: Arc<str>, mut stream: BoxIo, sink: Option<Sink>, which: &'static str) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => return,
            Ok(count) => {
                if let Some(sink) = &sink {
                    sink(&buffer[..count]);
                }
            }
            Err(error) => {
                tracing::trace!(%plugin, %error, which, "netrpc output stream ended");
                return;
            }
        }
    }
}
