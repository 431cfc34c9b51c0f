//! The services every served plugin offers besides the application's: health (`plugin` and
//! `""` serving), the controller (`Shutdown`), stdio (the redirected output) and the plugin
//! end of the broker stream.
//!
//! All of them end their long-lived streams when the shutdown signal fires, so stopping the
//! server never waits on a host that keeps a stream open.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{Mutex, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::health::SERVICE;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_server::Health;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::plugin::grpc_broker_server::GrpcBroker;
use crate::proto::plugin::grpc_controller_server::GrpcController;
use crate::proto::plugin::grpc_stdio_server::GrpcStdio;
use crate::proto::plugin::{ConnInfo, Empty, StdioData};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Fires once when the plugin is to stop; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        Shutdown(Arc::new(watch::Sender::new(false)))
    }

    /// Asks everything to stop.
    pub(crate) fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Shutdown::trigger`] was called.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

/// `grpc.health.v1.Health`: `plugin` and `""` are serving, anything else is unknown.
pub(crate) struct HealthService {
    pub(crate) shutdown: Shutdown,
}

fn status_of(service: &str) -> Option<ServingStatus> {
    (service == SERVICE || service.is_empty()).then_some(ServingStatus::Serving)
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match status_of(&service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status as i32,
            })),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let status =
            status_of(&request.into_inner().service).unwrap_or(ServingStatus::ServiceUnknown);
        let first = futures::stream::once(async move {
            Ok(HealthCheckResponse {
                status: status as i32,
            })
        });
        let until_shutdown = futures::stream::once(self.shutdown.wait());
        let rest = futures::StreamExt::filter_map(until_shutdown, |()| async { None });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            first, rest,
        ))))
    }
}

/// `plugin.GRPCController`: `Shutdown` answers, then stops the plugin.
pub(crate) struct ControllerService {
    pub(crate) shutdown: Shutdown,
}

#[tonic::async_trait]
impl GrpcController for ControllerService {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!(target: "plinth::serve", "the host asked the plugin to shut down");
        self.shutdown.trigger();
        Ok(Response::new(Empty {}))
    }
}

/// `plugin.GRPCStdio`: streams the redirected output to one caller at a time.
pub(crate) struct StdioService {
    pub(crate) chunks: Arc<Mutex<mpsc::Receiver<StdioData>>>,
    pub(crate) shutdown: Shutdown,
}

#[tonic::async_trait]
impl GrpcStdio for StdioService {
    type StreamStdioStream = BoxStream<StdioData>;

    async fn stream_stdio(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let guard = self
            .chunks
            .clone()
            .try_lock_owned()
            .map_err(|_| Status::already_exists("stdio is already being streamed"))?;
        let stream = futures::stream::unfold(
            (guard, Box::pin(self.shutdown.wait())),
            |(mut guard, mut stop)| async move {
                tokio::select! {
                    chunk = guard.recv() => chunk.map(|chunk| (Ok(chunk), (guard, stop))),
                    () = &mut stop => None,
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Reads `pipe` in chunks of at most 1 KiB (as a Go plugin) and sends them as `channel`.
pub(crate) async fn pump(
    mut pipe: tokio::net::unix::pipe::Receiver,
    channel: crate::proto::plugin::stdio_data::Channel,
    chunks: mpsc::Sender<StdioData>,
) {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let data = StdioData {
                    channel: channel as i32,
                    data: buffer[..read].to_vec(),
                };
                if chunks.send(data).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `plugin.GRPCBroker`: the plugin's end of `StartStream`. Host messages are filed with the
/// broker; the broker's announcements are the responses.
pub(crate) struct BrokerService {
    pub(crate) broker: Broker,
    pub(crate) outgoing: Arc<Mutex<mpsc::UnboundedReceiver<ConnInfo>>>,
    pub(crate) shutdown: Shutdown,
}

struct BrokerStream {
    incoming: Streaming<ConnInfo>,
    outgoing: tokio::sync::OwnedMutexGuard<mpsc::UnboundedReceiver<ConnInfo>>,
    broker: Broker,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

#[tonic::async_trait]
impl GrpcBroker for BrokerService {
    type StartStreamStream = BoxStream<ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let outgoing = self
            .outgoing
            .clone()
            .try_lock_owned()
            .map_err(|_| Status::already_exists("the broker stream is already open"))?;
        let state = BrokerStream {
            incoming: request.into_inner(),
            outgoing,
            broker: self.broker.clone(),
            stop: Box::pin(self.shutdown.wait()),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            loop {
                tokio::select! {
                    received = state.incoming.message() => match received {
                        Ok(Some(info)) => state.broker.file(info),
                        _ => return None,
                    },
                    sent = state.outgoing.recv() => {
                        return sent.map(|info| (Ok(info), state));
                    }
                    () = &mut state.stop => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
