//! The gRPC half of an adapter: what [`Plugin::from_grpc`](crate::Plugin::from_grpc) receives
//! when the plugin is a go-plugin executable.
//!
//! A [`GrpcConn`] is go-plugin's `(broker, *grpc.ClientConn)` pair: build the tonic client for
//! the interface's service on [`GrpcConn::channel`], use [`GrpcConn::broker`] for callbacks, and
//! turn failed calls into [`Error`]s with [`GrpcConn::error`], which tells a crashed plugin
//! from a refused call.

use plinth_subprocess::transport::PluginChannel;
use plinth_subprocess::{Broker, Connection};

use crate::error::Error;

pub use plinth_subprocess::transport::MAX_MESSAGE_SIZE;

/// A connection to a go-plugin plugin, handed to [`Plugin::from_grpc`](crate::Plugin::from_grpc).
/// Cheap to clone; holding one keeps the plugin running until it is killed.
#[derive(Clone, Debug)]
pub struct GrpcConn {
    connection: Connection,
    channel: PluginChannel,
    broker: Broker,
}

impl GrpcConn {
    /// Fails for a plugin that does not speak gRPC.
    pub(crate) fn new(connection: Connection) -> Result<GrpcConn, Error> {
        let channel = connection.channel()?;
        let broker = connection.broker()?.clone();
        Ok(GrpcConn {
            connection,
            channel,
            broker,
        })
    }

    /// The channel to the plugin's gRPC services. Give generated clients
    /// [`MAX_MESSAGE_SIZE`] as their encoding and decoding limits, as a Go host does.
    pub fn channel(&self) -> PluginChannel {
        self.channel.clone()
    }

    /// The broker, for services the host serves to the plugin or the plugin offers the host.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The application protocol version negotiated with the plugin.
    pub fn version(&self) -> u32 {
        self.connection.negotiated_version()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.connection.name()
    }

    /// The error for a failed call to `method`: [`Error::Killed`] after a kill, the plugin's
    /// exit (with its stderr) when it crashed, else the gRPC status.
    pub async fn error(&self, method: &str, status: tonic::Status) -> Error {
        match self.connection.rpc_error(method, status).await {
            plinth_subprocess::Error::Killed { plugin } => Error::Killed { plugin },
            other => Error::Subprocess(other),
        }
    }
}
