//! The gRPC health check go-plugin uses as `Ping`: the service `plugin` must be `SERVING`.

use crate::transport::PluginChannel;

use crate::proto::health::HealthCheckRequest;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_client::HealthClient;

/// The service name a go-plugin plugin reports as serving.
pub const SERVICE: &str = "plugin";

/// Checks the plugin's health; `Ok(false)` when it answers but is not serving.
pub(crate) async fn check(channel: PluginChannel) -> Result<bool, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SERVICE.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}
