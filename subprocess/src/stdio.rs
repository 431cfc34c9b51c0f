//! go-plugin's stdio stream: what a plugin writes to its stdout and stderr after the handshake
//! arrives over `/plugin.GRPCStdio/StreamStdio` and is handed to the host's sinks.
//!
//! The stream is opened as soon as the host connects and drained for the plugin's whole life,
//! whether or not anyone listens: a Go plugin blocks once its output pipe is full and nobody
//! reads it. A plugin without the service (older Go plugins, other languages) is noted once and
//! otherwise ignored.

use std::sync::Arc;

use crate::transport::PluginChannel;
use tonic::Code;

use crate::proto::plugin::grpc_stdio_client::GrpcStdioClient;
use crate::proto::plugin::{Empty, stdio_data};

/// Receives chunks of a plugin's output, as the plugin wrote them (not split into lines).
pub type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where the plugin's synced stdout and stderr go (go-plugin's `SyncStdout`/`SyncStderr`).
/// Missing sinks discard.
#[derive(Clone, Default)]
pub struct StdioSinks {
    /// Receives stdout chunks.
    pub stdout: Option<Sink>,
    /// Receives stderr chunks.
    pub stderr: Option<Sink>,
}

impl std::fmt::Debug for StdioSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioSinks")
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// Streams the plugin's output into `sinks` until the stream ends.
pub(crate) async fn run(plugin: Arc<str>, channel: PluginChannel, sinks: StdioSinks) {
    let mut client =
        GrpcStdioClient::new(channel).max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE);
    let mut stream = match client.stream_stdio(Empty {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            if matches!(status.code(), Code::Unimplemented | Code::Unavailable) {
                tracing::warn!(%plugin, "stdio service not available, stdout/stderr syncing unavailable");
            }
            return;
        }
    };
    loop {
        let data = match stream.message().await {
            Ok(Some(data)) => data,
            Ok(None) => return,
            Err(status) => {
                tracing::trace!(%plugin, %status, "stdio stream ended");
                return;
            }
        };
        let sink = match stdio_data::Channel::try_from(data.channel) {
            Ok(stdio_data::Channel::Stdout) => &sinks.stdout,
            Ok(stdio_data::Channel::Stderr) => &sinks.stderr,
            _ => {
                tracing::warn!(%plugin, channel = data.channel, "unknown stdio channel; data dropped");
                continue;
            }
        };
        if let Some(sink) = sink {
            sink(&data.data);
        }
    }
}
