//! The counter interface served by a Rust program as a go-plugin plugin: each `Put` dials the
//! host's `AddHelper` through the broker id in the request and lets the host do the sum, as
//! go-plugin's bidirectional example (and `tests/go/cmd/counter-plugin`) does.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

use plinth_example_plugins::proto::add_helper_client::AddHelperClient;
use plinth_example_plugins::proto::counter_server::{Counter, CounterServer};
use plinth_example_plugins::proto::{
    CounterGetRequest, CounterGetResponse, CounterPutRequest, Empty, SumRequest,
};
use plinth_subprocess::Broker;
use plinth_subprocess::serve::{ServeConfig, serve_blocking};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

struct Count {
    broker: Broker,
    values: Mutex<HashMap<String, i64>>,
}

#[tonic::async_trait]
impl Counter for Count {
    async fn get(
        &self,
        request: Request<CounterGetRequest>,
    ) -> Result<Response<CounterGetResponse>, Status> {
        let key = request.into_inner().key;
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let value = values.get(&key).copied().unwrap_or_default();
        Ok(Response::new(CounterGetResponse { value }))
    }

    async fn put(&self, request: Request<CounterPutRequest>) -> Result<Response<Empty>, Status> {
        let CounterPutRequest {
            add_server,
            key,
            value,
        } = request.into_inner();
        let channel = self
            .broker
            .dial(add_server)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let current = {
            let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
            values.get(&key).copied().unwrap_or_default()
        };
        let sum = AddHelperClient::new(channel)
            .sum(SumRequest {
                a: current,
                b: value,
            })
            .await?
            .into_inner()
            .r;
        tracing::debug!(%key, current, value, sum, "the host added");
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, sum);
        Ok(Response::new(Empty {}))
    }
}

fn main() -> ExitCode {
    let config = ServeConfig::new(plinth_example_plugins::handshake()).service(|broker| {
        Routes::new(CounterServer::new(Count {
            broker: broker.clone(),
            values: Mutex::new(HashMap::new()),
        }))
    });
    match serve_blocking(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("counter-plugin: {error}");
            ExitCode::FAILURE
        }
    }
}
