//! go-plugin's controller: the host asks the plugin to stop (`/plugin.GRPCController/Shutdown`).
//!
//! A Go plugin stops its gRPC server hard when asked, so the reply often never arrives; the
//! answer does not matter, only whether the process then exits.

use std::time::Duration;

use crate::transport::PluginChannel;

use crate::proto::plugin::Empty;
use crate::proto::plugin::grpc_controller_client::GrpcControllerClient;

/// Asks the plugin to shut down, waiting at most `timeout` for its answer. Returns whether the
/// plugin answered.
pub(crate) async fn shutdown(channel: PluginChannel, timeout: Duration) -> bool {
    let mut client = GrpcControllerClient::new(channel);
    matches!(
        tokio::time::timeout(timeout, client.shutdown(Empty {})).await,
        Ok(Ok(_))
    )
}
